"""Knowing before loading whether a stage fits (issue 20): train, cv, sweep, validate and predict
estimate their peak from the sizes on disk and, with the machine's available memory patched low
(psutil's answer, not the estimator), stop with one `Error:` line before reading any rows;
--no-memory-check runs anyway. The estimator reproduces the documented full-size peaks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from numerflow import memory
from numerflow.config import PrepareConfig
from tests.helpers import cli as run, error_line  # one Error-line reader for the CLI tests

GIB = 1 << 30
SPACE = 'lr = {low = 1e-3, high = 3e-2, log = true}\n[fixed]\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n'


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("memory") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 aux_targets=["none"], out_dir=out)).out_dir  # one target: the sizes below


def available(monkeypatch, n_bytes: int) -> None:
    """The machine's available memory, as psutil reports it, set to n_bytes."""
    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=n_bytes))


def no_loading(monkeypatch) -> None:
    """Reading features fails loudly: the check must come before any row is read."""
    from numerflow import schema
    from numerflow.training import data

    def loaded(*args, **kwargs):
        raise AssertionError("rows were read before the memory check")

    monkeypatch.setattr(schema, "read_matrix", loaded)
    monkeypatch.setattr(data, "read_split", loaded)


def gib_in(line: str, label: str) -> float:
    return float(re.search(label + r" (?:about )?([\d.]+) GiB", line).group(1))


