"""Which torch device a run uses: one place that turns `--device` into a torch.device."""

from __future__ import annotations

import os

from numerflow.errors import ConfigError


def resolve_device(name: str):
    """'auto' → CUDA, then MPS, then CPU; an explicit device that is not available is a ConfigError."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (choose auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not available in this torch build/machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps":
        if not mps_available():
            raise ConfigError(f"device '{name}' requested but MPS is not available on this machine")
    elif device.type != "cpu":
        raise ConfigError(f"unknown device '{name}' (choose auto, cpu, cuda, cuda:N or mps)")
    return device


def mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


# A tensor of features stays on the GPU when it takes less than this share of the free memory: the
# rest is the model's, the optimizer's, a batch's activations and the validation scores'.
GPU_RESIDENT_SHARE = 0.6


def gpu_free_bytes(device) -> int:
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def fits_on_gpu(n_bytes: int, device) -> bool:
    """Whether a tensor of n_bytes can live on this CUDA device with room left for the model's work."""
    return n_bytes < GPU_RESIDENT_SHARE * gpu_free_bytes(device)
