"""Distributed training: the same `numerflow train` under a real torchrun with 2 CPU processes
(gloo) completes, writes from rank 0 only, and scores close to a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from numerflow.checkpoint import load_checkpoint
from tests.prepared_helpers import write_prepared
import pytest

pytestmark = pytest.mark.slow  # torchrun: left out of the quick loop

ARGS = ["train", "--layers", "16", "--batch-size", "128", "--epochs", "3", "--lr", "0.01", "--device", "cpu",
        "--targets", "target,target_aux_20", "--seed", "3",
        "--loss", "mse", "--no-batchnorm", "--dropout", "0"]  # per-rank BatchNorm statistics would differ


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Launched from the tests' working folder, so `-m numerflow` finds this checkout.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_torchrun_two_cpu_processes_match_a_single_process(tmp_path):
    prepared = write_prepared(tmp_path / "prepared")
    single = run([sys.executable, "-m", "numerflow", *ARGS, "--data", str(prepared), "--out", "single/m.pt"], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "numerflow", *ARGS, "--data", str(prepared), "--out", "ddp/m.pt"], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("Checkpoint: ddp/m.pt") == 1  # rank 0 alone reports and writes
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["m.json", "m.pt"]
    sidecar = json.loads((tmp_path / "ddp" / "m.json").read_text())
    assert sidecar["world_size"] == 2
    one, two = (load_checkpoint(tmp_path / d / "m.pt") for d in ("single", "ddp"))
    # The two ranks' validation eras were all-reduced into one score over every era.
    assert [m["val_eras_scored"] for m in two["metrics"]] == [8, 8, 8]
    best_one = one["metrics"][one["best_epoch"] - 1]["val_mean"]
    best_two = two["metrics"][two["best_epoch"] - 1]["val_mean"]
    assert best_two > 0.1 and abs(best_two - best_one) < 0.02
