"""Neutralising predictions to a benchmark model, era by era (numerai_tools.scoring.neutralize on
gaussianised ranks, then ranked), and BMC over the last eras.

The neutralising functions import nothing but numpy and scipy.special (inside the functions) and
use no other numerflow code, so an exported pickle can carry them by value
(cloudpickle.register_pickle_by_value on this module) and run where numerflow is not installed:
Numerai's runner passes the live benchmark models to the model's predict function.
"""

from __future__ import annotations


def benchmark_residuals(predictions, benchmark, era_codes, proportion: float):
    """The gaussianised predictions less `proportion` x their least-squares fit on the gaussianised
    benchmark and an intercept, era by era: numerai_tools.scoring.neutralize(gaussian(tie_kept_rank(
    predictions)), gaussian(tie_kept_rank(benchmark)), proportion) on each era's rows, before any
    final ranking.

    Rows with a non-finite prediction are NaN. Rows whose benchmark is missing (Numerai's training
    benchmark does not cover every era) are not in the fit and keep their gaussianised prediction;
    an era with fewer than 2 benchmark rows, or a constant benchmark, is only centred on its
    benchmark rows' mean (what lstsq does with a benchmark column equal to the intercept's)."""
    import numpy as np

    predictions = np.asarray(predictions, dtype=np.float64)
    benchmark = np.asarray(benchmark, dtype=np.float64)
    if not (len(predictions) == len(benchmark) == len(era_codes)):
        raise ValueError(f"predictions ({len(predictions)}), benchmark ({len(benchmark)}) and era codes "
                         f"({len(era_codes)}) differ in length")
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"proportion must be within 0..1, got {proportion}")
    out = np.full(len(predictions), np.nan)
    _, codes = np.unique(np.asarray(era_codes), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    for rows in np.split(order, starts[1:]):
        rows = rows[np.isfinite(predictions[rows])]
        if len(rows) == 0:
            continue
        gaussian_p = _gaussian_ranks(predictions[rows])
        with_benchmark = np.isfinite(benchmark[rows])
        fitted = np.zeros(len(rows))
        if with_benchmark.any():
            p, b = gaussian_p[with_benchmark], _gaussian_ranks(benchmark[rows][with_benchmark])
            b_centred = b - b.mean()
            spread = float(b_centred @ b_centred)
            slope = float(b_centred @ (p - p.mean())) / spread if spread > 0 else 0.0
            fitted[with_benchmark] = p.mean() + slope * b_centred
        out[rows] = gaussian_p - proportion * fitted
    return out


def neutralize_to_benchmark(predictions, benchmark, era_codes, proportion: float):
    """benchmark_residuals ranked within each era: (rank - 0.5) / n, ties averaged, values in
    (0, 1) as numerflow writes predictions. proportion 1 leaves no per-era correlation between the
    gaussianised result and the benchmark (rank correlation within about 0.01)."""
    import numpy as np

    residuals = benchmark_residuals(predictions, benchmark, era_codes, proportion)
    out = np.full(len(residuals), np.nan)
    _, codes = np.unique(np.asarray(era_codes), return_inverse=True)
    for code in np.unique(codes):
        rows = np.flatnonzero((codes == code) & np.isfinite(residuals))
        if len(rows):
            out[rows] = _ranks01(residuals[rows])
    return out


def _ranks01(values):
    """(rank - 0.5) / n, ties given their average rank (numerai_tools' tie_kept_rank)."""
    import numpy as np

    n = len(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n]
    average_rank = (starts + ends + 1) / 2.0  # 1-based ranks starts+1..ends, averaged
    ranks = np.empty(n)
    ranks[order] = np.repeat(average_rank, ends - starts)
    return (ranks - 0.5) / n


def _gaussian_ranks(values):
    """Normal quantiles of the tie-kept percentile ranks (numerai_tools' gaussian(tie_kept_rank))."""
    from scipy.special import ndtri

    return ndtri(_ranks01(values))


def mean_of_last(scores, last: int) -> float:
    """Mean of the last `last` scored eras of an EraScores (eras in time order, unscored eras such
    as those without a benchmark value skipped); NaN when none is scored."""
    import numpy as np

    if last < 1:
        raise ValueError(f"last must be at least 1, got {last}")
    values = np.asarray(scores.values, dtype=np.float64)
    scored = values[~np.isnan(values)][-last:]
    return float(scored.mean()) if scored.size else float("nan")


def bmc_last(predictions, benchmark, target, eras, last: int = 200) -> float:
    """Mean per-era BMC (scores.per_era_bmc) over the last `last` eras that have one: what
    Numerai's research tooling ranks models by first (last 200 eras)."""
    from numerflow.metrics.scores import per_era_bmc

    return mean_of_last(per_era_bmc(predictions, benchmark, target, eras), last)
