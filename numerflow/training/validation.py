"""Scoring the validation split after each epoch: mean era-Spearman of the main target, by whole
eras — under DDP each rank scores its share of the eras and the per-era values are all-reduced."""

from __future__ import annotations

import numpy as np
import torch

from numerflow import metrics
from numerflow.checkpoint import predict_scores
from numerflow.devices import fits_on_gpu
from numerflow.training.data import Split
from numerflow.training.distributed import Distributed, all_reduce_sum


class Validator:
    """Scores the validation split by whole eras: this rank's eras only, then all-reduced."""

    def __init__(self, split: Split, device: torch.device, dist: Distributed):
        self.dist = dist
        self.device = device
        self.n_eras = len(split.eras)
        mine = np.flatnonzero(split.era_codes % dist.world == dist.rank)
        main = split.targets[mine, 0]
        known = ~np.isnan(main)
        rows = mine[known]
        self.target = main[known].astype(np.float32)
        # All labels kept, so per-era values line up across ranks (by era index).
        self.groups = metrics.EraGroups(split.eras, split.era_codes[rows].astype(np.int32))
        # The matrix is shared, never copied: the scored rows (this rank's, with a known target:
        # Numerai's latest validation eras have none yet) are gathered batch by batch when scoring.
        self.rows = None if len(rows) == len(split.features) else rows
        self.features = torch.from_numpy(split.features)
        if device.type == "cuda" and fits_on_gpu(self.features.numel(), device):
            self.features = self.features.to(device)

    def score(self, model, predict_with: str) -> tuple[dict, np.ndarray]:
        """(metrics.summarize of the per-era scores, the per-era scores over every era)."""
        values = np.full(self.n_eras, np.nan)
        if len(self.target):
            preds = predict_scores(model, self.features, device=self.device, predict_with=predict_with, rows=self.rows)
            values = np.asarray(metrics.per_era_spearman(preds, self.target, self.groups).values, dtype=np.float64)
        scored = np.isfinite(values)
        totals = torch.from_numpy(np.where(scored, values, 0.0))
        counts = torch.from_numpy(scored.astype(np.float64))
        reduce_device = self.device if self.dist.active and self.device.type == "cuda" else "cpu"
        totals = all_reduce_sum(totals.to(reduce_device), self.dist).cpu().numpy()
        counts = all_reduce_sum(counts.to(reduce_device), self.dist).cpu().numpy()
        per_era = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        return metrics.summarize(per_era), per_era
