"""Bounded-memory reading: schema.read_matrix gives the same matrix and extra columns whatever its
read budget (one column of one row group per step, or the whole file at once), and pandas' own
reading of the file is the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from numerflow import schema
from numerflow.errors import DataError
import tracemalloc


FEATURES = [f"feature_{j:02d}" for j in range(13)]
WHOLE_FILE = 1 << 40  # a read budget larger than any test file: one step per row group


def numerai_frame(rows: int = 230, seed: int = 0) -> pd.DataFrame:
    """Numerai-shaped rows: id index, era, data_type (three kinds), int8 features, float targets
    with NaNs."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.integers(0, 5, size=(rows, len(FEATURES)), dtype=np.int8), columns=FEATURES,
                         index=pd.Index([f"n{seed}_{i:05d}" for i in range(rows)], name=schema.ID))
    frame.insert(0, schema.ERA, [f"{1 + i // 17:04d}" for i in range(rows)])
    frame.insert(1, schema.DATA_TYPE, rng.choice(["validation", "test", "train"], size=rows, p=[.5, .3, .2]))
    frame["target"] = rng.choice([0, .25, .5, .75, 1, np.nan], size=rows).astype(np.float32)
    frame["target_jasper_60"] = rng.random(rows)
    return frame


def write(frame: pd.DataFrame, path, row_group_rows: int) -> None:
    frame.to_parquet(path, row_group_size=row_group_rows)
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-len(frame) // row_group_rows)


@pytest.mark.parametrize("row_group_rows", [1000, 37])
@pytest.mark.parametrize("where", [None, ("data_type", "validation")])
def test_read_matrix_matches_pandas_whatever_the_budget(tmp_path, row_group_rows, where):
    frame = numerai_frame()
    path = tmp_path / "v.parquet"
    write(frame, path, row_group_rows)
    expected = frame if where is None else frame[frame[where[0]] == where[1]]
    features = FEATURES[::-1][:9]  # a subset, not in file order
    extras = ["era", "target", "target_jasper_60"]
    reference = pd.read_parquet(path, columns=extras).loc[expected.index]
    results = [schema.read_matrix(path, features, extras, where=where, read_bytes=budget)
               for budget in (1, 3 * 37 * schema.DECODED_VALUE_BYTES, WHOLE_FILE)]
    for matrix, extra in results:
        assert matrix.dtype == np.int8 and matrix.flags.c_contiguous
        np.testing.assert_array_equal(matrix, expected[features].to_numpy())
        pd.testing.assert_frame_equal(extra, reference)


def test_read_matrix_skips_row_groups_without_kept_rows(tmp_path):
    """Row groups where `where` keeps nothing add no rows; the kept ones keep the file order."""
    frame = numerai_frame(rows=120)
    frame[schema.DATA_TYPE] = np.repeat(["test", "validation", "test", "validation"], 30)
    path = tmp_path / "v.parquet"
    write(frame, path, 30)
    matrix, extra = schema.read_matrix(path, FEATURES, ["era"], where=("data_type", "validation"), read_bytes=1)
    kept = frame[frame.data_type == "validation"]
    np.testing.assert_array_equal(matrix, kept[FEATURES].to_numpy())
    assert list(extra.index) == list(kept.index) and extra["era"].tolist() == kept["era"].tolist()
    matrix, extra = schema.read_matrix(path, FEATURES, ["era"], where=("data_type", "live"))
    assert matrix.shape == (0, len(FEATURES)) and len(extra) == 0 and list(extra.columns) == ["era"]


def test_read_matrix_without_ids_or_extra_columns(tmp_path):
    """A file without ids gives a 0..n-1 index, also when nothing but features is asked for."""
    frame = numerai_frame(rows=50).reset_index(drop=True)
    path = tmp_path / "noid.parquet"
    write(frame.drop(columns=[schema.DATA_TYPE]), path, 20)
    matrix, extra = schema.read_matrix(path, FEATURES, read_bytes=1)
    np.testing.assert_array_equal(matrix, frame[FEATURES].to_numpy())
    assert extra.shape == (50, 0) and list(extra.index) == list(range(50))
    _, extra = schema.read_matrix(path, FEATURES[:2], ["era"])
    assert list(extra.index) == list(range(50)) and extra["era"].tolist() == frame["era"].tolist()


