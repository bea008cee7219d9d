"""One dataclass per stage's settings, and the one reader of `numerflow.toml`.

Every option is defined once, here: each field's `option(...)` holds its default, its help text
and how the command line reads it (options.CommandLine). cli/ makes each command's options from
these fields and python_api.py each function's keyword arguments, signature and docstring.

Settings come from command-line flags, then NUMERFLOW_* environment variables, then
`numerflow.toml` (one table per command, e.g. `[train]`), then these defaults. The CLI applies
that order through click's `default_map`. Each dataclass checks its choices and values and turns
path strings into Paths, so the API and the CLI share one check.
"""

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
from numerflow.options import (Activation, EnsembleObjective, FitOn, Loss, PredictWith, Pruner, Schedule, Scheme,
                               SelectOn, SweepObjective, above_zero, command_line_of, finite, float_list, int_list,
                               option, parse_device, split_list, suffix_in)

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
    """Shared by every stage's dataclass: each field's choices and checks (from its option()) are
    applied, and strings become Paths where a field holds paths, so `numerflow.train(data="prep")`
    and the CLI hand the stage the same values."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            spec = command_line_of(f)
            if spec.choices is not None:
                value = spec.choices.parse(value, _flag(f.name))
            elif f.name == "device":
                value = parse_device(value)
            elif isinstance(value, (str, os.PathLike)) and _holds_paths(type(self), f.name):
                value = Path(value)
            elif isinstance(value, (list, tuple)) and _holds_paths(type(self), f.name):
                value = [Path(v) for v in value]
            problem = spec.check(value) if spec.check is not None else None
            if problem:
                raise OptionError(_flag(f.name), problem)
            setattr(self, f.name, value)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def _path_fields(cls) -> frozenset:
    hints = typing.get_type_hints(cls)
    return frozenset(name for name, hint in hints.items() if "Path" in str(hint))


def _holds_paths(cls, name: str) -> bool:
    return name in _path_fields(cls)


def _seed_check(seed) -> str | None:
    return seed_problem(seed) if seed is not None else None


def _check_weights(weights: list[float] | None, models: list[Path]) -> None:
    problem = weights_problem(weights, len(models))
    if problem:
        raise OptionError("--weights", problem)


# Options that several stages share: one function each, so each help text is written once.
def data_dir_option():
    return option(DEFAULT_DATA_DIR, help="Folder holding <version>/ and prepared/.", envvar="NUMERFLOW_DATA_DIR")


def version_option(help="Dataset folder holding live.parquet (default: the newest)."):
    return option(None, help=help, envvar="NUMERFLOW_VERSION")


def device_option(default: str):
    return option(default, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.", envvar="NUMERFLOW_DEVICE")


def models_option():
    return option(factory=lambda: [DEFAULT_MODELS_DIR / "model.pt"], flag="--model",
                  help="Checkpoint; repeat for a rank-averaged ensemble.")


def weights_option():
    return option(None, help="Ensemble weights W1,W2,... (default: equal).", parse=float_list)


def ensemble_option():
    return option(None, help="A fitted ensemble folder (numerflow ensemble --fit), used as one model: its "
                  "members' checkpoints and weights.")


def _check_ensemble(settings) -> None:
    """--ensemble stands for --model and --weights: giving both is ambiguous."""
    if settings.ensemble is not None and (settings.weights is not None
                                          or settings.models != [DEFAULT_MODELS_DIR / "model.pt"]):
        raise ConfigError("give --model/--weights or --ensemble, not both")


def neutralize_option():
    return option(0.0, help="Remove this proportion of per-era feature exposure, then re-rank.", min=0.0, max=1.0)


def prepared_data_option(help="Prepared folder (default: DATA_DIR/prepared)."):
    return option(None, help=help)


@dataclass
class DownloadConfig(StageSettings):
    data_dir: Path = data_dir_option()  # files land in <data_dir>/<version>/
    version: str | None = version_option(help="Dataset version, e.g. v5.2 (default: the newest).")
    live_only: bool = option(False, help="Only live data, live example preds and features.json.")
    # a weekly job needs only those
    round: int | None = option(None, help="Fetch a past round's live data (default: the current round).", min=1)
    force: bool = option(False, help="Fetch again even when files are complete locally.")


@dataclass
class SyntheticConfig(StageSettings):
    data_dir: Path = data_dir_option()  # written to <data_dir>/synthetic/
    eras: int = option(120, help="Synthetic: number of train+validation eras (live is one more).", min=12)
    rows_per_era: int = option(500, help="Synthetic: rows per era.", min=10)
    features: int = option(120, help="Synthetic: number of features.", min=8)
    seed: int = option(0, help="Synthetic: random seed (0 to 2**32-1, as for train).", min=0, max=SEED_MAX,
                       check=_seed_check)


@dataclass
class PrepareConfig(StageSettings):
    data_dir: Path = data_dir_option()
    dataset: Path | None = option(None, help="A version folder (default: the newest under --data-dir).")
    feature_set: str = option("medium", envvar="NUMERFLOW_FEATURE_SET",
                              help="Any feature set in features.json (small, medium ≈ 780 features, all, ...).")
    target: str = option("target", help="Main target column.")
    aux_targets: list[str] = option(factory=list, parse=split_list, help="Auxiliary targets: NAME,... or all.")
    # Neighbouring eras overlap in time (targets look 20 days ahead): every 4th era loses little.
    downsample: int = option(4, help="Keep every K-th training era (1 keeps all).", min=1)
    # Weekly eras and 20-day targets: 4 eras apart, a validation era's target never overlaps training's.
    embargo: int = option(4, help="Eras dropped between the last train era and validation.", min=0)
    out_dir: Path | None = option(None, help="Output folder (default: DATA_DIR/prepared).")
    bin_features: int | None = option(None, min=5, max=5,
                                      help="Continuous features (pre-2019 releases): 5 equal-frequency buckets per era.")


@dataclass
class TrainConfig(StageSettings):
    data_dir: Path = data_dir_option()
    data: Path | None = prepared_data_option()  # None: <data_dir>/prepared
    out: Path = option(DEFAULT_MODELS_DIR / "model.pt", help="Checkpoint path; <name>.json is written beside it.")
    layers: list[int] = option(factory=lambda: [256], parse=int_list, help="Hidden layer widths, e.g. 256 or 512,256.")
    activation: str = option("relu", choices=Activation, help="Hidden layers' activation.")
    # 0.3 and 0.5 beat 0 clearly in bench/quality.py
    dropout: float = option(0.5, help="Dropout after each hidden layer.", min=0.0, max=0.99)
    # fastai's layout, Linear → act → BN per layer: +0.01 corr in bench/quality.py
    batchnorm: bool = option(True, flag="--batchnorm/--no-batchnorm",
                             help="fastai's layout: BatchNorm after each hidden layer.")
    # +0.008 mean era-Spearman in bench/quality.py (0.0748 against 0.0666, three seeds); trained fused
    # with the first Linear (model.py): 0.76-0.85x the bare loop's rows/s
    input_batchnorm: bool = option(True, flag="--input-batchnorm/--no-input-batchnorm",
                                   help="With --batchnorm, BatchNorm on the inputs too (slower on CPU).")
    targets: list[str] | None = option(None, parse=split_list,
                                       help="Targets to fit, main first, e.g. target,target_x_20 (default: all prepared).")
    predict_with: str = option("main", choices=PredictWith,
                               help="Score with the main target's head or the mean of all heads.")
    # corr won bench/quality.py
    loss: str = option("corr", choices=Loss, help="corr: negative per-era Pearson, batches drawn within eras.")
    # fastai's tabular default; 1e-3 underfits in 6 epochs
    lr: float = option(1e-2, help="Peak learning rate.", check=above_zero)
    weight_decay: float = option(0.0, help="Decoupled weight decay (AdamW), not on biases and BatchNorm.",
                                 min=0.0, check=finite)
    l1: float = option(0.0, help="L1 penalty on weights.", min=0.0, check=finite)
    batch_size: int = option(2048, help="Rows per step.", min=2)
    schedule: str = option("onecycle", choices=Schedule, help="onecycle is fastai's fit_one_cycle.")
    epochs: int = option(6, help="Epochs (upper bound with --patience).", min=1)
    patience: int | None = option(None, min=1,
                                  help="Stop after this many epochs without a better validation era-Spearman.")
    seed: int = option(0, help="Random seed, 0 to 2**32-1 (same seed on CPU: same checkpoint).", min=0,
                       max=SEED_MAX, check=_seed_check)
    device: str = device_option("auto")
    resume: bool = option(False, help="Continue an interrupted run from its last completed epoch.")

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            self.data = self.data_dir / "prepared"


@dataclass
class CvConfig(TrainConfig):
    """train's settings for every fold, plus how the folds are drawn (numerflow/stages/cv.py)."""

    out: Path = option(DEFAULT_CV_DIR, help="Folder holding the runs (default: cv).")  # runs go to <out>/<name>/
    resume: bool = option(False, help="Skip the folds an interrupted run of this name finished.")
    folds: int = option(5, help="Test folds: contiguous blocks of training eras.", min=2)
    scheme: str = option("blocked", choices=Scheme, help="blocked: train on every other era; expanding: "
                         "walk-forward, only on earlier eras (the first block is never tested).")
    # by era number, as prepare's --embargo
    embargo: int = option(13, help="Eras (by era number) left out of training on each side of a test block.", min=0)
    include_validation: bool = option(False, help="Add validation.parquet as a last fold, trained on the eras before it.")
    name: str = option("model", help="The run's folder: OUT/NAME/.")


