"""train stage: fit numerflow's MLP on prepared data, score every epoch era by era, keep the best.

This file is the loop, to be read top to bottom: check the settings, join the process group under
torchrun, read the data, build the model, optimizer and schedule, resume an interrupted run, then
per epoch train, score validation, keep the best weights and save the resume state; finally write
the best epoch's checkpoint. Its parts live in numerflow/training/ (data and batches, losses,
distributed setup, validation scoring) and numerflow/checkpoint.py (the checkpoint file).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import __version__
from numerflow import memory
from numerflow.checkpoint import save_atomic, save_checkpoint
from numerflow.config import TrainConfig
from numerflow.devices import fits_on_gpu, resolve_device
from numerflow.errors import CheckpointError, ConfigError
from numerflow.files import write_json
from numerflow.options import Loss, Schedule
from numerflow.training.settings import check_config, check_out, config_dict, json_sidecar_path, resume_path

# fastai's Adam defaults; beta1 follows the one-cycle momentum schedule when that schedule is on.
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-5
# fastai's fit_one_cycle: lr from lr/25 up to lr over the first 25% of steps, then down to lr/1e5,
# both by cosine; Adam's beta1 goes 0.95 → 0.85 → 0.95 alongside.
ONECYCLE_WARMUP = 0.25
ONECYCLE_DIV = 25.0  # start lr = lr / 25
ONECYCLE_DIV_FINAL = 1e5  # final lr = lr / 1e5 (fastai divides the peak; torch's final_div_factor the start)
ONECYCLE_MOMS = (0.95, 0.85, 0.95)
# Settings that may change between an interrupted run and its --resume.
RESUMABLE_CHANGES = {"resume", "device", "patience"}


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


@dataclass
class TrainState:
    """A run's progress: what the `<out>.resume` file holds after each epoch, and all that a
    --resume needs to end exactly where the uninterrupted run would have."""
    train_config: dict
    features: list[str]
    targets: list[str]
    metrics: list[dict] = field(default_factory=list)  # one row per finished epoch
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    best_state: dict | None = None  # the best epoch's weights, on the CPU
    stale: int = 0  # epochs since the best one (early stopping)
    # Where the model, optimizer, schedule and random generators stood after the last epoch.
    model_state: dict | None = None
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None
    rng_state: dict | None = None
    numerflow_version: str = __version__

    def record(self, row: dict, seconds: float, model) -> None:
        """Add a finished epoch; keep its weights if it scored best so far (with no validation
        score, as in a cv fold, the latest epoch is kept)."""
        self.metrics.append(row)
        self.epoch_seconds.append(seconds)
        validated = "val_mean" in row
        score = row["val_mean"] if validated and np.isfinite(row["val_mean"]) else -math.inf
        if not validated or score > self.best_score or self.best_state is None:
            self.best_epoch, self.best_score, self.best_state, self.stale = len(self.metrics), score, cpu_copy(model), 0
        else:
            self.stale += 1

    def save(self, path: Path, model, optimizer, scheduler) -> None:
        import torch

        self.model_state, self.optimizer_state = cpu_copy(model), optimizer.state_dict()
        self.scheduler_state = scheduler.state_dict() if scheduler else None
        self.rng_state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            self.rng_state["cuda"] = torch.cuda.get_rng_state_all()
        save_atomic(path, {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path, config: TrainConfig, features: list[str], targets: list[str]) -> "TrainState":
        """The state saved at `path`, refused when the data or the settings changed since."""
        import torch

        try:
            state = cls(**torch.load(path, map_location="cpu", weights_only=True))
        except Exception:
            raise CheckpointError(f"{path}: not a numerflow resume file") from None
        if state.features != features or state.targets != targets:
            raise ConfigError(f"{path}: cannot resume: the prepared data's features or targets changed since it was written")
        now = config_dict(config)
        changed = [k for k in now if k not in RESUMABLE_CHANGES and state.train_config.get(k) != now[k]]
        if changed:
            diffs = ", ".join(f"{k} ({state.train_config.get(k)!r} → {now[k]!r})" for k in changed)
            raise ConfigError(f"{path}: cannot resume with different settings: {diffs}")
        if config.schedule == Schedule.onecycle and state.scheduler_state is None:
            raise CheckpointError(f"{path}: written by an older numerflow; train again without --resume")
        return state

    def restore(self, model, optimizer, scheduler) -> None:
        """Put the model, optimizer, schedule and random generators back where they stood."""
        import torch

        model.load_state_dict(self.model_state)
        optimizer.load_state_dict(self.optimizer_state)
        if scheduler:
            scheduler.load_state_dict(self.scheduler_state)
        torch.set_rng_state(self.rng_state["torch"])
        if "cuda" in self.rng_state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng_state["cuda"])


def train(config: TrainConfig, say: Callable[[str], None] | None = None) -> TrainResult:
    """Train the MLP on <config.data>/train.parquet, score each epoch on validation.parquet, write
    the best epoch's checkpoint to config.out (plus <name>.json). `say` receives one line per epoch."""
    from numerflow.training import distributed

    started = time.perf_counter()
    check_config(config)
    check_out(config)
    memory.check_prepared(config)  # issue 20: stop before loading when it cannot fit
    dist = distributed.Distributed.from_env()
    device = resolve_device(config.device)
    if dist.active:
        device = distributed.start(device, dist)
    try:
        return fit(config, say, device, dist, started)
    finally:
        distributed.stop(dist)


