"""--precision: bf16 and fp16 autocast run on the CPU, so the plumbing of a GPU run is tested here —
a bf16 checkpoint is fp32 and predicts, validates and exports like any other; per-epoch validation
runs in the training precision; sweep takes the option from its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from numerflow.checkpoint import load_checkpoint, predict_scores
from numerflow.cli import app
from numerflow.config import PrepareConfig, TrainConfig
from numerflow.model import ModelConfig, build_model
from numerflow.training.data import Rows
from numerflow.training.loop import make_optimizer, run_epoch
from numerflow.training.precision import grad_scaler
from numerflow.training.validation import epoch_scores
from tests.test_export import assert_same_ranks, run_in_fresh_process
from tests.helpers import runner

TINY = ["--layers", "16", "--epochs", "2", "--batch-size", "256", "--device", "cpu"]


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("precision") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 out_dir=out)).out_dir


def numerflow_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "numerflow", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_a_bf16_checkpoint_is_fp32_and_predicts_validates_and_exports_like_any_other(prepared, synthetic_dir,
                                                                                     tmp_path):
    numerflow_cli("train", "--data", prepared, "--out", "bf16.pt", "--precision", "bf16", *TINY, cwd=tmp_path)
    checkpoint = load_checkpoint(tmp_path / "bf16.pt")
    assert checkpoint["train_config"]["precision"] == "bf16"
    assert json.loads((tmp_path / "bf16.json").read_text())["train_config"]["precision"] == "bf16"
    assert {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()} == {torch.float32}

    live = synthetic_dir / "live.parquet"
    numerflow_cli("predict", "--model", "bf16.pt", "--data", live, "--out", "numerflow.csv", cwd=tmp_path)
    predicted = pd.read_csv(tmp_path / "numerflow.csv", dtype={"id": str}).set_index("id")["prediction"]
    assert len(predicted) > 0 and predicted.between(0, 1).all()
    numerflow_cli("export", "--model", "bf16.pt", "--out", "model.pkl", cwd=tmp_path)
    assert_same_ranks(run_in_fresh_process(tmp_path / "model.pkl", live, tmp_path / "exported.csv", tmp_path),
                      predicted)
    report = json.loads(numerflow_cli("validate", "--model", "bf16.pt", "--data", prepared / "validation.parquet",
                                      "--no-report", "--json", cwd=tmp_path).stdout)
    kept = checkpoint["metrics"][checkpoint["best_epoch"] - 1]
    # The epoch was scored in bf16, validate scores in float64: the same model, close but not bit-equal.
    assert report["spearman"]["mean"] == pytest.approx(kept["val_mean"], abs=0.01)


@pytest.mark.slow
def test_auto_on_the_cpu_is_fp32_exactly(prepared, tmp_path):
    from numerflow.stages.train import train

    runs = {p: train(TrainConfig(data=prepared, out=tmp_path / f"{p}.pt", layers=[16], epochs=2, batch_size=256,
                                 device="cpu", precision=p)) for p in ("auto", "fp32")}
    auto, fp32 = (load_checkpoint(runs[p].checkpoint) for p in ("auto", "fp32"))
    assert auto["train_config"]["precision"] == fp32["train_config"]["precision"] == "fp32"
    assert auto["metrics"] == fp32["metrics"]
    for name, tensor in fp32["state_dict"].items():
        assert torch.equal(auto["state_dict"][name], tensor), name


def test_fp16_steps_through_one_gradient_scaler(prepared):
    from numerflow.training.data import read_split

    split = read_split(prepared / "train.parquet", json.loads((prepared / "manifest.json").read_text())["features"],
                       ["target"], require_main=True)
    rows = Rows(torch.from_numpy(split.features), torch.from_numpy(split.targets), split.era_codes)
    config = TrainConfig(data=prepared, layers=[16], batch_size=256, device="cpu", precision="fp16", loss="mse")
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=split.features.shape[1], layers=[16]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model, config)
    cpu = torch.device("cpu")
    losses = [run_epoch(model, optimizer, None, rows, config, epoch, device=cpu) for epoch in range(2)]
    scaler = grad_scaler(optimizer, "fp16", cpu)
    assert scaler is grad_scaler(optimizer, "fp16", cpu)  # one scaler per optimiser, kept between epochs
    assert scaler.get_scale() > 0 and scaler._scale is not None  # it scaled the losses
    assert all(np.isfinite(losses))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # and the steps were taken
    assert grad_scaler(optimizer, "bf16", cpu) is None


@pytest.mark.parametrize("precision,predict_with", [("fp32", "main"), ("bf16", "main"), ("bf16", "mean")])
def test_epoch_scores_rank_like_the_float64_scores(precision, predict_with):
    rng = np.random.default_rng(0)
    features = rng.integers(0, 5, (3000, 40), dtype=np.int8)
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=40, layers=[32], n_outputs=2)).train()
    exact = predict_scores(model, features, predict_with=predict_with)
    rows = torch.from_numpy(rng.permutation(3000)[:1000])
    scores = epoch_scores(model, torch.from_numpy(features), torch.device("cpu"), precision, predict_with)
    subset = epoch_scores(model, torch.from_numpy(features), torch.device("cpu"), precision, predict_with, rows)
    assert model.training  # scored in eval mode, handed back as it came
    assert scores.dtype == np.float32 and len(scores) == 3000
    np.testing.assert_array_equal(subset, scores[rows.numpy()])
    if precision == "fp32":
        np.testing.assert_allclose(scores, exact, rtol=1e-4, atol=1e-5)
    else:  # bf16 inputs and weights, a float32 head: a few ties more than float64, not 8 bits' worth
        assert spearmanr(scores, exact).statistic > 0.99
        assert len(np.unique(scores)) > 0.95 * len(np.unique(exact))


@pytest.mark.slow
def test_sweep_takes_precision_from_its_command_line_and_a_fixed_one_wins(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = "lr = [0.01, 0.02]\n\n[fixed]\nepochs = 1\nbatch_size = 256\nlayers = \"8\"\ndevice = \"cpu\"\n"
    for name, fixed, expected in (("cli", "", "bf16"), ("fixed", 'precision = "fp32"\n', "fp32")):
        (tmp_path / f"{name}.toml").write_text(space + fixed)
        result = runner.invoke(app, ["sweep", "--space", f"{name}.toml", "--data", str(prepared), "--trials", "2",
                                          "--pruner", "none", "--precision", "bf16"])
        assert result.exit_code == 0, result.output
        best = load_checkpoint(tmp_path / "sweeps" / name / "best.pt")
        assert best["train_config"]["precision"] == expected


def test_an_unknown_precision_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--precision", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.output


GPU_CHECK = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_without_a_cuda_device_says_so_in_one_line():
    done = subprocess.run([sys.executable, GPU_CHECK], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0 and done.stdout.count("\n") == 1 and "No CUDA device" in done.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_runs_every_step_of_its_table():
    done = subprocess.run([sys.executable, GPU_CHECK, "--device", "cpu", "--rows", "3000", "--features", "30"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    steps = [line.split(" | ")[0][2:] for line in table[1:]]
    assert [s.split()[0] for s in steps] == ["synthetic", "train", "train", "validate", "predict", "sweep"]
    scores = [float(line.rstrip(" |").rsplit("|", 1)[1]) for line in table if "train" in line or "validate" in line]
    assert len(scores) == 3 and all(-1 <= s <= 1 for s in scores)
