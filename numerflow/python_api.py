"""The Python API: every stage as a plain function whose keyword arguments are the fields of its
settings dataclass in config.py (the CLI's options, with the same names, defaults and help), e.g.

    import numerflow
    numerflow.write_synthetic(data_dir="data")
    numerflow.prepare(data_dir="data", dataset="data/synthetic", feature_set="all")
    result = numerflow.train(data="data/prepared", layers=[64], epochs=2, device="cpu")
    report = numerflow.validate(model=result.checkpoint, data_dir="data")
    predictions = numerflow.predict(models=[result.checkpoint], data="data/synthetic/live.parquet").frame

Each function also takes a whole settings object instead: `numerflow.train(TrainConfig(epochs=2))`
(the CLI calls them so). `takes_settings` gives each function the dataclass's fields as its
signature and docstring, so help() and a notebook's autocomplete show every option and its help.
Stage modules, and with them torch, are imported only when a function runs: `import numerflow`
stays light and changes nothing in the process.

Every function returns its stage's Result object (its str() is what the command prints); a
table-like result (predict, diagnostics, scores, compare) has the table as a DataFrame in `.frame`.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Callable

from numerflow import config as cfg
from numerflow import config_base
from numerflow import config_selection
from numerflow.options import command_line_of
from numerflow.runtime import before_torch_import

Say = Callable[[str], None]


def _default(f):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _option_parameters(settings_class) -> list[inspect.Parameter]:
    hints = {f.name: f.type for f in fields(settings_class)}
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f), annotation=hints[f.name])
            for f in fields(settings_class)]


def _options_doc(settings_class) -> str:
    lines = [f"Keyword arguments (the fields of numerflow.config.{settings_class.__name__}):"]
    for f in fields(settings_class):
        lines.append(f"    {f.name} = {_default(f)!r}  # {command_line_of(f).help}")
    return "\n".join(lines)


def takes_settings(settings_class):
    """Decorate `stage(settings, *, extras...)`: the public function takes either one settings
    object or the dataclass's fields as keyword arguments (a misspelled one is a TypeError, as
    for any function), followed by the stage's own keyword extras (`say`)."""

    def decorate(stage):
        extras = [p for p in inspect.signature(stage).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        settings_param = inspect.Parameter("settings", inspect.Parameter.POSITIONAL_ONLY, default=None)
        signature = inspect.Signature([settings_param, *_option_parameters(settings_class), *extras])

        @functools.wraps(stage)
        def public(settings=None, /, **options):
            extra_values = {p.name: options.pop(p.name) for p in extras if p.name in options}
            if settings is not None and options:
                raise TypeError(f"{stage.__name__}(): give a {settings_class.__name__} or keyword options, not both")
            if settings is None:
                signature.bind(**options)  # TypeError naming an unknown option
                settings = settings_class(**options)
            return stage(settings, **extra_values)

        public.__signature__ = signature
        public.__doc__ = f"{inspect.getdoc(stage)}\n\n{_options_doc(settings_class)}"
        return public

    return decorate


def _silent(line: str) -> None:
    """`say=None`: progress lines go nowhere."""


def _tracked(kind: str, settings, run_stage: Callable[[], object]):
    """Run a stage and log its run to MLflow (numerflow/tracking_views.py maps its result and files
    to a run; where and whether: docs/tracking.md). Where tracking goes is read before the work, so
    a bad [tracking] table is an error before anything runs; after it, tracking only ever warns."""
    from numerflow import tracking_views

    config = tracking_views.plan(settings)
    result = run_stage()
    tracking_views.record(kind, result, settings, config)
    return result


@takes_settings(cfg.DownloadConfig)
def download(settings: cfg.DownloadConfig):
    """Download the Numerai data set into data_dir/<version>/; returns a DownloadResult."""
    from numerflow.stages.download import download as run_download
    return run_download(settings)


@takes_settings(cfg.SyntheticConfig)
def write_synthetic(settings: cfg.SyntheticConfig):
    """Write the built-in synthetic data set (offline, Numerai's layout) to data_dir/synthetic/;
    returns that folder (the CLI's `download --synthetic`)."""
    from numerflow.synthetic import write_synthetic as write
    return write(settings)


@takes_settings(cfg.PrepareConfig)
def prepare(settings: cfg.PrepareConfig):
    """Select features and targets, keep them int8 and write prepared/train+validation.parquet;
    returns a PrepareResult."""
    from numerflow.stages.prepare import prepare as run_prepare
    return run_prepare(settings)


@takes_settings(cfg.TrainConfig)
def train(settings: cfg.TrainConfig, *, say: Say | None = print):
    """Train the MLP on prepared data, keeping the best epoch's checkpoint at `out`; returns a
    TrainResult. `say` receives one progress line at a time (None: silent)."""
    before_torch_import()
    from numerflow.stages.train import train as run_train
    return _tracked("train", settings, lambda: run_train(settings, say=say or _silent))


@takes_settings(cfg.CvConfig)
def cv(settings: cfg.CvConfig, *, say: Say | None = print):
    """Cross-validate train's recipe era-wise on prepared data (blocked or walk-forward folds with
    an embargo), writing out/name/oof.parquet and report.json; returns a CvResult."""
    before_torch_import()
    from numerflow.stages.cv import cv as run_cv
    return _tracked("cv", settings, lambda: run_cv(settings, say=say or _silent))


@takes_settings(cfg.ValidateConfig)
def validate(settings: cfg.ValidateConfig):
    """Score a model, a predictions file or in-memory predictions (a DataFrame/Series indexed by
    id, or with an id column) era by era; returns a Report (its `data` is report.json's dict)."""
    before_torch_import()
    from numerflow.stages.validate import validate as run_validate
    return _tracked("validate", settings, lambda: run_validate(settings))


@takes_settings(cfg.PredictConfig)
def predict(settings: cfg.PredictConfig):
    """Predict a Numerai Parquet file (default: the current round's live data) with one checkpoint
    or a rank-averaged ensemble, and write a file only when asked (`out`, or `write=True` for
    predictions/<model>_<round>.csv); returns a PredictResult (paths, round, summary) whose
    `.frame` is the DataFrame indexed by id with a `prediction` column."""
    before_torch_import()
    from numerflow.stages.predict import predict as run_predict
    return run_predict(settings)


@takes_settings(cfg.SubmitConfig)
def submit(settings: cfg.SubmitConfig):
    """Check predictions against the live ids, upload them to Numerai and keep a receipt; returns
    a SubmitResult."""
    from numerflow.stages.submit import submit as run_submit
    return run_submit(settings)


@takes_settings(cfg.RoundConfig)
def round(settings: cfg.RoundConfig, *, say: Say | None = print):  # noqa: A001 (mirrors `numerflow round`)
    """The weekly job: predict and submit every [models.<name>] of numerflow.toml for the current
    round; returns a RoundResult (`.ok` is False when any model failed). `models` None: the
    [models.<name>] tables of `config_file`."""
    before_torch_import()
    from numerflow.stages.round import run_round
    if settings.models is None:
        settings.models = config_base.load_settings(settings.config_file).models
    return run_round(settings, say=say or _silent)


@takes_settings(cfg.ExportConfig)
def export(settings: cfg.ExportConfig, *, upload=None):
    """Write a cloudpickled predict(live_features, live_benchmark_models) for Numerai's hosted
    models; returns an ExportResult. `upload`: a numerflow.stages.export.UploadConfig(model_name=...)
    to also upload it to Numerai."""
    before_torch_import()
    from numerflow.stages.export import export as run_export
    return run_export(settings, upload=upload)


@takes_settings(cfg.SweepConfig)
def sweep(settings: cfg.SweepConfig, *, say: Say | None = print):
    """Search train's options over a space file with Optuna (worker processes here, or a Ray
    cluster), scoring each trial on validation; results in sweeps_dir/<name>/; returns a SweepResult."""
    before_torch_import()
    from numerflow.stages.sweep import sweep as run_sweep
    return _tracked("sweep", settings, lambda: run_sweep(settings, say=say or _silent))


def show_sweep(*, name: str, sweeps_dir: os.PathLike | str = cfg.DEFAULT_SWEEPS_DIR) -> str:
    """The trials table of the sweep in sweeps_dir/<name>/ (what `numerflow sweep --show NAME` prints)."""
    from numerflow.stages.sweep import show
    return show(cfg.SweepConfig(name=name, sweeps_dir=sweeps_dir))


def show_sweep_space() -> str:
    """The built-in search space of `sweep --cv` without --space (what `numerflow sweep --show-space` prints)."""
    from numerflow.stages.sweep import show_space
    return show_space()


def quickstart(*, folder: os.PathLike | str = "numerflow-quickstart", say: Say | None = print):
    """Run the whole pipeline offline on synthetic data in a fresh `folder`; returns a QuickstartResult."""
    before_torch_import()
    from numerflow.stages.quickstart import quickstart as run_quickstart
    return run_quickstart(Path(folder), say=say or _silent)


# --- diagnostics and scores: Numerai's own numbers ----------------------------------------------

@takes_settings(cfg.DiagnosticsConfig)
def diagnostics(settings: cfg.DiagnosticsConfig, *, say: Say | None = print):
    """Upload validation predictions (a file, or checkpoints' predictions) to Numerai's diagnostics,
    wait for the run, and set Numerai's summary beside numerflow's numbers for the same predictions
    (validate's definitions); writes reports/<name>/diagnostics.json. Returns a DiagnosticsResult
    (Numerai's whole answer, mismatch lines) whose `.frame` is that table as a DataFrame (metric,
    numerai, numerflow, difference, rating)."""
    before_torch_import()
    from numerflow.stages.diagnostics import diagnostics as run_diagnostics
    return run_diagnostics(settings, say=say or _silent)


@takes_settings(cfg.ScoresConfig)
def scores(settings: cfg.ScoresConfig):
    """Fetch each model's live round scores from Numerai (default: every [models.<name>] of
    numerflow.toml), write scores/<model>/{rounds.csv,scores.png} and hold the live CORR against
    the model's validation report. Returns a ScoresResult (per-model summaries and verdicts) whose
    `.frame` is the per-round DataFrame (model, round, metric, value, ...)."""
    from numerflow.stages.scores import scores as run_scores
    return run_scores(settings)


STAGES = ["download", "write_synthetic", "prepare", "train", "cv", "validate", "predict", "submit", "round",
          "export", "sweep", "quickstart"]
STAGES += ["diagnostics", "scores"]


# --- compare (stages/compare/) ------------------------------------------------------------------


@takes_settings(config_selection.CompareConfig)
def compare(settings: config_selection.CompareConfig):
    """Score several models (report folders, cv runs, sweeps, checkpoints, predictions files) on
    the same rows and eras the way Numerai pays, write compare/<name>/; returns a CompareResult
    (its str() is the printout) whose `.frame` is compare.csv's table as a DataFrame."""
    before_torch_import()
    from numerflow.stages.compare import compare as run_compare
    return _tracked("compare", settings, lambda: run_compare(settings))


STAGES.append("compare")


@takes_settings(config_selection.EnsembleConfig)
def ensemble(settings: config_selection.EnsembleConfig, *, say: Say | None = print):
    """Choose an ensemble of cv runs and `sweep --cv` trials by greedy forward selection with
    replacement on their out-of-fold predictions (`fit=True`: train its members); writes
    ensembles_dir/<name>/ensemble.json (and members/*.pt); returns an EnsembleResult. A fitted
    ensemble is a model: predict/validate/export(ensemble="ensembles/<name>")."""
    before_torch_import()
    from numerflow.stages.ensemble import ensemble as run_ensemble
    return _tracked("ensemble", settings, lambda: run_ensemble(settings, say=say or _silent))


STAGES.append("ensemble")


@takes_settings(cfg.UiConfig)
def ui(settings: cfg.UiConfig, *, say: Say | None = print):
    """Start MLflow's UI on the tracking store (the mlflow extra) and serve until interrupted."""
    from numerflow.stages.ui import ui as run_ui
    run_ui(settings, say=say or _silent)


STAGES.append("ui")
