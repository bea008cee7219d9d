"""train: every option changes what it should, on small prepared Parquet (tests/prepared_helpers.py:
planted signal, one auxiliary target with NaNs), plus the CLI through CliRunner on the shared synthetic set."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from numerflow import metrics
from numerflow.checkpoint import KEYS as CHECKPOINT_KEYS, load_checkpoint, load_model, predict_scores
from numerflow.cli import app
from numerflow.config import TrainConfig
from numerflow.devices import resolve_device
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.stages.train import train
from numerflow.training.loop import ADAM_BETAS
from numerflow.training.data import epoch_batches
from numerflow.training.losses import masked_mse, masked_negative_pearson
from tests.prepared_helpers import FEATURES, N_FEATURES, TARGETS, write_prepared
from tests.helpers import runner



@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prepared") / "prepared")


def config(prepared: Path, out: Path, **changes) -> TrainConfig:
    """A small fast recipe on the test data; tests change one option at a time."""
    base = TrainConfig(data=prepared, out=out, layers=[16], batch_size=128, epochs=3, lr=1e-2, device="cpu",
                       dropout=0.0, batchnorm=False, loss="mse")
    return replace(base, **changes)


def first_layer(state: dict) -> torch.Tensor:
    return next(v for k, v in state.items() if k.endswith("weight") and v.ndim == 2)


# --- the run and its checkpoint ------------------------------------------------------------------

@pytest.mark.slow
def test_train_writes_checkpoint_json_and_scores_the_planted_signal(prepared, tmp_path):
    result = train(config(prepared, tmp_path / "m.pt", targets=["target"]))
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert set(CHECKPOINT_KEYS) <= set(checkpoint)
    assert checkpoint["features"] == FEATURES and checkpoint["targets"] == ["target"]
    assert checkpoint["model_config"] == {"n_features": N_FEATURES, "layers": [16], "activation": "relu",
                                          "dropout": 0.0, "batchnorm": False, "input_batchnorm": True,
                                          "n_outputs": 1}
    assert [m["epoch"] for m in checkpoint["metrics"]] == [1, 2, 3]
    assert result.best["val_mean"] > 0.1  # the planted signal is strong at this size
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["metrics"] == checkpoint["metrics"] and sidecar["train_config"]["layers"] == [16]
    assert not (tmp_path / "m.pt.resume").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pt"]  # no temp files left
    assert "Best epoch" in str(result) and str(tmp_path / "m.pt") in str(result)


@pytest.mark.slow
def test_checkpoint_keeps_the_best_epochs_weights(prepared, tmp_path):
    """Rescoring the loaded model on validation gives the best epoch's recorded score."""
    result = train(config(prepared, tmp_path / "m.pt", epochs=4, lr=0.05, schedule="constant"))
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    model = load_model(checkpoint)
    frame = pd.read_parquet(prepared / "validation.parquet")
    preds = predict_scores(model, frame[FEATURES].to_numpy(np.int8))
    score = metrics.summarize(metrics.per_era_spearman(preds, frame["target"].to_numpy(), frame["era"].to_numpy()))
    best = max(m["val_mean"] for m in result.metrics)
    assert result.best["val_mean"] == best
    assert score["mean"] == pytest.approx(best, abs=1e-6)


