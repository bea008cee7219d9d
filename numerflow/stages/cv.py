"""cv stage: era-wise cross-validation of train's recipe on a prepared folder.

The training eras are cut into contiguous blocks; each fold trains on its training eras and
predicts its test block. `blocked`: --folds blocks, each tested, trained on every other era.
`expanding` (walk-forward): --folds + 1 blocks, the first never tested (nothing comes before it),
each later one trained on the eras before it. The embargo drops the eras within --embargo era
numbers of a test block from its training eras, on both sides (targets look weeks ahead, so
neighbouring eras share information). --include-validation adds validation.parquet as a last fold,
trained on the training eras more than --embargo eras before it.

No epoch is chosen by its score on the test block (that would leak the test block into the
model): every fold trains --epochs epochs and predicts with the last one.

The data is read once; a fold is a call of training/folds.py's run_fold on in-memory rows
(training/fit.py's train_arrays), as `sweep --cv` trains its folds.
Each finished fold is published as folds/fold_<k>.parquet + fold_<k>.json (a files.publish_set
whose manifest names the settings and eras), which --resume reuses. The results, oof.parquet and
report.json, are one set published at the end: a failed run leaves neither.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import memory
from numerflow import metrics, schema
from numerflow.config import CvConfig
from numerflow.errors import ConfigError
from numerflow.files import IncompleteSetError, check_set, exclusive_lock, publish_set
from numerflow.workflow.oof_files import OOF_FILE, REPORT_FILE
from numerflow.training.folds import (FOLD_COLUMN, TRAIN_SPLIT, VALIDATION_SPLIT, CvData, Fold, check_fold_settings,
                                      plan_folds, run_fold)

FOLDS_DIR = "folds"
LOCK_FILE = ".cv.lock"
# Settings that may change between an interrupted run and its --resume (they change no fold's result).
RESUMABLE_CHANGES = {"resume", "device", "out"}


@dataclass
class CvResult:
    folder: Path
    oof: Path
    report: Path
    data: dict  # report.json's content
    folds_run: int
    folds_reused: int
    seconds: float
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        overall = self.data["overall"]
        lines = [f"Cross-validated {len(self.data['folds'])} fold(s) ({self.data['settings']['scheme']}, embargo "
                 f"{self.data['settings']['embargo']} eras; {self.folds_run} trained, {self.folds_reused} reused) "
                 f"in {self.seconds:.1f} s: {overall['rows']:,} out-of-fold rows, {overall['eras']} eras",
                 f"{'':<14}{'mean':>8}{'std':>8}{'sharpe':>8}{'max_dd':>8}"]
        for name in ("numerai_corr", "spearman"):
            s = overall[name]
            lines.append(f"{name:<14}" + "".join(f"{fmt(s[k]):>8}" for k in ("mean", "std", "sharpe", "max_drawdown")))
        lines += [f"Out-of-fold predictions: {self.oof}", f"Report: {self.report}"]
        return "\n".join(lines)


def fmt(value) -> str:
    return "nan" if value is None else f"{value:.4f}"


# --- the data ---------------------------------------------------------------------------------


def read_data(config: CvConfig, say: Callable[[str], None] | None = None) -> CvData:
    from numerflow.training.data import benchmark_note, choose_targets, read_manifest, read_split

    data = Path(config.data)
    manifest = read_manifest(data)
    features = list(manifest["features"])
    targets = choose_targets(config, manifest, data / schema.PREPARED_MANIFEST_FILE)
    main = manifest.get("target") or targets[0]
    columns = targets if main in targets else targets + [main]
    names = [TRAIN_SPLIT] + ([VALIDATION_SPLIT] if config.include_validation else [])
    uses_benchmark = config.bmc_weight > 0  # --bmc-weight: refused before reading when there is none
    if uses_benchmark:
        note = benchmark_note(manifest, data)
        if say:
            say(note)
    splits = {name: read_split(data / f"{name}.parquet", features, columns, require_main=name == TRAIN_SPLIT,
                               with_ids=True, benchmark=uses_benchmark) for name in names}
    return CvData(features, targets, main, splits, columns.index(main))


# --- the run ----------------------------------------------------------------------------------


def settings_of(config: CvConfig) -> dict:
    from numerflow.training.settings import config_dict

    return config_dict(config)


def changed_settings(saved: dict, now: dict) -> list[str]:
    return [f"{k} ({saved.get(k)!r} → {now[k]!r})" for k in now
            if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]


def fold_names(number: int) -> tuple[str, str]:
    return f"fold_{number}.parquet", f"fold_{number}.json"


def finished_fold(folder: Path, fold: Fold, plan: dict, settings: dict) -> dict | None:
    """The saved record of a fold that an earlier run of the same settings finished, or None.
    Different settings for the same run are a ConfigError (a resume must not mix recipes)."""
    table, manifest_name = fold_names(fold.number)
    if not (folder / manifest_name).is_file():
        return None
    record = schema.read_json(folder / manifest_name)
    changed = changed_settings(record.get("settings", {}), settings)
    if changed:
        raise ConfigError(f"{folder / manifest_name}: cannot resume with different settings: {', '.join(changed)} "
                          f"(choose another --name for a new run)")
    if record.get("plan") != plan:
        raise ConfigError(f"{folder / manifest_name}: cannot resume: fold {fold.number}'s eras differ from this run's "
                          f"(the prepared data changed?); choose another --name")
    try:
        check_set(folder, manifest_name, record.get("files", {}), names=[table])
    except IncompleteSetError:
        return None  # a damaged fold is trained again
    return record


def check_run_folder(folder: Path, resume: bool) -> None:
    if folder.is_file():
        raise ConfigError(f"{folder}: exists and is not a folder")
    if not resume and folder.is_dir() and any(p.name != LOCK_FILE for p in folder.iterdir()):
        raise ConfigError(f"{folder}: holds an earlier cv run; pass --resume to continue it, or choose another --name")


def cv(config: CvConfig, say: Callable[[str], None] | None = None) -> CvResult:
    """Cross-validate train's recipe (config's train settings) on config.data's training eras;
    write <out>/<name>/oof.parquet and report.json. `say` gets a line per fold (and epoch)."""
    from numerflow.devices import resolve_device
    from numerflow.training.settings import check_config

    started = time.perf_counter()
    say = say or (lambda line: None)
    check_fold_settings(config.folds, config.embargo)
    check_config(config)
    estimate = memory.check_prepared(config, "cv")  # issue 20: stop before loading when it cannot fit
    if config.patience is not None:
        raise ConfigError("--patience does not apply to cv: no fold scores its test eras during training "
                          "(that would leak them); every fold trains --epochs epochs")
    if not re.fullmatch(r"[\w.-]+", config.name) or config.name in (".", ".."):
        raise ConfigError(f"--name '{config.name}': use letters, digits, '.', '-' and '_' only")
    folder = Path(config.out) / config.name
    check_run_folder(folder, config.resume)
    device = resolve_device(config.device)
    gpu_note = memory.device_note(estimate, device)  # whether the features will stay on the GPU
    if gpu_note:
        say(gpu_note)
    data = read_data(config, say)
    train_split = data.splits[TRAIN_SPLIT]
    validation = data.splits.get(VALIDATION_SPLIT)
    source = Path(config.data) / schema.TRAIN_FILE
    folds = plan_folds(train_split.eras, config.folds, config.scheme, config.embargo, source,
                       validation.eras if validation is not None else None)
    settings = settings_of(config)
    with exclusive_lock(folder / LOCK_FILE, "cv run of this name"):
        check_run_folder(folder, config.resume)  # again, now that no other run can write it
        records, frames, reused = [], [], 0
        for fold in folds:
            plan = fold.plan(train_split.eras)
            record = finished_fold(folder / FOLDS_DIR, fold, plan, settings) if config.resume else None
            if record is not None:
                reused += 1
                say(f"fold {fold.number}/{len(folds)}: finished by an earlier run, reused")
            else:
                record = train_fold(fold, folds, config, data, device, plan, settings, folder / FOLDS_DIR, say)
            records.append(record)
            frames.append(read_fold(folder / FOLDS_DIR, fold))
        return publish_results(folder, config, data, folds, records, frames, len(folds) - reused, reused, started)


def train_fold(fold: Fold, folds: list[Fold], config: CvConfig, data: CvData, device, plan: dict, settings: dict,
               folder: Path, say) -> dict:
    """Run one fold and publish folds/fold_<k>.parquet with its record fold_<k>.json."""
    where = f"fold {fold.number}/{len(folds)}"
    frame, record = run_fold(fold, config, data, device, lambda line: say(f"{where} {line}"))
    record = {"settings": settings, "plan": plan, **record, **fold_scores(frame, data.main)}
    table, manifest_name = fold_names(fold.number)
    with publish_set(folder, manifest_name, record) as files:
        frame.to_parquet(files.path(table), index=False)
    say(f"{where}: test eras {plan['test'][0]}-{plan['test'][1]} ({len(frame):,} rows), trained on "
        f"{plan['train_eras']} eras: CORR mean {fmt(record['numerai_corr']['mean'])}, "
        f"Spearman mean {fmt(record['spearman']['mean'])} ({record['seconds']:.1f} s)")
    return record


def read_fold(folder: Path, fold: Fold):
    import pandas as pd

    return pd.read_parquet(folder / fold_names(fold.number)[0])


def fold_scores(frame, main: str) -> dict:
    """Era CORR and Spearman summaries of rows' predictions: metrics.per_era_scores and
    metrics.summarize, exactly as `numerflow validate` computes them."""
    from numerflow.reports import json_safe

    per_era = metrics.per_era_scores(frame[schema.PREDICTION].to_numpy(dtype=np.float64),
                                     frame[main].to_numpy(dtype=np.float64),
                                     frame[schema.ERA].astype(str).to_numpy())
    return {"rows": int(len(frame)), "eras": len(per_era["spearman"].eras),
            **{name: json_safe(metrics.summarize(scores.values)) for name, scores in per_era.items()}}


def publish_results(folder: Path, config: CvConfig, data: CvData, folds: list[Fold], records: list[dict],
                    frames: list, run: int, reused: int, started: float) -> CvResult:
    """oof.parquet and report.json (written last, naming oof.parquet's checksum) as one set."""
    import pandas as pd

    oof = pd.concat(frames, ignore_index=True)
    fold_rows_ = [{**record["plan"], **{k: record[k] for k in ("rows", "eras", "numerai_corr", "spearman")},
                   "rows_train": record["rows_train"], "epochs": len(record["epochs"]),
                   "train_loss": record["epochs"][-1]["train_loss"], "seconds": record["seconds"]}
                  for record in records]
    report = {"data": str(config.data), "target": data.main, "settings": settings_of(config),
              "folds": fold_rows_, "overall": fold_scores(oof, data.main)}
    with publish_set(folder, REPORT_FILE, report) as files:
        oof[[schema.ID, schema.ERA, FOLD_COLUMN, schema.PREDICTION]].to_parquet(files.path(OOF_FILE), index=False)
    written = schema.read_json(folder / REPORT_FILE)
    return CvResult(folder=folder, oof=folder / OOF_FILE, report=folder / REPORT_FILE, data=written,
                    folds_run=run, folds_reused=reused, seconds=time.perf_counter() - started,
                    files=[folder / OOF_FILE, folder / REPORT_FILE])

