"""model: the MLP's layouts (plain and fastai's BatchNorm layout), dropout, activations, and which
parameters weight decay and L1 reach."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from numerflow.errors import ConfigError
from numerflow.model import MLP, Dropout, ModelConfig, build_model, centre_into, parameter_groups


def layer_types(model: MLP) -> list[str]:
    return [type(m).__name__ for m in model.net]


def test_plain_layout():
    model = build_model(ModelConfig(n_features=10, layers=[8, 4], n_outputs=3))
    assert layer_types(model) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert all(m.bias is not None for m in model.net if isinstance(m, nn.Linear))
    assert model(torch.zeros(5, 10)).shape == (5, 3)


def test_batchnorm_layout_is_fastais():
    """BN on the inputs, then per hidden layer Linear (no bias) → act → BN → Dropout; plain head."""
    model = build_model({"n_features": 10, "layers": [8, 4], "activation": "silu", "dropout": 0.2,
                         "batchnorm": True, "n_outputs": 1})
    assert layer_types(model) == ["BatchNorm1d", "Linear", "SiLU", "BatchNorm1d", "Dropout",
                                  "Linear", "SiLU", "BatchNorm1d", "Dropout", "Linear"]
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    assert [m.bias is None for m in linears] == [True, True, False]
    assert [m.num_features for m in model.net if isinstance(m, nn.BatchNorm1d)] == [10, 8, 4]


def test_without_input_batchnorm_the_first_linear_keeps_its_bias():
    """input_batchnorm off: no BN on the inputs, so the first Linear has a bias (nothing before it
    shifts its inputs); the hidden layers keep fastai's layout."""
    model = build_model({"n_features": 10, "layers": [8, 4], "dropout": 0.2, "batchnorm": True,
                         "input_batchnorm": False, "n_outputs": 1})
    assert layer_types(model) == ["Linear", "ReLU", "BatchNorm1d", "Dropout",
                                  "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert [m.bias is None for m in model.net if isinstance(m, nn.Linear)] == [False, True, False]


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=6, layers=[64], dropout=0.5))
    x = torch.rand(32, 6) * 4
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_inputs_are_centred_inside_the_model():
    """0..4 features enter the network as (x - 2) / 2: 0 and 4 become -1 and 1, and an all-2 row
    (a "missing" feature group) becomes a zero input."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=3, layers=[4])).eval()
    raw = torch.tensor([[0.0, 2.0, 4.0], [2.0, 2.0, 2.0], [1.0, 3.0, 4.0]])
    expected = model.net(torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-0.5, 0.5, 1.0]]))
    assert not torch.allclose(model.net(raw), expected)  # so the check below can tell the two apart
    assert torch.allclose(model(raw), expected)
    # centre_into maps int8 rows the same way into a buffer; centred=True then skips the model's own step.
    centred = centre_into(raw.to(torch.int8), torch.empty(3, 3))
    assert torch.equal(centred, torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-0.5, 0.5, 1.0]]))
    assert torch.allclose(model(centred, centred=True), expected)


def test_parameter_groups_decay_linear_weights_only():
    model = build_model(ModelConfig(n_features=5, layers=[4, 3], batchnorm=True))
    decayed, exempt = parameter_groups(model)
    linear_weights = [m.weight for m in model.net if isinstance(m, nn.Linear)]
    assert [id(p) for p in decayed] == [id(p) for p in linear_weights]
    bn_params = [p for m in model.net if isinstance(m, nn.BatchNorm1d) for p in m.parameters()]
    head_bias = model.net[-1].bias
    assert {id(p) for p in exempt} == {id(p) for p in bn_params} | {id(head_bias)}
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


@pytest.mark.parametrize("changes, message", [({"activation": "tanh"}, "unknown activation 'tanh'"),
                                              ({"dropout": 1.0}, "dropout must be in [0, 1)")])
def test_bad_model_settings(changes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        build_model(ModelConfig(n_features=3, **changes))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.73])
def test_dropout_drops_p_of_the_values_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    dropout = Dropout(p)
    x = torch.full((2000, 500), 3.0)
    y = dropout(x)
    dropped = (y == 0).float()
    assert abs(float(dropped.mean()) - p) < 0.005
    assert abs(float(dropped.mean(dim=0).std()) - (p * (1 - p) / 2000) ** 0.5) < 0.003  # independent per value
    assert abs(float(y.mean()) - 3.0) < 0.02
    assert torch.allclose(y[y != 0], torch.tensor(3.0 / (1 - round(p * 65536) / 65536)))
    torch.manual_seed(0)
    assert torch.equal(Dropout(p)(x), y)  # the seed decides the mask
    assert torch.equal(dropout.eval()(x), x)


def test_dropout_gradient_flows_through_kept_values_only():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = Dropout(0.5)(x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.where(y != 0, 2.0, 0.0))
    assert isinstance(Dropout(0.5), torch.nn.Dropout)  # export's numpy forward skips it as nn.Dropout


@pytest.mark.parametrize("centred", [False, True])  # raw features, as the training loop feeds them; centred
def test_fused_input_batchnorm_gives_the_modules_values_and_gradients(centred):
    """Training with an input BatchNorm runs it fused with the first Linear (MLP._forward_fused_input):
    the same outputs, parameter gradients and running statistics as the modules one after another,
    whether it is given the raw features (it centres them through its statistics) or centred ones."""
    import copy

    torch.manual_seed(0)
    fused = build_model(ModelConfig(n_features=30, layers=[16, 8], batchnorm=True, input_batchnorm=True, n_outputs=2))
    with torch.no_grad():
        fused.net[0].weight.uniform_(0.5, 1.5)
        fused.net[0].bias.uniform_(-0.5, 0.5)
    plain = copy.deepcopy(fused)
    x = torch.randint(0, 5, (256, 30)).float()
    out_fused = fused((x - 2.0) * 0.5, centred=True) if centred else fused(x)
    out_plain = plain.net((x - 2.0) * 0.5)  # the modules in turn, autograd through each
    grad = torch.randn_like(out_fused)
    out_fused.backward(grad)
    out_plain.backward(grad)
    torch.testing.assert_close(out_fused, out_plain)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=name)
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # running mean/var and batch counts too
    assert fused.net[0].weight.grad.abs().sum() > 0 and fused.net[0].num_batches_tracked == 1
    fused.eval()
    plain.eval()
    torch.testing.assert_close(fused(x), plain(x))  # eval: the modules themselves
