"""train --arch tabm (issue 26, point 2) through the MLP's paths: a real TabM checkpoint from
`numerflow train` predicts the same through `numerflow predict` and the exported numpy-only
pickle in a fresh process; per-epoch validation, bf16 autocast and torchrun's DDP; and the
command without the tabm package is one Error line."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from numerflow.checkpoint import load_checkpoint
from numerflow.cli import app
from numerflow.config import PrepareConfig
from numerflow.model import TABM_MISSING
from tests.prepared_helpers import write_prepared
from tests.test_distributed import ARGS as DDP_ARGS
from tests.test_distributed import run as run_with_threads_of_one
from tests.test_export import run_in_fresh_process
from tests.helpers import runner

pytest.importorskip("tabm")
# `slow` marks the tests that train for real (pyproject's pytest section does not list it).
warnings.filterwarnings("ignore", "Unknown pytest.mark.slow", pytest.PytestUnknownMarkWarning)
TABM = ["--arch", "tabm", "--k", "4", "--layers", "16", "--epochs", "2", "--batch-size", "256", "--device", "cpu"]


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory):
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("tabm") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 out_dir=out)).out_dir


@pytest.fixture(scope="module")
def tabm_checkpoint(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("tabm_model") / "tabm.pt"
    result = runner.invoke(app, ["train", "--data", str(prepared), "--out", str(out), *TABM])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_a_tabm_checkpoint_keeps_its_arch_and_scores_every_epoch(tabm_checkpoint):
    checkpoint = load_checkpoint(tabm_checkpoint)
    assert checkpoint["model_config"]["arch"] == "tabm" and checkpoint["model_config"]["k"] == 4
    assert checkpoint["train_config"]["arch"] == "tabm"
    assert [row["epoch"] for row in checkpoint["metrics"]] == [1, 2]
    assert all(np.isfinite(row["val_mean"]) for row in checkpoint["metrics"])  # validated per epoch


@pytest.mark.slow
def test_predict_and_the_exported_pickle_give_the_same_ranks(tabm_checkpoint, synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    live = synthetic_dir / "live.parquet"
    # predict needs no model flags: the checkpoint rebuilds its TabM
    result = runner.invoke(app, ["predict", "--model", str(tabm_checkpoint), "--data", str(live), "--out", "p.csv"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--model", str(tabm_checkpoint), "--out", "tabm.pkl"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv("p.csv", dtype={"id": str}).set_index("id")["prediction"]
    exported = run_in_fresh_process(tmp_path / "tabm.pkl", live, tmp_path / "exported.csv", tmp_path)
    exported = exported.reindex(predicted.index)
    assert exported.notna().all() and predicted.nunique() > len(predicted) // 2
    np.testing.assert_allclose(exported.to_numpy(), predicted.to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_bf16_autocast_trains_a_tabm_with_float32_weights(prepared, tmp_path):
    out = tmp_path / "bf16.pt"
    result = runner.invoke(app, ["train", "--data", str(prepared), "--out", str(out), *TABM, "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint["train_config"]["precision"] == "bf16"
    assert {str(t.dtype) for t in checkpoint["state_dict"].values() if t.is_floating_point()} == {"torch.float32"}
    assert all(np.isfinite(row["val_mean"]) for row in checkpoint["metrics"])


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_a_tabm_like_one(tmp_path):
    prepared = write_prepared(tmp_path / "prepared")
    args = [*DDP_ARGS, "--arch", "tabm", "--k", "2"]
    single = run_with_threads_of_one([sys.executable, "-m", "numerflow", *args, "--data", str(prepared),
                                      "--out", "single/m.pt"], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = run_with_threads_of_one([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                   "2", "-m", "numerflow", *args, "--data", str(prepared), "--out", "ddp/m.pt"],
                                  tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("Checkpoint: ddp/m.pt") == 1
    assert json.loads((tmp_path / "ddp" / "m.json").read_text())["world_size"] == 2
    one, two = (load_checkpoint(tmp_path / d / "m.pt") for d in ("single", "ddp"))
    assert two["model_config"]["arch"] == "tabm"
    best_one = one["metrics"][one["best_epoch"] - 1]["val_mean"]
    best_two = two["metrics"][two["best_epoch"] - 1]["val_mean"]
    assert best_two > 0.1 and abs(best_two - best_one) < 0.03


# The CLI in a fresh process where `import tabm` fails, as where the package is not installed.
WITHOUT_TABM = "import sys; sys.modules['tabm'] = None; from numerflow.cli import app; app(sys.argv[1:], prog_name='numerflow')"


@pytest.mark.slow
def test_arch_tabm_without_the_package_is_one_error_line_and_writes_nothing(tmp_path):
    data = write_prepared(tmp_path / "prepared")
    done = subprocess.run([sys.executable, "-c", WITHOUT_TABM, "train", "--data", str(data), "--out",
                           str(tmp_path / "m.pt"), *TABM], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [f"Error: {TABM_MISSING}"]
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()