@pytest.mark.slow
def test_same_seed_same_checkpoint_bytes_other_seed_differs(prepared, tmp_path):
    a = train(config(prepared, tmp_path / "a.pt", dropout=0.2, seed=7))
    first = (tmp_path / "a.pt").read_bytes()
    b = train(config(prepared, tmp_path / "a.pt", dropout=0.2, seed=7))  # the same --out: it is saved inside
    c = train(config(prepared, tmp_path / "c.pt", dropout=0.2, seed=8))
    assert (tmp_path / "a.pt").read_bytes() == first
    assert a.metrics == b.metrics
    sa, sc = (load_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "ac")
    assert not torch.equal(first_layer(sa), first_layer(sc)) and a.metrics != c.metrics


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(prepared, tmp_path):
    settings = dict(epochs=4, dropout=0.1, batchnorm=True, weight_decay=0.01)
    full = train(config(prepared, tmp_path / "full.pt", **settings))

    def stop_after_epoch_2(line):
        if line.startswith("epoch 2/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config(prepared, tmp_path / "cut.pt", **settings), say=stop_after_epoch_2)
    assert (tmp_path / "cut.pt.resume").is_file() and not (tmp_path / "cut.pt").exists()
    resumed = train(config(prepared, tmp_path / "cut.pt", resume=True, **settings))
    assert resumed.resumed_from == 2 and resumed.metrics == full.metrics
    s_full, s_cut = (load_checkpoint(tmp_path / n)["state_dict"] for n in ("full.pt", "cut.pt"))
    assert all(torch.equal(s_full[k], s_cut[k]) for k in s_full)
    assert not (tmp_path / "cut.pt.resume").exists()


def test_resume_with_changed_settings_is_refused(prepared, tmp_path):
    with pytest.raises(Interrupt):
        train(config(prepared, tmp_path / "m.pt"), say=lambda line: (_ for _ in ()).throw(Interrupt()))
    with pytest.raises(ConfigError, match=r"m.pt.resume: cannot resume with different settings: lr \(0.01 → 0.02\)"):
        train(config(prepared, tmp_path / "m.pt", lr=0.02, resume=True))


def test_resume_file_without_the_schedule_state_is_one_error(prepared, tmp_path):
    """A resume file written before the schedule's state was saved cannot continue the one-cycle."""
    with pytest.raises(Interrupt):
        train(config(prepared, tmp_path / "m.pt"), say=lambda line: (_ for _ in ()).throw(Interrupt()))
    state = torch.load(tmp_path / "m.pt.resume", weights_only=True)
    assert state["scheduler_state"] is not None
    del state["scheduler_state"]
    torch.save(state, tmp_path / "m.pt.resume")
    with pytest.raises(CheckpointError, match=r"m.pt.resume: written by an older numerflow; train again without"):
        train(config(prepared, tmp_path / "m.pt", resume=True))


def test_resume_without_a_resume_file_is_refused(prepared, tmp_path):
    """Issue 27: --resume never starts a fresh run (a mistyped --out would overwrite a model)."""
    with pytest.raises(ConfigError, match=r"--resume: no resume file .*m.pt.resume"):
        train(config(prepared, tmp_path / "m.pt", epochs=1, resume=True))
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_early_stopping_stops_before_epochs(prepared, tmp_path):
    # A constant, too-high learning rate overfits this small set within a few epochs.
    result = train(config(prepared, tmp_path / "m.pt", epochs=40, patience=2, lr=0.05, schedule="constant",
                          layers=[64]))
    assert result.stopped_early and result.epochs_run < 40
    assert result.epochs_run == result.best_epoch + 2
    assert len(load_checkpoint(tmp_path / "m.pt")["metrics"]) == result.epochs_run


# --- options --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_l1_shrinks_weights(prepared, tmp_path):
    train(config(prepared, tmp_path / "plain.pt"))
    train(config(prepared, tmp_path / "l1.pt", l1=1e-3))
    plain, sparse = (first_layer(load_checkpoint(tmp_path / n)["state_dict"]) for n in ("plain.pt", "l1.pt"))
    assert sparse.abs().sum() < 0.7 * plain.abs().sum()


@pytest.mark.slow
def test_weight_decay_shrinks_linear_weights_only(prepared, tmp_path):
    train(config(prepared, tmp_path / "plain.pt", batchnorm=True, schedule="constant"))
    train(config(prepared, tmp_path / "wd.pt", batchnorm=True, schedule="constant", weight_decay=5.0))
    plain, decayed = (load_checkpoint(tmp_path / n)["state_dict"] for n in ("plain.pt", "wd.pt"))
    linear = [k for k, v in plain.items() if k.endswith("weight") and v.ndim == 2]
    assert all(decayed[k].norm() < 0.8 * plain[k].norm() for k in linear)
    # BatchNorm scales start at 1 and are exempt: decay 5.0 at lr 0.01 for all steps would take them
    # to about exp(-0.05 * steps) ≈ 0.1 if they were decayed.
    bn_scales = [k for k, v in decayed.items() if k.endswith("weight") and v.ndim == 1]
    assert bn_scales and all(decayed[k].mean() > 0.5 for k in bn_scales)


@pytest.mark.slow
def test_nan_auxiliary_targets_give_finite_loss_and_one_head_each(prepared, tmp_path):
    result = train(config(prepared, tmp_path / "m.pt", targets=TARGETS))
    assert all(math.isfinite(m["train_loss"]) for m in result.metrics)
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["model_config"]["n_outputs"] == 2 and checkpoint["targets"] == TARGETS
    assert result.best["val_mean"] > 0.1


@pytest.mark.slow
def test_default_targets_are_every_prepared_target(prepared, tmp_path):
    train(config(prepared, tmp_path / "m.pt", epochs=1))
    assert load_checkpoint(tmp_path / "m.pt")["targets"] == TARGETS


def test_masked_mse_skips_nan_targets():
    pred = torch.tensor([[0.5, 0.1], [0.5, 0.9]])
    target = torch.tensor([[1.0, float("nan")], [0.0, 0.9]])
    mask = ~torch.isnan(target)
    assert masked_mse(pred, torch.nan_to_num(target), mask).item() == pytest.approx((0.25 + 0.25 + 0) / 3)


def test_masked_negative_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    target[:10, 1] = np.nan
    mask = ~np.isnan(target)
    got = masked_negative_pearson(torch.tensor(pred), torch.tensor(np.nan_to_num(target)), torch.tensor(mask))
    expected = -np.mean([np.corrcoef(pred[:, 0], target[:, 0])[0, 1], np.corrcoef(pred[10:, 1], target[10:, 1])[0, 1]])
    assert got.item() == pytest.approx(expected)


@pytest.mark.slow
def test_corr_loss_trains_on_batches_within_eras(prepared, tmp_path):
    result = train(config(prepared, tmp_path / "m.pt", loss="corr", targets=TARGETS))
    assert result.best["val_mean"] > 0.1
    codes = np.repeat(np.arange(5), [30, 7, 50, 1, 12])
    order, slices = epoch_batches(len(codes), codes, 20, "corr", seed=0, epoch=0)
    batches = [order[a:b] for a, b in slices]
    # Eras cut into chunks of at most 20 // 2 rows (30 → 3 x 10, 7, 50 → 5 x 10, 12 → 2 x 6), whole
    # chunks packed into batches of at most 20 rows: fewer batches than chunks, some with two eras.
    assert all(len(b) <= 20 for b in batches) and len(batches) < 11
    assert any(len(set(codes[b])) > 1 for b in batches)
    for b in batches:  # every era's rows in a batch are whole chunks of it
        assert all(np.sum(codes[b] == era) in (6, 7, 10, 12, 13, 16, 20) for era in set(codes[b]))
    assert sorted(np.concatenate(batches)) == [i for i in range(len(codes)) if codes[i] != 3]  # 1-row era unusable


def test_corr_loss_is_the_mean_pearson_over_the_eras_in_a_batch():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(60, 2)), rng.normal(size=(60, 2))
    segments = np.repeat([0, 1, 2], [25, 30, 5])
    target[:10, 1] = np.nan  # era 0 of head 1: 15 known rows
    target[55:, 0] = np.nan  # era 2 of head 0: no known row, left out of the mean
    mask = ~np.isnan(target)
    got = masked_negative_pearson(torch.tensor(pred), torch.tensor(np.nan_to_num(target)), torch.tensor(mask),
                                  torch.tensor(segments))
    expected = [np.corrcoef(pred[segments == s][m, h], target[segments == s][m, h])[0, 1]
                for h in (0, 1) for s in (0, 1, 2) if (m := mask[segments == s, h]).sum() >= 2]
    assert len(expected) == 5 and got.item() == pytest.approx(-np.mean(expected))