@dataclass
class ValidateConfig(StageSettings):
    model: Path | None = option(None, help="Checkpoint to score (default: models/model.pt unless --predictions).")
    ensemble: Path | None = ensemble_option()
    predictions: Path | object | None = option(None, check=suffix_in(".csv", ".parquet"), parse=Path,
                                               help="Score an id,prediction .csv/.parquet file instead of a model "
                                                    "(Python: also a DataFrame/Series indexed by id or with an id column).")
    data: list[Path] | None = option(None, help="Validation Parquet, prepared or raw Numerai (default: "
                                     "DATA_DIR/prepared/validation.parquet); repeat to score several files' rows "
                                     "as one set (cv's oof.parquet).")
    data_dir: Path = data_dir_option()
    report_dir: Path | None = option(None, flag="--report", help="Folder for report.json, per_era.csv, per_era.png "
                                     "(default: reports/<model or predictions name>/).")
    write_report: bool = option(True, flag="--write-report/--no-report", help="Write the report files (or not).")
    target: str | None = option(None, help="Target to score against (default: the main one).")
    exposure: bool = option(True, flag="--exposure/--no-exposure",
                            help="Feature exposure and feature-neutral CORR (a least-squares fit per era).")
    benchmark: str | None = option(None, help="Benchmark column for BMC, from validation_benchmark_models.parquet "
                                   "(default: the version's main one, e.g. v53_lgbm_ender20).")
    device: str = device_option("auto")  # model mode: where the forward passes run
    batch_size: int = option(65536, help="Model mode: rows per forward pass (bounds memory).", min=1)

    def __post_init__(self):
        if isinstance(self.data, (str, os.PathLike)):  # one file, as the Python API takes it
            self.data = [self.data]
        super().__post_init__()
        if sum(x is not None for x in (self.model, self.predictions, self.ensemble)) > 1:
            raise ConfigError("give one of --model, --predictions or --ensemble")
        if self.model is None and self.predictions is None and self.ensemble is None:
            self.model = DEFAULT_MODELS_DIR / "model.pt"
        if self.data is not None and len(self.data) == 1:
            self.data = self.data[0]


