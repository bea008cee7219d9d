"""train stage: fit numerflow's MLP on prepared data, score every epoch era by era, keep the best.

This file is the loop, to be read top to bottom: check the settings, join the process group under
torchrun, read the data, build the model, optimizer and schedule, resume an interrupted run, then
per epoch train, score validation, keep the best weights and save the resume state; finally write
the best epoch's checkpoint. Its parts live in numerflow/training/ (loop.py: model, optimizer, schedule
and the epoch; state.py: the run's progress; fit.py: the checkpoint dict; data and batches,
losses, distributed setup, validation scoring) and numerflow/checkpoint.py (the checkpoint file).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from numerflow import memory
from numerflow.checkpoint import save_checkpoint
from numerflow.config import TrainConfig
from numerflow.devices import resolve_device
from numerflow.errors import ConfigError, Interrupted
from numerflow.files import output_lock, write_json
from numerflow.training.fit import checkpoint_dict
from numerflow.training.loop import RunContext, build_training, epoch_line, epoch_step, rows_on
from numerflow.training.precision import used_precision
from numerflow.training.settings import check_config, check_out, config_dict, json_sidecar_path, resume_path
from numerflow.training.state import TrainState
from numerflow.version import __version__


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: list[dict]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from: int  # epochs already done when this call started (0: a fresh run)
    device: str
    world_size: int
    seconds: float
    config_json: Path | None = None

    @property
    def best(self) -> dict:
        return self.metrics[self.best_epoch - 1] if self.metrics else {}

    def __str__(self) -> str:
        best = self.best
        how = "stopped early" if self.stopped_early else "finished"
        lines = [f"Trained {self.epochs_run} epoch(s) on {self.device}"
                 + (f" x{self.world_size} processes" if self.world_size > 1 else "")
                 + (f" (resumed after epoch {self.resumed_from})" if self.resumed_from else "")
                 + f", {how} in {self.seconds:.1f} s",
                 f"Best epoch {self.best_epoch}: validation mean era-Spearman {best.get('val_mean', float('nan')):.4f}, "
                 f"sharpe {best.get('val_sharpe', float('nan')):.2f}",
                 f"Checkpoint: {self.checkpoint}"]
        if self.config_json:
            lines.append(f"Config and metrics: {self.config_json}")
        return "\n".join(lines)


def train(config: TrainConfig, say: Callable[[str], None] | None = None) -> TrainResult:
    """Train the MLP on <config.data>/train.parquet, score each epoch on validation.parquet, write
    the best epoch's checkpoint to config.out (plus <name>.json). `say` receives one line per epoch."""
    from numerflow.training import distributed

    started = time.perf_counter()
    check_config(config)
    check_out(config)
    check_resume(config)
    estimate = memory.check_prepared(config)  # issue 20: stop before loading when it cannot fit
    dist = distributed.Distributed.from_env()
    device = resolve_device(config.device)
    gpu_note = memory.device_note(estimate, device)  # whether the features will stay on the GPU
    if gpu_note and say and dist.writes:  # one line, not one per torchrun rank
        say(gpu_note)
    used_precision(config.precision, device)  # a precision the device cannot run: refused before any reading
    # Rank 0 alone writes, so it alone holds the output's lock (a second run on --out stops here).
    with output_lock(config.out, "train") if dist.writes else contextlib.nullcontext():
        if dist.active:
            device = distributed.start(device, dist)
        try:
            return fit(config, say, device, dist, started)
        finally:
            distributed.stop(dist)


def check_resume(config: TrainConfig) -> None:
    """--resume continues a run or fails: with no resume file (a mistyped --out, a finished run) a
    fresh run would overwrite the checkpoint at --out, which is not what was asked."""
    resume_file = resume_path(Path(config.out))
    if config.resume and not resume_file.is_file():
        raise ConfigError(f"--resume: no resume file {resume_file} (is --out right? the run may have finished; "
                          "train without --resume to start afresh)")


