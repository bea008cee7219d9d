"""The Python API: every stage as a plain function whose keyword arguments are the fields of its
settings dataclass in config.py (the CLI's options, with the same names and defaults), e.g.

    import numerflow
    numerflow.write_synthetic(data_dir="data")
    numerflow.prepare(data_dir="data", dataset="data/synthetic", feature_set="all")
    result = numerflow.train(data="data/prepared", layers=[64], epochs=2, device="cpu")
    report = numerflow.validate(model=result.checkpoint, data_dir="data")
    predictions = numerflow.predict(models=[result.checkpoint], data="data/synthetic/live.parquet")

The signatures are built from the dataclasses (one owner for options and defaults), so help()
and a notebook's autocomplete show every option. Stage modules, and with them torch, are imported
only when a function is called: `import numerflow` stays light and changes nothing in the process.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
from dataclasses import MISSING, fields
from typing import Callable

from numerflow import config as cfg
from numerflow.runtime import before_torch_import


def _field_comments(config_class) -> dict[str, str]:
    """Each field's trailing comment in config.py: the option's explanation, for help(); a
    subclass's (CvConfig's) own comments win over those it inherits."""
    comments = {}
    for klass in reversed(config_class.__mro__[:-1]):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        comments.update(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, re.MULTILINE))
    return comments


def _default(f):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _parameters(config_class, extra: dict) -> list[inspect.Parameter]:
    hints = {f.name: f.type for f in fields(config_class)}
    # A choice shows its Enum (options.py): autocomplete offers the members; strings work too.
    hints.update({name: f"{choice.__name__} | str" for name, choice in config_class.CHOICES.items()})
    params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f), annotation=hints[f.name])
              for f in fields(config_class)]
    return params + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                     for name, default in extra.items()]


def _docstring(summary: str, config_class, extra_doc: str) -> str:
    comments = _field_comments(config_class)
    lines = [summary, "", f"Keyword arguments (the fields of numerflow.config.{config_class.__name__}):"]
    for f in fields(config_class):
        lines.append(f"    {f.name} = {_default(f)!r}" + (f"  # {comments[f.name]}" if f.name in comments else ""))
    return "\n".join(lines + ([extra_doc] if extra_doc else []))


def _stage_function(name: str, config_class, run: Callable, summary: str, extra: dict | None = None,
                    extra_doc: str = "", uses_torch: bool = True):
    """A function `name(**options)` that builds `config_class(**options)` and returns
    `run(config, **extras)`; unknown or misspelled options are a TypeError, as for any function."""
    extra = extra or {}
    signature = inspect.Signature(_parameters(config_class, extra))

    def stage(**options):
        bound = signature.bind(**options)  # TypeError naming an unknown option
        extras = {key: bound.arguments.pop(key, default) for key, default in extra.items()}
        if uses_torch:
            before_torch_import()
        return run(config_class(**bound.arguments), **extras)

    stage.__name__ = stage.__qualname__ = name
    stage.__module__ = "numerflow"
    stage.__signature__ = signature
    stage.__doc__ = _docstring(summary, config_class, extra_doc)
    return stage


def _lazy(module: str, function: str) -> Callable:
    """The stage function `module.function`, imported on first call (stage modules import numpy,
    pandas and torch)."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), function)(*args, **kwargs)
    return call


def _predict(config: cfg.PredictConfig):
    """The predictions DataFrame; the stage's PredictResult (paths, round, summary) rides along in
    `frame.attrs["result"]`."""
    result = _lazy("numerflow.stages.predict", "predict")(config)
    frame = result.predictions
    # Without the frame itself: pandas deep-copies attrs, and a frame inside its own attrs recurses.
    frame.attrs["result"] = dataclasses.replace(result, predictions=None)
    return frame


def _silent(line: str) -> None:
    """`say=None`: progress lines go nowhere."""


def _round(config: cfg.RoundConfig, say=print):
    """`models` None: the [models.<name>] tables of `config_file` (numerflow.toml)."""
    if config.models is None:
        config.models = cfg.load_settings(config.config_file).models
    return _lazy("numerflow.stages.round", "run_round")(config, say=say or _silent)


SAY = {"say": print}
SAY_DOC = "    say = print  # receives one progress line at a time; None: silent"

