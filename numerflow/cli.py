"""The numerflow command line: each command parses its options, calls the one Python API function
of the same name (numerflow.train, numerflow.predict, ...) and prints what it returned. The API
imports stage modules (and torch) only when called, so `numerflow --help` stays fast."""

from __future__ import annotations

import functools
import inspect
import math
import re
from pathlib import Path
from typing import Annotated, List, Optional

import typer

import numerflow
from numerflow import __version__
from numerflow import config as cfg
from numerflow.errors import ConfigError, NumerflowError
from numerflow.options import Activation, Loss, PredictWith, Pruner, Schedule, Scheme, SweepObjective, device_problem

app = typer.Typer(
    help="numerflow: download, prepare, train, validate, predict and submit for the Numerai tournament.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the secret key
    rich_markup_mode=None,
)


def reports_errors(command):
    """Turn the expected failure classes into one `Error: ...` line and exit 1: numerflow's own
    errors, and OSError (a missing, unreadable, read-only or full file or folder), which every
    writer and reader lets through with the file's name (files.atomic_path and
    checkpoint.save_atomic add it where the OS does not). Anything else is a bug and keeps its
    traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NumerflowError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # an output folder that cannot be made, a read-only or full disk
            typer.echo(f"Error: {os_error_line(exc)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def os_error_line(exc: OSError) -> str:
    """'models/x: Not a directory': the final name (a rename's target), not a temporary one."""
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    temporary = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", Path(str(where)).name) if where is not None else None
    if temporary:  # files.atomic_path's temporary name: the user knows the final one
        where = Path(str(where)).with_name(temporary.group(1))
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileExistsError):  # mkdir(exist_ok=True) meeting a file
        reason = "exists and is not a folder"
    return f"{where}: {reason}" if where is not None else reason


