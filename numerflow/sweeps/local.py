"""A sweep on one machine: an Optuna study stored in sweeps/<name>/study.db, trials trained in
`jobs` worker processes, each holding one in-memory copy of the prepared data.

Reproducible with the same seed, whatever the timing: trials run in batches of `jobs`. The main
process samples a whole batch first (TPE seeded from the sweep's seed and the trial's number, so
a trial's parameters depend only on the trials finished before its batch), the workers train
them, and the main process alone records the results, in trial order, once the batch is done.
A worker's pruning decisions compare its per-epoch scores with the trials finished before its
batch only (a snapshot of the study), never with its running neighbours. The cost: a batch
waits for its slowest trial.

Resuming: trials that were running when the sweep was killed are marked failed and run again
with the same parameters; trials already finished are kept.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from numerflow.config import TrainConfig
from numerflow.errors import NumerflowError
from numerflow.options import Pruner as PrunerName
from numerflow.sweeps.objective import Objective

STUDY_NAME = "numerflow"
INTERRUPTED = "interrupted"  # user attr of a trial the sweep was killed during
TRIAL_OOF, TRIAL_SETTINGS = "oof.parquet", "settings.json"  # a --cv trial's files in trials/<number>/


def make_pruner(name: str):
    import optuna

    if name == PrunerName.median:
        # From the 2nd epoch on, once 4 trials have finished: the first epoch of a one-cycle
        # schedule is warm-up, its score says little.
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)
    if name == PrunerName.halving:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def sampler_for(seed: int, number: int):
    """TPE seeded by the sweep's seed and the trial's number: the same history gives the same
    parameters, in any process and after any resume."""
    import optuna

    return optuna.samplers.TPESampler(seed=(seed * 1_000_003 + number) % 2**32)


def open_study(storage_path: Path, create: bool):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{storage_path}")
    if create:
        return optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize")
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


@dataclass
class TrialJob:
    """What a worker needs for one trial (pickled to it)."""
    number: int
    params: dict
    config: TrainConfig
    data: Path
    objective: Objective
    pruner: str
    history: list = field(default_factory=list)  # FrozenTrials finished before this batch
    checkpoint: Path | None = None  # where a finished trial's checkpoint goes
    cv: object = None  # a CvConfig: score the trial by cross-validation instead


@dataclass
class TrialOutcome:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    scores: list[float]
    best_epoch: int = 0
    seconds: float = 0.0
    error: str | None = None


def run_job(job: TrialJob) -> TrialOutcome:
    """Train one trial on this process's copy of the data; prune it against the snapshot."""
    import optuna

    from numerflow.checkpoint import save_checkpoint
    from numerflow.sweeps.trial import fit_by_cv, fit_in_memory, load_prepared

    started = time.perf_counter()
    judge = _snapshot_trial(job.pruner, job.history)
    scores: list[float] = []

    def on_epoch(epoch: int, score: float, _checkpoint, final: bool) -> None:
        scores.append(score)
        judge.report(score, epoch)
        # A trial that has run all its epochs (or folds) is finished: its score stands, whatever
        # the pruner would say of it (pruning exists to save the epochs still to come).
        if not final and judge.should_prune():
            raise optuna.TrialPruned()

    try:
        data = load_prepared(job.data, need_meta_model=job.objective.needs_meta_model and job.cv is None, with_ids=job.cv is not None)
        if job.cv is not None:
            result = fit_by_cv(job.cv, data, job.objective, on_epoch)
        else:
            result = fit_in_memory(job.config, data, job.objective, on_epoch)
    except optuna.TrialPruned:
        return TrialOutcome(job.number, "PRUNED", scores, seconds=time.perf_counter() - started)
    except NumerflowError as exc:  # e.g. training diverged at this lr: a bad trial, not a bad sweep
        return TrialOutcome(job.number, "FAIL", scores, seconds=time.perf_counter() - started, error=str(exc))
    if result.checkpoint is not None:
        save_checkpoint(job.checkpoint, result.checkpoint)
    if result.oof is not None:
        keep_trial_oof(job, data, result.oof)
    return TrialOutcome(job.number, "COMPLETE", result.scores, result.best_epoch, time.perf_counter() - started)


def keep_trial_oof(job: TrialJob, data, oof) -> None:
    """A --cv trial's out-of-fold predictions and settings, trials/<number>/oof.parquet and
    settings.json (written last, naming oof.parquet's checksum: one files.publish_set), so that
    `numerflow ensemble` can choose among the trials; written by the worker, nothing rides back."""
    from numerflow import schema
    from numerflow.files import publish_set
    from numerflow.provenance import PROVENANCE, make_record, record_path
    from numerflow.training.data import choose_targets
    from numerflow.training.settings import config_dict

    folder = trial_folder(job.checkpoint.parent, job.number)
    targets = choose_targets(job.cv, data.manifest, data.path / schema.PREPARED_MANIFEST_FILE)  # as fit_by_cv trains
    # paths relative to settings.json, so that a moved project still works (issue 27)
    settings = {"number": job.number, "params": job.params, "data": record_path(job.data, folder / TRIAL_SETTINGS),
                "target": data.manifest.get("target") or data.targets[0], "targets": targets,
                "settings": config_dict(job.cv),
                PROVENANCE: make_record(folder / TRIAL_SETTINGS, data=job.data, targets=targets)}
    with publish_set(folder, TRIAL_SETTINGS, settings) as files:
        oof.to_parquet(files.path(TRIAL_OOF), index=False)