def test_train_that_cannot_fit_stops_before_loading_naming_what_fits(prepared, tmp_path, monkeypatch):
    rows = sum(memory.parquet_rows(prepared / f) for f in ("train.parquet", "validation.parquet"))
    features = len(json.loads((prepared / "manifest.json").read_text())["features"])
    # Room for about a third of the rows' bytes above the fixed overhead: prepare --downsample 3 (or 4) fits.
    data_bytes = memory.train_estimate(rows, features, 1).per_worker - memory.BASE_BYTES
    available(monkeypatch, memory.BASE_BYTES + data_bytes // 3)
    no_loading(monkeypatch)
    out = tmp_path / "model.pt"
    line = error_line(run("train", "--data", prepared, "--out", out, "--epochs", 1, "--device", "cpu"))
    assert line.startswith("Error: train needs about "), line
    assert "is available" in line and "--no-memory-check" in line
    assert re.search(r"prepare --downsample [34] ", line), line
    assert "a smaller --feature-set (at most " in line
    assert not out.exists()


@pytest.mark.slow
def test_no_memory_check_trains_anyway(prepared, tmp_path, monkeypatch):
    available(monkeypatch, 1 << 20)
    out = tmp_path / "model.pt"
    result = run("train", "--data", prepared, "--out", out, "--epochs", 1, "--layers", 8, "--device", "cpu",
                 "--no-memory-check")
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_cv_stops_before_loading(prepared, tmp_path, monkeypatch):
    available(monkeypatch, 1 << 20)
    no_loading(monkeypatch)
    line = error_line(run("cv", "--data", prepared, "--out", tmp_path / "cv", "--epochs", 1, "--device", "cpu"))
    assert line.startswith("Error: cv needs about "), line
    assert gib_in(line, "but") == 0.0


def test_sweep_counts_each_worker_and_names_fewer_jobs(prepared, tmp_path, monkeypatch):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    one = memory.check_prepared(SimpleNamespace(data=prepared, memory_check=False, targets=None))
    available(monkeypatch, int(one.per_worker * 2.5))  # two trials fit, not three
    no_loading(monkeypatch)
    line = error_line(run("sweep", "--space", space, "--data", prepared, "--trials", 3, "--jobs", 3,
                          "--sweeps-dir", tmp_path / "sweeps", "--name", "m"))
    assert line.startswith("Error: sweep needs about "), line
    assert "(3 workers x " in line and "would fit: --jobs 2" in line
    assert abs(gib_in(line, "needs") - 3 * one.per_worker / GIB) < 0.01
    assert not (tmp_path / "sweeps" / "m").exists()


def test_validate_and_predict_stop_before_loading(synthetic_dir, synthetic_models, tmp_path, monkeypatch):
    model, data = synthetic_models["all"], synthetic_dir / "validation.parquet"
    available(monkeypatch, 1 << 20)
    no_loading(monkeypatch)
    line = error_line(run("validate", "--model", model, "--data", data, "--no-report", "--device", "cpu"))
    assert line.startswith("Error: validate needs about ") and "--no-memory-check" in line
    line = error_line(run("predict", "--model", model, "--data", data, "--out", tmp_path / "p.csv"))
    assert line.startswith("Error: predict needs about ")
    assert not (tmp_path / "p.csv").exists()


def test_validate_with_enough_memory_runs(synthetic_dir, synthetic_models, monkeypatch):
    available(monkeypatch, 64 * GIB)
    result = run("validate", "--model", synthetic_models["all"], "--data", synthetic_dir / "validation.parquet",
                 "--no-report", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output


# bench/full_scale.py at full size (docs/benchmarks.md, the final run): rows held x 3,555 features, 20 targets.
FULL_SCALE = [
    ("train", memory.train_estimate(3_680_000, 3555, 20), 13.02),
    ("train --downsample 4", memory.train_estimate(1_655_000, 3555, 20), 6.23),
    ("validate", memory.validate_estimate(1_000_000, 3555, 20), 4.14),
    ("predict", memory.predict_estimate(1_000_000, 3555), 4.02),
]


@pytest.mark.parametrize("stage, estimate, measured_gib", FULL_SCALE, ids=[f[0] for f in FULL_SCALE])
def test_the_estimate_is_within_15_percent_of_the_measured_full_size_peaks(stage, estimate, measured_gib):
    assert abs(estimate.total / GIB - measured_gib) <= 0.15 * measured_gib


def test_on_a_gpu_the_note_says_before_loading_whether_the_features_stay_on_it(prepared):
    """The GPU's free memory is given (no GPU here); the placement rule is the trainer's own
    (devices.GPU_RESIDENT_SHARE, train first, then validation in what is left), per sweep worker."""
    import torch

    from numerflow.devices import GPU_RESIDENT_SHARE

    config = SimpleNamespace(data=prepared, memory_check=True, targets=None, include_validation=False)
    estimate = memory.check_prepared(config)
    sizes = {name: rows * estimate.features for name, rows in estimate.split_rows.items()}
    assert list(sizes) == ["train.parquet", "validation.parquet"] and all(sizes.values())
    cuda = torch.device("cuda", 0)
    total = sum(sizes.values())
    roomy = memory.device_note(estimate, cuda, free_bytes=int(2 * total / GPU_RESIDENT_SHARE))
    assert roomy.startswith("GPU cuda:0: the int8 features") and "stay on the GPU" in roomy
    # Room for validation's features but not train's: train's stay in host memory, and the note says
    # what would keep them on the GPU.
    tight = memory.device_note(estimate, cuda, free_bytes=int(sizes["validation.parquet"] / GPU_RESIDENT_SHARE) + 1024)
    assert "of train.parquet" in tight and "stay in host memory" in tight and "validation.parquet" not in tight
    factor = int(re.search(r"prepare --downsample (\d+)", tight).group(1))
    assert factor >= 2 and total / factor < GPU_RESIDENT_SHARE * (sizes["validation.parquet"] / GPU_RESIDENT_SHARE + 1024)
    # Two sweep workers share the GPU: what fits one does not fit each of two.
    estimate.workers = 2
    shared = memory.device_note(estimate, cuda, free_bytes=int(1.5 * total / GPU_RESIDENT_SHARE))
    assert "shared by 2 workers" in shared and "stay in host memory" in shared
    assert memory.device_note(estimate, torch.device("cpu"), free_bytes=1) is None