download = _stage_function(
    "download", cfg.DownloadConfig, _lazy("numerflow.stages.download", "download"),
    "Download the Numerai data set into data_dir/<version>/; returns a DownloadResult.", uses_torch=False)
write_synthetic = _stage_function(
    "write_synthetic", cfg.SyntheticConfig, _lazy("numerflow.synthetic", "write_synthetic"),
    "Write the built-in synthetic data set (offline, Numerai's layout) to data_dir/synthetic/; returns "
    "that folder (the CLI's `download --synthetic`).", uses_torch=False)
prepare = _stage_function(
    "prepare", cfg.PrepareConfig, _lazy("numerflow.stages.prepare", "prepare"),
    "Select features and targets, keep them int8 and write prepared/train+validation.parquet; "
    "returns a PrepareResult.", uses_torch=False)
train = _stage_function(
    "train", cfg.TrainConfig, _lazy("numerflow.stages.train", "train"),
    "Train the MLP on prepared data, keeping the best epoch's checkpoint at `out`; returns a TrainResult.",
    extra=SAY, extra_doc=SAY_DOC)
cv = _stage_function(
    "cv", cfg.CvConfig, _lazy("numerflow.stages.cv", "cv"),
    "Cross-validate train's recipe era-wise on prepared data (blocked or walk-forward folds with an embargo), "
    "writing out/name/oof.parquet and report.json; returns a CvResult.", extra=SAY, extra_doc=SAY_DOC)
validate = _stage_function(
    "validate", cfg.ValidateConfig, _lazy("numerflow.stages.validate", "validate"),
    "Score a model, a predictions file or in-memory predictions (a DataFrame/Series indexed by id, or "
    "with an id column) era by era; returns a Report (its `data` is report.json's dict).")
predict = _stage_function(
    "predict", cfg.PredictConfig, _predict,
    "Predict a Numerai Parquet file (default: the current round's live data) with one checkpoint or a "
    "rank-averaged ensemble; returns a DataFrame indexed by id with a `prediction` column, and writes "
    "a file only when asked (`out`, or `write=True` for predictions/<model>_<round>.csv).")
submit = _stage_function(
    "submit", cfg.SubmitConfig, _lazy("numerflow.stages.submit", "submit"),
    "Check predictions against the live ids, upload them to Numerai and keep a receipt; returns a "
    "SubmitResult.", uses_torch=False)
round = _stage_function(  # noqa: A001 (numerflow.round mirrors the `numerflow round` command)
    "round", cfg.RoundConfig, _round,
    "The weekly job: predict and submit every [models.<name>] of numerflow.toml for the current round; "
    "returns a RoundResult (`.ok` is False when any model failed).", extra=SAY, extra_doc=SAY_DOC)
export = _stage_function(
    "export", cfg.ExportConfig, _lazy("numerflow.stages.export", "export"),
    "Write a cloudpickled predict(live_features, live_benchmark_models) for Numerai's hosted models; "
    "returns an ExportResult.", extra={"upload": None},
    extra_doc="    upload = None  # numerflow.stages.export.UploadConfig(model_name=...): also upload it to Numerai")

sweep = _stage_function(
    "sweep", cfg.SweepConfig, _lazy("numerflow.stages.sweep", "sweep"),
    "Search train's options over a space file with Optuna (worker processes here, or a Ray cluster), "
    "scoring each trial on validation; results in sweeps_dir/<name>/; returns a SweepResult.",
    extra=SAY, extra_doc=SAY_DOC)


def show_sweep(*, name: str, sweeps_dir: os.PathLike | str = cfg.DEFAULT_SWEEPS_DIR) -> str:
    """The trials table of the sweep in sweeps_dir/<name>/ (what `numerflow sweep --show NAME` prints)."""
    return _lazy("numerflow.stages.sweep", "show")(cfg.SweepConfig(name=name, sweeps_dir=sweeps_dir))


def quickstart(*, folder: os.PathLike | str = "numerflow-quickstart", say: Callable[[str], None] | None = print):
    """Run the whole pipeline offline on synthetic data in a fresh `folder`; returns a QuickstartResult."""
    from pathlib import Path

    before_torch_import()
    return _lazy("numerflow.stages.quickstart", "quickstart")(Path(folder), say=say or _silent)


STAGES = ["download", "write_synthetic", "prepare", "train", "cv", "validate", "predict", "submit", "round",
          "export", "sweep", "quickstart"]
