"""train --bmc-weight (issue 26, point 2): real training on a synthetic prepared folder with
its ridge benchmark column, through the CLI (typer's CliRunner); the BMC term's effect on
validation; bad values and a missing benchmark refused with one line; cv and sweep accept
--bmc-weight, --arch and --k."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from numerflow import memory
from numerflow.checkpoint import load_checkpoint, load_model, predict_scores
from numerflow.cli import app
from numerflow.config import PrepareConfig, TrainConfig
from numerflow.metrics.scores import per_era_pearson
from numerflow.training.data import BMC_NEEDS_BENCHMARK
from tests.prepared_helpers import write_prepared
from tests.helpers import runner

# `slow` marks the tests that train for real; pyproject's pytest section (not this task's) does not
# list it, so it is declared known here rather than warned about at collection.
warnings.filterwarnings("ignore", "Unknown pytest.mark.slow", pytest.PytestUnknownMarkWarning)
SMALL = ["--layers", "16", "--epochs", "2", "--batch-size", "256", "--device", "cpu"]


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory):
    """The shared synthetic set prepared with its benchmark column (prepare's default)."""
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("bmc") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 aux_targets=["none"], out_dir=out)).out_dir  # one target, as the sizes below


def train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def one_error_line(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    if code == 1:
        assert len(lines) == 1, result.output
    return errors[0]


@pytest.mark.slow
def test_bmc_weight_trains_says_which_rows_it_uses_and_is_recorded(prepared, tmp_path):
    result = train("--data", prepared, "--out", tmp_path / "m.pt", "--bmc-weight", "0.5", *SMALL)
    assert result.exit_code == 0, result.output
    covered = json.loads((prepared / "manifest.json").read_text())["benchmark"]["train"]
    assert 0 < covered["rows"] < covered["rows_prepared"]  # the synthetic training benchmark starts late
    assert (f"BMC term: benchmark predictions on {covered['rows']:,} of {covered['rows_prepared']:,} training rows "
            f"({covered['eras']} of {covered['eras_prepared']} eras)") in result.output
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["train_config"]["bmc_weight"] == 0.5
    assert load_checkpoint(tmp_path / "m.pt")["train_config"]["bmc_weight"] == 0.5
    assert all(np.isfinite(row["train_loss"]) for row in sidecar["metrics"])


def benchmark_correlation(checkpoint, prepared) -> float:
    """Mean per-era Pearson of the model's validation scores with the (raw) benchmark column."""
    validation = pd.read_parquet(prepared / "validation.parquet")
    features = load_checkpoint(checkpoint)["features"]
    scores = predict_scores(load_model(load_checkpoint(checkpoint)), validation[features].to_numpy(np.int8))
    per_era = per_era_pearson(scores.astype(np.float64), validation["benchmark"].to_numpy(np.float64),
                              validation["era"].astype(str).to_numpy())
    return float(np.nanmean(per_era.values))


@pytest.mark.slow
def test_the_bmc_term_lowers_the_correlation_with_the_benchmark_on_validation(prepared, tmp_path):
    settings = ["--layers", "32", "--epochs", "3", "--batch-size", "512", "--device", "cpu", "--seed", "0"]
    for weight in ("0", "0.8"):
        result = train("--data", prepared, "--out", tmp_path / f"w{weight}.pt", "--bmc-weight", weight, *settings)
        assert result.exit_code == 0, result.output
    plain, aimed = (benchmark_correlation(tmp_path / f"w{w}.pt", prepared) for w in ("0", "0.8"))
    assert plain > 0.3  # the MLP alone learns much of what the ridge benchmark knows
    assert aimed < plain - 0.02, (plain, aimed)


@pytest.mark.parametrize("option, value", [("--bmc-weight", "-0.1"), ("--bmc-weight", "1.5"),
                                           ("--bmc-weight", "nan"), ("--arch", "resnet"), ("--k", "0")])
def test_bad_values_exit_2_with_one_error_line(prepared, tmp_path, option, value):
    line = one_error_line(train("--data", prepared, "--out", tmp_path / "m.pt", option, value), code=2)
    assert option in line
    assert not (tmp_path / "m.pt").exists()


def test_bmc_weight_needs_the_corr_loss(prepared, tmp_path):
    line = one_error_line(train("--data", prepared, "--out", tmp_path / "m.pt", "--bmc-weight", "0.5",
                                "--loss", "mse"))
    assert line == "Error: --bmc-weight needs --loss corr (its batches are drawn within eras)"


def test_without_a_benchmark_column_bmc_weight_is_refused_before_training(tmp_path):
    data = write_prepared(tmp_path / "prepared")  # prepared without benchmark files: no column, no record
    line = one_error_line(train("--data", data, "--out", tmp_path / "m.pt", "--bmc-weight", "0.5", *SMALL))
    assert line.startswith("Error: ") and line.endswith(BMC_NEEDS_BENCHMARK), line
    assert "has no benchmark column" in line
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()
    result = train("--data", data, "--out", tmp_path / "m.pt", *SMALL)  # W = 0 needs no benchmark
    assert result.exit_code == 0, result.output


def test_a_benchmark_covering_no_training_row_is_refused(prepared, tmp_path):
    data = shutil.copytree(prepared, tmp_path / "prepared")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["benchmark"]["train"].update(rows=0, eras=0)
    (data / "manifest.json").write_text(json.dumps(manifest))
    line = one_error_line(train("--data", data, "--out", tmp_path / "m.pt", "--bmc-weight", "1", *SMALL))
    assert "covers no training row" in line and line.endswith(BMC_NEEDS_BENCHMARK)


def test_the_memory_estimate_counts_the_benchmark_column_when_used(prepared):
    plain = memory.check_prepared(TrainConfig(data=prepared, memory_check=False))
    used = memory.check_prepared(TrainConfig(data=prepared, bmc_weight=0.3, memory_check=False))
    assert used.per_row - plain.per_row == memory.BENCHMARK_BYTES == 4


@pytest.mark.slow
def test_cv_accepts_bmc_weight_arch_and_k(prepared, tmp_path, monkeypatch):
    pytest.importorskip("tabm")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["cv", "--data", str(prepared), "--folds", "2", "--embargo", "2", "--layers", "8",
                                 "--epochs", "1", "--batch-size", "256", "--device", "cpu", "--bmc-weight", "0.5",
                                 "--arch", "tabm", "--k", "2"])
    assert result.exit_code == 0, result.output
    assert "BMC term: benchmark predictions on" in result.output
    report = json.loads((tmp_path / "cv" / "model" / "report.json").read_text())
    assert (report["settings"]["bmc_weight"], report["settings"]["arch"], report["settings"]["k"]) == (0.5, "tabm", 2)
    assert report["overall"]["rows"] > 0


