"""One dataclass per stage's settings, each default commented, and the one reader of
`numerflow.toml`.

Settings come from command-line flags, then NUMERFLOW_* environment variables, then
`numerflow.toml` (one table per command, e.g. `[train]`), then these defaults. cli.py applies
that order through click's `default_map`; the dataclasses are what library code receives, and
their fields are the Python API's keyword arguments (numerflow/library.py). Each dataclass checks
its choices (options.py) and turns path strings into Paths, so the API and the CLI share one check.
"""

from __future__ import annotations

import functools
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from numerflow.errors import ConfigError
from numerflow.files import read_text
from numerflow.options import Activation, Loss, PredictWith, Pruner, Schedule, Scheme, SweepObjective, parse_device

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
    An unreadable file is the OSError naming it, which cli.py reports."""
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


def seed_problem(seed) -> str | None:
    """Why `seed` cannot seed every generator a stage uses, or None when it can."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        return f"seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}"
    return None


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
    """Shared by every stage's dataclass: strings become Paths where a field holds paths, so
    `numerflow.train(data="prep")` and the CLI hand the stage the same values."""

    CHOICES: dict = {}  # field → its options.py Enum; stored as the plain string value

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.CHOICES:
                setattr(self, f.name, self.CHOICES[f.name].parse(value, "--" + f.name.replace("_", "-")))
            elif f.name == "device":
                setattr(self, f.name, parse_device(value))
            elif isinstance(value, (str, os.PathLike)) and _holds_paths(type(self), f.name):
                setattr(self, f.name, Path(value))
            elif isinstance(value, (list, tuple)) and _holds_paths(type(self), f.name):
                setattr(self, f.name, [Path(v) for v in value])


@functools.cache
def _path_fields(cls) -> frozenset:
    hints = typing.get_type_hints(cls)
    return frozenset(name for name, hint in hints.items() if "Path" in str(hint))


def _holds_paths(cls, name: str) -> bool:
    return name in _path_fields(cls)


@dataclass
class DownloadConfig(StageSettings):
    data_dir: Path = DEFAULT_DATA_DIR  # files land in <data_dir>/<version>/
    version: str | None = None  # None: the newest vX.Y that numerapi lists
    live_only: bool = False  # a weekly job needs only live data, live example preds, features.json
    round: int | None = None  # a past round's live data; None: the current round
    force: bool = False  # refetch files even when complete locally


@dataclass
class SyntheticConfig(StageSettings):
    data_dir: Path = DEFAULT_DATA_DIR  # written to <data_dir>/synthetic/
    eras: int = 120  # train + validation eras (live is one more era)
    rows_per_era: int = 500
    features: int = 120
    seed: int = 0


@dataclass
class PrepareConfig(StageSettings):
    data_dir: Path = DEFAULT_DATA_DIR
    dataset: Path | None = None  # a version folder; None: the newest one under data_dir
    feature_set: str = "medium"  # any set in features.json; medium ≈ 780 features on v5.2
    target: str = "target"
    aux_targets: list[str] = field(default_factory=list)  # ["all"] keeps every auxiliary target
    downsample: int = 4  # keep every 4th era: neighbouring eras overlap in time (targets look 20 days ahead)
    embargo: int = 4  # eras dropped between the last train era and validation (weekly eras, 20-day targets)
    out_dir: Path | None = None  # None: <data_dir>/prepared
    bin_features: int | None = None  # continuous (pre-2019) features: N equal-frequency buckets per era (N=5)


