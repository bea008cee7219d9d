"""The choices numerflow's options accept, defined once. The CLI (through typer) and the Python
API both use these; each is a `str` Enum, so `Loss.corr == "corr"` and plain strings keep working
in settings files, checkpoints and keyword arguments."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str Enum whose str() is its value (so messages and JSON show `corr`, not `Loss.corr`)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def names(cls) -> list[str]:
        return [member.value for member in cls]


class Loss(Choice):
    mse = "mse"
    corr = "corr"  # negative per-era Pearson; batches are drawn within eras


class Activation(Choice):
    relu = "relu"
    silu = "silu"


class Schedule(Choice):
    onecycle = "onecycle"  # fastai's fit_one_cycle
    constant = "constant"


class PredictWith(Choice):
    main = "main"  # the main target's head
    mean = "mean"  # the mean of all heads
