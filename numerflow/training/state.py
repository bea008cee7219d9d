"""A training run's progress: what the `<out>.resume` file holds after each epoch, and the best
epoch's weights kept so far. train, cv folds and sweep trials all record their epochs here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from numerflow.checkpoint import save_atomic
from numerflow.config import TrainConfig
from numerflow.errors import CheckpointError, ConfigError
from numerflow.options import Schedule
from numerflow.training.settings import changed_settings, config_dict
from numerflow.version import __version__

# Settings that may change between an interrupted run and its --resume.
RESUMABLE_CHANGES = {"resume", "device", "patience", "precision"}


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
        changed = changed_settings(state.train_config, config_dict(config), RESUMABLE_CHANGES)
        if changed:
            diffs = ", ".join(changed)
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


def cpu_copy(module) -> dict:
    """The module's state_dict copied to the CPU (a snapshot later steps cannot change)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
