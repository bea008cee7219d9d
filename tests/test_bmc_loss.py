"""The differentiable per-era BMC (training/losses.py) against numerai-tools' correlation_contribution.

What differs, and so what is compared: numerai-tools tie-rank-gaussianises the predictions and the
benchmark per era; ranks have no gradient, so the loss z-scores the predictions per era instead.
Fed predictions and a benchmark that numerai-tools has already gaussianised (ranking them again
gives them back unchanged), era_bmc(standardise=False) must give numerai-tools' value at 1e-6. The
benchmark is data, so its gaussianisation is the caller's (once per era, exactly numerai-tools')."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from numerai_tools.scoring import (contribution_scores, correlation_contribution, gaussian, orthogonalize,
                                   tie_kept_rank)

from numerflow.training.losses import corr_bmc_loss, era_bmc, masked_negative_pearson

ROWS_PER_ERA = 60


def fixed_batch(seed=0):
    """Three eras of 60 rows, two prediction columns, Numerai's 5-bucket targets; the benchmark is
    NaN on a third of era 1's rows and on all of era 2 (the training benchmark covers part of the eras)."""
    rng = np.random.default_rng(seed)
    rows = 3 * ROWS_PER_ERA
    segments = np.repeat(np.arange(3), ROWS_PER_ERA)
    signal = rng.normal(size=rows)
    benchmark = signal + rng.normal(size=rows)
    pred = np.stack([signal + rng.normal(size=rows), benchmark + 0.5 * rng.normal(size=rows)], axis=1)
    target = np.clip(np.round((signal + rng.normal(size=rows)) * 0.8 + 2) / 4, 0, 1)
    target = np.stack([target, np.clip(target + rng.choice([-0.25, 0, 0.25], size=rows), 0, 1)], axis=1)
    benchmark[ROWS_PER_ERA:ROWS_PER_ERA + 20] = np.nan
    benchmark[2 * ROWS_PER_ERA:] = np.nan
    return pred, target, benchmark, segments


def gaussianised(values: np.ndarray, index) -> np.ndarray:
    """numerai-tools' own rank-gaussianisation of each column."""
    frame = pd.DataFrame(values.reshape(len(values), -1), index=index)
    return gaussian(tie_kept_rank(frame)).to_numpy()


def tensors(*arrays):
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


def test_era_bmc_equals_numerai_tools_correlation_contribution_on_gaussianised_inputs():
    pred, target, benchmark, segments = fixed_batch()
    pred_g, bench_g = pred.copy(), benchmark.copy()
    expected = np.full((3, 2), np.nan)
    for era in range(3):
        rows = np.flatnonzero((segments == era) & ~np.isnan(benchmark))
        if len(rows) == 0:
            continue
        index = pd.Index([f"id{r:04d}" for r in rows])
        pred_g[rows] = gaussianised(pred[rows], index)
        bench_g[rows] = gaussianised(benchmark[rows], index)[:, 0]
        for column in range(2):
            expected[era, column] = correlation_contribution(
                pd.DataFrame({"p": pred_g[rows, column]}, index=index), pd.Series(bench_g[rows], index=index),
                pd.Series(target[rows, column], index=index))["p"]
    p, t, b = tensors(pred_g, target, bench_g)
    bmc, usable = era_bmc(p, t, b, torch.ones_like(p, dtype=torch.bool), torch.from_numpy(segments),
                          standardise=False)
    assert usable.tolist() == [[True, True], [True, True], [False, False]]  # era 2 has no benchmark
    np.testing.assert_allclose(bmc[:2].numpy(), expected[:2], rtol=0, atol=1e-6)
    assert np.abs(expected[:2]).min() > 1e-3  # values that a wrong formula would miss by more than 1e-6


def test_the_loss_uses_z_scored_predictions_in_place_of_numerai_tools_gaussianisation():
    pred, target, benchmark, segments = fixed_batch(1)
    bench_g = benchmark.copy()  # the caller gaussianises the benchmark (data, no gradient needed)
    for era in range(2):
        rows = np.flatnonzero((segments == era) & ~np.isnan(benchmark))
        bench_g[rows] = gaussianised(benchmark[rows], pd.Index([f"id{r:04d}" for r in rows]))[:, 0]
    p, t, b = tensors(pred, target, bench_g)
    mask, seg = torch.ones_like(p, dtype=torch.bool), torch.from_numpy(segments)
    bmc, usable = era_bmc(p, t, b, mask, seg)
    for era in range(2):
        rows = np.flatnonzero((segments == era) & ~np.isnan(benchmark))
        z = (pred[rows] - pred[rows].mean(0)) / pred[rows].std(0)
        index = pd.Index([f"id{r:04d}" for r in rows])
        for column in range(2):  # numerai-tools' steps after its gaussianisation, fed the z-scores
            neutral = orthogonalize(z[:, [column]], bench_g[rows])
            expected = contribution_scores(neutral, pd.Series(target[rows, column], index=index),
                                           pd.DataFrame({"p": z[:, column]}, index=index))["p"]
            assert float(bmc[era, column]) == pytest.approx(expected, abs=1e-6)
    # z-scoring makes it blind to the predictions' scale and offset, as ranks are
    again, _ = era_bmc(p * 7.0 - 3.0, t, b, mask, seg)
    np.testing.assert_allclose(again[usable].numpy(), bmc[usable].numpy(), atol=1e-9)


