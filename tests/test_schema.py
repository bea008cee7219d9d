"""The Numerai layout helpers: era ordering, feature conversion, version folders, int8 reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from numerflow import schema
from numerflow.errors import DataError


def test_eras_sort_numerically_whatever_the_label():
    assert schema.sorted_eras(["era100", "era12", "era2"]) == ["era2", "era12", "era100"]
    assert schema.sorted_eras(["0100", "0012", "0002"]) == ["0002", "0012", "0100"]


def test_quarter_floats_become_exact_int8():
    values = np.array([0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
    assert schema.features_to_int8(values).tolist() == [0, 1, 2, 3, 4]
    assert schema.features_to_int8(values).dtype == np.int8


@pytest.mark.parametrize("bad, message", [
    (np.array([0.3, 0.5]), "not 0, .25, .5, .75 or 1"),
    (np.array([0.0, 1.25]), "not 0, .25, .5, .75 or 1"),
    (np.array([0.0, np.nan]), "NaN"),
    (np.array([0, 5], dtype=np.int8), "outside 0..4"),
])
def test_feature_values_outside_the_layout_are_errors(bad, message):
    with pytest.raises(DataError, match=message):
        schema.features_to_int8(bad, "x.parquet")


def test_newest_version_folder_wins(tmp_path):
    for name in ["v5.0", "v5.10", "v5.2", "synthetic"]:
        (tmp_path / name).mkdir()
    assert schema.find_version_dir(tmp_path).name == "v5.10"
    assert schema.find_version_dir(tmp_path, "v5.0").name == "v5.0"
    with pytest.raises(DataError, match="no such dataset folder"):
        schema.find_version_dir(tmp_path, "v9.9")


def test_synthetic_is_used_when_it_is_the_only_folder(tmp_path):
    (tmp_path / "synthetic").mkdir()
    assert schema.find_version_dir(tmp_path).name == "synthetic"
    with pytest.raises(DataError, match="no dataset folder found"):
        schema.find_version_dir(tmp_path / "empty")


def test_read_matrix_keeps_int8_and_lists_missing_columns(tmp_path):
    frame = pd.DataFrame({
        "era": ["0001", "0001", "0002"],
        "feature_a": np.array([0, 0.5, 1.0]),
        "feature_b": np.array([4, 3, 2], dtype=np.int8),
        "target": [0.5, np.nan, 1.0],
    }, index=pd.Index(["n1", "n2", "n3"], name="id"))
    path = tmp_path / "x.parquet"
    frame.to_parquet(path)
    matrix, extra = schema.read_matrix(path, ["feature_b", "feature_a"], ["era", "target"], read_bytes=1)
    assert matrix.dtype == np.int8
    assert matrix.tolist() == [[4, 0], [3, 2], [2, 4]]
    assert list(extra.index) == ["n1", "n2", "n3"]
    assert extra["era"].tolist() == ["0001", "0001", "0002"]
    with pytest.raises(DataError, match="missing 2 column\\(s\\): feature_c, feature_d"):
        schema.read_matrix(path, ["feature_a", "feature_c", "feature_d"])


def test_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="broken.parquet: not a readable Parquet file"):
        schema.parquet_columns(path)


def test_id_frames_keep_text_ids_from_csv_and_index_ids_from_parquet(tmp_path):
    (tmp_path / "p.csv").write_text("id,prediction\n0012,0.5\n0100,0.25\n")
    frame = schema.read_id_frame(tmp_path / "p.csv")
    assert frame["id"].tolist() == ["0012", "0100"]
    pd.DataFrame({"prediction": [0.5]}, index=pd.Index(["n1"], name="id")).to_parquet(tmp_path / "p.parquet")
    assert schema.read_id_frame(tmp_path / "p.parquet").columns.tolist() == ["id", "prediction"]
