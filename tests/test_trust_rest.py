"""Issue 27, the rest: compare's folder replaced whole under kill -9, predict's --ensemble with
--model, diagnostics naming the command that predicts every validation id, --loss's one error
line, plain help, and a constant series' Sharpe. Through the CLI on tiny real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from numerflow import schema
from numerflow.cli import app
from numerflow.config import PrepareConfig, SyntheticConfig
from numerflow.files import check_set, publish_folder, recover_folder
from tests.helpers import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare
    from numerflow.synthetic import write_synthetic

    data_dir = tmp_path_factory.mktemp("trust_rest") / "data"
    write_synthetic(SyntheticConfig(data_dir=data_dir, eras=30, rows_per_era=100, features=8, seed=3))
    return prepare(PrepareConfig(data_dir=data_dir, feature_set="all", downsample=1, embargo=2)).out_dir


def prediction_files(prepared: Path, folder: Path, count: int) -> list[Path]:
    rows = pd.read_parquet(prepared / schema.VALIDATION_FILE)
    rng = np.random.default_rng(7)
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        values = rows[schema.TARGET].to_numpy() + (i + 1) * rng.standard_normal(len(rows))
        paths.append(folder / f"model{i}.csv")
        pd.DataFrame({schema.ID: rows.index.astype(str), schema.PREDICTION: values}).to_csv(paths[-1], index=False)
    return paths


# --- 1. compare's folder is replaced whole ------------------------------------------------------

def whole_set(folder: Path) -> int:
    """The --last of the one run whose files `folder` holds, after checking that every file is
    that run's (each matches compare.json's SHA-256 record, and compare.csv names its models)."""
    summary = json.loads((folder / "compare.json").read_text())
    records = {name: {"sha256": r["sha256"]} for name, r in summary["files"].items()}  # hash every file
    check_set(folder, "compare.json", records)
    assert sorted(pd.read_csv(folder / "compare.csv")["model"]) == sorted(m["model"] for m in summary["models"])
    assert set(pd.read_parquet(folder / "per_era.parquet")["model"]) == {m["model"] for m in summary["models"]}
    assert {p.name for p in folder.iterdir()} == {*summary["files"], "compare.json"}
    return summary["last"]


def compare_command(files, prepared: Path, out: Path, last: int) -> list[str]:
    return [sys.executable, "-m", "numerflow", "compare", *map(str, files), "--data",
            str(prepared / schema.VALIDATION_FILE), "--compare-dir", str(out), "--name", "c", "--device", "cpu",
            "--last", str(last)]


@pytest.mark.slow
def test_kill_9_during_compare_leaves_the_old_set_or_the_new_one_and_no_temporaries(prepared, tmp_path):
    files = prediction_files(prepared, tmp_path / "predictions", 3)
    out = tmp_path / "compare"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMERFLOW_TRACK": "0"}
    started = time.monotonic()
    subprocess.run(compare_command(files, prepared, out, 3), env=env, check=True, capture_output=True)
    took = time.monotonic() - started
    assert whole_set(out / "c") == 3

    current = 3
    for kill in range(10):  # staggered from start-up to past the end of a run
        new = 10 + kill
        job = subprocess.Popen(compare_command(files[: 2 + kill % 2], prepared, out, new), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(took * (0.3 + 0.08 * kill))
        job.send_signal(signal.SIGKILL)
        job.wait()
        final = out / "c"
        if not final.exists():  # killed between its two renames: the old set waits beside it
            (old,) = out.glob(".c.old-*")
            assert whole_set(old) == current
            recover_folder(final)  # what the next run (or a reader) does first
        assert whole_set(final) in (current, new)
        current = whole_set(final)

    subprocess.run(compare_command(files, prepared, out, 40), env=env, check=True, capture_output=True)
    assert whole_set(out / "c") == 40
    assert sorted(p.name for p in out.iterdir()) == ["c"]  # no hidden temporaries left


def dead_pid() -> int:
    job = subprocess.Popen([sys.executable, "-c", "pass"])
    job.wait()
    return job.pid


def test_an_old_copy_left_between_the_two_renames_comes_back_and_leftovers_go(tmp_path):
    final = tmp_path / "c"
    with publish_folder(final, "compare.json", {"last": 1}) as members:
        members.path("compare.csv").write_text("old\n")
    final.rename(tmp_path / f".c.old-{dead_pid()}")  # a writer killed after its first rename
    leftover = tmp_path / f".c.{dead_pid()}-x1.tmp"  # and another's temporary folder
    leftover.mkdir()
    (leftover / "compare.csv").write_text("half")

    with pytest.raises(RuntimeError):  # a failing writer changes nothing, but recovers first
        with publish_folder(final, "compare.json", {"last": 2}) as members:
            members.path("compare.csv").write_text("new\n")
            raise RuntimeError("stop")
    assert (final / "compare.csv").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]

    with publish_folder(final, "compare.json", {"last": 2}) as members:
        members.path("per_era.parquet").write_text("new\n")
    assert sorted(p.name for p in final.iterdir()) == ["compare.json", "per_era.parquet"]  # replaced whole
    assert json.loads((final / "compare.json").read_text())["last"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# --- 2. predict --ensemble with --model; 4. a bad option value is one line -------------------------

def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("model", ["models/model.pt", "models/other.pt"])
def test_predict_refuses_an_ensemble_beside_an_explicit_model_even_the_default_one(model, tmp_path):
    result = runner.invoke(app, ["predict", "--ensemble", str(tmp_path / "e"), "--model", model,
                                 "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2
    assert "give --model/--weights or --ensemble, not both" in one_error_line(result)
    assert not (tmp_path / "p.csv").exists()


def test_predict_without_model_or_ensemble_uses_models_model_pt(tmp_path, monkeypatch):
    from numerflow.config import PredictConfig

    monkeypatch.chdir(tmp_path)
    assert PredictConfig().models == [Path("models/model.pt")]
    result = runner.invoke(app, ["predict", "--data", str(tmp_path / "live.parquet")])
    assert result.exit_code == 1
    assert "models/model.pt" in one_error_line(result)


@pytest.mark.parametrize("args, expected", [
    (["train", "--loss", "cor"], "Error: Invalid value for '--loss': 'cor' is not one of mse, corr"),
    (["train", "--epochs", "0"], "Error: Invalid value for '--epochs': "),
    (["compare"], "Error: Missing argument"),
])
def test_a_bad_option_value_is_one_error_line_and_exit_2(args, expected):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert one_error_line(result).startswith(expected)


# --- 6. a constant series has no Sharpe ----------------------------------------------------------

@pytest.mark.parametrize("value", [0.001, 0.0123, -0.02, 0.0])
def test_a_constant_series_has_std_0_and_no_sharpe(value):
    from numerflow.metrics import summarize

    summary = summarize(np.full(10, value))
    assert summary["std"] == 0.0 and np.isnan(summary["sharpe"])
    varied = summarize(np.array([value, value + 0.01, value - 0.005]))
    assert np.isclose(varied["sharpe"], varied["mean"] / np.std([value, value + 0.01, value - 0.005]))


# --- 3. the command diagnostics names predicts every validation id -------------------------------

def test_the_predict_command_diagnostics_names_covers_every_validation_id(synthetic_dir, synthetic_models,
                                                                          tmp_path, monkeypatch):
    from numerflow.stages.diagnostics import covering, validation_ids
    from numerflow.workflow.validation_rows import read_predictions

    monkeypatch.chdir(tmp_path)
    data = synthetic_dir / schema.VALIDATION_FILE
    result = runner.invoke(app, ["predict", "--model", str(synthetic_models["all"]), "--data", str(data),
                                 "--out", "validation_predictions.csv"])
    assert result.exit_code == 0, result.output
    ids = validation_ids(data)
    predictions = covering(read_predictions("validation_predictions.csv"), ids, "p", data)  # raises if one is missing
    assert list(predictions.index) == list(ids)


# --- 5. compare says what it sorted by ------------------------------------------------------------

def test_compare_says_what_it_sorted_by(prepared, tmp_path):
    files = prediction_files(prepared, tmp_path / "predictions", 2)
    result = runner.invoke(app, ["compare", *map(str, files), "--data", str(prepared / schema.VALIDATION_FILE),
                                 "--compare-dir", str(tmp_path / "compare"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "compare" / "compare" / "compare.csv")
    if table["payout_mean"].isna().all():
        assert "not sorted: payout_mean is nan for every model (rows in the order given)" in result.output
        assert list(table["model"]) == [f.name for f in files] or list(table["model"]) == [f.stem for f in files]
    else:
        assert "sorted by payout_mean (highest first)" in result.output
    assert "sorted by corr_sharpe (highest first)" in runner.invoke(app, [
        "compare", *map(str, files), "--data", str(prepared / schema.VALIDATION_FILE), "--compare-dir",
        str(tmp_path / "compare"), "--device", "cpu", "--sort", "corr_sharpe"]).output


@pytest.mark.parametrize("command, argument", [("compare", "MODEL"), ("ensemble", "CANDIDATE")])
def test_help_names_arguments_and_options_without_python_types(command, argument):
    """Issue 27: no `<list[Path]>` or `{CANDIDATES...}...` in --help: an argument is its metavar."""
    result = runner.invoke(app, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert f"{{{argument}}}..." in result.output.splitlines()[0]
    assert f"\n  {argument}  " in result.output
    assert "<list[" not in result.output and "list[Path]" not in result.output


def test_compare_never_replaces_a_folder_of_files_it_did_not_write(tmp_path):
    """compare swaps its whole folder in (publish_folder): a folder holding a user's files is refused."""
    from numerflow.errors import DataError
    from numerflow.files import publish_folder

    folder = tmp_path / "compare" / "mine"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    with pytest.raises(DataError, match=r"mine: holds notes.txt, which this command did not write"):
        with publish_folder(folder, "compare.json", {"x": 1}) as files:
            files.path("compare.csv").write_text("a\n")
    assert (folder / "notes.txt").read_text() == "my notes" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    # the command's own earlier set is replaced as before
    own = tmp_path / "compare" / "own"
    for text in ("first\n", "second\n"):
        with publish_folder(own, "compare.json", {"x": 1}) as files:
            files.path("compare.csv").write_text(text)
    assert (own / "compare.csv").read_text() == "second\n"