@dataclass
class PredictConfig(StageSettings):
    models: list[Path] = models_option()
    weights: list[float] | None = weights_option()
    ensemble: Path | None = ensemble_option()
    data: Path | None = option(None, help="Parquet to score (default: the current round's live.parquet).")
    data_dir: Path = data_dir_option()
    out: Path | None = option(None, check=suffix_in(".csv", ".parquet"),
                              help="Output .csv or .parquet (default: predictions/<model>_<round>.csv).")
    write: bool = option(False, on_command_line=False,
                         help="With no `out`: write predictions/<model>_<round>.csv (the CLI always writes).")
    neutralize: float = neutralize_option()
    batch_size: int = option(65536, help="Rows per forward pass (bounds memory on large files).", min=1)
    version: str | None = version_option()
    device: str = device_option("cpu")  # live is ~7k rows: the CPU is fast enough and always there

    def __post_init__(self):
        super().__post_init__()
        _check_weights(self.weights, self.models)
        _check_ensemble(self)


@dataclass
class SubmitConfig(StageSettings):
    predictions: Path | None = option(None, help="id,prediction file (default: predictions/<model name>_<round>.csv, "
                                      "or the round's only one).")
    model_name: str | None = option(None, envvar="NUMERFLOW_MODEL_NAME",
                                    help="Numerai model name (default: the account's only model).")
    data_dir: Path = data_dir_option()
    live: Path | None = option(None, help="Live file whose ids the predictions must cover (default: the current round's).")
    receipts_dir: Path = option(DEFAULT_RECEIPTS_DIR, help="Where receipts/<round>_<model>.json go: never submit twice.")
    dry_run: bool = option(False, help="Run every check, upload nothing (no credentials needed).")
    force: bool = option(False, help="Submit even if a receipt says this round and model are done.")
    version: str | None = version_option()


