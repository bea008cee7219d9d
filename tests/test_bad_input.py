"""Bad input to every command, found by an adversarial audit: each gives one `Error: ...` line and
exit 1 (a usage error and exit 2 for a bad option value), never a traceback, never a half-written or
clobbered artifact; and the secret key appears nowhere. Each test pins one fix."""

from __future__ import annotations

import json
import shutil
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from numerflow.errors import DataError
from tests.live_helpers import synthetic_models  # noqa: F401 (fixture)

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The single line a failed command printed (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def usage_error(result) -> str:
    """The `Error: ...` line of a click usage error (exit 2)."""
    assert result.exit_code == 2, result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")][-1]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


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
    matrix, extra = schema.read_matrix(path, ["feature_b", "feature_a"], ["era", "target"], batch_rows=5,
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


def test_validate_scores_only_validation_rows_of_a_raw_file(in_tmp, synthetic_dir, synthetic_models):
    """Results on a raw file holding other rows too equal those on its validation rows alone."""
    mixed_dir = in_tmp / "mixed"
    shutil.copytree(synthetic_dir, mixed_dir)
    valid = pd.read_parquet(synthetic_dir / schema.VALIDATION_FILE)
    other = valid.assign(data_type="test", target=valid["target"].sample(frac=1, random_state=0).to_numpy())
    other.index = "t" + other.index.astype(str)
    other.index.name = "id"
    pd.concat([other, valid]).sort_values("era", kind="stable").to_parquet(mixed_dir / schema.VALIDATION_FILE)
    preds = pd.DataFrame({"id": valid.index, "prediction": np.random.default_rng(1).random(len(valid))})
    preds.to_csv("preds.csv", index=False)
    for source in (["--predictions", "preds.csv"], ["--model", synthetic_models["all"]]):
        reports = []
        for folder in (synthetic_dir, mixed_dir):
            result = run("validate", *source, "--data", folder / schema.VALIDATION_FILE, "--json", "--no-report")
            assert result.exit_code == 0, result.output
            reports.append({k: v for k, v in json.loads(result.output).items() if k != "data"})
        assert reports[0] == reports[1]
        assert reports[0]["rows"] == len(valid)


# ---- malformed data files ----------------------------------------------------------------------

def test_text_feature_column_is_a_data_error(in_tmp, synthetic_dir, synthetic_models):
    live = pd.read_parquet(synthetic_dir / schema.LIVE_FILE)
    feature = next(c for c in live.columns if c.startswith("feature_"))
    live.astype({feature: str}).to_parquet("live.parquet")
    result = run("predict", "--model", synthetic_models["all"], "--data", "live.parquet", "--out", "p.csv")
    assert error_line(result) == (f"Error: live.parquet: column {feature}: feature values of type object, "
                                  f"expected integers 0..4")
    assert not (in_tmp / "p.csv").exists()


def text_target_dataset(synthetic_dir, folder):
    shutil.copytree(synthetic_dir, folder)
    train = pd.read_parquet(folder / schema.TRAIN_FILE)
    train.assign(target=train["target"].astype(str)).to_parquet(folder / schema.TRAIN_FILE)
    return folder


def test_prepare_text_target_is_a_data_error_and_keeps_the_old_output(in_tmp, synthetic_dir):
    assert run("prepare", "--data-dir", synthetic_dir.parent, "--feature-set", "small", "--out-dir", "prep").exit_code == 0
    before = {p.name: p.read_bytes() for p in (in_tmp / "prep").iterdir()}
    dataset = text_target_dataset(synthetic_dir, in_tmp / "bad")
    result = run("prepare", "--dataset", dataset.name, "--feature-set", "small", "--out-dir", "prep")
    assert error_line(result) == "Error: bad/train.parquet: column target: target values of type large_string, expected numbers"
    assert {p.name: p.read_bytes() for p in (in_tmp / "prep").iterdir()} == before  # no temp files left either


def test_validate_text_target_is_a_data_error(in_tmp, synthetic_dir, synthetic_models):
    valid = pd.read_parquet(synthetic_dir / schema.VALIDATION_FILE)
    valid.assign(target="high").to_parquet("v.parquet")
    result = run("validate", "--model", synthetic_models["all"], "--data", "v.parquet", "--no-report")
    assert error_line(result) == "Error: v.parquet: target column 'target' holds str values, not numbers"


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "no 'feature_sets' object"),
    ('{"feature_sets": [1, 2]}', "no 'feature_sets' object"),
    ('{"feature_sets": {"small": "feature_a"}}', "feature set 'small' is not a list of column names"),
])
def test_malformed_features_json(in_tmp, synthetic_dir, text, message):
    shutil.copytree(synthetic_dir, in_tmp / "ds")
    (in_tmp / "ds" / schema.FEATURES_FILE).write_text(text)
    result = run("prepare", "--dataset", "ds", "--feature-set", "small", "--out-dir", "prep")
    assert error_line(result) == f"Error: ds/features.json: {message}"
    assert not (in_tmp / "prep").exists()


def test_manifest_that_is_not_an_object(in_tmp, synthetic_dir, synthetic_models):
    shutil.copytree(synthetic_models["all"].parent / "prepared_all", in_tmp / "prep")
    (in_tmp / "prep" / "manifest.json").write_text("[1, 2]")
    message = "Error: prep/manifest.json: not a prepare manifest (expected a JSON object)"
    assert error_line(run("train", "--data", "prep", "--epochs", "1", "--device", "cpu", "--out", "m.pt")) == message
    assert error_line(run("validate", "--model", synthetic_models["all"], "--data", "prep/validation.parquet",
                          "--no-report")) == message
    assert not (in_tmp / "m.pt").exists()


def test_empty_predictions_file_names_it(in_tmp, synthetic_dir):
    (in_tmp / "p.csv").write_text("id,prediction\n")
    result = run("validate", "--predictions", "p.csv", "--data", synthetic_dir / schema.VALIDATION_FILE, "--no-report")
    assert error_line(result) == "Error: p.csv: no rows"