def test_read_matrix_ids_as_a_plain_column(tmp_path):
    """Files written without pandas metadata (id a plain column) are indexed by id too."""
    frame = numerai_frame(rows=40)
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pandas(frame.reset_index(), preserve_index=False).replace_schema_metadata(None),
                   path, row_group_size=16)
    matrix, extra = schema.read_matrix(path, FEATURES, ["target"], where=("data_type", "test"), read_bytes=1)
    kept = frame[frame.data_type == "test"]
    np.testing.assert_array_equal(matrix, kept[FEATURES].to_numpy())
    assert extra.index.name == schema.ID and list(extra.index) == list(kept.index)


def test_read_matrix_maps_quarter_floats_and_rejects_bad_values_in_any_row_group(tmp_path):
    frame = numerai_frame(rows=60)
    floats = frame.astype({f: np.float32 for f in FEATURES})
    floats[FEATURES] = floats[FEATURES] / 4
    path = tmp_path / "floats.parquet"
    write(floats, path, 25)
    matrix, _ = schema.read_matrix(path, FEATURES, read_bytes=1)
    np.testing.assert_array_equal(matrix, frame[FEATURES].to_numpy())
    floats.iloc[55, floats.columns.get_loc(FEATURES[3])] = np.nan  # in the last row group only
    write(floats, path, 25)
    with pytest.raises(DataError, match=rf"floats.parquet: column {FEATURES[3]}: missing \(NaN\)"):
        schema.read_matrix(path, FEATURES, read_bytes=1)


def test_read_matrix_reads_a_step_at_a_time(tmp_path):
    """Arrow's allocations while reading stay near the read budget, far below the whole file's
    decoded size (which a read with pre-buffering or whole row groups would reach)."""
    rows, width = 20_000, 300
    rng = np.random.default_rng(1)
    names = [f"feature_{j:03d}" for j in range(width)]
    frame = pd.DataFrame(rng.integers(0, 5, size=(rows, width), dtype=np.int8), columns=names)
    path = tmp_path / "wide.parquet"
    frame.to_parquet(path, row_group_size=rows)  # one row group: only the column steps bound memory
    budget = 1 << 20  # 17 columns a step: 0.3 MB of int8
    default = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(default)  # the same allocator, with its own high-water mark
    pa.set_memory_pool(pool)
    try:
        matrix, _ = schema.read_matrix(path, names, read_bytes=budget)
    finally:
        pa.set_memory_pool(default)
    np.testing.assert_array_equal(matrix, frame.to_numpy())
    assert 0 < pool.max_memory() < rows * width / 4  # a quarter of the int8 bytes: more than 4 steps


def test_prepare_output_does_not_depend_on_row_groups_or_read_budget(tmp_path, synthetic_dir, monkeypatch):
    """prepare reads a row group and a block of columns at a time: the same data laid out in many
    small row groups, read one column per step, gives the same prepared rows as one row group per
    file read whole."""
    import shutil

    from numerflow.config import PrepareConfig
    from numerflow.stages.prepare import prepare

    layouts = {"whole": None, "small": 97}
    outputs = {}
    for name, row_group_rows in layouts.items():
        dataset = tmp_path / name
        # The files are rewritten below: no download record (it would rightly refuse them).
        shutil.copytree(synthetic_dir, dataset, ignore=shutil.ignore_patterns(schema.VERSION_MANIFEST_FILE))
        for split in ("train", "validation"):
            table = pq.read_table(synthetic_dir / f"{split}.parquet")
            pq.write_table(table, dataset / f"{split}.parquet", row_group_size=row_group_rows or table.num_rows)
        monkeypatch.setattr(schema, "READ_BYTES", 1 if row_group_rows else WHOLE_FILE)
        result = prepare(PrepareConfig(dataset=dataset, feature_set="all", aux_targets=["all"], downsample=3,
                                       embargo=2, out_dir=tmp_path / f"prepared_{name}"))
        outputs[name] = [pq.read_table(path) for path in (result.train, result.validation)]
        assert all(t.num_rows for t in outputs[name])
    for whole, small in zip(outputs["whole"], outputs["small"]):
        assert whole.schema.equals(small.schema, check_metadata=True)
        pd.testing.assert_frame_equal(whole.to_pandas(), small.to_pandas())  # NaN targets equal too
    groups = pq.ParquetFile(tmp_path / "prepared_small" / "train.parquet").metadata.num_row_groups
    assert groups == 1  # small kept row groups are gathered into output row groups


