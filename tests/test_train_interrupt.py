"""Issue 27: `numerflow train` is safe to interrupt and to run twice. Each test runs the CLI as a
user does: real `python -m numerflow train` processes, a real SIGINT after the first epoch line,
two real processes on one --out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from numerflow.cli import app
from tests.prepared_helpers import write_prepared
from tests.helpers import runner

pytestmark = pytest.mark.slow

EPOCHS = 12  # enough that a SIGINT sent after epoch 1's line arrives mid-run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    # Rows enough for an epoch to take a noticeable moment on a busy 2-core machine.
    return write_prepared(tmp_path_factory.mktemp("interrupt") / "prepared", train_eras=20, rows_per_era=800)


def train_args(prepared: Path, out: Path, *more) -> list[str]:
    return [sys.executable, "-m", "numerflow", "train", "--data", str(prepared), "--out", str(out),
            "--epochs", str(EPOCHS), "--layers", "64,32", "--batch-size", "256", "--device", "cpu",
            "--no-memory-check", *map(str, more)]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def read_until_epoch_1(process: subprocess.Popen) -> list[str]:
    """stdout's lines up to and including the first epoch's line."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch 1/"):
            return lines
    raise AssertionError(f"no epoch line; stderr: {process.stderr.read()}")


def interrupt(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return out, err


def test_ctrl_c_says_how_to_resume_exits_130_and_resume_continues(prepared, tmp_path):
    out = tmp_path / "models" / "m.pt"
    process = start(train_args(prepared, out))
    read_until_epoch_1(process)
    _, err = interrupt(process)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"of {EPOCHS}: rerun with --resume"), err
    assert lines[0].startswith("Interrupted after epoch ")
    done = int(lines[0].split()[3])
    assert 1 <= done < EPOCHS
    assert Path(f"{out}.resume").is_file() and not out.exists()
    assert not Path(f"{out}.lock").exists()  # the lock went with the run

    resumed = subprocess.run(train_args(prepared, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(resumed after epoch {done})" in resumed.stdout
    assert resumed.stdout.splitlines()[0].startswith(f"epoch {done + 1}/{EPOCHS}")
    assert out.is_file() and not Path(f"{out}.resume").exists()


def test_a_second_train_on_the_same_out_is_refused_naming_the_first_pid(prepared, tmp_path):
    out = tmp_path / "same.pt"
    first = start(train_args(prepared, out, "--epochs", 500))  # still running while the second starts (seconds)
    try:
        read_until_epoch_1(first)
        second = subprocess.run(train_args(prepared, out), capture_output=True, text=True, timeout=600)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"Error: {out}.lock: another `numerflow train` writing {out} is running (pid {first.pid}); exiting"]
        assert "epoch" not in second.stdout
    finally:
        interrupt(first)
    assert first.returncode == 130

    # The first left a resume file: a plain rerun says it replaces it, before its first epoch.
    again = subprocess.run(train_args(prepared, out)[:-1] + ["--no-memory-check", "--epochs", "1"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0] == (f"{out}.resume: an interrupted run's resume file; starting afresh, it is replaced after "
                        "the first epoch (stop now and add --resume to continue that run instead)")
    assert lines[1].startswith("epoch 1/1")


def test_resume_with_a_mistyped_out_is_one_error_and_trains_nothing(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"the user's model")
    result = runner.invoke(app, ["train", "--data", str(prepared), "--out", "models/modle.pt", "--resume",
                                      "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --resume: no resume file models/modle.pt.resume (is --out right? the run may have finished; "
        "train without --resume to start afresh)"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt"]
    assert (tmp_path / "models" / "model.pt").read_bytes() == b"the user's model"
