"""The training losses, one per `--loss`. Both skip unknown (NaN) targets through a mask, so
auxiliary targets with gaps train their heads on the rows they have."""

from __future__ import annotations

import torch

from numerflow.options import Loss


def masked_mse(pred, target, mask):
    """Mean squared error over known targets only (NaN auxiliary targets are skipped)."""
    weight = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def masked_negative_pearson(pred, target, mask):
    """Negative mean Pearson correlation over heads, each over its known targets. Batches for this
    loss are drawn from within one era, so this is the per-era correlation Numerai scores."""
    weight = mask.to(pred.dtype)
    n = weight.sum(dim=0)
    pm = (pred * weight).sum(dim=0) / n.clamp(min=1.0)
    tm = (target * weight).sum(dim=0) / n.clamp(min=1.0)
    pc, tc = (pred - pm) * weight, (target - tm) * weight
    corr = (pc * tc).sum(dim=0) / torch.sqrt((pc * pc).sum(dim=0) * (tc * tc).sum(dim=0) + 1e-12)
    usable = n >= 2
    if not bool(usable.any()):
        return pred.sum() * 0.0
    return -corr[usable].mean()


LOSSES = {Loss.mse: masked_mse, Loss.corr: masked_negative_pearson}