@dataclass
class RoundConfig(StageSettings):
    models: dict | None = option(None, on_command_line=False,
                                 help="[models.<numerai model name>] tables; None: those in config_file.")
    config_file: Path = option(factory=settings_path, on_command_line=False,
                               help="numerflow.toml (NUMERFLOW_CONFIG): `models` come from it.")
    data_dir: Path = data_dir_option()  # the lock file lives here too
    version: str | None = version_option(help="Dataset version for live data (default: the newest).")
    predictions_dir: Path = option(DEFAULT_PREDICTIONS_DIR, help="Where <model>_<round>.csv go.")
    receipts_dir: Path = option(DEFAULT_RECEIPTS_DIR, help="Receipts: one per round and model.")
    device: str = device_option("cpu")  # live is ~7k rows: the CPU is enough
    dry_run: bool = option(False, help="Predict and check every model, upload nothing.")


@dataclass
class ExportConfig(StageSettings):
    models: list[Path] = models_option()
    weights: list[float] | None = weights_option()
    ensemble: Path | None = ensemble_option()
    neutralize: float = neutralize_option()
    out: Path | None = option(None, help="Pickle to write (default: the checkpoint's path with .pkl).")

    def __post_init__(self):
        super().__post_init__()
        _check_weights(self.weights, self.models)
        _check_ensemble(self)


DEFAULT_SWEEPS_DIR = Path("sweeps")


@dataclass
class SweepConfig(StageSettings):
    space: Path | None = option(None, help="Search space TOML: train options as lists of choices or ranges.")
    data_dir: Path = data_dir_option()
    data: Path | None = prepared_data_option(help="Prepared folder (default: DATA_DIR/prepared); with --ray, "
                                             "a path every node sees.")
    trials: int = option(20, help="Trials to finish (complete, pruned or failed).", min=1)
    objective: str = option("corr_mean", choices=SweepObjective, help="What each trial is scored by on validation.")
    cv: bool = option(False, help="Score each trial by era-wise cross-validation (numerflow cv).")
    # each trial in its own process with cores // jobs threads
    jobs: int = option(1, help="Trials trained at once here, one process each.", min=1)
    ray: str | None = option(None, help="Run on a Ray cluster: its ADDRESS, or auto.")
    cpus_per_trial: float = option(1.0, help="Ray: CPUs reserved per trial.", check=above_zero)
    gpus_per_trial: float = option(0.0, help="Ray: GPUs reserved per trial (0.5: two trials share one).",
                                   min=0.0, check=finite)
    pruner: str = option("median", choices=Pruner, help="Stop trials whose per-epoch score falls behind.")
    name: str | None = option(None, help="Results go to SWEEPS_DIR/NAME/ (default: the space file's name).")
    sweeps_dir: Path = option(DEFAULT_SWEEPS_DIR, help="Folder holding every sweep's folder.")
    resume: bool = option(False, help="Continue the stored sweep NAME (same space and settings).")
    # a [fixed] seed in the space overrides the trials' training seed
    seed: int = option(0, help="Sampler seed and every trial's training seed.", min=0, max=SEED_MAX, check=_seed_check)
    device: str = device_option("auto")  # a [fixed] device overrides it

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            self.data = self.data_dir / "prepared"


# --- numerflow ensemble ---------------------------------------------------------------------------
DEFAULT_ENSEMBLES_DIR = Path("ensembles")


@dataclass
class EnsembleConfig(StageSettings):
    """Greedy ensemble selection over cv runs and `sweep --cv` trials (numerflow/stages/ensemble.py)."""

    candidates: list[Path] = option(factory=list, on_command_line=False,
                                    help="cv run folders (cv/NAME) and sweep folders run with --cv (sweeps/NAME: "
                                         "every complete trial), or one trial (sweeps/NAME/trials/N).")
    objective: str = option("corr_mean", choices=EnsembleObjective,
                            help="What each greedy step maximises, per era as validate scores it.")
    size: int = option(10, help="Greedy steps (with replacement); the best of them is kept, and a member "
                       "chosen k times in its S steps weighs k/S.", min=1)
    name: str = option("ensemble", help="The ensemble's folder: ENSEMBLES_DIR/NAME/.")
    ensembles_dir: Path = option(DEFAULT_ENSEMBLES_DIR, help="Folder holding every ensemble's folder.")
    on: str = option("oof", choices=SelectOn, help="Choose on the candidates' out-of-fold training eras, or "
                     "(explicitly) on validation eras, which then no longer measure the ensemble.")
    benchmark: str | None = option(None, help="bmc_mean: benchmark column of train/validation_benchmark_models"
                                   ".parquet (default: the version's main one).")
    fit: bool = option(False, help="Train each member once with its own settings and epochs; store the "
                       "checkpoints in the ensemble's folder.")
    fit_on: str = option("train", choices=FitOn, help="--fit on the training eras, or on training and validation "
                         "eras (all: for live use).")
    device: str = device_option("auto")  # --fit: where the members train
    force: bool = option(False, help="Replace an existing ensemble of this name.")
