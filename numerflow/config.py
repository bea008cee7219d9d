"""One dataclass per stage's settings (config_base.py holds what they are built from and the
reader of `numerflow.toml`).

Every option is defined once, here: each field's `option(...)` holds its default, its help text
and how the command line reads it (options.CommandLine). cli/ makes each command's options from
these fields and python_api.py each function's keyword arguments, signature and docstring.

Settings come from command-line flags, then NUMERFLOW_* environment variables, then
`numerflow.toml` (one table per command, e.g. `[train]`), then these defaults. The CLI applies
that order through click's `default_map`. Each dataclass checks its choices and values and turns
path strings into Paths, so the API and the CLI share one check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from numerflow.config_base import (DEFAULT_CV_DIR, DEFAULT_MODELS_DIR, DEFAULT_PREDICTIONS_DIR, DEFAULT_RECEIPTS_DIR,
                                   DEFAULT_REPORTS_DIR, DEFAULT_SCORES_DIR, SEED_MAX, StageSettings, check_weights,
                                   cpus_per_task_option, data_dir_option, device_option, gpus_per_task_option,
                                   last_option, memory_check_option, models_option, name_option,
                                   neutralize_benchmark_option, neutralize_option, prepared_data_option, ray_option,
                                   settings_path, track_option, version_option, weights_option)
from numerflow.errors import ConfigError, OptionError
from numerflow.options import (Activation, Arch, Loss, Precision, PredictWith, Pruner, Schedule, Scheme,
                               SweepObjective,
                               above_zero, finite, int_list, layer_widths, option, split_list, suffix_in)


def precision_option():
    # auto: bf16 where it is fast and safe (CUDA with bf16); the CPU keeps fp32's speed and exact repeats
    return option("auto", choices=Precision, envvar="NUMERFLOW_PRECISION",
                  help="Training and per-epoch validation arithmetic: auto (bf16 on CUDA that supports it, "
                       "else fp32), fp32, bf16 or fp16 (with a gradient scaler); checkpoints are fp32.")


def ensemble_option():
    return option(None, help="A fitted ensemble folder (numerflow ensemble --fit), used as one model: its "
                  "members' checkpoints and weights.")


def _check_ensemble(settings) -> None:
    """--ensemble stands for --model and --weights: giving both is ambiguous. Without either,
    the model is models/model.pt."""
    if settings.ensemble is not None and (settings.weights is not None or settings.models):
        raise ConfigError("give --model/--weights or --ensemble, not both")
    if settings.ensemble is None and not settings.models:
        settings.models = [DEFAULT_MODELS_DIR / "model.pt"]


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
    seed: int = option(0, help="Synthetic: random seed (0 to 2**32-1, as for train).", min=0, max=SEED_MAX)


@dataclass
class PrepareConfig(StageSettings):
    data_dir: Path = data_dir_option()
    dataset: Path | None = option(None, help="A version folder (default: the newest under --data-dir).")
    feature_set: str = option("medium", envvar="NUMERFLOW_FEATURE_SET",
                              help="Any feature set in features.json (small, medium ≈ 780 features, all, ...).")
    target: str = option("target", help="Main target column.")
    # all by default: +5 % CORR measured (issue 26); 40 auxiliary targets cost train about 0.1-0.3 GiB
    # at full v5.3 size (docs/prepare.md#memory)
    aux_targets: list[str] = option(factory=lambda: ["all"], parse=split_list,
                                    help="Auxiliary targets: NAME,..., all or none.")
    benchmark: str | None = option(None, help="Benchmark model column carried as the column 'benchmark' "
                                              "(default: the version's main one, when its benchmark files exist).")
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
    layers: list[int] = option(factory=lambda: [256], parse=int_list, check=layer_widths,
                               help="Hidden layer widths, e.g. 256 or 512,256.")
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
    # issue 26: (1 - W) x the corr loss + W x a per-era BMC against the prepared benchmark column
    bmc_weight: float = option(0.0, min=0.0, max=1.0,
                               help="Weight W of the contribution beyond Numerai's benchmark (BMC) in the loss: "
                                    "(1 - W) x corr loss - W x per-era BMC (needs --loss corr and a prepared "
                                    "benchmark column).")
    arch: str = option("mlp", choices=Arch, help="Network: mlp, or tabm (TabM: k MLPs sharing weights; needs "
                                                  "the tabm package).")
    # model.DEFAULT_K: bench/tabm_k.py gave k=8 85% of k=32's validation CORR in 47% of its time (docs/train.md)
    k: int = option(8, min=1, help="--arch tabm: the number of MLPs TabM trains as one (the paper's is 32).")
    # fastai's tabular default; 1e-3 underfits in 6 epochs
    lr: float = option(1e-2, help="Peak learning rate.", check=above_zero)
    weight_decay: float = option(0.0, help="Decoupled weight decay (AdamW), not on biases and BatchNorm.",
                                 min=0.0, check=finite)
    l1: float = option(0.0, help="L1 penalty on weights.", min=0.0, check=finite)
    batch_size: int = option(2048, help="Rows per step.", min=2)
    schedule: str = option("onecycle", choices=Schedule, help="onecycle is fastai's fit_one_cycle.")
    epochs: int = option(6, help="Epochs (train: at most, with early stopping).", min=1)
    patience: int | None = option(None, min=1,
                                  help="Stop after this many epochs without a better validation era-Spearman.")
    seed: int = option(0, help="Random seed, 0 to 2**32-1 (same seed on CPU: same checkpoint).", min=0,
                       max=SEED_MAX)
    device: str = device_option("auto")
    precision: str = precision_option()
    resume: bool = option(False, help="Continue an interrupted run from its last completed epoch.")
    memory_check: bool = memory_check_option()
    track: bool = track_option()

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            self.data = self.data_dir / "prepared"


@dataclass
class CvConfig(TrainConfig):
    """train's settings for every fold, plus how the folds are drawn (numerflow/training/folds.py)."""

    out: Path = option(DEFAULT_CV_DIR, help="Folder holding the runs (default: cv).")  # runs go to <out>/<name>/
    resume: bool = option(False, help="Skip the folds an interrupted run of this name finished.")
    folds: int = option(5, help="Test folds: contiguous blocks of training eras.", min=2)
    scheme: str = option("blocked", choices=Scheme, help="blocked: train on every other era; expanding: "
                         "walk-forward, only on earlier eras (the first block is never tested).")
    # by era number, as prepare's --embargo
    embargo: int = option(13, help="Eras (by era number) left out of training on each side of a test block.", min=0)
    include_validation: bool = option(False, help="Add validation.parquet as a last fold, trained on the eras before it.")
    name: str = name_option("model", help="The run's folder: OUT/NAME/.")
    ray: str | None = ray_option()  # each fold a Ray task; --data must be a path every node sees
    cpus_per_task: float = cpus_per_task_option()
    gpus_per_task: float = gpus_per_task_option()


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
    neutralize_benchmark: float | None = neutralize_benchmark_option()  # --model/--ensemble only
    memory_check: bool = memory_check_option()
    track: bool = track_option()

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
    neutralize_benchmark: float | None = neutralize_benchmark_option()
    batch_size: int = option(65536, help="Rows per forward pass (bounds memory on large files).", min=1)
    version: str | None = version_option()
    device: str = device_option("cpu")  # live is ~7k rows: the CPU is fast enough and always there
    memory_check: bool = memory_check_option()

    def __post_init__(self):
        super().__post_init__()
        _check_ensemble(self)
        check_weights(self.weights, self.models)


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
    neutralize_benchmark: float | None = neutralize_benchmark_option()
    out: Path | None = option(None, help="Pickle to write (default: the checkpoint's path with .pkl).")
    # None: on with --upload, off otherwise (the stage decides, as only it knows whether it uploads)
    check: bool | None = option(None, flag="--check/--no-check",
                                help="Run the pickle on the live file as Numerai's hosted runner would (1 CPU, 4 GB, "
                                     "10 min) and print its time and peak memory [default: on with --upload].")
    image_env: bool = option(False, flag="--image-env",
                             help="Run --check in a cached virtual environment holding numerai-predict's pins.")
    live: Path | None = option(None, help="Live Parquet for --check (default: live.parquet of the version trained on).")

    def __post_init__(self):
        super().__post_init__()
        _check_ensemble(self)
        check_weights(self.weights, self.models)
        if self.image_env and self.check is False:
            raise OptionError("--image-env", "runs the check: leave out --no-check")


