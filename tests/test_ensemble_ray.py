"""ensemble --fit --ray on a real local Ray cluster (`ray start --head`, as the sweep tests start it):
the members' checkpoints predict exactly as the local --fit's with the same seeds; an address that
does not answer is one Error line, fast, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numerflow.cli import app
from numerflow.config import PrepareConfig
from tests.test_sweep import RAY_MISSING, ray_head  # noqa: F401  (the fixture: a real `ray start --head`)
from tests.helpers import runner

pytestmark = pytest.mark.slow
pytest.importorskip("ray", reason=RAY_MISSING)

TINY = {"layers": [8], "epochs": 2, "batch_size": 256, "device": "cpu", "lr": 0.01, "folds": 2, "embargo": 2}


@pytest.fixture(scope="module")
def candidates(synthetic_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Two cv runs (seeds 0 and 1) on a prepared synthetic set: the ensemble's candidates."""
    import numerflow
    from numerflow.stages.prepare import prepare

    root = tmp_path_factory.mktemp("ensemble_ray")
    prepared = prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                     out_dir=root / "prepared")).out_dir
    for seed in (0, 1):
        numerflow.cv(data=prepared, out=root / "cv", name=f"s{seed}", seed=seed, **TINY, say=None)
    return root, prepared


def ensemble_cli(root: Path, name: str, *more) -> subprocess.CompletedProcess:
    # One thread, as Ray gives a 1-CPU task (OMP_NUM_THREADS): the same sums in the same order.
    args = ["ensemble", "cv/s0", "cv/s1", "--size", "3", "--fit", "--device", "cpu", "--name", name, *more]
    return subprocess.run([sys.executable, "-m", "numerflow", *map(str, args)], cwd=root, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def member_predictions(folder: Path, prepared: Path) -> list[np.ndarray]:
    from numerflow import schema
    from numerflow.checkpoint import load_checkpoint, load_model, predict_scores

    record = json.loads((folder / "ensemble.json").read_text())
    out = []
    for member in record["members"]:
        checkpoint = load_checkpoint(folder / member["checkpoint"])
        features, _ = schema.read_matrix(prepared / schema.VALIDATION_FILE, checkpoint["features"])
        out.append(predict_scores(load_model(checkpoint), features))
    return out


def test_ensemble_fit_on_ray_equals_the_local_fit(candidates, ray_head):
    root, prepared = candidates
    for name in ("local", "again"):
        result = ensemble_cli(root, name)
        assert result.returncode == 0, result.stdout + result.stderr
    expected = member_predictions(root / "ensembles" / "local", prepared)
    assert expected and all(np.array_equal(a, b) for a, b in
                            zip(member_predictions(root / "ensembles" / "again", prepared), expected))  # deterministic

    result = ensemble_cli(root, "ray", "--ray", ray_head, "--cpus-per-task", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as Ray tasks" in result.stdout
    local = json.loads((root / "ensembles" / "local" / "ensemble.json").read_text())
    on_ray = json.loads((root / "ensembles" / "ray" / "ensemble.json").read_text())
    assert on_ray["members"] == local["members"]
    assert on_ray["fitted"] == local["fitted"]
    got = member_predictions(root / "ensembles" / "ray", prepared)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_an_address_that_does_not_answer_is_one_error_line_fast(candidates, monkeypatch):
    root, _ = candidates
    monkeypatch.chdir(root)
    started = time.monotonic()
    result = runner.invoke(app, ["ensemble", "cv/s0", "cv/s1", "--fit", "--name", "bad", "--ray", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0
    assert "--ray 127.0.0.1:1: cannot reach a Ray cluster" in result.output
    assert time.monotonic() - started < 30 and not (root / "ensembles" / "bad").exists()
