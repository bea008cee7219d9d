"""What `numerflow compare` takes: each argument is recognised as one input kind, and the kind's
loader turns it into one or more Candidates. A Candidate knows its name, where it came from, the
data files it was scored on (when it says), and how to give its predictions on the rows compare
scores (`predict(rows)`: a float array, NaN for rows it has no prediction for).

INPUT_KINDS is the one seam for a new kind: a test that recognises the path and a loader
returning Candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import schema
from numerflow.config import CompareConfig
from numerflow.errors import DataError

PREDICTION_SUFFIXES = (".csv", ".parquet")
CHECKPOINT_SUFFIXES = (".pt",)


@dataclass
class Candidate:
    name: str  # the model's row in the table
    source: str  # what it is and where it came from: "cv cv/mlp", "sweep sweeps/s trial 3"
    predict: Callable  # (ScoringRows) -> predictions on those rows (NaN: none)
    data: list[Path] | None = None  # the data files it was scored on, when it says
    notes: list[str] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)  # those it predicts with (compare.json's provenance)


@dataclass(frozen=True)
class InputKind:
    recognises: Callable[[Path], bool]
    load: Callable[[Path, CompareConfig], list[Candidate]]


# --- predictions: an id,prediction file, and a cv run's oof.parquet ----------------------------------


def id_predictions(path: Path):
    """The file's predictions as a float Series indexed by id (text), as validate reads them;
    repeated ids are refused."""
    from numerflow.workflow.validation_rows import read_predictions

    predictions = read_predictions(path)
    repeated = int(predictions.index.duplicated().sum())
    if repeated:
        raise DataError(f"{path}: {repeated} duplicate id(s)")
    return predictions


def placed(predictions, rows, what: str) -> np.ndarray:
    """A Series indexed by id on the scored rows (NaN where it has none); ids outside them are
    left out with a note."""
    positions = rows.row_ids.positions(predictions.index)
    outside = int((positions < 0).sum())
    if outside:
        rows.notes.append(f"{what}: {outside:,} of its {len(predictions):,} ids are not rows of {rows.data_name}: "
                          f"left out")
    return rows.row_ids.place(predictions.index, predictions.to_numpy(), what, strict=False)


def file_candidate(path: Path, config: CompareConfig, name: str | None = None, data=None,
                   source: str | None = None) -> Candidate:
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    predictions = id_predictions(path)
    return Candidate(name or path.stem, source or f"predictions {path}",
                     lambda rows: placed(predictions, rows, str(path)), data)


# --- checkpoints --------------------------------------------------------------------------------------


def checkpoint_candidate(path: Path, config: CompareConfig, name: str | None = None, data=None,
                         source: str | None = None) -> Candidate:
    """Scored on the rows as `validate --model` scores it: its features read from the data, one
    forward pass in batches, its own predict_with head."""
    from numerflow.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)  # a missing or unreadable file is its CheckpointError here
    return Candidate(name or path.stem, source or f"checkpoint {path}",
                     lambda rows: rows.predict_checkpoint(path, checkpoint, config), data, checkpoints=[path])


# --- folders ------------------------------------------------------------------------------------------


def report_candidates(folder: Path, config: CompareConfig) -> list[Candidate]:
    """A validate report keeps per-era scores, not per-row predictions: its source (the checkpoint
    or predictions file report.json names) is scored again on the common rows."""
    from numerflow.provenance import check_record, recorded_path
    from numerflow.reports import REPORT_FILE, read_report

    report = read_report(folder)
    record_file = folder / REPORT_FILE
    source = recorded_path(report.source, record_file) if report.source else Path("")
    named = report.data.get("data")
    named = named if isinstance(named, list) else [named] if named else []
    data = [recorded_path(p, record_file) for p in named] or None
    where = f"report {folder}"
    if not report.source or not source.is_file():
        raise DataError(f"{folder}: its source '{report.source}' is not a file here; compare scores a report's "
                        f"checkpoint or predictions file again (report.json keeps per-era scores, not predictions)")
    notes = check_record(report.data, record_file, str(folder), refresh_report(source, report.data))
    candidate = (checkpoint_candidate(source, config, folder.name, data, where) if source.suffix in CHECKPOINT_SUFFIXES
                 else file_candidate(source, config, folder.name, data, where))
    candidate.notes += notes
    return [candidate]


def refresh_report(source: Path, data: dict) -> str:
    """The command that writes a report again: validate of its checkpoint, ensemble or predictions."""
    kind = data.get("source_kind") or ("model" if source.suffix in CHECKPOINT_SUFFIXES else "predictions")
    return f"numerflow validate --{kind} {source}"


def oof_candidate(name: str, source: str, oof_path: Path, prepared: Path, with_validation: bool,
                  notes: list[str] = ()) -> Candidate:
    """Out-of-fold predictions (oof.parquet: id, era, fold, prediction) over the prepared files
    their folds came from: train.parquet, and validation.parquet when it was a fold."""
    from numerflow.workflow.oof_files import read_oof

    predictions = read_oof(oof_path)
    data = [prepared / schema.TRAIN_FILE] + ([prepared / schema.VALIDATION_FILE] if with_validation else [])
    return Candidate(name, source, lambda rows: placed(predictions, rows, str(oof_path)), data, list(notes))


def cv_candidates(folder: Path, config: CompareConfig) -> list[Candidate]:
    """A cv run, scored on its out-of-fold predictions over the prepared files its folds came from."""
    from numerflow.training.folds import VALIDATION_SPLIT
    from numerflow.workflow.oof_files import REPORT_FILE, read_oof_source

    cv = read_oof_source(folder, REPORT_FILE, f"numerflow cv --name {folder.name}")
    folds = schema.read_json(folder / REPORT_FILE).get("folds")
    splits = {fold.get("split") for fold in folds if isinstance(fold, dict)} if isinstance(folds, list) else set()
    return [oof_candidate(folder.name, f"cv {folder}", cv.oof, cv.data, VALIDATION_SPLIT in splits, cv.notes)]


def sweep_candidates(folder: Path, config: CompareConfig) -> list[Candidate]:
    """A sweep's best trial (best.pt, on the validation file its trials were scored on). With
    --trials, every complete trial: on its out-of-fold predictions when the sweep ran with --cv
    (the best trial's too, so that all are scored on the same eras), else on the checkpoints the
    sweep kept (only the best's today: the others are named in a note as not scorable)."""
    from numerflow.sweeps.results import BEST_JSON, BEST_PT, SETTINGS_JSON

    best = schema.read_json(folder / BEST_JSON, missing_hint=" (the sweep finished no trial)")
    if config.trials and trial_oof_files(folder):
        return trial_oof_candidates(folder, best)
    from numerflow.provenance import recorded_path

    recording = folder / SETTINGS_JSON if (folder / SETTINGS_JSON).is_file() else folder / BEST_JSON
    settings = schema.read_json(recording) if recording.name == SETTINGS_JSON else best.get("settings", {})
    data = [recorded_path(settings["data"], recording) / schema.VALIDATION_FILE] if settings.get("data") else None
    if not (folder / BEST_PT).is_file():
        raise DataError(f"{folder / BEST_PT}: not found (the sweep's best checkpoint)")
    candidates = [checkpoint_candidate(folder / BEST_PT, config, f"{folder.name}:best", data,
                                       f"sweep {folder} best (trial {best.get('number')})")]
    if config.trials:
        complete = [n for n in complete_trials(folder) if n != best.get("number")]
        kept = [n for n in complete if (folder / "trials" / f"{n}.pt").is_file()]
        candidates += [checkpoint_candidate(folder / "trials" / f"{n}.pt", config, f"{folder.name}:{n}", data,
                                            f"sweep {folder} trial {n}") for n in kept]
        missing = [n for n in complete if n not in kept]
        if missing:
            candidates[0].notes.append(f"--trials: sweep {folder} keeps only its best trial's checkpoint and ran "
                                       f"without --cv; complete trial(s) {', '.join(map(str, missing))} left no "
                                       f"checkpoint or out-of-fold predictions to score: left out")
    return candidates


def complete_trials(folder: Path) -> list[int]:
    """The numbers of a sweep's complete trials, from trials.csv."""
    import pandas as pd

    from numerflow.sweeps.results import TRIALS_CSV

    trials = pd.read_csv(folder / TRIALS_CSV, usecols=["number", "state"])
    return [int(n) for n, state in zip(trials["number"], trials["state"]) if state == "COMPLETE"]


def trial_oof_files(folder: Path) -> dict[int, Path]:
    """A `sweep --cv`'s kept trials that hold their out-of-fold predictions: number → folder."""
    from numerflow.sweeps.local import TRIAL_OOF, kept_trials

    return {number: trial for number, trial in kept_trials(folder).items() if (trial / TRIAL_OOF).is_file()}


def trial_oof_candidates(folder: Path, best: dict) -> list[Candidate]:
    """Every complete trial of a `sweep --cv` on its out-of-fold predictions, as a cv run is scored."""
    from numerflow.sweeps.local import TRIAL_SETTINGS
    from numerflow.workflow.oof_files import read_oof_source

    kept = trial_oof_files(folder)
    candidates = []
    for number in [n for n in complete_trials(folder) if n in kept]:
        trial = read_oof_source(kept[number], TRIAL_SETTINGS, f"numerflow sweep --cv --name {folder.name}")
        is_best = " (the best)" if number == best.get("number") else ""
        candidates.append(oof_candidate(f"{folder.name}:{number}", f"sweep {folder} trial {number}{is_best}, "
                                        f"out-of-fold", trial.oof, trial.data,
                                        bool(trial.settings.get("include_validation")), trial.notes))
    if candidates:
        candidates[0].notes.append(f"--trials: sweep {folder} ran with --cv: its {len(candidates)} complete trial(s) "
                                   f"are scored on their out-of-fold predictions (training eras), the best among them, "
                                   f"not best.pt on validation")
    return candidates


# --- ensembles ----------------------------------------------------------------------------------------


def ensemble_candidates(folder: Path, config: CompareConfig) -> list[Candidate]:
    """A fitted ensemble (ensembles/<name>/), scored on the rows as `validate --ensemble` scores it:
    its members' predictions ranked within eras and weighted, never on the eras it was fitted on."""
    from numerflow.ensembles import ENSEMBLE_JSON, load_ensemble, read_ensemble
    from numerflow.provenance import recorded_path

    members, _ = load_ensemble(folder)  # an unfitted or damaged one, or a changed member checkpoint, is its error here
    record = read_ensemble(folder)
    data = [recorded_path(record["data"], folder / ENSEMBLE_JSON) / schema.VALIDATION_FILE] \
        if record.get("data") else None
    candidate = Candidate(folder.name, f"ensemble {folder}", lambda rows: rows.predict_ensemble(folder, config), data,
                          checkpoints=members)
    if (record.get("fitted") or {}).get("on") == "all":
        candidate.notes.append(f"{folder}: fitted with --fit-on all, on the validation eras too: its numbers there "
                               f"are not held out")
    return [candidate]


def _is_cv(path: Path) -> bool:
    return path.is_dir() and (path / "oof.parquet").is_file()


def _is_sweep(path: Path) -> bool:
    return path.is_dir() and ((path / "best.json").is_file() or (path / "trials.csv").is_file())


def _is_ensemble(path: Path) -> bool:
    from numerflow.ensembles import ENSEMBLE_JSON

    return path.is_dir() and (path / ENSEMBLE_JSON).is_file()


def _is_report(path: Path) -> bool:
    return path.is_dir() and (path / "report.json").is_file()


# The input kinds, tried in this order (a cv folder holds a report.json too: cv comes first).
INPUT_KINDS: dict[str, InputKind] = {
    "cv": InputKind(_is_cv, cv_candidates),
    "sweep": InputKind(_is_sweep, sweep_candidates),
    "ensemble": InputKind(_is_ensemble, ensemble_candidates),
    "report": InputKind(_is_report, report_candidates),
    "checkpoint": InputKind(lambda p: p.is_file() and p.suffix in CHECKPOINT_SUFFIXES,
                            lambda path, config: [checkpoint_candidate(path, config)]),
    "predictions": InputKind(lambda p: p.is_file() and p.suffix in PREDICTION_SUFFIXES,
                             lambda path, config: [file_candidate(path, config)]),
}


def load_candidates(config: CompareConfig) -> list[Candidate]:
    """Every argument as its Candidates; an argument of no known kind is a DataError. Names are
    made unique (the same file given twice is one model)."""
    if len(config.models) < 1:
        from numerflow.errors import ConfigError

        raise ConfigError("compare: give at least one model (a report, cv run, sweep, ensemble, checkpoint or "
                          "predictions file)")
    candidates: list[Candidate] = []
    for path in map(Path, config.models):
        if not path.exists():
            raise DataError(f"{path}: not found")
        kind = next((kind for kind in INPUT_KINDS.values() if kind.recognises(path)), None)
        if kind is None:
            raise DataError(f"{path}: not a report folder, cv run, sweep folder, ensemble folder, checkpoint (.pt) "
                            f"or predictions file (.csv/.parquet)")
        candidates += kind.load(path, config)
    seen: dict[str, int] = {}
    for candidate in candidates:
        count = seen.get(candidate.name, 0)
        seen[candidate.name] = count + 1
        if count:
            candidate.name = f"{candidate.name}#{count + 1}"
    return candidates