DEFAULT_SWEEPS_DIR = Path("sweeps")


@dataclass
class SweepConfig(StageSettings):
    space: Path | None = option(None, help="Search space TOML: train options as lists of choices or ranges.")
    data_dir: Path = data_dir_option()
    data: Path | None = prepared_data_option(help="Prepared folder (default: DATA_DIR/prepared); with --ray, "
                                             "a path every node sees.")
    trials: int = option(20, help="Trials to finish (complete, pruned or failed).", min=1)
    objective: str = option("corr_mean", choices=SweepObjective, help="What each trial is scored by on validation.")
    last: int = last_option()
    cv: bool = option(False, help="Score each trial by era-wise cross-validation (numerflow cv).")
    # each trial in its own process with cores // jobs threads
    jobs: int = option(1, help="Trials trained at once here, one process each.", min=1)
    ray: str | None = ray_option()
    cpus_per_trial: float = option(1.0, help="Ray: CPUs reserved per trial.", check=above_zero)
    gpus_per_trial: float = option(0.0, help="Ray: GPUs reserved per trial (0.5: two trials share one).",
                                   min=0.0, check=finite)
    pruner: str = option("median", choices=Pruner, help="Stop trials whose per-epoch score falls behind.")
    name: str | None = name_option(None, help="Results go to SWEEPS_DIR/NAME/ (default: the space file's name).")
    sweeps_dir: Path = option(DEFAULT_SWEEPS_DIR, help="Folder holding every sweep's folder.")
    resume: bool = option(False, help="Continue the stored sweep NAME (same space and settings).")
    # a [fixed] seed in the space overrides the trials' training seed
    seed: int = option(0, help="Sampler seed and every trial's training seed.", min=0, max=SEED_MAX)
    device: str = device_option("auto")  # a [fixed] device overrides it
    memory_check: bool = memory_check_option()
    precision: str = precision_option()  # every trial's; a [fixed] precision overrides it
    track: bool = track_option()

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            self.data = self.data_dir / "prepared"


