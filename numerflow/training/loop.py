"""The training loop's parts, shared by train, cv folds and sweep trials: the model, optimiser and
schedule built from the settings, one epoch over shuffled int8 batches, the epoch step that scores
validation and records the epoch, and the checks between epochs. stages/train.py reads top to
bottom as the loop that uses them."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np

from numerflow.config import TrainConfig
from numerflow.devices import fits_on_gpu
from numerflow.errors import ConfigError
from numerflow.options import Loss, Schedule
from numerflow.training.state import TrainState

# fastai's Adam defaults; beta1 follows the one-cycle momentum schedule when that schedule is on.
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-5
# fastai's fit_one_cycle: lr from lr/25 up to lr over the first 25% of steps, then down to lr/1e5,
# both by cosine; Adam's beta1 goes 0.95 → 0.85 → 0.95 alongside.
ONECYCLE_WARMUP = 0.25
ONECYCLE_DIV = 25.0  # start lr = lr / 25
ONECYCLE_DIV_FINAL = 1e5  # final lr = lr / 1e5 (fastai divides the peak; torch's final_div_factor the start)
ONECYCLE_MOMS = (0.95, 0.85, 0.95)


def rows_on(split, device) -> "Rows":  # noqa: F821 (training.data.Rows, imported lazily)
    """The training split as the loop reads it: int8 features on the GPU when they fit."""
    import torch

    from numerflow.training.data import Rows

    x = torch.from_numpy(split.features)
    if device.type == "cuda" and fits_on_gpu(x.numel(), device):
        x = x.to(device)
    # --bmc-weight: one float32 column more, beside the targets (memory.py counts it)
    benchmark = torch.from_numpy(split.benchmark).to(x.device) if split.benchmark is not None else None
    return Rows(x, torch.from_numpy(split.targets).to(x.device), split.era_codes, benchmark)


def build_training(config: TrainConfig, n_features: int, n_targets: int, rows, device, dist):
    """(model config, model on `device`, optimizer, schedule), the model's weights drawn from config.seed."""
    from numerflow.model import ModelConfig, build_model

    set_seed(config.seed)
    model_config = ModelConfig(n_features=n_features, layers=list(config.layers), activation=config.activation,
                               dropout=config.dropout, batchnorm=config.batchnorm,
                               input_batchnorm=config.input_batchnorm, n_outputs=n_targets, arch=config.arch,
                               k=config.k)
    model = build_model(model_config).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch(rows, config, dist) * config.epochs)
    return model_config, model, optimizer, scheduler


@dataclass(frozen=True)
class RunContext:
    """What every epoch of one training run works with, built once by its trainer (train, or
    fit.train_arrays for cv folds) before the first epoch. The parts stay the same objects for
    the whole run; `state` is the one that changes, epoch by epoch."""
    model: object  # torch.nn.Module: the weights that are scored, kept and saved
    net: object  # the module that trains `model`: its DDP wrapper under torchrun, else `model` itself
    optimizer: object
    scheduler: object  # stepped after every batch; None: constant lr
    rows: object  # training.data.Rows: the training split as the loop reads it
    config: TrainConfig
    validator: object  # training.validation.Validator; None: epochs are not scored
    state: TrainState
    dist: object  # training.distributed.Distributed
    device: object  # torch.device


def epoch_step(run: RunContext, epoch: int) -> dict:
    """One epoch: train, stop on divergence, score on validation (when the run has a validator),
    record it in the run's state; returns its metrics row."""
    t0 = time.perf_counter()
    train_loss = run_epoch(run.net, run.optimizer, run.scheduler, run.rows, run.config, epoch, dist=run.dist,
                           device=run.device)
    check_finite(run.model, train_loss, epoch + 1)
    row = {"epoch": epoch + 1, "train_loss": train_loss}
    if run.validator is not None:
        summary, _per_era = run.validator.score(run.model, run.config.predict_with)
        row.update({f"val_{k}": plain(v) for k, v in summary.items()})
    run.state.record(row, time.perf_counter() - t0, run.model)
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
    from numerflow.training.precision import autocast, grad_scaler

    dist = dist or Distributed()
    device = torch.device(device or rows.features.device)
    scaler = grad_scaler(optimizer, config.precision, device)  # fp16 only
    loss_fn = batch_loss(config, rows)
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
    raw_input = getattr(net, "module", net).fuses_input_in_training()  # net: the model, or its DDP wrapper
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # no float64 on a GPU
    # disable=None: a bar only on a terminal; other ranks never draw one.
    for start, stop in tqdm(slices, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                            disable=None if dist.writes else True):
        idx = order[start:stop]
        batch = raw[:stop - start]
        torch.index_select(rows.features, 0, idx, out=batch)
        if batch.device != device:  # int8 rows kept on the CPU: move the int8 batch, not floats
            batch = batch.to(device, non_blocking=True)
        # A model whose input BatchNorm centres the features itself takes them just cast (one quick pass).
        x = cast[:stop - start].copy_(batch) if raw_input else centre_into(batch, cast[:stop - start])
        y = rows.targets[idx].to(device, dtype=torch.float32, non_blocking=True)  # stored float16 when exact
        segments = None
        if batch_eras is not None:
            segments = torch.from_numpy(batch_segments(batch_eras[start:stop])).to(device, non_blocking=True)
        with autocast(config.precision, device):  # the forward pass in --precision; the head's output is float32
            out = net(x, centred=not raw_input)
        loss = loss_fn(out, torch.nan_to_num(y), ~torch.isnan(y), segments, idx)
        total = loss + config.l1 * sum(w.abs().sum() for w in l1_weights) if config.l1 else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            total.backward()
            optimizer.step()
        else:  # fp16: the loss scaled up so small gradients survive, steps with inf/nan gradients skipped
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        if scheduler:
            scheduler.step()
        loss_sum += loss.detach()
    return float(all_reduce_sum(loss_sum, dist)) / (len(slices) * dist.world)


def batch_loss(config: TrainConfig, rows):
    """The loss of one batch as loss(pred, target, mask, segments, row indices): --loss's, or with
    --bmc-weight the corr loss and the BMC term on the batch rows' benchmark values."""
    from numerflow.training.data import BMC_NEEDS_BENCHMARK
    from numerflow.training.losses import LOSSES, corr_bmc_loss

    if not config.bmc_weight:
        loss_fn = LOSSES[Loss(config.loss)]
        return lambda pred, target, mask, segments, idx: loss_fn(pred, target, mask, segments)
    if rows.benchmark is None:  # the trainers read it when bmc_weight > 0; a caller that did not is refused
        raise ConfigError(BMC_NEEDS_BENCHMARK)
    return lambda pred, target, mask, segments, idx: corr_bmc_loss(
        pred, target, mask, segments, rows.benchmark[idx].to(pred.device, non_blocking=True), config.bmc_weight)


def set_seed(seed: int) -> None:
    """One seed for Python's random, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def check_finite(model, train_loss: float, epoch: int) -> None:
    """Stop on a diverged run instead of scoring and saving NaN weights. The loss is all-reduced
    and DDP keeps weights equal, so every rank takes the same branch."""
    import torch

    if not math.isfinite(train_loss) or not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ConfigError(f"training diverged at epoch {epoch} (loss {train_loss:g}); try a lower --lr")


def plain(value):
    """numpy scalars as Python numbers, for JSON."""
    return float(value) if isinstance(value, np.floating) else int(value) if isinstance(value, np.integer) else value
