"""The numerflow commands: each takes its settings (options made from config.py's fields by
options_from), calls the Python API function of the same name (numerflow.train, ...) and prints
what it returned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import numerflow
from numerflow import config as cfg
from numerflow import config_base
from numerflow import config_selection
from numerflow.cli.app import PlainHelp, app
from numerflow.cli.errors import reports_errors
from numerflow.cli.options import options_from


@app.command(short_help="Download Numerai's data (or --synthetic data).", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.DownloadConfig, synthetic_settings=cfg.SyntheticConfig)
def download(
    settings: cfg.DownloadConfig,
    synthetic_settings: cfg.SyntheticConfig,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Write the built-in synthetic data set instead "
                                            "(offline).")] = False,
):
    """Download the Numerai data set into DATA_DIR/<version>/ (or write synthetic data offline).

    Example: numerflow download --data-dir data --version v5.2
    """
    if synthetic:
        typer.echo(f"Synthetic data written to {numerflow.write_synthetic(synthetic_settings)}")
    else:
        typer.echo(str(numerflow.download(settings)))


@app.command(short_help="Keep the features int8, choose the targets.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.PrepareConfig)
def prepare(settings: cfg.PrepareConfig):
    """Select features and targets, keep them int8, and write prepared/train+validation.parquet.

    Example: numerflow prepare --feature-set medium --aux-targets all --downsample 4
    """
    typer.echo(str(numerflow.prepare(settings)))


@app.command(short_help="Train the MLP (or TabM) on prepared data.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.TrainConfig)
def train(settings: cfg.TrainConfig):
    """Train the MLP on prepared data; validation era-Spearman each epoch; keeps the best epoch.
    Runs as DistributedDataParallel under `torchrun --nproc-per-node N -m numerflow train ...`.

    Example: numerflow train --layers 512,256 --batchnorm --epochs 6 --device auto
    """
    result = numerflow.train(settings, say=typer.echo)
    if result.config_json is not None:  # rank 0 only under torchrun
        typer.echo(str(result))


@app.command(short_help="Cross-validate train's recipe era by era.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.CvConfig, leave_out=("patience",))  # no fold scores its test eras while training
def cv(settings: cfg.CvConfig):
    """Cross-validate train's recipe era by era: blocked or walk-forward folds with an embargo;
    writes OUT/NAME/oof.parquet (id, era, fold, prediction) and report.json. Takes every train
    option (--layers, --epochs, --lr, ...); each fold trains --epochs epochs and keeps the last.

    Example: numerflow cv --folds 5 --scheme expanding --embargo 13 --epochs 4 --name mlp256
    """
    typer.echo(str(numerflow.cv(settings, say=typer.echo)))


@app.command(short_help="Score a model or predictions era by era.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.ValidateConfig)
def validate(
    settings: cfg.ValidateConfig,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout, nothing else.")] = False,
):
    """Score a model (or any model's predictions) era by era: Spearman, Numerai CORR, MMC, BMC,
    feature exposure, FNC, auxiliary targets; write reports/<name>/.

    Example: numerflow validate --predictions lgbm_preds.csv --data data/v5.2/validation.parquet --json
    """
    result = numerflow.validate(settings)
    typer.echo(result.to_json() if as_json else str(result))


@app.command(short_help="Predict the live round (or any Numerai file).", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.PredictConfig)
def predict(settings: cfg.PredictConfig):
    """Predict the live round (or any Numerai Parquet file): id,prediction ranked within eras into (0, 1).

    Example: numerflow predict --model models/a.pt --model models/b.pt --weights 2,1 --neutralize 0.5
    """
    settings.write = True  # the command always writes its file; the Python API only when asked
    typer.echo(str(numerflow.predict(settings)))


@app.command(short_help="Check predictions and upload them to Numerai.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.SubmitConfig)
def submit(settings: cfg.SubmitConfig):
    """Check predictions against the live ids, upload them to Numerai and keep a receipt.
    Credentials: NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY (environment or .env).

    Example: numerflow submit --predictions predictions/model_612.csv --model-name my_model
    """
    typer.echo(str(numerflow.submit(settings)))


@app.command(name="round", short_help="The weekly job: predict and submit each model.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.RoundConfig)
def round_command(settings: cfg.RoundConfig, ctx: typer.Context):
    """The weekly job: for every [models.<name>] in numerflow.toml, predict the current round and
    submit, skipping models already submitted this round. Exit 0 when every model is submitted or
    already done, 1 when any failed, the round is closed, or another run holds the lock.

    Example: numerflow round --dry-run
    """
    settings_file: config_base.SettingsFile = ctx.find_root().obj  # read by main_options
    settings.models, settings.config_file = settings_file.models, settings_file.path
    result = numerflow.round(settings, say=typer.echo)
    typer.echo(str(result))
    if not result.ok:
        raise typer.Exit(1)


@app.command(short_help="Write a pickle for Numerai's hosted models.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.ExportConfig)
def export(
    settings: cfg.ExportConfig,
    upload: Annotated[bool, typer.Option("--upload", help="Check the pickle (see --check), then upload it with the "
                                         "image of this Python and the data version trained on (credentials as "
                                         "for submit).")] = False,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="With --upload: the account's model "
                                                      "(default: its only one).")] = None,
):
    """Write a cloudpickled predict() for Numerai's hosted models; --check, --upload.

    The pickle needs numpy and pandas only where it runs: no numerflow or torch.

    Example: numerflow export --model models/model.pt --out model.pkl --upload --model-name my_model
    """
    from numerflow.stages.export import UploadConfig

    if not upload and model_name is not None:
        raise typer.BadParameter("--model-name is for --upload", param_hint="--upload")
    upload_settings = UploadConfig(model_name=model_name) if upload else None
    typer.echo(str(numerflow.export(settings, upload=upload_settings)))


@app.command(short_help="Run the whole pipeline on synthetic data.", cls=PlainHelp)
@reports_errors
def quickstart(
    folder: Annotated[Path, typer.Option("--dir", help="Fresh folder for every artifact.")] = Path("numerflow-quickstart"),
):
    """Run the whole pipeline offline on built-in synthetic data: download --synthetic, prepare,
    train, validate, predict, submit --dry-run. Prints each artifact's path and the validation summary.

    Example: numerflow quickstart --dir /tmp/nf-demo
    """
    typer.echo(str(numerflow.quickstart(folder=folder, say=typer.echo)))


@app.command(short_help="Search train's options with Optuna or Ray.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.SweepConfig)
def sweep(
    settings: cfg.SweepConfig,
    show: Annotated[Optional[str], typer.Option("--show", help="Print the trials table of sweep NAME and exit.")] = None,
    show_space: Annotated[bool, typer.Option("--show-space", help="Print the built-in search space (TOML) and exit.")] = False,
):
    """Search train's options with Optuna (here in --jobs processes, or on a Ray cluster with --ray);
    keep the best trial's checkpoint as SWEEPS_DIR/NAME/best.pt.

    Example: numerflow sweep --space sweep.toml --trials 40 --jobs 2 --objective corr_sharpe
    """
    if show_space:
        typer.echo(numerflow.show_sweep_space(), nl=False)
        return
    if show is not None:
        typer.echo(numerflow.show_sweep(name=show, sweeps_dir=settings.sweeps_dir))
        return
    typer.echo(str(numerflow.sweep(settings, say=typer.echo)))


# --- diagnostics and scores: Numerai's own numbers ----------------------------------------------

@app.command(short_help="Numerai's diagnostics beside numerflow's own.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.DiagnosticsConfig)
def diagnostics(settings: cfg.DiagnosticsConfig):
    """Upload validation predictions to Numerai's diagnostics, wait for the run, and print Numerai's
    summary beside numerflow's own numbers (validate's definitions); writes reports/<name>/diagnostics.json.
    Credentials as for submit.

    Example: numerflow diagnostics --model-name my_model --model models/model.pt --timeout 20m
    """
    typer.echo(str(numerflow.diagnostics(settings, say=typer.echo)))


# ensemble's positional arguments: the folders it chooses among
Candidates = Annotated[list[Path], typer.Argument(help="cv run folders (cv/NAME) and sweeps run with --cv "
                                                  "(sweeps/NAME: every complete trial).", show_default=False,
                                                  metavar="CANDIDATE")]


@app.command(short_help="Fetch each model's live round scores.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.ScoresConfig)
def scores(settings: cfg.ScoresConfig, ctx: typer.Context):
    """Fetch each model's live round scores (CORR, MMC, BMC, payout) from Numerai, write
    scores/<model>/{rounds.csv,scores.png}, and say whether the live CORR is in line with, below
    or above its validation report. Default: every [models.<name>] of numerflow.toml.

    Example: numerflow scores --model-name my_model --rounds 52 --report reports/model
    """
    settings.config_file = ctx.find_root().obj.path  # numerflow.toml as main_options read it
    typer.echo(str(numerflow.scores(settings)))


# --- compare (stages/compare/) ------------------------------------------------------------------


@app.command(short_help="Compare models on the same rows and eras.", cls=PlainHelp)
@reports_errors
@options_from(settings=config_selection.CompareConfig)
def compare(
    models: Annotated[list[Path], typer.Argument(help="Report folders, cv runs, sweep folders, checkpoints (.pt) or "
                                                      "id,prediction files, one or more.", show_default=False,
                                                 metavar="MODEL")],
    settings: config_selection.CompareConfig,
):
    """Compare models on the same rows and eras the way Numerai pays: CORR, MMC, BMC, TB200,
    exposure, payout, drawdown, correlation between models, churn; writes compare/NAME/.

    Example: numerflow compare reports/model cv/mlp256 sweeps/sweep predictions/lgbm.csv --last 200
    """
    import dataclasses

    typer.echo(str(numerflow.compare(dataclasses.replace(settings, models=list(models)))))


# --- ensemble (stages/ensemble.py) --------------------------------------------------------------


@app.command(short_help="Choose (and fit) an ensemble of cv runs/trials.", cls=PlainHelp)
@reports_errors
@options_from(settings=config_selection.EnsembleConfig)
def ensemble(settings: config_selection.EnsembleConfig, candidates: Candidates):
    """Choose an ensemble by greedy forward selection with replacement (Caruana et al., 2004) over
    the candidates' out-of-fold predictions, scored per era as validate scores; write
    ENSEMBLES_DIR/NAME/ensemble.json; with --fit train its members (then predict, validate and
    export take --ensemble ENSEMBLES_DIR/NAME).

    Example: numerflow ensemble sweeps/wide cv/mlp256 --objective corr_sharpe --size 10 --fit
    """
    settings.candidates = candidates
    typer.echo(str(numerflow.ensemble(settings, say=typer.echo)))


# --- ui (stages/ui.py) --------------------------------------------------------------------------


@app.command(short_help="Start MLflow's UI on the tracking store.", cls=PlainHelp)
@reports_errors
@options_from(settings=cfg.UiConfig)
def ui(settings: cfg.UiConfig):
    """Start MLflow's UI on the tracking store (MLFLOW_TRACKING_URI, else numerflow.toml's
    [tracking] uri, else sqlite:///mlflow.db) and say where to point a browser; Ctrl+C stops it.
    Needs the mlflow extra: pip install "numerflow[mlflow]".

    Example: numerflow ui --port 5000
    """
    numerflow.ui(settings, say=typer.echo)
