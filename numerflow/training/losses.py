"""The training losses, one per `--loss`. Both skip unknown (NaN) targets through a mask, so
auxiliary targets with gaps train their heads on the rows they have."""

from __future__ import annotations

import torch

from numerflow.options import Loss


def masked_mse(pred, target, mask, segments=None):
    """Mean squared error over known targets only (NaN auxiliary targets are skipped); `segments`
    is unused (the signature is the corr loss's)."""
    weight = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def masked_negative_pearson(pred, target, mask, segments=None):
    """Negative mean Pearson correlation over (era, head) pairs, each over its known targets: the
    per-era correlation Numerai scores. `segments`: each row's era as 0..k-1 within the batch (a
    batch packs chunks of several eras, see training.data.epoch_batches); None: one era.

    Per-era sums are one-hot matrix products rather than scatter_add: deterministic on the GPU
    too (byte-identical --seed runs), and a (rows x k) product is nothing next to the network."""
    weight = mask.to(pred.dtype)
    if segments is None:
        onehot = torch.ones((len(pred), 1), dtype=pred.dtype, device=pred.device)
    else:
        eras = int(segments.max()) + 1 if len(segments) else 1
        onehot = (segments[:, None] == torch.arange(eras, device=pred.device)).to(pred.dtype)
    n = onehot.T @ weight  # (eras, heads)
    pm = (onehot.T @ (pred * weight)) / n.clamp(min=1.0)
    tm = (onehot.T @ (target * weight)) / n.clamp(min=1.0)
    pc, tc = (pred - onehot @ pm) * weight, (target - onehot @ tm) * weight
    corr = (onehot.T @ (pc * tc)) / torch.sqrt((onehot.T @ (pc * pc)) * (onehot.T @ (tc * tc)) + 1e-12)
    usable = n >= 2
    if not bool(usable.any()):
        return pred.sum() * 0.0
    return -corr[usable].mean()


LOSSES = {Loss.mse: masked_mse, Loss.corr: masked_negative_pearson}
