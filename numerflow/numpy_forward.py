"""numerflow's networks (model.MLP and model.TabM, eval mode) as numpy, for the numpy-only pickle
that export builds: `numpy_layers` reads the weights out (mlp_numpy_layers, tabm_numpy_layers),
`build_numpy_forward` makes the one forward pass that runs either layer list.

Each layer is a tuple, float64 arrays:
  ("linear", w_t, bias)               nn.Linear: x @ w_t + bias (bias None when the Linear has none)
  ("relu",), ("silu",)                the activation
  ("affine", scale, shift)            BatchNorm with its running statistics folded in; shapes
                                      (features,) for the shared input BatchNorm, (k, width) per member
  ("members", k)                      the k members' copies of the input: (rows, f) -> (rows, k, f)
  ("batch_linear", r, w_t, s, bias)   tabm.LinearBatchEnsemble: ((x * r) @ w_t) * s + bias
  ("member_linear", w, bias)          tabm.LinearEnsemble, each member's own (in, out) matrix
  ("mean_members",)                   the members' mean prediction, as TabM predicts
"""

from __future__ import annotations

from numerflow.errors import CheckpointError


def numpy_layers(model) -> list[tuple]:
    """The network's layers (eval mode) as numpy tuples, whichever arch it is."""
    return tabm_numpy_layers(model) if getattr(model.config, "arch", "mlp") == "tabm" else mlp_numpy_layers(model)


def mlp_numpy_layers(model) -> list[tuple]:
    """The MLP's layers (eval mode) as numpy tuples: linear, relu, silu, and affine for BatchNorm
    with its running statistics folded in; dropout is dropped."""
    from torch import nn

    layers = []
    for module in model.net:
        if isinstance(module, nn.Linear):
            layers.append(("linear", _array(module.weight).T.copy(), _array(module.bias)))
        elif isinstance(module, nn.ReLU):
            layers.append(("relu",))
        elif isinstance(module, nn.SiLU):
            layers.append(("silu",))
        elif isinstance(module, nn.BatchNorm1d):
            layers.append(("affine", *_folded(module, module.weight, module.bias)))
        elif isinstance(module, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise CheckpointError(f"cannot export a {type(module).__name__} layer (supported: Linear, ReLU, "
                                  f"SiLU, BatchNorm1d, Dropout)")
    return layers


def tabm_numpy_layers(model) -> list[tuple]:
    """The TabM's layers (eval mode) as numpy tuples (see the module docstring); dropout is dropped."""
    from torch import nn

    layers = []
    for module in model.net:
        kind = type(module).__name__
        if isinstance(module, nn.BatchNorm1d):
            layers.append(("affine", *_folded(module, module.weight, module.bias)))
        elif kind == "BatchNorm1dEnsemble":
            k, width = module.affine.weight.shape
            scale, shift = _folded(module.impl, module.affine.weight.reshape(-1), module.affine.bias.reshape(-1))
            layers.append(("affine", scale.reshape(k, width), shift.reshape(k, width)))
        elif kind == "EnsembleView":
            layers.append(("members", module.k))
        elif kind == "LinearBatchEnsemble":
            layers.append(("batch_linear", _array(module.r), _array(module.weight).T.copy(), _array(module.s),
                           _array(module.bias)))
        elif kind == "LinearEnsemble":
            layers.append(("member_linear", _array(module.weight), _array(module.bias)))
        elif isinstance(module, nn.ReLU):
            layers.append(("relu",))
        elif isinstance(module, nn.SiLU):
            layers.append(("silu",))
        elif isinstance(module, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise CheckpointError(f"cannot export a {kind} layer of a TabM")
    layers.append(("mean_members",))
    return layers


def _array(tensor):
    return None if tensor is None else tensor.detach().double().numpy()


def _folded(norm, weight, bias):
    """(scale, shift) of a BatchNorm in eval mode: its running statistics and affine as one affine."""
    invstd = (norm.running_var.double() + norm.eps).rsqrt()
    scale = invstd if weight is None else weight.detach().double() * invstd
    shift = -norm.running_mean.double() * scale + (0.0 if bias is None else bias.detach().double())
    return scale.numpy(), shift.numpy()


def build_numpy_forward():
    """`forward(x, layers)`: (rows, features) float64, already centred as model.centre_into does,
    → (rows, outputs). Built inside a function so that cloudpickle stores it by value, with no
    reference to numerflow (the exported pickle runs where numerflow is not installed)."""

    def forward(x, layers):
        import numpy as np

        for layer in layers:
            kind = layer[0]
            if kind == "linear":
                x = x @ layer[1]
                if layer[2] is not None:
                    x += layer[2]
            elif kind == "relu":
                x = np.maximum(x, 0.0)
            elif kind == "silu":
                x = x / (1.0 + np.exp(-x))
            elif kind == "affine":
                x = x * layer[1] + layer[2]
            elif kind == "members":
                x = np.repeat(x[:, None, :], layer[1], axis=1)
            elif kind == "batch_linear":
                x = ((x * layer[1]) @ layer[2]) * layer[3]
                if layer[4] is not None:
                    x += layer[4]
            elif kind == "member_linear":  # (k, rows, in) @ (k, in, out), back to (rows, k, out)
                x = np.matmul(x.transpose(1, 0, 2), layer[1]).transpose(1, 0, 2) + layer[2]
            elif kind == "mean_members":
                x = x.mean(axis=1)
            else:
                raise ValueError(f"unknown layer {kind}")
        return x

    return forward
