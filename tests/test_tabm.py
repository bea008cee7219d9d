"""TabM (model.TabM, from the tabm package's layers): the model builder's arch/k, checkpoints that
rebuild it, the numpy forward the exported pickle will use, tabm staying optional, and a TabM
trained by numerflow's own training loop."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from numerflow.checkpoint import load_checkpoint, load_model, predict_scores, save_checkpoint
from numerflow.errors import ConfigError
from numerflow.model import TABM_MISSING, MLP, ModelConfig, TabM, build_model, centre_into, parameter_groups
from numerflow.numpy_forward import build_numpy_forward, tabm_numpy_layers

tabm = pytest.importorskip("tabm")


def tabm_config(**changes) -> ModelConfig:
    values = dict(n_features=7, layers=[12, 6], activation="relu", dropout=0.0, batchnorm=False, n_outputs=2,
                  arch="tabm", k=4)
    return ModelConfig(**(values | changes))


def int8_rows(rows=50, features=7, seed=0):
    return np.random.default_rng(seed).integers(0, 5, size=(rows, features), dtype=np.int8)


def randomise_batchnorms(model, seed=0):
    """Running statistics and affines away from their start, so a folded BatchNorm is really tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if "running_mean" in name:
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.3)
            elif "running_var" in name:
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
        for name, param in model.named_parameters():
            if "affine" in name or (name.startswith("net.0.") and param.dim() == 1):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3 + (1.0 if "weight" in name else 0.0))


def test_tabm_is_built_from_tabm_layers_with_the_mlp_options():
    model = build_model(tabm_config(batchnorm=True, dropout=0.2, activation="silu"))
    assert isinstance(model, TabM)
    kinds = [type(m).__name__ for m in model.net]
    assert kinds == ["BatchNorm1d", "EnsembleView", "LinearBatchEnsemble", "SiLU", "BatchNorm1dEnsemble", "Dropout",
                     "LinearBatchEnsemble", "SiLU", "BatchNorm1dEnsemble", "Dropout", "LinearEnsemble"]
    batch_linears = [m for m in model.net if isinstance(m, tabm.LinearBatchEnsemble)]
    assert [tuple(m.weight.shape) for m in batch_linears] == [(12, 7), (6, 12)]
    assert all(m.bias is None for m in batch_linears)  # each follows a BatchNorm, whose shift is its bias
    assert all(m.k == 4 for m in batch_linears) and model.net[-1].weight.shape == (4, 6, 2)
    # TabM's initialisation: the first layer's r random signs, every other scaling ones
    assert set(batch_linears[0].r.detach().unique().tolist()) == {-1.0, 1.0}
    assert bool((batch_linears[1].r == 1).all()) and bool((batch_linears[0].s == 1).all())
    plain = build_model(tabm_config(input_batchnorm=False, batchnorm=True))
    assert type(plain.net[0]).__name__ == "EnsembleView" and plain.net[1].bias is not None


def test_training_returns_every_member_and_evaluation_their_mean():
    model = build_model(tabm_config())
    x = torch.from_numpy(int8_rows()).float()
    members = model.train()(x)
    assert members.shape == (50, 4, 2)
    assert not torch.allclose(members[:, 0], members[:, 1])  # k different members
    mean = model.eval()(x)
    assert mean.shape == (50, 2)
    torch.testing.assert_close(mean, members.mean(dim=1))
    buffer = torch.empty(x.shape)
    torch.testing.assert_close(model(centre_into(torch.from_numpy(int8_rows()), buffer), centred=True), mean)


def test_the_mlp_is_unchanged_and_its_config_does_not_mention_arch():
    config = ModelConfig(n_features=7, layers=[12, 6], batchnorm=True, n_outputs=2)
    model = build_model(config)
    assert isinstance(model, MLP)
    torch.manual_seed(0)
    keys = list(build_model(config).state_dict())
    assert keys[:6] == ["net.0.weight", "net.0.bias", "net.0.running_mean", "net.0.running_var",
                        "net.0.num_batches_tracked", "net.1.weight"]
    assert all(key.startswith("net.") for key in keys)
    assert "arch" not in config.to_dict() and "k" not in config.to_dict()
    assert ModelConfig.from_dict(config.to_dict()).arch == "mlp"  # checkpoints saved before arch existed
    assert tabm_config().to_dict()["arch"] == "tabm" and tabm_config().to_dict()["k"] == 4


@pytest.mark.parametrize("changes, problem", [({"arch": "forest"}, "unknown arch 'forest'"),
                                              ({"k": 0}, "k must be a whole number of 1 or more")])
def test_bad_arch_or_k_is_one_config_error(changes, problem):
    with pytest.raises(ConfigError, match=problem):
        build_model(tabm_config(**changes))