def fit(config: TrainConfig, say, device, dist, started: float) -> TrainResult:
    """train() once the settings are checked and this process has its device (and rank)."""
    from torch import nn

    from numerflow.training.data import choose_targets, read_manifest, read_split
    from numerflow.training.validation import Validator

    # The data: int8 features, kept on the GPU when they fit.
    data, out = Path(config.data), Path(config.out)
    manifest = read_manifest(data)
    features = list(manifest["features"])
    targets = choose_targets(config, manifest, data / "manifest.json")
    resume_file = resume_path(out)
    state = TrainState(config_dict(config), features, targets)
    if config.resume and resume_file.is_file():
        state = TrainState.load(resume_file, config, features, targets)
    train_split = read_split(data / "train.parquet", features, targets, require_main=True)
    valid_split = read_split(data / "validation.parquet", features, targets)
    rows = rows_on(train_split, device)
    validator = Validator(valid_split, device, dist)

    # The model, its optimizer and schedule.
    model_config, model, optimizer, scheduler = build_training(config, len(features), len(targets), rows, device, dist)
    net = model
    if dist.active:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    resumed_from = len(state.metrics)
    if resumed_from:
        state.restore(model, optimizer, scheduler)

    # The epochs: train, score validation, keep the best, save the resume state.
    for epoch in range(resumed_from, config.epochs):
        if config.patience is not None and state.stale >= config.patience:
            break
        row = epoch_step(net, model, optimizer, scheduler, rows, config, epoch, validator, state, dist, device)
        if dist.writes:
            state.save(resume_file, model, optimizer, scheduler)
            if say:
                say(epoch_line(row, config, state.epoch_seconds[-1]))

    # The best epoch's checkpoint, its JSON sidecar; the resume file is no longer needed.
    json_path = json_sidecar_path(out)
    if dist.writes:
        save_checkpoint(out, checkpoint_dict(config, model_config.to_dict(), features, targets, state.best_state,
                                             state.metrics, state.best_epoch, manifest))
        write_json(json_path, {"numerflow_version": __version__, "train_config": config_dict(config),
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


@dataclass
class FitResult:
    """What train_arrays returns: the trained model (the kept epoch's weights loaded, on the
    training device) and everything a checkpoint holds."""
    model: object  # torch.nn.Module
    model_config: dict
    features: list[str]
    targets: list[str]
    metrics: list[dict]  # one row per epoch: epoch, train_loss (+ val_* with a validation split)
    best_epoch: int  # the epoch whose weights `model` holds
    epoch_seconds: list[float]
    device: str

    def checkpoint(self, config: TrainConfig, manifest: dict | None = None) -> dict:
        """The dict numerflow.checkpoint.save_checkpoint writes, as train() writes it (`manifest`:
        the prepared folder's, for its binning and data version)."""
        return checkpoint_dict(config, self.model_config, self.features, self.targets, cpu_copy(self.model),
                               self.metrics, self.best_epoch, manifest)


def checkpoint_dict(config: TrainConfig, model_config: dict, features: list[str], targets: list[str],
                    state_dict: dict, metrics: list[dict], best_epoch: int, manifest: dict | None) -> dict:
    """A checkpoint as save_checkpoint writes it: the model's config beside its weights (so the file
    alone rebuilds the model), the training settings and metrics, and from the prepared `manifest`
    its binning (so that predict and export bin live features as prepare did) and data version."""
    manifest = manifest or {}
    return {"numerflow_version": __version__, "model_config": model_config, "features": features,
            "targets": targets, "predict_with": config.predict_with, "state_dict": state_dict,
            "train_config": config_dict(config), "metrics": metrics, "best_epoch": best_epoch,
            "binning": manifest.get("binning"),
            # The data version export uploads for, even after the folder is prepared anew (no path:
            # the same run in another folder writes the same bytes).
            "trained_on": {"version": manifest.get("version")}}


def train_arrays(config: TrainConfig, train_split, features: list[str], targets: list[str], valid_split=None, *,
                 device=None, say: Callable[[str], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train on splits already in memory (training.data.Split, targets' columns in `targets`
    order), in this process: the entry point of cv and sweeps, which read the prepared data once.
    Nothing is read or written; config.data, out and resume are not used. With `valid_split`,
    each epoch is scored on it as train() does and the best epoch is kept (config.patience
    applies); without, every epoch runs and the last one is kept. `on_epoch(row)` sees each
    epoch's metrics row as it finishes (raise from it to stop, e.g. a pruned trial)."""
    from numerflow.training.distributed import Distributed
    from numerflow.training.validation import Validator

    check_config(config)
    device = resolve_device(config.device) if device is None else device
    dist = Distributed()
    rows = rows_on(train_split, device)
    validator = Validator(valid_split, device, dist) if valid_split is not None else None
    model_config, model, optimizer, scheduler = build_training(config, len(features), len(targets), rows, device, dist)
    state = TrainState(config_dict(config), features, targets)
    for epoch in range(config.epochs):
        if validator is not None and config.patience is not None and state.stale >= config.patience:
            break
        row = epoch_step(model, model, optimizer, scheduler, rows, config, epoch, validator, state, dist, device)
        if say:
            say(epoch_line(row, config, state.epoch_seconds[-1]))
        if on_epoch:
            on_epoch(row)
    model.load_state_dict(state.best_state)
    return FitResult(model=model.eval(), model_config=model_config.to_dict(), features=list(features),
                     targets=list(targets), metrics=state.metrics, best_epoch=state.best_epoch,
                     epoch_seconds=state.epoch_seconds, device=str(device))


def rows_on(split, device) -> "Rows":  # noqa: F821 (training.data.Rows, imported lazily)
    """The training split as the loop reads it: int8 features on the GPU when they fit."""
    import torch

    from numerflow.training.data import Rows

    x = torch.from_numpy(split.features)
    if device.type == "cuda" and fits_on_gpu(x.numel(), device):
        x = x.to(device)
    return Rows(x, torch.from_numpy(split.targets).to(x.device), split.era_codes)


def build_training(config: TrainConfig, n_features: int, n_targets: int, rows, device, dist):
    """(model config, model on `device`, optimizer, schedule), the model's weights drawn from config.seed."""
    from numerflow.model import ModelConfig, build_model

    set_seed(config.seed)
    model_config = ModelConfig(n_features=n_features, layers=list(config.layers), activation=config.activation,
                               dropout=config.dropout, batchnorm=config.batchnorm,
                               input_batchnorm=config.input_batchnorm, n_outputs=n_targets)
    model = build_model(model_config).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch(rows, config, dist) * config.epochs)
    return model_config, model, optimizer, scheduler


def epoch_step(net, model, optimizer, scheduler, rows, config: TrainConfig, epoch: int, validator, state: TrainState,
               dist, device) -> dict:
    """One epoch: train, stop on divergence, score on validation (when `validator` is not None),
    record it in `state`; returns its metrics row. `net` is `model`, or its DDP wrapper."""
    t0 = time.perf_counter()
    train_loss = run_epoch(net, optimizer, scheduler, rows, config, epoch, dist=dist, device=device)
    check_finite(model, train_loss, epoch + 1)
    row = {"epoch": epoch + 1, "train_loss": train_loss}
    if validator is not None:
        summary, _per_era = validator.score(model, config.predict_with)
        row.update({f"val_{k}": plain(v) for k, v in summary.items()})
    state.record(row, time.perf_counter() - t0, model)
    return row


def epoch_line(row: dict, config: TrainConfig, seconds: float) -> str:
    """The progress line of one epoch."""
    scored = (f", validation era-Spearman mean {row['val_mean']:.4f} sharpe {row['val_sharpe']:.2f}"
              if "val_mean" in row else "")
    return f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.5f}{scored} ({seconds:.1f} s)"


def make_optimizer(model, config: TrainConfig):
    """AdamW with fastai's betas and eps; weight decay on Linear weights only (model.parameter_groups)."""
    import torch

    from numerflow.model import parameter_groups

    decayed, exempt = parameter_groups(model)
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    try:  # torch's fused AdamW: one kernel per parameter instead of ~8 (CUDA; the CPU since torch 2.4)
        return torch.optim.AdamW(groups, lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    except RuntimeError:  # a device or torch without it
        return torch.optim.AdamW(groups, lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """torch's OneCycleLR set up as fastai's fit_one_cycle (see ONECYCLE_*), stepped once per batch;
    None for the constant schedule."""
    import torch

    if Schedule(config.schedule) is Schedule.constant:
        return None
    high, low, _back = ONECYCLE_MOMS
    # OneCycleLR's warm-up phase ends at step pct_start * total - 1 and divides by that length:
    # exactly 4 steps would divide by zero, so that one case gets a schedule one step longer.
    total = total_steps + 1 if total_steps * ONECYCLE_WARMUP == 1 else total_steps
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(total, 1), pct_start=ONECYCLE_WARMUP,
        anneal_strategy="cos", cycle_momentum=True, base_momentum=low, max_momentum=high,
        div_factor=ONECYCLE_DIV, final_div_factor=ONECYCLE_DIV_FINAL / ONECYCLE_DIV)


def steps_per_epoch(rows, config: TrainConfig, dist) -> int:
    """Batches per epoch on this rank: the same in every epoch and on every rank."""
    from numerflow.training.data import epoch_batches

    return len(epoch_batches(len(rows.features), rows.era_codes, config.batch_size, config.loss, config.seed, 0,
                             dist.rank, dist.world)[1])


def run_epoch(net, optimizer, scheduler, rows, config: TrainConfig, epoch: int, *, dist=None, device=None) -> float:
    """One pass over this rank's batches; returns the mean training loss (over all ranks).
    `rows`: training.data.Rows; `scheduler`: stepped after every batch (None: constant lr)."""
    import torch
    from tqdm.auto import tqdm

    from numerflow.model import centre_into, parameter_groups
    from numerflow.training.data import batch_segments, epoch_batches
    from numerflow.training.distributed import Distributed, all_reduce_sum
    from numerflow.training.losses import LOSSES

    dist = dist or Distributed()
    device = torch.device(device or rows.features.device)
    loss_fn = LOSSES[Loss(config.loss)]
    l1_weights = parameter_groups(net)[0] if config.l1 else []
    order, slices = epoch_batches(len(rows.features), rows.era_codes, config.batch_size, config.loss, config.seed,
                                  epoch, dist.rank, dist.world)
    # corr: each batch row's era, for Pearson per era within batches that hold several eras.
    batch_eras = rows.era_codes[order] if Loss(config.loss) is Loss.corr else None
    order = torch.from_numpy(order).to(rows.features.device)
    widest = max(stop - start for start, stop in slices)
    # Two buffers reused by every step: the int8 rows gathered by index, and their float32 cast.
    raw = torch.empty((widest, rows.features.shape[1]), dtype=torch.int8, device=rows.features.device)
    cast = torch.empty((widest, rows.features.shape[1]), dtype=torch.float32, device=device)
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    # disable=None: a bar only on a terminal; other ranks never draw one.
    for start, stop in tqdm(slices, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                            disable=None if dist.writes else True):
        idx = order[start:stop]
        batch = raw[:stop - start]
        torch.index_select(rows.features, 0, idx, out=batch)
        if batch.device != device:  # int8 rows kept on the CPU: move the int8 batch, not floats
            batch = batch.to(device, non_blocking=True)
        x = centre_into(batch, cast[:stop - start])
        y = rows.targets[idx].to(device, dtype=torch.float32, non_blocking=True)  # stored float16 when exact
        segments = None
        if batch_eras is not None:
            segments = torch.from_numpy(batch_segments(batch_eras[start:stop])).to(device, non_blocking=True)
        loss = loss_fn(net(x, centred=True), torch.nan_to_num(y), ~torch.isnan(y), segments)
        total = loss + config.l1 * sum(w.abs().sum() for w in l1_weights) if config.l1 else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if scheduler:
            scheduler.step()
        loss_sum += loss.detach()
    return float(all_reduce_sum(loss_sum, dist)) / (len(slices) * dist.world)


def set_seed(seed: int) -> None:
    """One seed for Python's random, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def cpu_copy(module) -> dict:
    """The module's state_dict copied to the CPU (a snapshot later steps cannot change)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def check_finite(model, train_loss: float, epoch: int) -> None:
    """Stop on a diverged run instead of scoring and saving NaN weights. The loss is all-reduced
    and DDP keeps weights equal, so every rank takes the same branch."""
    import torch

    if not math.isfinite(train_loss) or not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ConfigError(f"training diverged at epoch {epoch} (loss {train_loss:g}); try a lower --lr")


def plain(value):
    """numpy scalars as Python numbers, for JSON."""
    return float(value) if isinstance(value, np.floating) else int(value) if isinstance(value, np.integer) else value
