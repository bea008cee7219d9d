"""The training losses, one per `--loss`. Both skip unknown (NaN) targets through a mask, so
auxiliary targets with gaps train their heads on the rows they have.

Predictions are (rows, heads), or TabM's (rows, k, heads) in training: the k members' predictions
are then scored as k x heads columns against the same targets, so the loss is the mean of the k
members' losses (the paper's way), not the loss of their mean.

`corr_bmc_loss` adds Numerai's BMC (the contribution beyond its benchmark model) to the corr loss;
the training loop does not pass it benchmark values yet (issue 26 wires `--bmc-weight`)."""

from __future__ import annotations

import torch

from numerflow.options import Loss


def per_member_columns(pred, target, mask):
    """(pred, target, mask) with TabM's (rows, k, heads) predictions as (rows, k x heads) columns
    and the targets and mask repeated to match; 2-D predictions pass through."""
    if pred.dim() != 3:
        return pred, target, mask
    members = pred.shape[1]
    return pred.reshape(len(pred), -1), target.repeat(1, members), mask.repeat(1, members)


def masked_mse(pred, target, mask, segments=None):
    """Mean squared error over known targets only (NaN auxiliary targets are skipped); `segments`
    is unused (the signature is the corr loss's)."""
    pred, target, mask = per_member_columns(pred, target, mask)
    weight = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def era_onehot(segments, rows: int, like: torch.Tensor) -> torch.Tensor:
    """(rows, eras) 0/1 matrix of each row's era within the batch; one era when `segments` is None.

    Per-era sums are one-hot matrix products rather than scatter_add: deterministic on the GPU
    too (byte-identical --seed runs), and a (rows x k) product is nothing next to the network."""
    if segments is None:
        return torch.ones((rows, 1), dtype=like.dtype, device=like.device)
    eras = int(segments.max()) + 1 if len(segments) else 1
    return (segments[:, None] == torch.arange(eras, device=like.device)).to(like.dtype)


def masked_negative_pearson(pred, target, mask, segments=None):
    """Negative mean Pearson correlation over (era, head) pairs, each over its known targets: the
    per-era correlation Numerai scores. `segments`: each row's era as 0..k-1 within the batch (a
    batch packs chunks of several eras, see training.data.epoch_batches); None: one era."""
    pred, target, mask = per_member_columns(pred, target, mask)
    weight = mask.to(pred.dtype)
    onehot = era_onehot(segments, len(pred), pred)
    n = onehot.T @ weight  # (eras, heads)
    pm = (onehot.T @ (pred * weight)) / n.clamp(min=1.0)
    tm = (onehot.T @ (target * weight)) / n.clamp(min=1.0)
    pc, tc = (pred - onehot @ pm) * weight, (target - onehot @ tm) * weight
    corr = (onehot.T @ (pc * tc)) / torch.sqrt((onehot.T @ (pc * pc)) * (onehot.T @ (tc * tc)) + 1e-12)
    usable = n >= 2
    if not bool(usable.any()):
        return pred.sum() * 0.0
    return -corr[usable].mean()


def era_bmc(pred, target, benchmark, mask, segments=None, standardise: bool = True):
    """(bmc, usable), each (eras, heads): per era of the batch, numerai-tools'
    `correlation_contribution` of each prediction column beyond `benchmark` (rows,), over the
    rows whose target and benchmark are both known (NaN benchmark rows are left out, as
    numerai-tools drops them: Numerai's training benchmark covers only part of the eras).

    As numerai-tools: the benchmark is centred, the prediction's projection on it removed, and the
    dot product with the centred target (x 4 when every known target lies in 0..1: Numerai's
    bucket units) divided by the row count. What differs: numerai-tools first rank-gaussianises
    the predictions and the benchmark; ranks have no gradient, so with `standardise` the
    predictions are z-scored per era instead (mean 0, standard deviation 1). The benchmark needs
    no gradient: the caller passes it gaussianised per era over the whole era (numerai-tools'
    way, once, on the data); here it is only centred (the projection does not depend on its
    scale), so a raw 0..1 benchmark works too, a little off Numerai's. Given already-gaussianised
    predictions and benchmark and `standardise=False`, the value is numerai-tools' (tests/test_bmc_loss.py).
    Centring the predictions changes nothing there: the target and benchmark are centred."""
    pred, target, mask = per_member_columns(pred, target, mask)
    known = mask & ~torch.isnan(benchmark)[:, None]
    weight = known.to(pred.dtype)
    onehot = era_onehot(segments, len(pred), pred)
    n = onehot.T @ weight  # (eras, heads)

    def centred(values):
        means = (onehot.T @ (values * weight)) / n.clamp(min=1.0)
        return (values - onehot @ means) * weight

    bench = centred(torch.nan_to_num(benchmark).to(pred.dtype)[:, None].expand_as(pred))
    pc = centred(pred)
    if standardise:
        variance = (onehot.T @ (pc * pc)) / n.clamp(min=1.0)
        pc = pc / torch.sqrt(onehot @ variance + 1e-12)
    known_targets = target[known]
    units = 4.0 if len(known_targets) and bool(((known_targets >= 0) & (known_targets <= 1)).all()) else 1.0
    tc = centred(target * units)
    bench_norm = onehot.T @ (bench * bench)
    projection = (onehot.T @ (pc * bench)) / bench_norm.clamp(min=1e-12)
    neutral = pc - bench * (onehot @ projection)
    bmc = (onehot.T @ (tc * neutral)) / n.clamp(min=1.0)
    return bmc, (n >= 2) & (bench_norm > 1e-12)


def corr_bmc_loss(pred, target, mask, segments, benchmark, bmc_weight: float):
    """(1 - bmc_weight) x the corr loss + bmc_weight x (-mean per-era BMC): training aimed at
    the contribution beyond the benchmark (era_bmc; `benchmark`: (rows,), NaN where unknown). A
    batch with no (era, head) that has two or more rows with a benchmark gives the corr loss alone."""
    corr_loss = masked_negative_pearson(pred, target, mask, segments)
    if bmc_weight == 0:
        return corr_loss
    bmc, usable = era_bmc(pred, target, benchmark, mask, segments)
    if not bool(usable.any()):
        return corr_loss
    return (1.0 - bmc_weight) * corr_loss - bmc_weight * bmc[usable].mean()


LOSSES = {Loss.mse: masked_mse, Loss.corr: masked_negative_pearson}
