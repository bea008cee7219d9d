"""The choices numerflow's options accept, defined once. The CLI (through typer) and the Python
API both use these; each is a `str` Enum, so `Loss.corr == "corr"` and plain strings keep working
in settings files, checkpoints and keyword arguments."""

from __future__ import annotations

import math
import numbers
import os
import re
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from numerflow.errors import ConfigError, OptionError


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
            raise OptionError(option, f"'{value}' is not one of {', '.join(cls.names())}") from None


class Loss(Choice):
    mse = "mse"
    corr = "corr"  # negative per-era Pearson; batches are drawn within eras


class Arch(Choice):
    """The network train builds (numerflow/model.py)."""
    mlp = "mlp"
    tabm = "tabm"  # TabM: k MLPs sharing their weights (the optional tabm package)


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
    payout = "payout"  # CORR x a + MMC x b per era (weights in the space file); --cv: BMC in MMC's place
    bmc_mean = "bmc_mean"  # mean per-era BMC against the benchmark model (the prepared `benchmark` column)
    bmc_last = "bmc_last"  # mean BMC of the last --last N eras (200: what Numerai's research ranks by first)


class EnsembleObjective(Choice):
    """What `numerflow ensemble` maximises at each greedy step, per era as validate scores it."""
    payout = "payout"  # CORR x 0.5 + MMC x 2 per era (sweep's payout weights); needs the meta model on the rows
    corr_mean = "corr_mean"
    corr_sharpe = "corr_sharpe"
    bmc_mean = "bmc_mean"  # mean per-era BMC against a benchmark model (train/validation_benchmark_models.parquet)
    bmc_last = "bmc_last"  # mean BMC of the last --last N eras that have a benchmark value


class SelectOn(Choice):
    oof = "oof"  # the candidates' out-of-fold predictions of training eras
    validation = "validation"  # their predictions of validation eras: an explicit opt-in


class FitOn(Choice):
    train = "train"  # all training eras
    all = "all"  # training and validation eras (for live use)


class Pruner(Choice):
    median = "median"  # optuna's MedianPruner
    halving = "halving"  # optuna's SuccessiveHalvingPruner
    none = "none"


class Scheme(Choice):
    """How `numerflow cv` chooses each fold's training eras around its test block."""
    blocked = "blocked"  # every other era (minus the embargo)
    expanding = "expanding"  # walk-forward: only the eras before the test block (minus the embargo)


class Precision(Choice):
    """The arithmetic of training and per-epoch validation (torch.autocast); weights stay float32."""
    auto = "auto"  # bf16 on CUDA devices that support it, else fp32
    fp32 = "fp32"
    bf16 = "bf16"  # bfloat16 autocast (CUDA, and the CPU)
    fp16 = "fp16"  # float16 autocast with a gradient scaler


# --- one definition per option -------------------------------------------------------------------
# Each stage's settings dataclass (config.py) declares its fields with `option(...)`: the field's
# default, its help text and how the command line reads it, written once. cli/ builds each
# command's options from these fields, and python_api.py each function's signature and docstring.


@dataclass(frozen=True)
class CommandLine:
    """How one settings field appears on the command line and in help()."""

    help: str  # the one help text: `numerflow <command> --help` and help(numerflow.<command>)
    flag: str | None = None  # the option's name(s) when not --<field-name>, e.g. "--batchnorm/--no-batchnorm"
    envvar: str | None = None  # an environment variable that sets it (NUMERFLOW_*)
    min: float | None = None  # bounds: StageSettings refuses values outside them (exit 2), --help shows them
    max: float | None = None
    parse: Callable[[str], object] | None = None  # the command line's text → the field's value ("512,256" → [512, 256])
    choices: type[Choice] | None = None  # the Enum whose values the field takes
    check: Callable[[object], str | None] | None = None  # the value → why it is refused, or None
    on_command_line: bool = True  # False: a Python-only field (a DataFrame, a dict of models)

    def problem(self, value, whole_number: bool = False) -> str | None:
        """Why the field refuses `value` (its choices already parsed): its bounds, then its check.
        The one check of a value, for the command line and the Python API alike."""
        problem = bounds_problem(value, self.min, self.max, whole_number)
        if problem is None and self.check is not None:
            problem = self.check(value)
        return problem


