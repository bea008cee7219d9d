"""The arithmetic a run trains and validates in (`--precision`): torch.autocast around the forward
passes, a gradient scaler for fp16. The weights, the optimiser's state and every checkpoint stay
float32 whatever the precision; only the matmuls (and what autocast puts with them) run narrower."""

from __future__ import annotations

import contextlib
import weakref

from numerflow.errors import ConfigError
from numerflow.options import Precision

# One gradient scaler per optimiser (fp16 only), kept while the optimiser lives: its scale carries
# over from epoch to epoch without another value threaded through every trainer.
_SCALERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def used_precision(precision: str, device) -> str:
    """The precision a run on `device` uses: `auto` resolved (bf16 on a CUDA device that supports
    it, fp32 elsewhere); an explicit precision the device cannot run is a ConfigError."""
    import torch

    precision = Precision(precision)
    if precision is Precision.auto:
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision is Precision.fp32:
        return "fp32"
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--precision {precision} runs on CUDA or the CPU, not {device.type}; use fp32")
    if precision is Precision.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this CUDA device has no bfloat16 support; use fp16 or fp32")
    return precision.value


def autocast_dtype(precision: str, device):
    """The torch dtype autocast runs in, or None for fp32 (no autocast)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[used_precision(precision, device)]


def autocast(precision: str, device):
    """torch.autocast for the run's precision on `device` (a no-op context for fp32)."""
    import torch

    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(optimizer, precision: str, device):
    """The optimiser's torch.amp.GradScaler for fp16 (float16 gradients underflow without one), the
    same one every epoch; None for the other precisions."""
    import torch

    if used_precision(precision, device) != "fp16":
        return None
    if optimizer not in _SCALERS:
        _SCALERS[optimizer] = torch.amp.GradScaler(device.type)
    return _SCALERS[optimizer]