def test_mse_batches_are_shuffled_each_epoch_and_drop_the_partial_batch():
    codes = np.zeros(1000, dtype=np.int64)
    o0, s0 = epoch_batches(1000, codes, 128, "mse", seed=0, epoch=0)
    o1, _ = epoch_batches(1000, codes, 128, "mse", seed=0, epoch=1)
    assert len(s0) == 7 and all(b - a == 128 for a, b in s0)
    assert len(set(o0.tolist())) == 896 and not np.array_equal(o0, o1) and not np.array_equal(o0, np.sort(o0))
    # Two ranks: disjoint shards of the same permutation, same number of steps.
    r0, t0 = epoch_batches(1000, codes, 128, "mse", seed=0, epoch=0, rank=0, world=2)
    r1, t1 = epoch_batches(1000, codes, 128, "mse", seed=0, epoch=0, rank=1, world=2)
    assert len(t0) == len(t1) == 7 and not set(r0.tolist()) & set(r1.tolist())


@pytest.mark.slow
def test_predict_with_mean_uses_every_head(prepared, tmp_path):
    train(config(prepared, tmp_path / "m.pt", epochs=1, targets=TARGETS, predict_with="mean"))
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["predict_with"] == "mean"
    model = load_model(checkpoint)
    x = np.random.default_rng(0).integers(0, 5, (300, N_FEATURES)).astype(np.int8)
    heads = model(torch.from_numpy(x).float()).detach().numpy()
    mean = predict_scores(model, x, batch_rows=64, predict_with="mean")
    main = predict_scores(model, x, batch_rows=64)
    assert mean.dtype == np.float32 and mean.shape == (300,)
    np.testing.assert_allclose(mean, heads.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(main, heads[:, 0], rtol=1e-5, atol=1e-6)


def optimizer_trace(monkeypatch, cfg: TrainConfig) -> list[tuple[float, float]]:
    """(lr, beta1) as each AdamW step of a real training run sees them."""
    seen = []
    original = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["betas"][0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    train(cfg)
    return seen


@pytest.mark.slow
def test_onecycle_has_fastais_shape_at_the_optimizer(prepared, tmp_path, monkeypatch):
    """fit_one_cycle's published shape: lr starts at lr/25, peaks at lr a quarter of the way in
    (beta1 bottoms out at 0.85 there), rises and falls by cosine, ends at lr/1e5 with beta1 back at 0.95."""
    lr = 0.01
    seen = optimizer_trace(monkeypatch, config(prepared, tmp_path / "m.pt", epochs=2, lr=lr))
    total = len(seen)
    assert total == 2 * (20 * 120 // 128)  # one step per batch, over both epochs
    lrs, betas = np.array([s[0] for s in seen]), np.array([s[1] for s in seen])
    assert lrs[0] == pytest.approx(lr / 25) and betas[0] == pytest.approx(0.95)
    peak = int(np.argmax(lrs))
    assert abs(peak - 0.25 * total) <= 1
    assert lrs[peak] == pytest.approx(lr) and betas[peak] == pytest.approx(0.85) and np.argmin(betas) == peak
    assert lrs[-1] == pytest.approx(lr / 1e5) and betas[-1] == pytest.approx(0.95)
    assert np.all(np.diff(lrs[:peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert np.all(np.diff(betas[:peak + 1]) < 0) and np.all(np.diff(betas[peak:]) > 0)
    # Cosine, not linear: a quarter of the way up the warm-up, lr has covered (1 - cos(pi/4)) / 2
    # ≈ 15% of the rise (a straight line would cover 25%).
    quarter = peak / 4
    if quarter == int(quarter):
        assert (lrs[int(quarter)] - lrs[0]) / (lr - lrs[0]) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    else:  # between two steps: both sides of the 15% mark, well short of 25%
        below, above = ((lrs[int(q)] - lrs[0]) / (lr - lrs[0]) for q in (quarter, quarter + 1))
        assert below < 0.146 < above < 0.25


@pytest.mark.slow
def test_constant_schedule_keeps_lr_and_adam_betas(prepared, tmp_path, monkeypatch):
    seen = optimizer_trace(monkeypatch, config(prepared, tmp_path / "m.pt", epochs=2, schedule="constant"))
    assert seen == [(0.01, ADAM_BETAS[0])] * (2 * (20 * 120 // 128))


# --- errors ----------------------------------------------------------------------------------------

def test_bad_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk.pt: not a numerflow checkpoint$"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: not a numerflow checkpoint$"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"missing.pt: file not found$"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint holding arbitrary objects is not loaded."""
    torch.save({"numerflow_version": "0", "payload": Path("x")}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a numerflow checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_manifest_features_missing_from_data_are_listed(tmp_path):
    folder = write_prepared(tmp_path / "p", train_eras=6, valid_eras=2, rows_per_era=20)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["features"] += ["feature_gone_a", "feature_gone_b"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"train.parquet: missing 2 column\(s\): feature_gone_a, feature_gone_b"):
        train(config(folder, tmp_path / "m.pt"))
    assert not (tmp_path / "m.pt").exists()


def test_unknown_target_and_missing_manifest(prepared, tmp_path):
    with pytest.raises(ConfigError, match=r"target\(s\) not prepared: target_nope_20"):
        train(config(prepared, tmp_path / "m.pt", targets=["target", "target_nope_20"]))
    with pytest.raises(DataError, match=r"manifest.json: file not found \(run `numerflow prepare` first\)"):
        train(config(tmp_path / "empty", tmp_path / "m.pt"))


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


# --- the command -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared_synthetic(synthetic_dir, tmp_path_factory):
    from numerflow.config import PrepareConfig
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("prep") / "prepared"
    prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", aux_targets=["all"], downsample=1,
                          out_dir=out))
    return out


@pytest.mark.slow
def test_cli_train_on_prepared_synthetic_data(prepared_synthetic, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(prepared_synthetic), "--out", str(tmp_path / "m.pt"),
                                 "--epochs", "2", "--layers", "32,16", "--batchnorm", "--activation", "silu",
                                 "--dropout", "0.1", "--batch-size", "256", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/2: train loss" in result.output and "epoch 2/2" in result.output
    assert "Best epoch" in result.output and "Checkpoint: " + str(tmp_path / "m.pt") in result.output
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["model_config"]["layers"] == [32, 16] and checkpoint["model_config"]["activation"] == "silu"


@pytest.mark.slow
def test_cli_data_dir_default_chains_from_prepare(prepared_synthetic, tmp_path):
    result = runner.invoke(app, ["train", "--data-dir", str(prepared_synthetic.parent), "--out",
                                 str(tmp_path / "m.pt"), "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_cli_unavailable_device_is_one_error_line(prepared, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    result = runner.invoke(app, ["train", "--data", str(prepared), "--out", str(tmp_path / "m.pt"),
                                 "--device", "cuda"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: device 'cuda' requested but CUDA is not available "
                                     "in this torch build/machine")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("args", [["--activation", "tanh"], ["--loss", "huber"], ["--schedule", "step"],
                                  ["--layers", "256,x"], ["--layers", "0"], ["--batch-size", "1"]])
def test_cli_bad_option_values_exit_2(prepared, tmp_path, args):
    result = runner.invoke(app, ["train", "--data", str(prepared), "--out", str(tmp_path / "m.pt"), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "m.pt").exists()


def test_cli_missing_prepared_data(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: {tmp_path / 'nothing' / 'manifest.json'}: file not found "
                                     "(run `numerflow prepare` first)")


@pytest.mark.slow
def test_resume_after_the_prepared_features_changed_is_refused(tmp_path):
    folder = write_prepared(tmp_path / "p", train_eras=6, valid_eras=2, rows_per_era=40)
    with pytest.raises(Interrupt):
        train(config(folder, tmp_path / "m.pt"), say=lambda line: (_ for _ in ()).throw(Interrupt()))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["features"] = manifest["features"][:-1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"m.pt.resume: cannot resume: the prepared data's features or targets "
                                          r"changed since it was written"):
        train(config(folder, tmp_path / "m.pt", resume=True))


# --- audit: malformed checkpoints, --out on an input, divergence -------------------------------------

@pytest.fixture(scope="module")
def good_checkpoint(prepared, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("good") / "m.pt"
    train(config(prepared, out, epochs=1))
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("change, why", [
    ({"model_config": [12, 16]}, r"model_config is not a dict"),
    ({"features": FEATURES[:-1]}, r"11 features listed but model_config n_features is 12"),
    ({"state_dict": {"net.0.weight": torch.zeros(3, 3)}}, r"weights do not fit model_config"),
])
def test_cli_malformed_checkpoint_is_one_error_line(good_checkpoint, prepared, tmp_path, change, why):
    path = tmp_path / "bad.pt"
    torch.save({**good_checkpoint, **change}, path)
    with pytest.raises(CheckpointError, match=rf"bad.pt: not a numerflow checkpoint \({why}"):
        load_checkpoint(path)
    result = runner.invoke(app, ["validate", "--model", str(path), "--data", str(prepared / "validation.parquet"),
                                 "--no-report", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: not a numerflow checkpoint (")


@pytest.mark.parametrize("target", ["train.parquet", "validation.parquet", "manifest.json", "manifest.pt", "."])
def test_cli_out_on_an_input_or_a_folder_is_refused_before_training(tmp_path, target):
    folder = write_prepared(tmp_path / "p", train_eras=6, valid_eras=2, rows_per_era=20)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = runner.invoke(app, ["train", "--data", str(folder), "--out", str(folder / target), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: --out ") and len(result.stderr.strip().splitlines()) == 1
    assert "epoch" not in result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written, nothing changed


@pytest.mark.slow
def test_cli_diverging_lr_stops_with_an_error_and_saves_nothing(prepared, tmp_path):
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["train", "--data", str(prepared), "--out", str(out), "--epochs", "2",
                                 "--lr", "1e30", "--layers", "16", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() in {f"Error: training diverged at epoch 1 (loss {v}); try a lower --lr"
                                     for v in ("nan", "inf")}
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_cli_all_nan_main_target_is_a_data_error(tmp_path):
    folder = write_prepared(tmp_path / "p", train_eras=6, valid_eras=2, rows_per_era=20)
    frame = pd.read_parquet(folder / "train.parquet")
    frame["target"] = np.float32(np.nan)
    frame.to_parquet(folder / "train.parquet")
    result = runner.invoke(app, ["train", "--data", str(folder), "--out", str(tmp_path / "m.pt"), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"Error: {folder / 'train.parquet'}: main target 'target' has no known "
                                     "values (all NaN)")
    assert not (tmp_path / "m.pt").exists()


def test_optimizer_is_torchs_fused_adamw_where_torch_has_it():
    from numerflow.config import TrainConfig
    from numerflow.model import ModelConfig, build_model
    from numerflow.training.loop import make_optimizer

    model = build_model(ModelConfig(n_features=6, layers=[4], batchnorm=True))
    optimizer = make_optimizer(model, TrainConfig())
    cpu_fused = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    assert all(group["fused"] is (True if cpu_fused else None) for group in optimizer.param_groups)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [TrainConfig().weight_decay, 0.0]