@dataclass
class TrainConfig(StageSettings):
    CHOICES = {"activation": Activation, "predict_with": PredictWith, "loss": Loss, "schedule": Schedule}

    data: Path = DEFAULT_DATA_DIR / "prepared"  # folder with prepare's train/validation.parquet
    out: Path = DEFAULT_MODELS_DIR / "model.pt"  # a <name>.json with config and metrics goes beside it
    layers: list[int] = field(default_factory=lambda: [256])  # hidden layer widths
    activation: str = "relu"  # Activation: relu | silu
    dropout: float = 0.5  # after each hidden layer; chosen by bench/quality.py (0.3 and 0.5 beat 0 clearly)
    batchnorm: bool = True  # fastai's layout: Linear → act → BN per layer (+0.01 corr in bench/quality.py)
    input_batchnorm: bool = True  # with batchnorm, BN on the inputs too: +0.008 mean era-Spearman in bench/quality.py
    # (0.0748 against 0.0666, three seeds); trained fused with the first Linear (model.py): 0.76-0.85x the bare loop's rows/s
    targets: list[str] | None = None  # None: every target prepare kept, main target first
    predict_with: str = "main"  # PredictWith: main: the main target's head; mean: the mean of all heads
    loss: str = "corr"  # Loss: mse | corr (negative mean per-era Pearson within one-era batches); corr won bench/quality.py
    lr: float = 1e-2  # peak lr of the one-cycle schedule (fastai's tabular default; 1e-3 underfits in 6 epochs)
    weight_decay: float = 0.0  # decoupled (AdamW), not on biases and BatchNorm
    l1: float = 0.0  # L1 penalty on weights
    batch_size: int = 2048
    schedule: str = "onecycle"  # Schedule: onecycle (fastai's fit_one_cycle) | constant
    epochs: int = 6
    patience: int | None = None  # early stopping on validation mean era-Spearman; None: off
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    resume: bool = False  # continue an interrupted run from its last completed epoch


@dataclass
class CvConfig(TrainConfig):
    """train's settings for every fold, plus how the folds are drawn (numerflow/stages/cv.py)."""
    CHOICES = {**TrainConfig.CHOICES, "scheme": Scheme}

    out: Path = DEFAULT_CV_DIR  # results go to <out>/<name>/ (oof.parquet, report.json, folds/)
    resume: bool = False  # skip the folds an interrupted run of the same name and settings finished
    folds: int = 5  # test folds: contiguous blocks of training eras (expanding: one more block, never tested)
    scheme: str = "blocked"  # Scheme: blocked: train on every other era | expanding: only on earlier eras
    embargo: int = 13  # eras (by era number, as prepare's --embargo) dropped from training on each side of a test block
    include_validation: bool = False  # add validation.parquet as a last fold, trained on the training eras before it
    name: str = "model"  # the run's folder under `out`


@dataclass
class ValidateConfig(StageSettings):
    model: Path | None = DEFAULT_MODELS_DIR / "model.pt"
    predictions: Path | object | None = None  # score predictions instead of a model: an id,prediction file,
    # or (Python) a DataFrame/Series indexed by id or with an id column
    data: Path | list[Path] | None = None  # None: <data_dir>/prepared/validation.parquet; a list: rows scored as one set
    data_dir: Path = DEFAULT_DATA_DIR
    report_dir: Path | None = None  # None: reports/<model or predictions file stem>/
    write_report: bool = True  # report.json, per_era.csv, per_era.png into report_dir
    target: str | None = None  # None: the prepared manifest's main target, else "target"
    exposure: bool = True  # feature exposure + feature-neutral CORR (one least-squares fit per era)
    benchmark: str | None = None  # BMC's benchmark column; None: the version's main one (v53_lgbm_ender20)
    device: str = "auto"  # model mode: where the forward passes run
    batch_size: int = 65536  # model mode: rows per forward pass (bounds memory)


@dataclass
class PredictConfig(StageSettings):
    models: list[Path] = field(default_factory=lambda: [DEFAULT_MODELS_DIR / "model.pt"])
    weights: list[float] | None = None  # ensemble weights; None: equal
    data: Path | None = None  # None: the current round's live file under data_dir
    data_dir: Path = DEFAULT_DATA_DIR
    out: Path | None = None  # .csv or .parquet to write; None: no file unless `write`
    write: bool = False  # with no `out`: write predictions/<model>_<round>.csv (the CLI always writes)
    neutralize: float = 0.0  # proportion of per-era feature exposure to remove (0: none)
    batch_size: int = 65536  # rows per forward pass: bounds memory on large files
    version: str | None = None  # dataset folder under data_dir holding live.parquet; None: the newest
    device: str = "cpu"  # live is ~7k rows: the CPU is fast enough and always there