def test_a_tabm_checkpoint_rebuilds_the_same_network(tmp_path):
    config = tabm_config(batchnorm=True, dropout=0.1)
    model = build_model(config)
    randomise_batchnorms(model)
    features = [f"feature_{i}" for i in range(7)]
    save_checkpoint(tmp_path / "m.pt", {
        "numerflow_version": "test", "model_config": config.to_dict(), "features": features,
        "targets": ["target", "target_aux"], "predict_with": "main", "state_dict": model.state_dict(),
        "train_config": {}, "metrics": [], "best_epoch": 1})
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["model_config"]["arch"] == "tabm" and checkpoint["model_config"]["k"] == 4
    loaded = load_model(checkpoint)
    assert isinstance(loaded, TabM) and not loaded.training
    rows = int8_rows(seed=1)
    with torch.no_grad():
        expected = model.eval().double()(torch.from_numpy(rows).double())[:, 0].float().numpy()
    np.testing.assert_array_equal(predict_scores(loaded, rows), expected)


def test_the_numpy_forward_equals_the_torch_model():
    forward = build_numpy_forward()
    x = np.random.default_rng(3).normal(size=(40, 7))
    for changes in ({}, {"batchnorm": True, "activation": "silu"}, {"batchnorm": True, "input_batchnorm": False}):
        model = build_model(tabm_config(**changes)).eval()
        randomise_batchnorms(model, seed=len(changes))
        with torch.no_grad():
            expected = model(torch.from_numpy(x).float(), centred=True).double().numpy()
        got = forward(x, tabm_numpy_layers(model))
        assert got.shape == (40, 2)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_weight_decay_reaches_the_shared_weights_not_the_member_scalings():
    model = build_model(tabm_config(batchnorm=True))
    decayed, exempt = parameter_groups(model)
    decayed_ids = {id(p) for p in decayed}
    expected = {id(m.weight) for m in model.net if isinstance(m, (tabm.LinearBatchEnsemble, tabm.LinearEnsemble))}
    assert decayed_ids == expected
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


def test_without_the_tabm_package_building_tabm_is_one_error_and_the_mlp_still_builds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tabm", None)  # what Python does for a package that is not installed
    with pytest.raises(ConfigError) as raised:
        build_model(tabm_config())
    assert str(raised.value) == TABM_MISSING == "--arch tabm needs the tabm package: pip install tabm"
    assert isinstance(build_model(ModelConfig(n_features=3)), MLP)
    assert parameter_groups(build_model(ModelConfig(n_features=3)))[0]


def test_a_tabm_checkpoint_without_the_package_says_what_is_missing(tmp_path, monkeypatch):
    config = tabm_config()
    save_checkpoint(tmp_path / "m.pt", {
        "numerflow_version": "test", "model_config": config.to_dict(), "features": [f"f{i}" for i in range(7)],
        "targets": ["a", "b"], "predict_with": "main", "state_dict": build_model(config).state_dict(),
        "train_config": {}, "metrics": [], "best_epoch": 1})
    monkeypatch.setitem(sys.modules, "tabm", None)
    with pytest.raises(ConfigError, match="^--arch tabm needs the tabm package: pip install tabm$"):
        load_checkpoint(tmp_path / "m.pt")


@pytest.mark.slow
def test_nothing_but_the_tabm_builder_imports_tabm():
    code = ("import sys; import numerflow.cli.app, numerflow.checkpoint, numerflow.training.loop, "
            "numerflow.numpy_forward, numerflow.stages.export; from numerflow.model import ModelConfig, build_model; "
            "build_model(ModelConfig(n_features=3)); assert 'tabm' not in sys.modules, 'imported'; "
            "build_model(ModelConfig(n_features=3, arch='tabm', k=2)); assert 'tabm' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_numerflows_training_loop_trains_a_tabm():
    from numerflow.config import TrainConfig
    from numerflow.training.data import Rows
    from numerflow.training.loop import make_optimizer, run_epoch

    rng = np.random.default_rng(0)
    rows = int8_rows(rows=600, seed=2)
    signal = rows[:, 0].astype(np.float32) - rows[:, 1]
    targets = np.stack([signal + rng.normal(size=600), signal], axis=1).astype(np.float32) / 8 + 0.5
    data = Rows(torch.from_numpy(rows), torch.from_numpy(targets), np.repeat(np.arange(6), 100))
    torch.manual_seed(0)
    model = build_model(tabm_config(batchnorm=True))
    config = TrainConfig(lr=3e-3, batch_size=100, epochs=3)
    optimizer = make_optimizer(model, config)
    losses = [run_epoch(model, optimizer, None, data, config, epoch) for epoch in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    scores = predict_scores(model.eval(), rows)
    assert np.corrcoef(scores, signal)[0, 1] > 0.5