def trial_folder(trials_dir: Path, number: int) -> Path:
    return Path(trials_dir) / str(number)


def kept_trials(sweep_folder: Path) -> dict[int, Path]:
    """The trials a `sweep --cv` kept (keep_trial_oof), in number order: number → its folder."""
    from numerflow.errors import DataError

    trials = Path(sweep_folder) / "trials"
    unrecorded = sorted(p.parent for p in trials.glob(f"*/{TRIAL_OOF}")
                        if p.parent.name.isdigit() and not (p.parent / TRIAL_SETTINGS).is_file())
    if unrecorded:  # never left out without a word: the sweep's record of that trial is gone
        raise DataError(f"{unrecorded[0] / TRIAL_SETTINGS}: missing (the trial's record beside its {TRIAL_OOF}): "
                        f"remove {unrecorded[0]} to leave the trial out, or rerun the sweep")
    folders = [p.parent for p in trials.glob(f"*/{TRIAL_SETTINGS}") if p.parent.name.isdigit()]
    return {int(folder.name): folder for folder in sorted(folders, key=lambda folder: int(folder.name))}


def read_kept_trial(folder: Path) -> dict:
    """A kept trial's settings.json, checked against the oof.parquet it names (a mixed or
    interrupted set is an IncompleteSetError naming it)."""
    from numerflow import schema
    from numerflow.files import check_set

    record = schema.read_json(folder / TRIAL_SETTINGS)
    check_set(folder, TRIAL_SETTINGS, record.get("files", {}), names=[TRIAL_OOF])
    return record


def _snapshot_trial(pruner: str, history: list):
    """A trial in an in-memory copy of the finished trials, for the pruner to judge against."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(pruner))
    study.add_trials(history)
    return study.ask()


def init_worker(threads: int) -> None:
    """A worker process: its share of the cores, so `jobs` trials do not oversubscribe them."""
    from numerflow.runtime import before_torch_import

    before_torch_import()
    import torch

    torch.set_num_threads(threads)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def finished(study) -> list:
    """Trials that count towards --trials: complete, pruned, or failed on their own (not killed)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and INTERRUPTED not in t.user_attrs)]


def requeue_interrupted(study) -> int:
    """Trials left running by a killed sweep: failed, and queued again with the same parameters."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    return len(stale)


def run_local(study, space, settings, objective: Objective, out_dir: Path, on_batch: Callable[[list], None]) -> None:
    """Run trials in batches of settings.jobs until settings.trials have finished."""
    from optuna.trial import TrialState

    jobs = max(1, settings.jobs)
    pool = None
    if jobs > 1:  # spawn: a forked child of a process that already ran torch can hang in OpenMP
        pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=init_worker,
                                   initargs=(max(1, cores() // jobs),))
    try:
        while (left := settings.trials - len(finished(study))) > 0:
            history = study.get_trials(deepcopy=True, states=(TrialState.COMPLETE, TrialState.PRUNED))
            batch = []
            for _ in range(min(jobs, left)):
                study.sampler = sampler_for(settings.seed, len(study.trials))
                batch.append(study.ask(space.distributions()))
            work = []
            for t in batch:
                config = space.train_settings(t.params, data=settings.data, seed=settings.seed, device=settings.device,
                                              precision=settings.precision)
                work.append(TrialJob(t.number, t.params, config, settings.data, objective, settings.pruner, history,
                                     out_dir / "trials" / f"{t.number}.pt",
                                     space.cv_settings(config) if settings.cv else None))
            outcomes = list(pool.map(run_job, work) if pool else map(run_job, work))
            for trial, outcome in zip(batch, outcomes):
                record(study, trial, outcome)
            on_batch(outcomes)
    except BaseException:
        if pool:  # a Ctrl-C: do not wait for the running trials
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if pool:
            pool.shutdown()


def record(study, trial, outcome: TrialOutcome) -> None:
    """The worker's per-epoch scores and result into the stored study (main process only)."""
    from optuna.trial import TrialState

    for epoch, score in enumerate(outcome.scores, start=1):
        trial.report(score, epoch)
    trial.set_user_attr("epochs", len(outcome.scores))
    trial.set_user_attr("best_epoch", outcome.best_epoch)
    trial.set_user_attr("seconds", round(outcome.seconds, 3))
    if outcome.error:
        trial.set_user_attr("error", outcome.error)
    if outcome.state == "COMPLETE":
        study.tell(trial, outcome.scores[outcome.best_epoch - 1])
    else:
        study.tell(trial, state=TrialState[outcome.state])