# --- diagnostics and scores (Numerai's own numbers) ---------------------------------------------

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value) -> float:
    """'20m', '90s', '1h' or a number of seconds → seconds (a number stays a number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    unit = DURATION_UNITS.get(text[-1:], None) if text else None
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise ConfigError(f"expected a duration such as 20m, 90s or 1h, got '{value}'") from None
    return seconds


@dataclass
class DiagnosticsConfig(StageSettings):
    model_name: str | None = option(None, envvar="NUMERFLOW_MODEL_NAME",
                                    help="Numerai model the diagnostics run under (default: the account's only model).")
    predictions: Path | object | None = option(None, check=suffix_in(".csv", ".parquet"), parse=Path,
                                               help="id,prediction file of the validation rows (Python: also a "
                                                    "DataFrame/Series indexed by id).")
    models: list[Path] | None = option(None, flag="--model",
                                       help="Or a checkpoint that predicts the validation rows; repeat for a "
                                            "rank-averaged ensemble.")
    weights: list[float] | None = weights_option()
    ensemble: Path | None = ensemble_option()
    data: Path | None = option(None, help="Raw Numerai validation Parquet whose validation rows are uploaded "
                               "(default: DATA_DIR/<version>/validation.parquet).")
    data_dir: Path = data_dir_option()
    version: str | None = version_option(help="Dataset folder holding validation.parquet (default: the newest).")
    report_dir: Path | None = option(None, flag="--report",
                                     help="Folder for diagnostics.json (default: reports/<model or "
                                          "predictions name>/).")
    timeout: float = option(1200.0, parse=parse_duration, check=above_zero,
                            help="Give up waiting for Numerai after this long: 20m (the default), 90s, 1h or seconds.")
    poll_interval: float = option(10.0, min=0.0, check=finite, help="Seconds between two asks for the run's status.")
    device: str = device_option("auto")  # model mode: where the validation rows are predicted
    batch_size: int = option(65536, help="Model mode: rows per forward pass.", min=1)

    def __post_init__(self):
        if isinstance(self.timeout, str):
            self.timeout = parse_duration(self.timeout)
        super().__post_init__()
        given = [self.predictions is not None, bool(self.models), self.ensemble is not None]
        if sum(given) != 1:
            raise ConfigError("diagnostics: give one of --predictions, --model or --ensemble")
        if self.ensemble is not None and self.weights is not None:
            raise ConfigError("give --model/--weights or --ensemble, not both")
        if self.models:
            check_weights(self.weights, self.models)


@dataclass
class ScoresConfig(StageSettings):
    model_names: list[str] | None = option(None, flag="--model-name",
                                           help="Numerai model to fetch; repeat for several (default: every "
                                                "[models.<name>] of numerflow.toml).")
    rounds: int = option(52, help="The latest rounds to fetch per model.", min=1)
    report: Path | None = option(None, help="Validation report folder (reports/<name>) to hold the live scores "
                                 "against (default: the checkpoint's named in numerflow.toml, where one is).")
    reports_dir: Path = option(DEFAULT_REPORTS_DIR, help="Where validate's reports/<checkpoint name>/ are looked for.")
    scores_dir: Path = option(DEFAULT_SCORES_DIR, help="Where scores/<model>/{rounds.csv,scores.png} go.")
    config_file: Path = option(factory=settings_path, on_command_line=False,
                               help="numerflow.toml (NUMERFLOW_CONFIG), whose [models.<name>] are the default models.")


# --- numerflow ui (stages/ui.py): MLflow's UI on the tracking store (numerflow/tracking.py) ---------


@dataclass
class UiConfig(StageSettings):
    port: int = option(5000, min=1, max=65535, help="Port the UI listens on.")
    host: str = option("127.0.0.1", help="Interface the UI listens on (0.0.0.0: every interface, for others "
                       "on the network).")
    store: str | None = option(None, help="Tracking store to show (default: MLFLOW_TRACKING_URI, else "
                               "numerflow.toml's [tracking] uri, else sqlite:///mlflow.db).")
