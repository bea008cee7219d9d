"""prepare carries the benchmark model's predictions into the prepared files (issue 26, point 1):
real synthetic version folders, the CLI through typer's CliRunner."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from numerflow.cli import app
from tests.helpers import runner

BENCHMARK = "v52_lgbm_ender20"  # the synthetic set's benchmark column
BENCHMARK_FILES = ("train_benchmark_models.parquet", "validation_benchmark_models.parquet")


@pytest.fixture
def version(synthetic_dir, tmp_path):
    """A private copy of the shared synthetic set, free to change."""
    return shutil.copytree(synthetic_dir, tmp_path / "data" / "synthetic")


def prepare(version, out, *options):
    return runner.invoke(app, ["prepare", "--data-dir", str(version.parent), "--dataset", str(version),
                               "--out-dir", str(out), "--feature-set", "all", "--downsample", "1", *options])


def assert_one_error_and_nothing_written(result, out, *words):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert all(word in lines[0] for word in words), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_benchmark_is_carried_by_id_with_nan_where_the_file_has_none(version, tmp_path):
    out = tmp_path / "prepared"
    result = prepare(version, out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["benchmark"]
    assert entry["column"] == "benchmark" and entry["source_column"] == BENCHMARK
    for split in ("train", "validation"):
        prepared = pd.read_parquet(out / f"{split}.parquet")
        assert prepared["benchmark"].dtype == np.float32
        source = pd.read_parquet(version / f"{split}_benchmark_models.parquet")[BENCHMARK]
        expected = source.reindex(prepared.index).astype(np.float32)  # NaN for ids the file lacks
        np.testing.assert_array_equal(prepared["benchmark"].to_numpy(), expected.to_numpy())
        covered = prepared["benchmark"].notna()
        assert entry[split]["rows"] == int(covered.sum()) and entry[split]["rows_prepared"] == len(prepared)
        assert entry[split]["eras"] == prepared.loc[covered, "era"].nunique()
    train_entry = entry["train"]
    assert 0 < train_entry["eras"] < train_entry["eras_prepared"]  # the training benchmark starts late
    assert entry["validation"]["rows"] == entry["validation"]["rows_prepared"]
    line = next(line for line in result.output.splitlines() if line.strip().startswith("benchmark"))
    assert f"'{BENCHMARK}'" in line
    assert f"train {train_entry['rows']:,} of {train_entry['rows_prepared']:,} rows" in line
    assert f"({train_entry['eras']} of {train_entry['eras_prepared']} eras)" in line


def test_explicit_column_is_used(version, tmp_path):
    for name in BENCHMARK_FILES:  # a second model in both files
        frame = pd.read_parquet(version / name)
        frame["v52_lgbm_other"] = 1 - frame[BENCHMARK]
        frame.to_parquet(version / name)
    out = tmp_path / "prepared"
    result = prepare(version, out, "--benchmark", "v52_lgbm_other")
    assert result.exit_code == 0, result.output
    prepared = pd.read_parquet(out / "validation.parquet")
    source = pd.read_parquet(version / "validation_benchmark_models.parquet")["v52_lgbm_other"]
    np.testing.assert_array_equal(prepared["benchmark"], source.reindex(prepared.index).astype(np.float32))
    assert json.loads((out / "manifest.json").read_text())["benchmark"]["source_column"] == "v52_lgbm_other"


def test_without_benchmark_files_prepare_works_as_before_and_says_so(version, tmp_path):
    for name in BENCHMARK_FILES:
        (version / name).unlink()
    out = tmp_path / "prepared"
    result = prepare(version, out)
    assert result.exit_code == 0, result.output
    assert "prepared without benchmark predictions" in result.output
    assert "benchmark" not in pd.read_parquet(out / "train.parquet").columns
    assert "benchmark" not in json.loads((out / "manifest.json").read_text())


def test_explicit_benchmark_without_its_file_is_one_error(version, tmp_path):
    (version / "train_benchmark_models.parquet").unlink()
    out = tmp_path / "prepared"
    assert_one_error_and_nothing_written(prepare(version, out, "--benchmark", BENCHMARK), out,
                                         "train_benchmark_models.parquet", "not found")


def test_a_column_that_is_not_there_is_one_error(version, tmp_path):
    out = tmp_path / "prepared"
    assert_one_error_and_nothing_written(prepare(version, out, "--benchmark", "v9_nope"), out,
                                         "v9_nope", BENCHMARK)  # names what is available


def test_default_column_missing_prepares_without_it(version, tmp_path):
    for name in BENCHMARK_FILES:
        pd.read_parquet(version / name).rename(columns={BENCHMARK: "someone_elses"}).to_parquet(version / name)
    out = tmp_path / "prepared"
    result = prepare(version, out)
    assert result.exit_code == 0, result.output
    assert "no main benchmark column" in result.output and "someone_elses" in result.output
    assert "benchmark" not in pd.read_parquet(out / "validation.parquet").columns


def test_predictions_that_cover_none_of_the_rows_are_one_error_and_keep_the_previous_set(version, tmp_path):
    out = tmp_path / "prepared"
    assert prepare(version, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name in BENCHMARK_FILES:
        frame = pd.read_parquet(version / name)
        frame.index = pd.Index([f"x{i}" for i in range(len(frame))], name="id")
        frame.to_parquet(version / name)
    result = prepare(version, out)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "covers none" in lines[0], result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous set, whole