def interrupted(epochs_saved: int, epochs: int) -> Interrupted:
    if not epochs_saved:
        return Interrupted(f"Interrupted before epoch 1 of {epochs} finished: nothing to resume, train again")
    return Interrupted(f"Interrupted after epoch {epochs_saved} of {epochs}: rerun with --resume")


def fit(config: TrainConfig, say, device, dist, started: float) -> TrainResult:
    """train() once the settings are checked and this process has its device (and rank)."""
    from numerflow.training.data import benchmark_note, choose_targets, read_manifest, read_split
    from numerflow.training.distributed import wrap
    from numerflow.training.validation import Validator

    # The data: int8 features, kept on the GPU when they fit.
    data, out = Path(config.data), Path(config.out)
    manifest = read_manifest(data)
    features = list(manifest["features"])
    targets = choose_targets(config, manifest, data / "manifest.json")
    resume_file = resume_path(out)
    state = TrainState(config_dict(config), features, targets)
    if config.resume:
        state = TrainState.load(resume_file, config, features, targets)
    elif resume_file.is_file() and say and dist.writes:
        say(f"{resume_file}: an interrupted run's resume file; starting afresh, it is replaced after "
            "the first epoch (stop now and add --resume to continue that run instead)")
    uses_benchmark = config.bmc_weight > 0  # --bmc-weight: the benchmark column too, or a DataError before reading
    note = benchmark_note(manifest, data) if uses_benchmark else ""
    if note and say and dist.writes:
        say(note)
    train_split = read_split(data / "train.parquet", features, targets, require_main=True, benchmark=uses_benchmark)
    valid_split = read_split(data / "validation.parquet", features, targets)
    rows = rows_on(train_split, device)
    validator = Validator(valid_split, device, dist, config.precision)

    # The model, its optimizer and schedule.
    model_config, model, optimizer, scheduler = build_training(config, len(features), len(targets), rows, device, dist)
    run = RunContext(model=model, net=wrap(model, device, dist), optimizer=optimizer, scheduler=scheduler, rows=rows,
                     config=config, validator=validator, state=state, dist=dist, device=device)
    resumed_from = len(state.metrics)
    if resumed_from:
        state.restore(model, optimizer, scheduler)

    # The epochs: train, score validation, keep the best, save the resume state.
    # Ctrl-C: the resume file holds the last saved epoch; say so and how to go on.
    saved = resumed_from
    try:
        for epoch in range(resumed_from, config.epochs):
            if config.patience is not None and state.stale >= config.patience:
                break
            row = epoch_step(run, epoch)
            if dist.writes:
                state.save(resume_file, model, optimizer, scheduler)
                saved = len(state.metrics)
                if say:
                    say(epoch_line(row, config, state.epoch_seconds[-1]))
    except KeyboardInterrupt:
        raise interrupted(saved, config.epochs) from None

    # The best epoch's checkpoint, its JSON sidecar; the resume file is no longer needed.
    json_path = json_sidecar_path(out)
    if dist.writes:
        precision = used_precision(config.precision, device)
        save_checkpoint(out, checkpoint_dict(config, model_config.to_dict(), features, targets, state.best_state,
                                             state.metrics, state.best_epoch, manifest, precision))
        write_json(json_path, {"numerflow_version": __version__,
                               "train_config": {**config_dict(config), "precision": precision},
                               "model_config": model_config.to_dict(), "features": len(features),
                               "targets": targets, "best_epoch": state.best_epoch, "metrics": state.metrics,
                               "epoch_seconds": state.epoch_seconds, "device": str(device),
                               "world_size": dist.world, "rows_train": len(train_split.features),
                               "rows_validation": len(valid_split.features)})
        resume_file.unlink(missing_ok=True)
    return TrainResult(checkpoint=out, metrics=state.metrics, best_epoch=state.best_epoch, epochs_run=len(state.metrics),
                       stopped_early=config.patience is not None and len(state.metrics) < config.epochs,
                       resumed_from=resumed_from, device=str(device), world_size=dist.world,
                       seconds=time.perf_counter() - started, config_json=json_path if dist.writes else None)