def split_list(value: Optional[str]) -> Optional[list[str]]:
    """'a,b, c' → ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def int_list(value: str) -> list[int]:
    try:
        widths = [int(x) for x in split_list(value) or []]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not widths or min(widths) < 1:
        raise typer.BadParameter("layer widths must be positive integers")
    return widths


def version_callback(value: bool):
    if value:
        typer.echo(f"numerflow {__version__}")
        raise typer.Exit()


@app.callback()
@reports_errors
def main_options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
):
    """numerflow: a fast, memory-lean PyTorch pipeline for the Numerai tournament."""
    # numerflow.toml is read once per run, here: its tables ([train], [prepare], ...) become
    # defaults that flags and NUMERFLOW_* variables override (click's default_map ranks below
    # both), and `round` gets its [models.<name>] tables from ctx.obj.
    ctx.obj = cfg.load_settings()
    ctx.default_map = toml_defaults(ctx.obj, ctx.command.commands)


def toml_defaults(settings: cfg.SettingsFile, commands: dict) -> dict:
    """numerflow.toml's command tables as click defaults. Keys are the options' long names
    (`round`, `model`, `json`; `aux-targets` and `aux_targets` both work). A table or key that
    matches no command or option is an error (a typo must not be ignored silently), and so is a
    parameter's internal name where it differs from its option's (`round_num`: use `round`).
    A TOML list for a comma-separated option (layers = [512, 256]) is joined; one value for a
    repeatable option (model = "a.pt") is a list of one."""
    source = settings.path
    defaults = {}
    for name, table in settings.tables.items():
        if name == "models":  # `numerflow round`'s [models.<numerai model name>] tables
            continue
        command = commands.get(name.replace("_", "-"))
        if command is None:
            raise ConfigError(f"{source}: unknown table [{name}] (tables: {', '.join(sorted(commands))}, models)")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{name}' must be a table: [{name}] with option = value lines")
        params = option_keys(command)
        table = {key.replace("-", "_"): value for key, value in table.items()}
        internal = {param.name: key for key, param in params.items() if param.name != key}
        misnamed = sorted(set(table) & set(internal))
        if misnamed:
            key = internal[misnamed[0]]
            raise ConfigError(f"{source}: [{name}]: '{misnamed[0]}' is an internal name; write {key} = ... "
                              f"(keys are named like the options: --{key.replace('_', '-')})")
        unknown = sorted(set(table) - set(params))
        if unknown:
            raise ConfigError(f"{source}: [{name}]: unknown key(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(sorted(params))})")
        defaults[command.name] = {params[key].name: toml_value(params[key], value) for key, value in table.items()}
    return defaults


def option_keys(command) -> dict:
    """numerflow.toml key → the command's parameter: an option's first long name, `-` as `_`
    (validate's --json is `json`, its parameter `as_json`)."""
    keys = {}
    for param in command.params:
        long_names = [opt for opt in getattr(param, "opts", []) if opt.startswith("--")]
        if long_names:
            keys[long_names[0].removeprefix("--").replace("-", "_")] = param
    return keys


def toml_value(param, value):
    if param.multiple:
        return value if isinstance(value, list) else [value]
    return ",".join(map(str, value)) if isinstance(value, list) else value


DataDir = typer.Option(cfg.DEFAULT_DATA_DIR, "--data-dir", envvar="NUMERFLOW_DATA_DIR",
                       help="Folder holding <version>/ and prepared/.")


def device_name(value: Optional[str]) -> Optional[str]:
    """A typer callback: options.py's device check as a usage error (exit 2)."""
    problem = device_problem(value) if value is not None else None
    if problem:
        raise typer.BadParameter(problem)
    return value


# Every command with --device shares this option: one check, one help text, one variable.
Device = Annotated[str, typer.Option("--device", envvar="NUMERFLOW_DEVICE", callback=device_name,
                                     help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")]
# The choices are options.py's Enums: typer lists them in --help and refuses others (exit 2).
LossOption = Annotated[Loss, typer.Option("--loss", help="corr: negative per-era Pearson, batches drawn within eras.")]
ActivationOption = Annotated[Activation, typer.Option("--activation", help="Hidden layers' activation.")]
ScheduleOption = Annotated[Schedule, typer.Option("--schedule", help="onecycle is fastai's fit_one_cycle.")]
PredictWithOption = Annotated[PredictWith, typer.Option("--predict-with",
                                                        help="Score with the main target's head or the mean of all heads.")]


@app.command()
@reports_errors
def download(
    data_dir: Path = DataDir,
    version: Optional[str] = typer.Option(None, "--version", envvar="NUMERFLOW_VERSION",
                                          help="Dataset version, e.g. v5.2 (default: the newest)."),
    live_only: bool = typer.Option(False, "--live-only", help="Only live data, live example preds and features.json."),
    round_num: Optional[int] = typer.Option(None, "--round", min=1, help="Fetch a past round's live data."),
    force: bool = typer.Option(False, "--force", help="Fetch again even when files are complete locally."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Write the built-in synthetic data set instead (offline)."),
    eras: int = typer.Option(cfg.SyntheticConfig.eras, "--eras", min=12, help="Synthetic: number of train+validation eras."),
    rows_per_era: int = typer.Option(cfg.SyntheticConfig.rows_per_era, "--rows-per-era", min=10, help="Synthetic: rows per era."),
    features: int = typer.Option(cfg.SyntheticConfig.features, "--features", min=8, help="Synthetic: number of features."),
    seed: int = typer.Option(cfg.SyntheticConfig.seed, "--seed", min=0, max=cfg.SEED_MAX,
                             help="Synthetic: random seed (0 to 2**32-1, as for train)."),
):
    """Download the Numerai data set into DATA_DIR/<version>/ (or write synthetic data offline).

    Example: numerflow download --data-dir data --version v5.2
    """
    if synthetic:
        out = numerflow.write_synthetic(data_dir=data_dir, eras=eras, rows_per_era=rows_per_era,
                                        features=features, seed=seed)
        typer.echo(f"Synthetic data written to {out}")
        return
    typer.echo(str(numerflow.download(data_dir=data_dir, version=version, live_only=live_only,
                                      round=round_num, force=force)))


@app.command()
@reports_errors
def prepare(
    data_dir: Path = DataDir,
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A version folder (default: the newest under --data-dir)."),
    feature_set: str = typer.Option(cfg.PrepareConfig.feature_set, "--feature-set", envvar="NUMERFLOW_FEATURE_SET",
                                    help="Any feature set in features.json (small, medium, all, ...)."),
    target: str = typer.Option(cfg.PrepareConfig.target, "--target", help="Main target column."),
    aux_targets: Optional[str] = typer.Option(None, "--aux-targets", help="Auxiliary targets: NAME,... or all."),
    downsample: int = typer.Option(cfg.PrepareConfig.downsample, "--downsample", min=1, help="Keep every K-th training era (1 keeps all)."),
    embargo: int = typer.Option(cfg.PrepareConfig.embargo, "--embargo", min=0, help="Eras dropped between the last train era and validation."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Output folder (default: DATA_DIR/prepared)."),
    bin_features: Optional[int] = typer.Option(None, "--bin-features", min=5, max=5,
                                               help="Continuous features (pre-2019 releases): 5 equal-frequency buckets per era."),
):
    """Select features and targets, keep them int8, and write prepared/train+validation.parquet.

    Example: numerflow prepare --feature-set medium --aux-targets all --downsample 4
    """
    typer.echo(str(numerflow.prepare(data_dir=data_dir, dataset=dataset, feature_set=feature_set, target=target,
                                     aux_targets=split_list(aux_targets) or [], downsample=downsample,
                                     embargo=embargo, out_dir=out_dir, bin_features=bin_features)))


def positive(value):
    """A typer callback accepting only finite numbers above 0 (exit 2 otherwise)."""
    if value is not None and not 0 < value < float("inf"):
        raise typer.BadParameter(f"must be a number above 0, got {value}")
    return value


def finite(value):
    """A typer callback refusing nan and ±inf (exit 2) for a number option whose min/max alone
    would let them through (a `min` with no `max` accepts inf)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def suffix_in(*suffixes: str):
    """A typer callback accepting only paths ending in one of `suffixes` (exit 2 otherwise)."""
    def check(value):
        if value is not None and Path(value).suffix not in suffixes:
            raise typer.BadParameter(f"'{value}' must end in {' or '.join(suffixes)}")
        return value
    return check


@app.command()
@reports_errors
def train(
    data_dir: Path = DataDir,
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared folder (default: DATA_DIR/prepared)."),
    out: Path = typer.Option(cfg.TrainConfig.out, "--out", help="Checkpoint path; <name>.json is written beside it."),
    layers: str = typer.Option(",".join(map(str, cfg.TrainConfig().layers)), "--layers",
                               help="Hidden layer widths, e.g. 256 or 512,256."),
    activation: ActivationOption = Activation(cfg.TrainConfig.activation),
    dropout: float = typer.Option(cfg.TrainConfig.dropout, "--dropout", min=0.0, max=0.99, help="Dropout after each hidden layer."),
    batchnorm: bool = typer.Option(cfg.TrainConfig.batchnorm, "--batchnorm/--no-batchnorm",
                                   help="fastai's layout: BatchNorm after each hidden layer."),
    input_batchnorm: bool = typer.Option(cfg.TrainConfig.input_batchnorm, "--input-batchnorm/--no-input-batchnorm",
                                         help="With --batchnorm, BatchNorm on the inputs too (slower on CPU)."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Targets to fit, main first, e.g. target,target_x_20 (default: all prepared)."),
    predict_with: PredictWithOption = PredictWith(cfg.TrainConfig.predict_with),
    loss: LossOption = Loss(cfg.TrainConfig.loss),
    lr: float = typer.Option(cfg.TrainConfig.lr, "--lr", callback=positive, help="Peak learning rate."),
    weight_decay: float = typer.Option(cfg.TrainConfig.weight_decay, "--weight-decay", min=0.0, callback=finite,
                                       help="Decoupled weight decay (AdamW), not on biases and BatchNorm."),
    l1: float = typer.Option(cfg.TrainConfig.l1, "--l1", min=0.0, callback=finite, help="L1 penalty on weights."),
    batch_size: int = typer.Option(cfg.TrainConfig.batch_size, "--batch-size", min=2, help="Rows per step."),
    schedule: ScheduleOption = Schedule(cfg.TrainConfig.schedule),
    epochs: int = typer.Option(cfg.TrainConfig.epochs, "--epochs", min=1, help="Epochs (upper bound with --patience)."),
    patience: Optional[int] = typer.Option(cfg.TrainConfig.patience, "--patience", min=1,
                                           help="Stop after this many epochs without a better validation era-Spearman."),
    seed: int = typer.Option(cfg.TrainConfig.seed, "--seed", min=0, max=cfg.SEED_MAX,
                             help="Random seed, 0 to 2**32-1 (same seed on CPU: same checkpoint)."),
    device: Device = cfg.TrainConfig.device,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last completed epoch."),
):
    """Train the MLP on prepared data; validation era-Spearman each epoch; keeps the best epoch.
    Runs as DistributedDataParallel under `torchrun --nproc-per-node N -m numerflow train ...`.

    Example: numerflow train --layers 512,256 --batchnorm --epochs 6 --device auto
    """
    result = numerflow.train(**train_settings(locals()), say=typer.echo)  # locals(): exactly the options above
    if result.config_json is not None:  # rank 0 only under torchrun
        typer.echo(str(result))


def train_settings(options: dict) -> dict:
    """train's command-line values (as `train` and `cv` receive them) as numerflow.train's keyword
    arguments: the prepared folder resolved, comma-separated lists split."""
    options = dict(options)
    data_dir, data = options.pop("data_dir"), options.pop("data")
    return {**options, "data": data or data_dir / "prepared", "layers": int_list(options["layers"]),
            "targets": split_list(options["targets"])}


def with_options_of(other, own, leave_out=()):
    """Decorate a `command(**options)`: its parameters become those of `own` (a function holding
    only option definitions) followed by every option of `other` that `own` does not redefine
    or `leave_out` names, with the same names, types, defaults and help: one definition of
    train's options for `cv`."""
    def decorate(command):
        mine = inspect.signature(own, eval_str=True).parameters
        theirs = [p for name, p in inspect.signature(other, eval_str=True).parameters.items()
                  if name not in mine and name not in leave_out]
        parameters = list(mine.values()) + theirs
        command.__signature__ = inspect.Signature(parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command
    return decorate


def cv_options(
    folds: int = typer.Option(cfg.CvConfig.folds, "--folds", min=2, help="Test folds: contiguous blocks of training eras."),
    scheme: Annotated[Scheme, typer.Option("--scheme", help="blocked: train on every other era; expanding: "
                                           "walk-forward, only on earlier eras (the first block is never tested).")]
    = Scheme(cfg.CvConfig.scheme),
    embargo: int = typer.Option(cfg.CvConfig.embargo, "--embargo", min=0,
                                help="Eras (by era number) left out of training on each side of a test block."),
    include_validation: bool = typer.Option(False, "--include-validation",
                                            help="Add validation.parquet as a last fold, trained on the eras before it."),
    name: str = typer.Option(cfg.CvConfig.name, "--name", help="The run's folder: OUT/NAME/."),
    out: Path = typer.Option(cfg.CvConfig.out, "--out", help="Folder holding the runs (default: cv)."),
    resume: bool = typer.Option(False, "--resume", help="Skip the folds an interrupted run of this name finished."),
):
    """cv's own options; `cv` takes train's others too (with_options_of)."""


@app.command()
@reports_errors
@with_options_of(train, cv_options, leave_out=("patience",))  # no fold scores its test eras while training
def cv(**options):
    """Cross-validate train's recipe era by era: blocked or walk-forward folds with an embargo;
    writes OUT/NAME/oof.parquet (id, era, fold, prediction) and report.json. Takes every train
    option (--layers, --epochs, --lr, ...); each fold trains --epochs epochs and keeps the last.

    Example: numerflow cv --folds 5 --scheme expanding --embargo 13 --epochs 4 --name mlp256
    """
    typer.echo(str(numerflow.cv(**train_settings(options), say=typer.echo)))


@app.command()
@reports_errors
def validate(
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint to score (default: models/model.pt)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", callback=suffix_in(".csv", ".parquet"),
                                               help="Score an id,prediction .csv/.parquet file instead of a model."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Validation Parquet, prepared or raw Numerai "
                                              "(default: DATA_DIR/prepared/validation.parquet); repeat to score "
                                              "several files' rows as one set (cv's oof.parquet)."),
    data_dir: Path = DataDir,
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for report.json, per_era.csv, per_era.png "
                                          "(default: reports/<model or predictions name>/)."),
    no_report: bool = typer.Option(False, "--no-report", help="Write no report files."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout, nothing else."),
    target: Optional[str] = typer.Option(None, "--target", help="Target to score against (default: the main one)."),
    exposure: bool = typer.Option(True, "--exposure/--no-exposure",
                                  help="Feature exposure and feature-neutral CORR (a least-squares fit per era)."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="Benchmark column for BMC, from "
                                            "validation_benchmark_models.parquet (default: the version's main "
                                            "one, e.g. v53_lgbm_ender20)."),
    device: Device = cfg.ValidateConfig.device,
):
    """Score a model (or any model's predictions) era by era: Spearman, Numerai CORR, MMC, BMC,
    feature exposure, FNC, auxiliary targets; write reports/<name>/.

    Example: numerflow validate --predictions lgbm_preds.csv --data data/v5.2/validation.parquet --json
    """
    if model is not None and predictions is not None:
        raise typer.BadParameter("give --model or --predictions, not both")
    result = numerflow.validate(model=model if model is not None else cfg.ValidateConfig.model,
                                predictions=predictions, data=data or None, data_dir=data_dir, report_dir=report,
                                write_report=not no_report, target=target, exposure=exposure, benchmark=benchmark,
                                device=device)
    typer.echo(result.to_json() if as_json else str(result))


def float_list(value: Optional[str]) -> Optional[list[float]]:
    try:
        return [float(x) for x in split_list(value)] if value is not None else None
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got '{value}'", param_hint="'--weights'") from None


def weights_for(models: list, weights: Optional[str]) -> Optional[list[float]]:
    """--weights as numbers that config.weights_problem accepts for the --model list (exit 2 otherwise)."""
    values = float_list(weights)
    problem = cfg.weights_problem(values, len(models))
    if problem:
        raise typer.BadParameter(problem, param_hint="'--weights'")
    return values


# predict and export take the same model list: one definition keeps their help identical.
ModelsOption = typer.Option([cfg.DEFAULT_MODELS_DIR / "model.pt"], "--model",
                            help="Checkpoint; repeat for a rank-averaged ensemble.")
WeightsOption = typer.Option(None, "--weights", help="Ensemble weights W1,W2,... (default: equal).")


@app.command()
@reports_errors
def predict(
    models: List[Path] = ModelsOption,
    weights: Optional[str] = WeightsOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Parquet to score (default: the current round's live.parquet)."),
    data_dir: Path = DataDir,
    version: Optional[str] = typer.Option(None, "--version", envvar="NUMERFLOW_VERSION",
                                          help="Dataset folder holding live.parquet (default: the newest)."),
    out: Optional[Path] = typer.Option(None, "--out", callback=suffix_in(".csv", ".parquet"),
                                       help="Output .csv or .parquet (default: predictions/<model>_<round>.csv)."),
    neutralize: float = typer.Option(0.0, "--neutralize", min=0.0, max=1.0,
                                     help="Remove this proportion of per-era feature exposure, then re-rank."),
    batch_size: int = typer.Option(cfg.PredictConfig.batch_size, "--batch-size", min=1, help="Rows per forward pass."),
    device: Device = cfg.PredictConfig.device,
):
    """Predict the live round (or any Numerai Parquet file): id,prediction ranked within eras into (0, 1).

    Example: numerflow predict --model models/a.pt --model models/b.pt --weights 2,1 --neutralize 0.5
    """
    predictions = numerflow.predict(models=list(models), weights=weights_for(models, weights), data=data,
                                    data_dir=data_dir, version=version, out=out, write=True, neutralize=neutralize,
                                    batch_size=batch_size, device=device)
    typer.echo(str(predictions.attrs["result"]))


@app.command()
@reports_errors
def submit(
    predictions: Optional[Path] = typer.Option(None, "--predictions",
                                               help="id,prediction file (default: predictions/<model name>_<round>.csv, "
                                                    "or the round's only one)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", envvar="NUMERFLOW_MODEL_NAME",
                                             help="Numerai model name (default: the account's only model)."),
    data_dir: Path = DataDir,
    version: Optional[str] = typer.Option(None, "--version", envvar="NUMERFLOW_VERSION",
                                          help="Dataset folder holding live.parquet (default: the newest)."),
    live: Optional[Path] = typer.Option(None, "--live", help="Live file whose ids the predictions must cover (default: the current round's)."),
    receipts_dir: Path = typer.Option(cfg.DEFAULT_RECEIPTS_DIR, "--receipts-dir", help="Where receipts/<round>_<model>.json go."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run every check, upload nothing (no credentials needed)."),
    force: bool = typer.Option(False, "--force", help="Submit even if a receipt says this round and model are done."),
):
    """Check predictions against the live ids, upload them to Numerai and keep a receipt.
    Credentials: NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY (environment or .env).

    Example: numerflow submit --predictions predictions/model_612.csv --model-name my_model
    """
    typer.echo(str(numerflow.submit(predictions=predictions, model_name=model_name, data_dir=data_dir,
                                    version=version, live=live, receipts_dir=receipts_dir, dry_run=dry_run,
                                    force=force)))


@app.command(name="round")
@reports_errors
def round_command(
    ctx: typer.Context,
    data_dir: Path = DataDir,
    version: Optional[str] = typer.Option(None, "--version", envvar="NUMERFLOW_VERSION",
                                          help="Dataset version for live data (default: the newest)."),
    predictions_dir: Path = typer.Option(cfg.DEFAULT_PREDICTIONS_DIR, "--predictions-dir", help="Where <model>_<round>.csv go."),
    receipts_dir: Path = typer.Option(cfg.DEFAULT_RECEIPTS_DIR, "--receipts-dir", help="Receipts: one per round and model."),
    device: Device = cfg.RoundConfig.device,
    dry_run: bool = typer.Option(False, "--dry-run", help="Predict and check every model, upload nothing."),
):
    """The weekly job: for every [models.<name>] in numerflow.toml, predict the current round and
    submit, skipping models already submitted this round. Exit 0 when every model is submitted or
    already done, 1 when any failed, the round is closed, or another run holds the lock.

    Example: numerflow round --dry-run
    """
    settings: cfg.SettingsFile = ctx.find_root().obj  # read by main_options
    result = numerflow.round(models=settings.models, config_file=settings.path, data_dir=data_dir, version=version,
                             predictions_dir=predictions_dir, receipts_dir=receipts_dir, device=device,
                             dry_run=dry_run, say=typer.echo)
    typer.echo(str(result))
    if not result.ok:
        raise typer.Exit(1)


@app.command()
@reports_errors
def export(
    models: List[Path] = ModelsOption,
    weights: Optional[str] = WeightsOption,
    neutralize: float = typer.Option(0.0, "--neutralize", min=0.0, max=1.0,
                                     help="Remove this proportion of per-era feature exposure, then re-rank."),
    out: Optional[Path] = typer.Option(None, "--out", help="Pickle to write (default: the checkpoint's path with .pkl)."),
    upload: bool = typer.Option(False, "--upload", help="Run the pickle as Numerai's runner would (fresh process, one "
                                "thread, 4 GB, 10 min), then upload it with the image of this Python and the "
                                "data version trained on (credentials as for submit)."),
    model_name: Optional[str] = typer.Option(None, "--model-name",
                                             help="With --upload: the account's model (default: its only one)."),
    live: Optional[Path] = typer.Option(None, "--live", help="With --upload: live Parquet for the runner check "
                                        "(default: live.parquet of the version trained on)."),
):
    """Write a cloudpickled predict(live_features, live_benchmark_models) for Numerai's hosted model
    uploads: numpy only, no numerflow or torch needed where it runs.

    Example: numerflow export --model models/model.pt --out model.pkl --upload --model-name my_model
    """
    from numerflow.stages.export import UploadConfig

    if not upload and (model_name is not None or live is not None):
        raise typer.BadParameter("--model-name and --live are for --upload", param_hint="--upload")
    typer.echo(str(numerflow.export(models=list(models), weights=weights_for(models, weights),
                                    neutralize=neutralize, out=out,
                                    upload=UploadConfig(model_name=model_name, live=live) if upload else None)))


@app.command()
@reports_errors
def quickstart(
    folder: Path = typer.Option(Path("numerflow-quickstart"), "--dir", help="Fresh folder for every artifact."),
):
    """Run the whole pipeline offline on built-in synthetic data: download --synthetic, prepare,
    train, validate, predict, submit --dry-run. Prints each artifact's path and the validation summary.

    Example: numerflow quickstart --dir /tmp/nf-demo
    """
    typer.echo(str(numerflow.quickstart(folder=folder, say=typer.echo)))


@app.command()
@reports_errors
def sweep(
    space: Optional[Path] = typer.Option(None, "--space", help="Search space TOML: train options as lists of choices or ranges."),
    trials: int = typer.Option(cfg.SweepConfig.trials, "--trials", min=1, help="Trials to finish (complete, pruned or failed)."),
    objective: Annotated[SweepObjective, typer.Option("--objective", help="What each trial is scored by on validation.")]
    = SweepObjective(cfg.SweepConfig.objective),
    cv: bool = typer.Option(False, "--cv", help="Score each trial by era-wise cross-validation (numerflow cv)."),
    jobs: int = typer.Option(cfg.SweepConfig.jobs, "--jobs", min=1, help="Trials trained at once here, one process each."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on a Ray cluster: its ADDRESS, or auto."),
    cpus_per_trial: float = typer.Option(cfg.SweepConfig.cpus_per_trial, "--cpus-per-trial", callback=positive,
                                         help="Ray: CPUs reserved per trial."),
    gpus_per_trial: float = typer.Option(cfg.SweepConfig.gpus_per_trial, "--gpus-per-trial", min=0.0, callback=finite,
                                         help="Ray: GPUs reserved per trial (0.5: two trials share one)."),
    pruner: Annotated[Pruner, typer.Option("--pruner", help="Stop trials whose per-epoch score falls behind.")]
    = Pruner(cfg.SweepConfig.pruner),
    name: Optional[str] = typer.Option(None, "--name", help="Results go to SWEEPS_DIR/NAME/ (default: the space file's name)."),
    sweeps_dir: Path = typer.Option(cfg.DEFAULT_SWEEPS_DIR, "--sweeps-dir", help="Folder holding every sweep's folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue the stored sweep NAME (same space and settings)."),
    seed: int = typer.Option(cfg.SweepConfig.seed, "--seed", min=0, max=cfg.SEED_MAX,
                             help="Sampler seed and every trial's training seed."),
    data_dir: Path = DataDir,
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared folder (default: DATA_DIR/prepared); with --ray, "
                                        "a path every node sees."),
    device: Device = cfg.SweepConfig.device,
    show: Optional[str] = typer.Option(None, "--show", help="Print the trials table of sweep NAME and exit."),
):
    """Search train's options with Optuna (here in --jobs processes, or on a Ray cluster with --ray);
    keep the best trial's checkpoint as SWEEPS_DIR/NAME/best.pt.

    Example: numerflow sweep --space sweep.toml --trials 40 --jobs 2 --objective corr_sharpe
    """
    if show is not None:
        typer.echo(numerflow.show_sweep(name=show, sweeps_dir=sweeps_dir))
        return
    result = numerflow.sweep(space=space, data=data or data_dir / "prepared", trials=trials, objective=objective, cv=cv,
                             jobs=jobs, ray=ray, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                             pruner=pruner, name=name, sweeps_dir=sweeps_dir, resume=resume, seed=seed,
                             device=device, say=typer.echo)
    typer.echo(str(result))


def main():
    app(prog_name="numerflow")
