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
(training/fit.py's train_arrays), as `sweep --cv` trains its folds. With --ray each fold is a Ray
task instead (sweeps/ray_cluster.py: one worker process each, retried once if it dies), which reads
the prepared data itself from --data, a path every node sees; the same seed gives the same folds.
Each finished fold is published as folds/fold_<k>.parquet + fold_<k>.json (a files.publish_set
whose manifest names the settings and eras), which --resume reuses. The results, oof.parquet and
report.json, are one set published at the end: a failed run leaves neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import memory
from numerflow import metrics, schema
from numerflow.config import CvConfig
from numerflow.errors import ConfigError
from numerflow.files import IncompleteSetError, check_set, exclusive_lock, publish_set
from numerflow.provenance import PROVENANCE, make_record, record_path
from numerflow.sweeps import ray_cluster
from numerflow.workflow.oof_files import OOF_FILE, REPORT_FILE
from numerflow.training.settings import changed_settings
from numerflow.training.folds import (FOLD_COLUMN, TRAIN_SPLIT, VALIDATION_SPLIT, CvData, Fold,
                                      plan_folds, run_fold)

FOLDS_DIR = "folds"
LOCK_FILE = ".cv.lock"
# Settings that may change between an interrupted run and its --resume (they change no fold's result).
RESUMABLE_CHANGES = {"resume", "device", "out", "ray", "cpus_per_task", "gpus_per_task"}


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


def fold_names(number: int) -> tuple[str, str]:
    return f"fold_{number}.parquet", f"fold_{number}.json"


def finished_fold(folder: Path, fold: Fold, plan: dict, settings: dict) -> dict | None:
    """The saved record of a fold that an earlier run of the same settings finished, or None.
    Different settings for the same run are a ConfigError (a resume must not mix recipes)."""
    table, manifest_name = fold_names(fold.number)
    if not (folder / manifest_name).is_file():
        return None
    record = schema.read_json(folder / manifest_name)
    changed = changed_settings(record.get("settings", {}), settings, RESUMABLE_CHANGES, CvConfig)
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
    check_config(config)
    estimate = memory.check_prepared(config, "cv")  # issue 20: stop before loading when it cannot fit
    if config.patience is not None:
        raise ConfigError("--patience does not apply to cv: no fold scores its test eras during training "
                          "(that would leak them); every fold trains --epochs epochs")
    folder = Path(config.out) / config.name
    check_run_folder(folder, config.resume)
    # an unreachable --ray address is an error before anything is read or written
    cluster = ray_cluster.connect(config.ray) if config.ray else None
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
        plans = {fold.number: fold.plan(train_split.eras) for fold in folds}
        records = {}
        for fold in folds if config.resume else []:
            record = finished_fold(folder / FOLDS_DIR, fold, plans[fold.number], settings)
            if record is not None:
                records[fold.number] = record
                say(f"fold {fold.number}/{len(folds)}: finished by an earlier run, reused")
        todo = [fold for fold in folds if fold.number not in records]
        for fold, (frame, trained) in run_folds(todo, len(folds), config, data, device, cluster, say):
            records[fold.number] = publish_fold(fold, len(folds), frame, trained, plans[fold.number], settings,
                                                folder / FOLDS_DIR, data.main, say)
        frames = [read_fold(folder / FOLDS_DIR, fold) for fold in folds]
        return publish_results(folder, config, data, folds, [records[fold.number] for fold in folds], frames,
                               len(todo), len(folds) - len(todo), started)


def run_folds(todo: list[Fold], total: int, config: CvConfig, data: CvData, device, cluster, say):
    """(fold, run_fold's (frame, record)) for each fold to train: here one after another, or with
    --ray as Ray tasks (one worker process each), in the order they finish."""
    if cluster is None:
        for fold in todo:
            where = f"fold {fold.number}/{total}"
            yield fold, run_fold(fold, config, data, device, lambda line, where=where: say(f"{where} {line}"))
        return
    on_cluster = replace(config, data=Path(config.data).resolve())  # a path every node sees, not this folder's
    say(f"Running {len(todo)} fold(s) as Ray tasks ({config.cpus_per_task:g} CPU, {config.gpus_per_task:g} GPU each)")
    units = [(f"fold {fold.number}", (on_cluster, fold)) for fold in todo]
    for index, result in ray_cluster.run_tasks(cluster, fold_task, units, config.cpus_per_task, config.gpus_per_task):
        yield todo[index], result


_WORKER_DATA: dict = {}  # a Ray worker process's copy of the prepared data, kept for the next fold it runs


def fold_task(config: CvConfig, fold: Fold) -> tuple[object, dict]:
    """One fold as a Ray task, in a worker process: the prepared data read there (once per process
    and settings), the device chosen there (the GPUs Ray gave the task, else the CPU)."""
    import json

    from numerflow.devices import resolve_device

    key = json.dumps(settings_of(config), sort_keys=True, default=str)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()  # one run's data at a time
        _WORKER_DATA[key] = read_data(config)
    return run_fold(fold, config, _WORKER_DATA[key], resolve_device(config.device), say=lambda line: None)


def publish_fold(fold: Fold, total: int, frame, trained: dict, plan: dict, settings: dict, folder: Path, main: str,
                 say) -> dict:
    """Publish folds/fold_<k>.parquet with its record fold_<k>.json."""
    where = f"fold {fold.number}/{total}"
    record = {"settings": settings, "plan": plan, **trained, **fold_scores(frame, main)}
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
    # data relative to report.json (a moved project still works); the resolved targets, not the
    # option's None, so that `ensemble --fit` trains each member as cv did (issue 27)
    report_file = folder / REPORT_FILE
    report = {"data": record_path(config.data, report_file), "target": data.main, "targets": list(data.targets),
              "settings": settings_of(config), "folds": fold_rows_, "overall": fold_scores(oof, data.main),
              PROVENANCE: make_record(report_file, data=config.data, targets=list(data.targets))}
    with publish_set(folder, REPORT_FILE, report) as files:
        oof[[schema.ID, schema.ERA, FOLD_COLUMN, schema.PREDICTION]].to_parquet(files.path(OOF_FILE), index=False)
    written = schema.read_json(folder / REPORT_FILE)
    return CvResult(folder=folder, oof=folder / OOF_FILE, report=folder / REPORT_FILE, data=written,
                    folds_run=run, folds_reused=reused, seconds=time.perf_counter() - started,
                    files=[folder / OOF_FILE, folder / REPORT_FILE])

