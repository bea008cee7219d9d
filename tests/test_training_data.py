"""The training split's readers (numerflow.training.data) and the scoring of row subsets: the same
values as pandas reads from the file, in less memory (no DataFrame, float16 targets when exact, no
copy of the validation matrix)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from numerflow import metrics
from numerflow.checkpoint import predict_scores
from numerflow.errors import DataError
from numerflow.model import ModelConfig, build_model
from numerflow.training.data import epoch_batches, read_split, rows_by_era
from numerflow.training.distributed import Distributed
from numerflow.training.validation import Validator
from tests.prepared_helpers import FEATURES, prepared_frame


def write_in_row_groups(frame: pd.DataFrame, path, rows_per_group: int) -> None:
    pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=rows_per_group)


@pytest.fixture
def split_file(tmp_path):
    """Eras whose labels sort differently as text and as numbers ('era9' < 'era10'), stored out of
    order and cut into row groups that split eras."""
    frame = prepared_frame(["era10", "era9", "era100", "era2"], rows_per_era=50, seed=3)
    path = tmp_path / "train.parquet"
    write_in_row_groups(frame, path, rows_per_group=35)
    return frame, path


def test_read_split_matches_the_file_read_by_pandas(split_file):
    frame, path = split_file
    split = read_split(path, FEATURES, ["target", "target_aux_20"], with_ids=True)
    expected = metrics.group_eras(frame["era"].to_numpy())
    assert split.eras == ["era2", "era9", "era10", "era100"] == expected.labels
    assert split.era_codes.dtype == np.int32
    np.testing.assert_array_equal(split.era_codes, expected.codes)
    np.testing.assert_array_equal(split.features, frame[FEATURES].to_numpy())
    np.testing.assert_array_equal(split.targets, frame[["target", "target_aux_20"]].to_numpy())  # NaN in place
    assert list(split.ids) == list(frame.index)


def test_targets_are_float16_when_exact_and_float32_otherwise(tmp_path, split_file):
    frame, path = split_file
    assert read_split(path, FEATURES, ["target"]).targets.dtype == np.float16  # quarter steps
    frame = frame.copy()
    frame.loc[frame.index[-1], "target_aux_20"] = np.float32(0.1)  # not a float16, in the last row group
    frame.loc[frame.index[-2], "target"] = np.float32(70000.0)  # beyond float16's range
    other = tmp_path / "other.parquet"
    write_in_row_groups(frame, other, rows_per_group=35)
    split = read_split(other, FEATURES, ["target", "target_aux_20"])
    assert split.targets.dtype == np.float32
    np.testing.assert_array_equal(split.targets, frame[["target", "target_aux_20"]].to_numpy())


def test_missing_target_column_and_null_eras_are_data_errors(tmp_path, split_file):
    frame, path = split_file
    with pytest.raises(DataError, match="missing 1 column"):
        read_split(path, FEATURES, ["target_nope"])
    frame = frame.copy()
    frame.loc[frame.index[3], "era"] = None
    broken = tmp_path / "null_era.parquet"
    write_in_row_groups(frame, broken, rows_per_group=35)
    with pytest.raises(DataError, match="1 row"):
        read_split(broken, FEATURES, ["target"])


def test_rows_by_era_lists_each_eras_rows_in_order():
    codes = np.random.default_rng(0).integers(0, 7, 500).astype(np.int32)
    codes[codes == 4] = 5  # an era code with no rows
    for code, rows in enumerate(rows_by_era(codes)):
        np.testing.assert_array_equal(rows, np.flatnonzero(codes == code))
    order, slices = epoch_batches(len(codes), codes, 64, "corr", seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(500))  # every row once (no era has < 2 rows)


def test_validator_scores_known_rows_without_copying_the_matrix(split_file):
    frame, path = split_file
    split = read_split(path, FEATURES, ["target"])
    split.targets[::3, 0] = np.nan  # rows without a known target, as in Numerai's latest eras
    validator = Validator(split, torch.device("cpu"), Distributed())
    assert np.shares_memory(validator.features.numpy(), split.features)
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=len(FEATURES), layers=[8]))
    known = np.flatnonzero(~np.isnan(split.targets[:, 0]))
    scores = predict_scores(model, split.features[known].copy())
    summary, per_era = validator.score(model, "main")
    expected = metrics.per_era_spearman(scores, split.targets[known, 0].astype(np.float32),
                                        metrics.EraGroups(split.eras, split.era_codes[known]))
    np.testing.assert_allclose(per_era, np.asarray(expected.values, dtype=np.float64), rtol=0, atol=1e-12)


def test_predict_scores_of_a_row_subset_equal_those_of_the_copied_rows(split_file):
    _frame, path = split_file
    matrix = read_split(path, FEATURES, ["target"]).features
    torch.manual_seed(1)
    model = build_model(ModelConfig(n_features=len(FEATURES), layers=[8], n_outputs=1))
    rows = np.random.default_rng(2).permutation(len(matrix))[:77]
    expected = predict_scores(model, matrix[rows].copy())
    for features in (matrix, torch.from_numpy(matrix)):
        np.testing.assert_array_equal(predict_scores(model, features, rows=rows, batch_rows=10), expected)
