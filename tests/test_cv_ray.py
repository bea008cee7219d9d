"""cv --ray on a real local Ray cluster (`ray start --head`, as the sweep tests start it): the
out-of-fold predictions equal the local run's with the same seed, also when a fold's worker
process is killed once (Ray runs it again); killed twice, the command fails with one Error line
naming the fold; an address that does not answer is one Error line, fast, nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from numerflow.cli import app
from numerflow.config import PrepareConfig
from tests.test_sweep import RAY_MISSING, ray_head  # noqa: F401  (the fixture: a real `ray start --head`)
from tests.helpers import runner

pytestmark = pytest.mark.slow
pytest.importorskip("ray", reason=RAY_MISSING)

# Enough epochs that a fold runs long enough to be found and killed on a busy machine.
CV = ["--folds", "3", "--embargo", "2", "--layers", "8", "--epochs", "6", "--batch-size", "128", "--device", "cpu",
      "--seed", "5"]


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("cv_ray") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 out_dir=out)).out_dir


def cv_driver(prepared: Path, cwd: Path, name: str, *more) -> subprocess.Popen:
    args = ["cv", "--data", prepared, "--name", name, *CV, *more]
    return subprocess.Popen([sys.executable, "-m", "numerflow", *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def task_processes(title: str) -> set[int]:
    """The Ray worker processes running the task named `title` (their process title is ray::<title>)."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]) for line in listing.splitlines()
            if line.split(None, 1)[1:] and line.split(None, 1)[1].strip() == f"ray::{title}"}


def kill_task(title: str, driver: subprocess.Popen, spared: set[int], deadline_s: float = 240) -> int:
    """SIGKILL the worker process that runs task `title` (not one in `spared`) as soon as it shows."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the run ended before its fold could be killed: " + driver.stdout.read()
        running = task_processes(title) - spared
        if running:
            pid = running.pop()
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.01)
    raise AssertionError(f"no worker ran {title}")


def test_cv_on_ray_equals_the_local_run_and_a_killed_fold_is_retried_once_then_named(prepared, tmp_path, ray_head):
    # One thread here, as Ray gives a 1-CPU task (OMP_NUM_THREADS): the same sums in the same order.
    for name in ("local", "again"):
        output, _ = cv_driver(prepared, tmp_path, name).communicate(timeout=300)
        assert "Cross-validated 3 fold(s)" in output, output
    expected = pd.read_parquet(tmp_path / "cv" / "local" / "oof.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cv" / "again" / "oof.parquet"), expected)  # deterministic

    driver = cv_driver(prepared, tmp_path, "ray", "--ray", ray_head, "--cpus-per-task", 1)
    kill_task("fold 2", driver, set())  # once: Ray runs the fold again in another worker
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert "Running 3 fold(s) as Ray tasks" in output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cv" / "ray" / "oof.parquet"), expected,
                                  check_exact=False, rtol=0, atol=1e-6)

    driver = cv_driver(prepared, tmp_path, "twice", "--ray", ray_head, "--cpus-per-task", 1)
    first = kill_task("fold 1", driver, set())
    kill_task("fold 1", driver, {first})  # and its retry: the command fails naming the fold
    output, _ = driver.communicate(timeout=300)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert driver.returncode == 1 and len(errors) == 1, output
    assert "fold 1" in errors[0] and "died" in errors[0] and "Traceback" not in output
    assert not (tmp_path / "cv" / "twice" / "oof.parquet").exists()


def test_an_address_that_does_not_answer_is_one_error_line_fast(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    result = runner.invoke(app, ["cv", "--data", str(prepared), "--ray", "127.0.0.1:1", *CV])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0
    assert "--ray 127.0.0.1:1: cannot reach a Ray cluster" in result.output
    assert time.monotonic() - started < 30 and not (tmp_path / "cv").exists()
