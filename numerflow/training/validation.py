"""Scoring the validation split after each epoch: mean era-Spearman of the main target, by whole
eras — under DDP each rank scores its share of the eras and the per-era values are all-reduced.

The network runs as it trains: in the run's --precision on the training device, float32 inputs in
batches of at most VALIDATION_BATCH_BYTES. Only the epoch choice rests on these scores;
`checkpoint.predict_scores` (float64, exact ranks against the exported pickle) stays the one path
of predict, validate --model and export, so `validate`'s number for the kept epoch can differ from
the epoch's own in the last digits."""

from __future__ import annotations

import numpy as np
import torch

from numerflow import metrics
from numerflow.devices import fits_on_gpu
from numerflow.model import centre_into
from numerflow.options import PredictWith
from numerflow.training.data import Split
from numerflow.training.distributed import Distributed, all_reduce_sum
from numerflow.training.precision import autocast

VALIDATION_BATCH_BYTES = 64 << 20  # float32 inputs per forward batch (16k rows at 1,000 features)


class Validator:
    """Scores the validation split by whole eras: this rank's eras only, then all-reduced."""

    def __init__(self, split: Split, device: torch.device, dist: Distributed, precision: str = "fp32"):
        self.dist = dist
        self.device = device
        self.precision = precision
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
        self.rows = None if len(rows) == len(split.features) else torch.from_numpy(rows)
        self.features = resident(split.features, device)
        if self.rows is not None:
            self.rows = self.rows.to(self.features.device)

    def score(self, model, predict_with: str) -> tuple[dict, np.ndarray]:
        """(metrics.summarize of the per-era scores, the per-era scores over every era)."""
        values = np.full(self.n_eras, np.nan)
        if len(self.target):
            preds = epoch_scores(model, self.features, self.device, self.precision, predict_with, self.rows)
            values = np.asarray(metrics.per_era_spearman(preds, self.target, self.groups).values, dtype=np.float64)
        scored = np.isfinite(values)
        totals = torch.from_numpy(np.where(scored, values, 0.0))
        counts = torch.from_numpy(scored.astype(np.float64))
        reduce_device = self.device if self.dist.active and self.device.type == "cuda" else "cpu"
        totals = all_reduce_sum(totals.to(reduce_device), self.dist).cpu().numpy()
        counts = all_reduce_sum(counts.to(reduce_device), self.dist).cpu().numpy()
        per_era = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        return metrics.summarize(per_era), per_era


def resident(features: np.ndarray, device: torch.device) -> torch.Tensor:
    """The int8 matrix as a tensor, moved to the GPU when it fits there (shared, never copied, on the CPU)."""
    tensor = torch.from_numpy(features)
    if device.type == "cuda" and fits_on_gpu(tensor.numel(), device):
        tensor = tensor.to(device)
    return tensor


def epoch_scores(model, features: torch.Tensor, device: torch.device, precision: str, predict_with: str,
                 rows: torch.Tensor | None = None) -> np.ndarray:
    """Raw scores (float32) of the int8 `features` (or of its `rows`, gathered batch by batch) as
    the run trains: in `precision` on `device`, float32 inputs cast and centred into one reused
    buffer of at most VALIDATION_BATCH_BYTES. Scores stay on the device until the last batch."""
    n_rows, width = (len(features) if rows is None else len(rows)), features.shape[1]
    step = max(1, VALIDATION_BATCH_BYTES // (4 * max(1, width)))
    buffer = torch.empty((min(step, max(n_rows, 1)), width), dtype=torch.float32, device=device)
    out = torch.empty(n_rows, dtype=torch.float32, device=device)
    mean = PredictWith(predict_with) is PredictWith.mean
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(precision, device):
            for start in range(0, n_rows, step):
                chunk = features[start:start + step] if rows is None else features.index_select(0, rows[start:start + step])
                heads = model(centre_into(chunk.to(device, non_blocking=True), buffer[:len(chunk)]), centred=True)
                out[start:start + len(chunk)] = heads.float().mean(dim=1) if mean else heads[:, 0]
    finally:
        model.train(was_training)
    return out.cpu().numpy()