def test_unknown_targets_are_left_out_of_the_bmc_as_numerai_tools_drops_them():
    pred, target, benchmark, segments = fixed_batch(2)
    target[5:15, 0] = np.nan
    p, t, b = tensors(pred, np.nan_to_num(target), benchmark)
    mask, seg = torch.from_numpy(~np.isnan(target)), torch.from_numpy(segments)
    bmc, _ = era_bmc(p, t, b, mask, seg, standardise=False)
    rows = np.flatnonzero((segments == 0) & ~np.isnan(target[:, 0]))
    index = pd.Index([f"id{r:04d}" for r in rows])
    expected = contribution_scores(orthogonalize(pred[rows][:, [0]], benchmark[rows] - benchmark[rows].mean()),
                                   pd.Series(target[rows, 0], index=index), pd.DataFrame({"p": pred[rows, 0]}, index=index))
    assert float(bmc[0, 0]) == pytest.approx(expected["p"], abs=1e-6)


def test_combined_loss_mixes_the_corr_loss_and_the_bmc_by_the_weight():
    pred, target, benchmark, segments = fixed_batch(3)
    p, t, b = tensors(pred, target, benchmark)
    mask, seg = torch.ones_like(p, dtype=torch.bool), torch.from_numpy(segments)
    corr_loss = masked_negative_pearson(p, t, mask, seg)
    bmc, usable = era_bmc(p, t, b, mask, seg)
    assert usable.sum() == 4  # eras 0 and 1, both columns
    assert float(corr_bmc_loss(p, t, mask, seg, b, 0.0)) == pytest.approx(float(corr_loss), abs=1e-12)
    mixed = corr_bmc_loss(p, t, mask, seg, b, 0.3)
    assert float(mixed) == pytest.approx(0.7 * float(corr_loss) - 0.3 * float(bmc[usable].mean()), abs=1e-12)
    assert float(mixed) != pytest.approx(float(corr_loss), abs=1e-4)


def test_a_batch_without_benchmark_rows_gives_the_corr_loss_alone():
    pred, target, _benchmark, segments = fixed_batch(4)
    p, t = tensors(pred, target)
    mask, seg = torch.ones_like(p, dtype=torch.bool), torch.from_numpy(segments)
    no_benchmark = torch.full((len(p),), float("nan"), dtype=torch.float64)
    loss = corr_bmc_loss(p, t, mask, seg, no_benchmark, 0.5)
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(masked_negative_pearson(p, t, mask, seg)), abs=1e-12)


def test_the_combined_loss_has_the_gradient_autograd_checks_numerically():
    rng = np.random.default_rng(5)
    rows = 10
    pred = torch.tensor(rng.normal(size=(rows, 2)), dtype=torch.float64, requires_grad=True)
    target = torch.tensor(rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=(rows, 2)), dtype=torch.float64)
    benchmark = torch.tensor(rng.normal(size=rows), dtype=torch.float64)
    benchmark[3] = float("nan")  # a row without benchmark: in the corr term, not in the BMC
    mask = torch.ones((rows, 2), dtype=torch.bool)
    mask[7, 1] = False
    segments = torch.tensor([0] * 5 + [1] * 5)
    assert torch.autograd.gradcheck(lambda p: corr_bmc_loss(p, target, mask, segments, benchmark, 0.4), (pred,))
    assert torch.autograd.gradcheck(lambda p: era_bmc(p, target, benchmark, mask, segments)[0], (pred,))


def test_tabm_members_are_scored_as_columns_so_the_loss_is_the_mean_of_their_losses():
    pred, target, benchmark, segments = fixed_batch(6)
    members = torch.tensor(np.stack([pred, pred[::-1] + pred, pred ** 3], axis=1))  # (rows, k=3, heads=2)
    t, b = tensors(target, benchmark)
    mask, seg = torch.ones_like(t, dtype=torch.bool), torch.from_numpy(segments)
    each = [float(masked_negative_pearson(members[:, j], t, mask, seg)) for j in range(3)]
    assert float(masked_negative_pearson(members, t, mask, seg)) == pytest.approx(np.mean(each), abs=1e-12)
    each_bmc = [float(era_bmc(members[:, j], t, b, mask, seg)[0][:2].mean()) for j in range(3)]
    bmc, usable = era_bmc(members, t, b, mask, seg)
    assert float(bmc[usable].mean()) == pytest.approx(np.mean(each_bmc), abs=1e-12)