@pytest.mark.parametrize("statistics", [True, False])
def test_prepare_range_check_with_and_without_file_statistics(tmp_path, synthetic_dir, statistics):
    """prepare skips its own 0..4 check where the file's column statistics already show the range,
    and checks the values themselves where they are absent: a 7 is rejected either way, and the
    prepared features are required (never null) BYTE_STREAM_SPLIT + LZ4 columns."""
    import shutil

    from numerflow.config import PrepareConfig
    from numerflow.stages.prepare import prepare

    dataset = tmp_path / "v"
    shutil.copytree(synthetic_dir, dataset, ignore=shutil.ignore_patterns(schema.VERSION_MANIFEST_FILE))
    table = pq.read_table(synthetic_dir / "train.parquet")
    pq.write_table(table, dataset / "train.parquet", write_statistics=statistics)
    config = PrepareConfig(dataset=dataset, feature_set="all", out_dir=tmp_path / "prepared")
    result = prepare(config)
    chunk = pq.ParquetFile(result.train).metadata.row_group(0).column(2)  # a feature column
    assert chunk.path_in_schema == result.features[1] and "BYTE_STREAM_SPLIT" in chunk.encodings
    assert chunk.compression.startswith("LZ4")
    assert not pq.read_schema(result.train).field(result.features[1]).nullable
    prepared = pd.read_parquet(result.train, columns=result.features)
    raw = pd.read_parquet(synthetic_dir / "train.parquet", columns=result.features)
    pd.testing.assert_frame_equal(prepared, raw.loc[prepared.index])
    name = result.features[5]
    values = table.column(name).to_numpy().copy()
    values[raw.index.get_loc(prepared.index[-1])] = 7  # in a row prepare keeps
    table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.int8()))
    pq.write_table(table, dataset / "train.parquet", write_statistics=statistics)
    with pytest.raises(DataError, match=rf"train.parquet: column {name}: feature values outside 0..4"):
        prepare(config)


# ---- validate filters a raw file on data_type while reading ------------------------------------

def mixed_frame(n: int = 12) -> pd.DataFrame:
    """Validation rows interleaved with rows of another data_type."""
    data_type = np.where(np.arange(n) % 3 == 1, "validation", "test")
    return pd.DataFrame({
        "era": [f"{1 + i // 4:04d}" for i in range(n)],
        "data_type": data_type,
        "feature_a": (np.arange(n) % 5).astype(np.int8),
        "feature_b": ((np.arange(n) * 3) % 5).astype(np.int8),
        "target": np.linspace(0, 1, n),
    }, index=pd.Index([f"n{i}" for i in range(n)], name="id"))


def test_read_matrix_where_keeps_only_matching_rows(tmp_path):
    frame = mixed_frame()
    path = tmp_path / "v.parquet"
    frame.to_parquet(path)
    matrix, extra = schema.read_matrix(path, ["feature_b", "feature_a"], ["era", "target"], read_bytes=1,
                                       where=("data_type", "validation"))
    kept = frame[frame.data_type == "validation"]
    assert matrix.dtype == np.int8 and matrix.shape == (len(kept), 2)
    assert matrix.tolist() == kept[["feature_b", "feature_a"]].to_numpy().tolist()
    assert list(extra.index) == list(kept.index) and list(extra.columns) == ["era", "target"]
    assert extra["target"].tolist() == kept["target"].tolist()
    with pytest.raises(DataError, match=r"v.parquet: missing 1 column\(s\): kind"):
        schema.read_matrix(path, ["feature_a"], where=("kind", "validation"))


def test_read_matrix_where_never_allocates_the_skipped_rows(tmp_path):
    """A raw validation.parquet is mostly other rows: only the kept rows may be allocated."""
    rows, features = 20_000, 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(0, 5, size=(rows, features), dtype=np.int8),
                         columns=[f"feature_{j}" for j in range(features)])
    frame["data_type"] = np.where(np.arange(rows) % 10 == 0, "validation", "test")
    path = tmp_path / "v.parquet"
    frame.to_parquet(path)
    tracemalloc.start()
    try:
        matrix, _ = schema.read_matrix(path, list(frame.columns[:features]), where=("data_type", "validation"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert matrix.shape == (rows // 10, features)
    assert peak < 0.5 * rows * features  # the whole int8 matrix would be rows * features bytes
