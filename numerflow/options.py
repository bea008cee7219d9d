"""The choices numerflow's options accept, defined once. The CLI (through typer) and the Python
API both use these; each is a `str` Enum, so `Loss.corr == "corr"` and plain strings keep working
in settings files, checkpoints and keyword arguments."""

from __future__ import annotations

import re
from enum import Enum

from numerflow.errors import ConfigError


class Choice(str, Enum):
    """A str Enum whose str() is its value (so messages and JSON show `corr`, not `Loss.corr`)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def names(cls) -> list[str]:
        return [member.value for member in cls]

    @classmethod
    def parse(cls, value, option: str) -> str:
        """`value` (a member or its string) as the plain string settings, checkpoints and JSON
        hold; anything else is a ConfigError naming the option and its choices."""
        try:
            return cls(value).value
        except ValueError:
            raise ConfigError(f"{option}: '{value}' is not one of {', '.join(cls.names())}") from None


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


class SweepObjective(Choice):
    corr_mean = "corr_mean"  # mean per-era Numerai CORR on validation
    corr_sharpe = "corr_sharpe"
    mmc_mean = "mmc_mean"  # mean per-era MMC against the meta model
    payout = "payout"  # CORR x a + MMC x b per era (weights in the space file)


class Pruner(Choice):
    median = "median"  # optuna's MedianPruner
    halving = "halving"  # optuna's SuccessiveHalvingPruner
    none = "none"


class Scheme(Choice):
    """How `numerflow cv` chooses each fold's training eras around its test block."""
    blocked = "blocked"  # every other era (minus the embargo)
    expanding = "expanding"  # walk-forward: only the eras before the test block (minus the embargo)


# Devices are not a fixed list (cuda:N), so they are checked by pattern; whether the device is
# there is checked where it is used (the checkpoint/training code's resolve_device).
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps", re.IGNORECASE)


def device_problem(value) -> str | None:
    """Why `value` is not a device name (auto, cpu, cuda, cuda:N, mps), or None when it is one."""
    if isinstance(value, str) and DEVICE_PATTERN.fullmatch(value.strip()):
        return None
    return f"'{value}' is not a device (choose {DEVICES})"


def parse_device(value, option: str = "--device") -> str:
    """A device name as given; anything else is a ConfigError naming the option."""
    problem = device_problem(value)
    if problem:
        raise ConfigError(f"{option}: {problem}")
    return value
