"""The MLP numerflow trains: plain PyTorch, no I/O.

Inputs are Numerai features as floats 0..4 (int8 cast at batch time); the model centres them
itself, so training, validation and prediction all feed the same raw values. With `batchnorm` the
layout is fastai's tabular learner's: BatchNorm on the inputs (unless `input_batchnorm` is off),
then per hidden layer Linear → activation → BatchNorm → Dropout, and a plain Linear head with one
output per target. A Linear right after a BatchNorm has no bias (the BN's shift is one); the first
Linear keeps its bias when there is no input BatchNorm.

The input BatchNorm is worth +0.008 validation era-Spearman on bench/quality.py, but trained as
two modules its learnable scale and shift make autograd compute the first Linear's whole input
gradient, a third (rows x features) matmul. Training runs the two as one step instead
(MLP._forward_fused_input, _NormalisedLinear); evaluation runs the modules as they are.

`arch="tabm"` builds TabM (Gorishniy et al., 2025): k MLPs sharing their Linear weights, each
with its own scalings and biases, built from the optional `tabm` package's layers (class TabM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from numerflow.errors import ConfigError

ARCHS = ("mlp", "tabm")
# train's --k default (config.TrainConfig.k): bench/tabm_k.py (one seed, small synthetic set) gave val CORR
# 0.033/0.033/0.039 at k 8/16/32 (MLP 0.024) in 59/105/126 s (MLP ~20 s): k=8 keeps 85% of the paper's
# k=32 in 47% of its time, and k=16 buys nothing over 8 (docs/train.md)
DEFAULT_K = 8
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}
FEATURE_CENTRE = 2.0  # features are 0..4: (x - 2) / 2 puts them in [-1, 1]
FEATURE_SCALE = 0.5


@dataclass
class ModelConfig:
    n_features: int
    layers: list[int] = field(default_factory=lambda: [256])  # hidden widths
    activation: str = "relu"  # relu | silu
    dropout: float = 0.0  # after each hidden layer, training only
    batchnorm: bool = False  # fastai's layout (see module docstring)
    input_batchnorm: bool = True  # with batchnorm: BN on the inputs too; True for checkpoints saved before the option existed
    n_outputs: int = 1  # one head per target, main target first
    arch: str = "mlp"  # mlp | tabm
    k: int = DEFAULT_K  # tabm only: the number of MLPs in the ensemble

    def to_dict(self) -> dict:
        """The config as saved in a checkpoint. An MLP's leaves out arch and k (its defaults), so
        MLP checkpoints stay as they were (a missing arch reads back as "mlp")."""
        values = asdict(self)
        if self.arch == "mlp":
            del values["arch"], values["k"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid model config ({exc})") from None


class Dropout(nn.Dropout):
    """nn.Dropout with a mask drawn 64 bits at a time: torch's CPU dropout draws one Bernoulli
    number per value from its generator, ~6 ms of a ~20 ms training step at 2,048 x 256 (more than
    the BatchNorm and the loss together); four 16-bit uniform levels per 64-bit draw cost ~0.3 ms.
    The drop rate is p rounded to 1/65,536 and kept values are scaled by 1 / (1 - that rate), so
    the expected output is the input, as with nn.Dropout; in eval mode it passes the input through."""

    LEVELS = 1 << 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        dropped = round(self.p * self.LEVELS)
        if dropped == 0:
            return x
        # int64 draws over the full 64-bit range, read as four int16 levels in [-32768, 32767].
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
        keep = words.view(torch.int16)[:x.numel()].view(x.shape) >= dropped - self.LEVELS // 2
        return x * keep.to(x.dtype).mul_(self.LEVELS / (self.LEVELS - dropped))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{config.activation}' (choose {', '.join(ACTIVATIONS)})")
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {config.dropout}")
        self.config = config
        after_bn = config.batchnorm and config.input_batchnorm
        blocks: list[nn.Module] = [nn.BatchNorm1d(config.n_features)] if after_bn else []
        width = config.n_features
        for hidden in config.layers:
            # A BatchNorm just before supplies the bias through its shift (fastai drops it too).
            blocks += [nn.Linear(width, hidden, bias=not after_bn), ACTIVATIONS[config.activation]()]
            after_bn = config.batchnorm
            if config.batchnorm:
                blocks.append(nn.BatchNorm1d(hidden))
            if config.dropout > 0:
                blocks.append(Dropout(config.dropout))
            width = hidden
        blocks.append(nn.Linear(width, config.n_outputs))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, centred: bool = False) -> torch.Tensor:
        """(rows, n_features) floats 0..4 → (rows, n_outputs). `centred=True`: x was already
        mapped by `centre_into` (the training loop does it in place, in one pass)."""
        if self.fuses_input_in_training() and not x.requires_grad:
            return self._forward_fused_input(x, centred)  # the input BatchNorm centres raw features itself
        x = x if centred else (x - FEATURE_CENTRE) * FEATURE_SCALE
        return self._head(self.net[:-1](x))

    def fuses_input_in_training(self) -> bool:
        """Whether a training forward runs the input BatchNorm and first Linear as one step: it
        then takes the raw features (0..4 as floats) as they are, with no centring pass."""
        return self.training and self._input_batchnorm_first()

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """The output Linear. Under autocast (train's --precision) it runs in its weights' float32:
        a bfloat16 score has 8 significant bits, so different rows' scores would tie in the ranks."""
        head = self.net[-1]
        if h.dtype == head.weight.dtype:
            return head(h)
        with torch.autocast(h.device.type, enabled=False):
            return head(h.to(head.weight.dtype))

    def _input_batchnorm_first(self) -> bool:
        """The layout starts with an input BatchNorm (with running statistics and a momentum) and a Linear."""
        first = self.net[0]
        return (isinstance(first, nn.BatchNorm1d) and first.affine and first.track_running_stats
                and first.momentum is not None and isinstance(self.net[1], nn.Linear))

    def _forward_fused_input(self, x: torch.Tensor, centred: bool) -> torch.Tensor:
        """Training forward with the input BatchNorm's affine and the first Linear as one autograd
        step (_NormalisedLinear): the same values and gradients as the two modules, without the
        (rows x features) gradient of the Linear's input that autograd would compute only to reach
        the BatchNorm's 2 x features parameters: one matmul of the three a step of the first layer
        costs on the CPU.

        Raw features (`centred=False`) need no centring pass: normalising x or (x - c) * s by its
        batch statistics gives the same values when eps is divided by s², so only the running
        statistics (kept for the centred inputs that evaluation feeds) are mapped."""
        norm, linear = self.net[0], self.net[1]
        centre, scale = (0.0, 1.0) if centred else (FEATURE_CENTRE, FEATURE_SCALE)
        eps = norm.eps / scale ** 2
        # BatchNorm's own kernel for the batch statistics and the normalised batch; no affine here.
        normalised, mean, invstd = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
        with torch.no_grad():  # the running averages BatchNorm keeps (unbiased variance), for centred inputs
            rows = x.shape[0]
            variance = (invstd.double().pow(-2) - eps).clamp_(min=0.0) * (rows / max(rows - 1, 1))
            norm.running_mean.lerp_(((mean - centre) * scale).to(norm.running_mean.dtype), norm.momentum)
            norm.running_var.lerp_((variance * scale ** 2).to(norm.running_var.dtype), norm.momentum)
        norm.num_batches_tracked.add_(1)
        h = _NormalisedLinear.apply(normalised, norm.weight, norm.bias, linear.weight, linear.bias)
        for module in list(self.net)[2:-1]:
            h = module(h)
        return self._head(h)


class _NormalisedLinear(torch.autograd.Function):
    """y = (z * scale + shift) @ weight.T (+ bias) for normalised inputs z that need no gradient,
    computed as z @ (weight * scale).T + weight @ shift (+ bias).

    The gradients of scale and shift (per input feature) come from G = grad.T @ z, the one
    (outputs x features) product that the weight's gradient also needs: d weight = G * scale +
    outer(sum grad, shift), d scale = sum over outputs of weight * G, d shift = (sum grad) @ weight."""

    @staticmethod
    def forward(ctx, z, scale, shift, weight, bias):
        ctx.save_for_backward(z, scale, shift, weight)
        ctx.has_bias = bias is not None
        # Under autocast (--precision bf16/fp16) the backward's matmuls run in the same precision
        # as the forward's (what torch.amp.custom_fwd/custom_bwd do, for whichever device this is).
        kind = z.device.type
        ctx.autocast = (kind, torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None
        # Scale and shift folded into the (outputs x features) weight rather than applied to the
        # (rows x features) batch: no batch-sized temporary (29 MB a step at 3,555 features).
        offset = weight @ shift if bias is None else torch.addmv(bias, weight, shift)
        return torch.addmm(offset, z, (weight * scale).t())

    @staticmethod
    def backward(ctx, grad):
        if ctx.autocast is None:
            return _NormalisedLinear._backward(ctx, grad)
        kind, dtype = ctx.autocast
        with torch.autocast(kind, dtype=dtype):
            return _NormalisedLinear._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        z, scale, shift, weight = ctx.saved_tensors
        grad_sum = grad.sum(0)  # (outputs,)
        products = grad.t() @ z  # (outputs, features)
        grad_weight = torch.addcmul(torch.outer(grad_sum, shift), products, scale)
        grad_scale = (weight * products).sum(0)
        grad_shift = grad_sum @ weight
        return None, grad_scale, grad_shift, grad_weight, grad_sum if ctx.has_bias else None


TABM_MISSING = "--arch tabm needs the tabm package: pip install tabm"


def import_tabm():
    """The tabm package, imported only when a TabM is built: numerflow runs without it."""
    try:
        import tabm
    except ImportError:
        raise ConfigError(TABM_MISSING) from None
    return tabm


class TabM(nn.Module):
    """TabM (Gorishniy et al., 2025, "TabM: Advancing Tabular Deep Learning with Parameter-Efficient
    Ensembling"): k MLPs trained at once that share each Linear's weight; each has its own
    BatchEnsemble scalings r, s and bias (tabm.LinearBatchEnsemble) and its own output Linear
    (tabm.LinearEnsemble). The layers are tabm's, laid out as the package's own TabM backbone
    (arch_type "tabm": r of the first layer random signs, every other scaling ones), but with the
    MLP's per-layer widths, activation, dropout and BatchNorm options (BatchNorm per head:
    tabm.BatchNorm1dEnsemble; the input BatchNorm is shared, it comes before the k copies).

    Training returns every head's prediction, (rows, k, n_outputs): the loss is the mean of the k
    heads' losses, as in the paper (losses.py flattens the k heads). Evaluation returns their mean,
    (rows, n_outputs), as the paper predicts: every caller of an MLP reads a TabM the same way."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        tabm = import_tabm()
        if config.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{config.activation}' (choose {', '.join(ACTIVATIONS)})")
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {config.dropout}")
        if not isinstance(config.k, int) or isinstance(config.k, bool) or config.k < 1:
            raise ConfigError(f"k must be a whole number of 1 or more, got {config.k!r}")
        self.config = config
        after_bn = config.batchnorm and config.input_batchnorm
        blocks: list[nn.Module] = [nn.BatchNorm1d(config.n_features)] if after_bn else []
        blocks.append(tabm.EnsembleView(k=config.k))
        width = config.n_features
        for index, hidden in enumerate(config.layers):
            scaling = ("random-signs", "ones") if index == 0 else "ones"  # TabM's initialisation
            blocks += [tabm.LinearBatchEnsemble(width, hidden, bias=not after_bn, k=config.k, scaling_init=scaling),
                       ACTIVATIONS[config.activation]()]
            after_bn = config.batchnorm
            if config.batchnorm:
                blocks.append(tabm.BatchNorm1dEnsemble(hidden, k=config.k))
            if config.dropout > 0:
                blocks.append(Dropout(config.dropout))
            width = hidden
        blocks.append(tabm.LinearEnsemble(width, config.n_outputs, k=config.k))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, centred: bool = False) -> torch.Tensor:
        """(rows, n_features) floats 0..4 → (rows, k, n_outputs) in training, the k heads' mean
        (rows, n_outputs) in evaluation. `centred=True`: x was already mapped by `centre_into`."""
        x = x if centred else (x - FEATURE_CENTRE) * FEATURE_SCALE
        h = self.net[:-1](x)
        head = self.net[-1]
        if h.dtype != head.weight.dtype:  # under autocast the head runs in float32, as the MLP's (MLP._head)
            with torch.autocast(h.device.type, enabled=False):
                out = head(h.to(head.weight.dtype))
        else:
            out = head(h)
        return out if self.training else out.mean(dim=1)

    def fuses_input_in_training(self) -> bool:
        """Never: the training loop centres TabM's inputs (the MLP's fused input step is MLP-only)."""
        return False


def centre_into(features: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = (features - 2) / 2 as float, in one pass and with no new allocation: casting and
    centring int8 rows straight into a reused buffer (a fresh 6 MB tensor per op costs more than
    the gather on a busy CPU)."""
    offset = torch.tensor(-FEATURE_CENTRE * FEATURE_SCALE, dtype=out.dtype, device=out.device)
    return torch.add(offset, features, alpha=FEATURE_SCALE, out=out)


def build_model(config: ModelConfig | dict) -> nn.Module:
    """The network `config` describes: MLP, or TabM (needs the tabm package)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if config.arch not in ARCHS:
        raise ConfigError(f"unknown arch '{config.arch}' (choose {', '.join(ARCHS)})")
    return TabM(config) if config.arch == "tabm" else MLP(config)


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Linear weights, everything else): weight decay and L1 apply to the first group only —
    decaying biases or BatchNorm scales only shrinks the model towards a constant (fastai's rule).
    TabM's ensemble Linears count as Linears (their shared weight; not the per-head scalings)."""
    linears = (nn.Linear, *_tabm_linears())
    decayed, exempt = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            (decayed if isinstance(module, linears) and name == "weight" else exempt).append(param)
    return decayed, exempt


def _tabm_linears() -> tuple[type, ...]:
    """tabm's Linear classes when tabm is loaded (a TabM model exists only then); () otherwise, so
    an MLP never imports tabm."""
    import sys

    tabm = sys.modules.get("tabm")
    return (tabm.LinearBatchEnsemble, tabm.LinearEnsemble) if tabm is not None else ()
