"""Training on splits already in memory, the entry point of cv folds and sweep trials (which read
the prepared data once), and the checkpoint dict every trainer writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from numerflow.config import TrainConfig
from numerflow.devices import resolve_device
from numerflow.training.loop import RunContext, build_training, epoch_line, epoch_step, rows_on
from numerflow.training.precision import used_precision
from numerflow.training.settings import check_config, config_dict
from numerflow.training.state import TrainState, cpu_copy
from numerflow.version import __version__

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
    precision: str  # the one used (--precision auto resolved)

    def checkpoint(self, config: TrainConfig, manifest: dict | None = None) -> dict:
        """The dict numerflow.checkpoint.save_checkpoint writes, as train() writes it (`manifest`:
        the prepared folder's, for its binning and data version)."""
        return checkpoint_dict(config, self.model_config, self.features, self.targets, cpu_copy(self.model),
                               self.metrics, self.best_epoch, manifest, self.precision)


def checkpoint_dict(config: TrainConfig, model_config: dict, features: list[str], targets: list[str],
                    state_dict: dict, metrics: list[dict], best_epoch: int, manifest: dict | None,
                    precision: str | None = None) -> dict:
    """A checkpoint as save_checkpoint writes it: the model's config beside its weights (so the file
    alone rebuilds the model), the training settings (with `precision`, the one the run used, in
    place of --precision auto) and metrics, and from the prepared `manifest` its binning (so that
    predict and export bin live features as prepare did) and data version. The weights are float32
    whatever the precision."""
    manifest = manifest or {}
    train_config = {**config_dict(config), **({"precision": precision} if precision else {})}
    return {"numerflow_version": __version__, "model_config": model_config, "features": features,
            "targets": targets, "predict_with": config.predict_with, "state_dict": state_dict,
            "train_config": train_config, "metrics": metrics, "best_epoch": best_epoch,
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
    used_precision(config.precision, device)  # refused before any work when the device cannot run it
    dist = Distributed()
    rows = rows_on(train_split, device)
    validator = Validator(valid_split, device, dist, config.precision) if valid_split is not None else None
    model_config, model, optimizer, scheduler = build_training(config, len(features), len(targets), rows, device, dist)
    state = TrainState(config_dict(config), features, targets)
    # One process: the model trains itself (no DDP wrapper).
    run = RunContext(model=model, net=model, optimizer=optimizer, scheduler=scheduler, rows=rows, config=config,
                     validator=validator, state=state, dist=dist, device=device)
    for epoch in range(config.epochs):
        if validator is not None and config.patience is not None and state.stale >= config.patience:
            break
        row = epoch_step(run, epoch)
        if say:
            say(epoch_line(row, config, state.epoch_seconds[-1]))
        if on_epoch:
            on_epoch(row)
    model.load_state_dict(state.best_state)
    return FitResult(model=model.eval(), model_config=model_config.to_dict(), features=list(features),
                     targets=list(targets), metrics=state.metrics, best_epoch=state.best_epoch,
                     epoch_seconds=state.epoch_seconds, device=str(device),
                     precision=used_precision(config.precision, device))