def option(default=None, *, help: str, factory: Callable[[], object] | None = None, **command_line) -> object:
    """A settings field: its default (or `factory` for a list), its help and its command-line form
    (CommandLine's other fields). Used as `epochs: int = option(6, help="...", min=1)`."""
    metadata = {"option": CommandLine(help=help, **command_line)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def command_line_of(settings_field) -> CommandLine:
    """The CommandLine that `option()` stored on a dataclass field."""
    return settings_field.metadata["option"]


def flag_of(settings_field) -> str:
    """The option's name on the command line, as error messages name it: --report for report_dir."""
    spec = command_line_of(settings_field)
    if spec.flag is not None:
        return spec.flag.split("/")[0].split(" ")[0]
    return "--" + settings_field.name.replace("_", "-")


# --- bounds and checks ----------------------------------------------------------------------------
# A check is a function: the value → why it is refused, or None. Each declares, with @refuses,
# values it refuses, so tests/test_option_bounds.py hands them to the command line and the API.


def holds_whole_numbers(hint) -> bool:
    """A field typed int or int | None: its bounds take whole numbers only."""
    return hint is int or typing.get_args(hint) == (int, type(None))


def refuses(*examples):
    """Mark a check with values it refuses (its declaration, read by the bounds test)."""
    def mark(check):
        check.refuses = examples
        return check
    return mark


# Devices are not a fixed list (cuda:N), so they are checked by pattern; whether the device is
# there is checked where it is used (the checkpoint/training code's resolve_device).
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps", re.IGNORECASE)


@refuses("tpu")
def device_problem(value) -> str | None:
    """Why `value` is not a device name (auto, cpu, cuda, cuda:N, mps), or None when it is one."""
    if isinstance(value, str) and DEVICE_PATTERN.fullmatch(value.strip()):
        return None
    return f"'{value}' is not a device (choose {DEVICES})"


def _number_text(number) -> str:
    """0.0 → '0', 0.99 → '0.99', 2**32-1 → '4294967295' (as typer wrote the bounds before)."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def bounds_text(low, high) -> str | None:
    """The bounds as --help shows them: 0<=x<=0.99, x>=1 (None without bounds)."""
    if low is None and high is None:
        return None
    if high is None:
        return f"x>={_number_text(low)}"
    if low is None:
        return f"x<={_number_text(high)}"
    return f"{_number_text(low)}<=x<={_number_text(high)}"


def bounds_problem(value, low, high, whole_number: bool = False) -> str | None:
    """Why `value` is not a number within [low, high], or None (None, or no bounds: nothing to
    check). The wording is the one the command line used when typer enforced the bounds, so
    scripts that read it see no change; nan fails both comparisons."""
    if value is None or (low is None and high is None):
        return None
    kind = numbers.Integral if whole_number else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        return f"Input should be a valid {'integer' if whole_number else 'number'}, got {value!r}"
    if low is not None and not value >= low:
        return f"Input should be greater than or equal to {_number_text(low)}"
    if high is not None and not value <= high:
        return f"Input should be less than or equal to {_number_text(high)}"
    return None


def split_list(value: str | None) -> list[str] | None:
    """'a,b, c' → ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _items(value: str, what: str) -> list[str]:
    """The comma-separated items of `value`; an empty one ('256,,128') is refused, not skipped:
    it is more likely a lost number than a wish for fewer."""
    if not value.strip():
        return []  # no items at all: the field's own check words that (layer_widths)
    items = [item.strip() for item in value.split(",")]
    if "" in items:
        raise ConfigError(f"expected comma-separated {what}, got '{value}' (an empty item)")
    return items


def int_list(value: str) -> list[int]:
    """'512,256' → [512, 256]; text that is not integers is a ConfigError (exit 2 on the command
    line). Whether the numbers fit is the field's check (layer_widths), for the API too."""
    try:
        return [int(x) for x in _items(value, "integers")]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got '{value}'") from None


@refuses([0], [])
def layer_widths(widths) -> str | None:
    if not isinstance(widths, (list, tuple)) or not widths or not all(
            isinstance(w, numbers.Integral) and not isinstance(w, bool) and w >= 1 for w in widths):
        return "layer widths must be positive integers"
    return None


def float_list(value: str) -> list[float]:
    """'2,1' → [2.0, 1.0]."""
    try:
        return [float(x) for x in _items(value, "numbers")]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got '{value}'") from None


@refuses(0.0, math.inf)
def above_zero(value) -> str | None:
    """lr, --cpus-per-trial: a finite number above 0 (a `min` alone lets inf and nan through)."""
    if value is not None and not 0 < value < math.inf:
        return f"must be a number above 0, got {value}"
    return None


@refuses(math.inf)
def finite(value) -> str | None:
    if value is not None and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None


def suffix_in(*suffixes: str) -> Callable[[object], str | None]:
    """A check accepting only paths (not in-memory predictions) ending in one of `suffixes`."""
    def check(value) -> str | None:
        if isinstance(value, (str, os.PathLike)) and Path(value).suffix not in suffixes:
            return f"'{value}' must end in {' or '.join(suffixes)}"
        return None
    return refuses(Path("refused.txt"))(check)


# A name that becomes one folder (cv's OUT/NAME/, ensemble's, compare's): nothing that nests or
# climbs out of the parent folder.
FOLDER_NAME = re.compile(r"[\w.-]+")


@refuses("a/b", "..")
def folder_name(name) -> str | None:
    if name is not None and (not isinstance(name, str) or not FOLDER_NAME.fullmatch(name) or name in (".", "..")):
        return f"'{name}' is not a folder name (use letters, digits, '.', '-' and '_' only)"
    return None
