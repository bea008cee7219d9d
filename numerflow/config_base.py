"""What every settings dataclass in config.py is built from: the default folders, numerflow.toml's
reader (SettingsFile), the checks options share, StageSettings (choices, checks and paths applied
to every field) and the options several stages share, one function each so each help text is
written once."""

from __future__ import annotations

import functools
import math
import os
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from numerflow.errors import ConfigError, OptionError
from numerflow.files import read_text
from numerflow.options import (command_line_of, device_problem, flag_of, float_list, folder_name, holds_whole_numbers,
                               option)

CONFIG_FILE = "numerflow.toml"
DEFAULT_DATA_DIR = Path("data")  # download writes data/<version>/, prepare data/prepared/
DEFAULT_MODELS_DIR = Path("models")
DEFAULT_PREDICTIONS_DIR = Path("predictions")
DEFAULT_RECEIPTS_DIR = Path("receipts")
DEFAULT_REPORTS_DIR = Path("reports")
# Seeds are 0..2**32-1: numpy's Generator refuses negative seeds, torch.manual_seed overflows past
# 2**64-1, and numpy's legacy np.random.seed takes 32 bits; one range for every command and the API.
SEED_MAX = 2**32 - 1
DEFAULT_CV_DIR = Path("cv")


@dataclass
class SettingsFile:
    """numerflow.toml as read once per run: its command tables and [models.<name>] tables."""

    path: Path
    tables: dict

    @property
    def models(self) -> dict:
        return self.tables.get("models", {})


def settings_path() -> Path:
    return Path(os.environ.get("NUMERFLOW_CONFIG") or CONFIG_FILE)