SPACE = """
bmc_weight = [0.0, 0.5]
arch = ["mlp", "tabm"]
[fixed]
k = 2
epochs = 1
layers = "8"
batch_size = 256
device = "cpu"
"""


@pytest.mark.slow
def test_sweep_spaces_name_bmc_weight_arch_and_k(prepared, tmp_path, monkeypatch):
    pytest.importorskip("tabm")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.toml").write_text(SPACE)
    result = runner.invoke(app, ["sweep", "--space", "space.toml", "--data", str(prepared), "--trials", "3",
                                 "--name", "earn", "--seed", "1"])
    assert result.exit_code == 0, result.output
    trials = pd.read_csv(tmp_path / "sweeps" / "earn" / "trials.csv")
    assert (trials["state"] == "COMPLETE").all(), trials
    assert set(trials["arch"]) <= {"mlp", "tabm"} and set(trials["bmc_weight"]) <= {0.0, 0.5}


def test_a_sweep_space_with_bmc_weight_needs_a_benchmark(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_prepared(tmp_path / "prepared")
    (tmp_path / "space.toml").write_text("bmc_weight = [0.0, 0.5]\n[fixed]\nepochs = 1\n")
    line = one_error_line(runner.invoke(app, ["sweep", "--space", "space.toml", "--data", str(data), "--trials", "1"]))
    assert line.endswith(BMC_NEEDS_BENCHMARK)
    assert not (tmp_path / "sweeps").exists()
