"""Issue 27: a sweep fails loudly. The space is checked against the prepared data before any
trial; a failed trial says why on its line and in trials.csv; a sweep with no complete trial exits
1 with one `Error:` line and draws no plot; Ctrl-C says how to resume and exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from numerflow.cli import app
from tests.prepared_helpers import write_prepared
from tests.helpers import runner

SPACE = 'lr = {low = 1e-3, high = 3e-2, log = true}\nlayers = "16"\nepochs = 1\n'


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("sweep_failures") / "prepared")  # targets: target, target_aux_20


def sweep(tmp_path: Path, prepared: Path, space_text: str, *more) -> "object":
    (tmp_path / "space.toml").write_text(space_text)
    return runner.invoke(app, ["sweep", "--space", str(tmp_path / "space.toml"), "--data", str(prepared),
                                    "--sweeps-dir", str(tmp_path / "sweeps"), "--trials", "2", "--device", "cpu",
                                    *more])


def one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("space_text, more", [
    (SPACE + 'targets = ["target", "target,target_ender_20"]\n', []),  # the old docs example on a plain prepare
    (SPACE + '[fixed]\ntargets = "target_ender_20"\n', []),
    (SPACE + 'targets = ["target", "target_nope_60"]\n', ["--cv"]),
])
def test_a_target_the_data_lacks_is_one_error_before_any_trial(space_text, more, prepared, tmp_path):
    result = sweep(tmp_path, prepared, space_text, *more)
    error = one_error(result)
    assert "target(s) not prepared" in error and "available: target, target_aux_20" in error
    assert "trial" not in result.output and not (tmp_path / "sweeps").exists()


def test_cv_with_an_embargo_that_leaves_no_training_eras_is_one_error_before_any_trial(prepared, tmp_path):
    result = sweep(tmp_path, prepared, SPACE + "[cv]\nfolds = 2\nembargo = 40\n", "--cv")
    error = one_error(result)
    assert "fold 1" in error and "train.parquet" in error
    assert "trial" not in result.output and not (tmp_path / "sweeps").exists()


@pytest.mark.slow
def test_a_sweep_where_every_trial_fails_says_why_and_exits_1_without_a_plot(prepared, tmp_path):
    # A prepared folder damaged after the checks can see it: validation.parquet lost a target.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("train.parquet", "manifest.json"):
        (damaged / name).write_bytes((prepared / name).read_bytes())
    pd.read_parquet(prepared / "validation.parquet").drop(columns=["target_aux_20"]).to_parquet(
        damaged / "validation.parquet")
    (tmp_path / "space.toml").write_text(SPACE)
    run = subprocess.run([sys.executable, "-m", "numerflow", "sweep", "--space", "space.toml", "--data", str(damaged),
                          "--trials", "2", "--device", "cpu", "--no-memory-check"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    reason = f"{damaged / 'validation.parquet'}: missing 1 column(s): target_aux_20"
    trial_lines = [line for line in run.stdout.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 2 and all(line.endswith(f": {reason}") and " fail after " in line
                                         for line in trial_lines), run.stdout
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"Error: sweeps/space: no trial completed with a score (2 of 2 failed; trial 0: {reason}): "
        "see sweeps/space/trials.csv"]
    assert "Warning" not in run.stderr and "Traceback" not in run.stderr
    table = pd.read_csv(tmp_path / "sweeps" / "space" / "trials.csv")
    assert list(table["state"]) == ["FAIL", "FAIL"] and list(table["error"]) == [reason, reason]
    assert not (tmp_path / "sweeps" / "space" / "plot.png").exists()


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_saying_how_to_resume(prepared, tmp_path):
    (tmp_path / "space.toml").write_text(SPACE.replace("epochs = 1", "epochs = 3"))
    args = [sys.executable, "-m", "numerflow", "sweep", "--space", "space.toml", "--data", str(prepared),
            "--trials", "30", "--device", "cpu", "--no-memory-check", "--pruner", "none"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if line.startswith("trial 0 (1/30)"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted after trial ") and \
        lines[0].endswith(" of 30: rerun with --resume"), err
    assert 1 <= int(lines[0].split()[3]) < 30