@dataclass
class SubmitConfig(StageSettings):
    predictions: Path | None = None  # None: predictions/<model>_<round>.csv of the current round
    model_name: str | None = None  # Numerai model name; resolved to its id through numerapi
    data_dir: Path = DEFAULT_DATA_DIR
    live: Path | None = None  # live file the ids are checked against; None: current round's
    receipts_dir: Path = DEFAULT_RECEIPTS_DIR
    dry_run: bool = False  # run every check, upload nothing
    force: bool = False  # submit again even if a receipt says this round and model are done
    version: str | None = None  # dataset folder under data_dir holding live.parquet; None: the newest


@dataclass
class RoundConfig(StageSettings):
    models: dict | None = None  # [models.<numerai model name>] tables; None: those in config_file
    config_file: Path = field(default_factory=settings_path)  # numerflow.toml (NUMERFLOW_CONFIG): `models` come from it
    data_dir: Path = DEFAULT_DATA_DIR  # live data goes to <data_dir>/<version>/; the lock file lives here
    version: str | None = None  # dataset version; None: the newest Numerai lists
    predictions_dir: Path = DEFAULT_PREDICTIONS_DIR  # <model name>_<round>.csv per model
    receipts_dir: Path = DEFAULT_RECEIPTS_DIR  # a receipt per round and model: never submit twice
    device: str = "cpu"  # live is ~7k rows: the CPU is enough
    dry_run: bool = False  # predict and check every model, upload nothing


@dataclass
class ExportConfig(StageSettings):
    models: list[Path] = field(default_factory=lambda: [DEFAULT_MODELS_DIR / "model.pt"])  # several: rank-averaged
    weights: list[float] | None = None  # ensemble weights; None: equal
    neutralize: float = 0.0  # proportion of per-era feature exposure to remove (0: none)
    out: Path | None = None  # None: the first checkpoint's path with .pkl


DEFAULT_SWEEPS_DIR = Path("sweeps")


@dataclass
class SweepConfig(StageSettings):
    CHOICES = {"objective": SweepObjective, "pruner": Pruner}

    space: Path | None = None  # the search space TOML (docs/sweep.md); None only with `show`
    data: Path = DEFAULT_DATA_DIR / "prepared"  # prepared folder; with Ray, a path every node sees
    trials: int = 20  # trials that finish (complete, pruned or failed) before the sweep stops
    objective: str = "corr_mean"  # corr_mean | corr_sharpe | mmc_mean | payout (CORR x a + MMC x b per era)
    cv: bool = False  # score each trial by era-wise cross-validation (numerflow cv) instead of validation
    jobs: int = 1  # trials trained at once on this machine, each in its own process with cores // jobs threads
    ray: str | None = None  # a Ray cluster address (or "auto"): run the trials through Ray Tune
    cpus_per_trial: float = 1.0  # Ray: CPUs reserved per trial
    gpus_per_trial: float = 0.0  # Ray: GPUs reserved per trial (fractions share one)
    pruner: str = "median"  # median | halving | none: stop trials whose per-epoch score falls behind
    name: str | None = None  # results go to <sweeps_dir>/<name>/; None: the space file's name without .toml
    sweeps_dir: Path = DEFAULT_SWEEPS_DIR
    resume: bool = False  # continue the stored study <sweeps_dir>/<name>/ (same space and settings)
    seed: int = 0  # sampler seed and every trial's training seed (a [fixed] seed overrides the latter)
    device: str = "auto"  # where each trial trains (a [fixed] device overrides it)