def load_settings(path: str | os.PathLike | None = None) -> SettingsFile:
    """numerflow.toml (`path`, else NUMERFLOW_CONFIG, else the working folder's); no tables if
    the working folder has none. A file that NUMERFLOW_CONFIG names must exist; anything there
    that is not a readable UTF-8 TOML file (a folder, another encoding) is an error, never ignored.
    An unreadable file is the OSError naming it, which the CLI reports."""
    from_env = path is None and bool(os.environ.get("NUMERFLOW_CONFIG"))
    path = Path(path) if path is not None else settings_path()
    if not path.exists():
        if from_env or path != Path(CONFIG_FILE):
            raise ConfigError(f"{path}: file not found" + (" (named by NUMERFLOW_CONFIG)" if from_env else ""))
        return SettingsFile(path, {})
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (a settings file must be a TOML file)")
    text = read_text(path, ConfigError)
    try:
        return SettingsFile(path, tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def weights_problem(weights: list[float] | None, n_models: int) -> str | None:
    """Why ensemble `weights` do not fit `n_models` checkpoints, or None when they do (None: equal)."""
    if weights is None:
        return None
    if len(weights) != n_models:
        return f"got {len(weights)} weight(s) for {n_models} --model(s)"
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not 0 < sum(weights) < math.inf:
        return "weights must be non-negative numbers with a positive sum"
    return None


class StageSettings:
    """Shared by every stage's dataclass: each field's choices, bounds (min, max) and check (from
    its option()) are applied, and strings become Paths where a field holds paths, so
    `numerflow.train(dropout=1.5)` and `numerflow train --dropout 1.5` are refused with the same
    OptionError (the CLI turns it into a usage error, exit 2) and hand the stage the same values."""

    def __post_init__(self):
        self.apply_options()

    def apply_options(self) -> None:
        """Check and normalise every field as its option() declares (again, for settings changed
        after they were built)."""
        cls = type(self)
        for f in fields(self):
            value = getattr(self, f.name)
            spec = command_line_of(f)
            if spec.choices is not None:
                value = spec.choices.parse(value, flag_of(f))
            elif isinstance(value, (str, os.PathLike)) and _holds_paths(cls, f.name):
                value = Path(value)
            elif isinstance(value, (list, tuple)) and _holds_paths(cls, f.name):
                value = [Path(v) for v in value]
            problem = spec.problem(value, whole_number=f.name in _whole_number_fields(cls))
            if problem:
                raise OptionError(flag_of(f), problem)
            setattr(self, f.name, value)


@functools.cache
def _path_fields(cls) -> frozenset:
    hints = typing.get_type_hints(cls)
    return frozenset(name for name, hint in hints.items() if "Path" in str(hint))


def _holds_paths(cls, name: str) -> bool:
    return name in _path_fields(cls)


@functools.cache
def _whole_number_fields(cls) -> frozenset:
    """Fields typed int (or int | None): their bounds take whole numbers only."""
    hints = typing.get_type_hints(cls)
    return frozenset(name for name, hint in hints.items() if holds_whole_numbers(hint))


def check_weights(weights: list[float] | None, models: list[Path]) -> None:
    problem = weights_problem(weights, len(models))
    if problem:
        raise OptionError("--weights", problem)


# Options that several stages share: one function each, so each help text is written once.
def data_dir_option():
    return option(DEFAULT_DATA_DIR, help="Folder holding <version>/ and prepared/.", envvar="NUMERFLOW_DATA_DIR")


def version_option(help="Dataset folder holding live.parquet (default: the newest)."):
    return option(None, help=help, envvar="NUMERFLOW_VERSION")


def device_option(default: str):
    # whether the device is there is checked where it is used (resolve_device)
    return option(default, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.", envvar="NUMERFLOW_DEVICE",
                  check=device_problem)


def name_option(default: str | None, help: str):
    """--name of cv, ensemble and compare: one folder under their output folder."""
    return option(default, help=help, check=folder_name)


def models_option():
    # Empty means "not given": models/model.pt unless --ensemble is (default_models), so that an
    # explicit --model models/model.pt beside --ensemble is refused, not silently ignored.
    return option(factory=list, flag="--model",
                  help="Checkpoint; repeat for a rank-averaged ensemble (default: models/model.pt).")


def weights_option():
    return option(None, help="Ensemble weights W1,W2,... (default: equal).", parse=float_list)


def neutralize_option():
    return option(0.0, help="Remove this proportion of per-era feature exposure, then re-rank.", min=0.0, max=1.0)


def neutralize_benchmark_option():
    # None: a fitted --ensemble's stored proportion (ensemble.json), else 0
    return option(None, min=0.0, max=1.0,
                  help="Per era, remove this proportion (0..1) of the gaussianised prediction's projection on the "
                       "gaussianised benchmark model, then re-rank (default: an --ensemble's stored value, else 0).")


def last_option():
    return option(200, help="bmc_last: the number of last eras whose BMC is averaged.", min=1)


def ensemble_proportion_problem(value) -> str | None:
    """Why an `ensemble --neutralize-benchmark` value is refused: it is auto or a number in 0..1."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"expected auto or a number within 0..1, got '{value}'"
    return None if 0.0 <= number <= 1.0 else f"expected auto or a number within 0..1, got {value}"


def prepared_data_option(help="Prepared folder (default: DATA_DIR/prepared)."):
    return option(None, help=help)


# Issue 20: every stage that loads features estimates its peak memory first (numerflow/memory.py).
def memory_check_option():
    return option(True, flag="--memory-check/--no-memory-check",
                  help="Estimate peak memory before loading and stop if it cannot fit (--no-memory-check: try anyway).")


# Issue 28: MLflow tracking (numerflow/tracking.py, numerflow/tracking_views.py) of train, cv, sweep,
# ensemble, validate and compare; NUMERFLOW_TRACK=0 turns it off for the Python API too.
def track_option():
    return option(True, flag="--track/--no-track", envvar="NUMERFLOW_TRACK",
                  help="Log this run to MLflow (with the mlflow extra; where: docs/tracking.md); "
                       "--no-track: log nothing.")
