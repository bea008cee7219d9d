"""Per-era scores of predictions against a target: Spearman, Numerai CORR, MMC and BMC, and the
summary of a per-era series (mean, std, sharpe, drawdown, hit rate)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numerflow.metrics.ranking import (_average_ranks, _EraLayout, _gaussian, _pearson, _powered_target, _signed_power,
                                       group_eras)

MIN_ROWS = 2  # an era with fewer scored rows has no correlation

# ---------------------------------------------------------------------------------------------
# Scored rows: the (predictions, target, eras) rows that count, laid out era by era


@dataclass
class EraScores:
    """One score per era, eras in numeric order. NaN marks an era that could not be scored."""

    eras: list[str]
    rows: np.ndarray  # rows scored in each era
    values: np.ndarray  # float64

    @property
    def unscored(self) -> list[str]:
        return [era for era, value in zip(self.eras, self.values) if np.isnan(value)]

    def summary(self) -> dict:
        return summarize(self.values)


class _ScoredRows:
    """Rows with a finite target, era by era, and the per-era facts every score needs: row
    counts, whether a non-finite prediction disqualifies the era, and the predictions' ranks
    (computed once, shared by every score). `aligned` arrays (e.g. the meta model) follow the
    same row selection and order."""

    def __init__(self, predictions, target, eras, aligned=()):
        predictions, target = np.asarray(predictions), np.asarray(target, dtype=np.float64)
        groups = group_eras(eras)
        if predictions.ndim != 1:
            raise ValueError("predictions must be one-dimensional")
        if not (len(predictions) == len(target) == len(groups)):
            raise ValueError(f"predictions ({len(predictions)}), target ({len(target)}) and eras "
                             f"({len(groups)}) differ in length")
        keep = np.isfinite(target)
        if not keep.all():
            predictions, target, groups = predictions[keep], target[keep], groups.subset(keep)
            aligned = [np.asarray(a)[keep] for a in aligned]
        self.groups = groups
        self.layout = layout = _EraLayout(groups)
        self.counts = layout.counts
        self.target = layout.take(target)
        self.aligned = [layout.take(np.asarray(a, dtype=np.float64)) for a in aligned]
        predictions = layout.take(predictions)
        bad = ~np.isfinite(predictions)
        self.bad_era = layout.sums(bad) > 0 if bad.any() else np.zeros(layout.n_eras, dtype=bool)
        # Placeholders keep the sort valid; their eras are reported as NaN.
        self.predictions = np.where(bad, 0.0, predictions) if self.bad_era.any() else predictions
        self._ranks = None

    def prediction_ranks(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ranks is None:
            self._ranks = _average_ranks(self.predictions, self.layout)
        return self._ranks

    def gaussian_predictions(self) -> np.ndarray:
        """numerai_tools' gaussian(tie_kept_rank(predictions)), era by era."""
        return _gaussian(self.prediction_ranks()[0], self.layout)

    def constant_predictions(self) -> np.ndarray:
        return self.prediction_ranks()[1] < 2

    def scores(self, values: np.ndarray, *unscorable_flags: np.ndarray) -> EraScores:
        unscorable = (self.counts < MIN_ROWS) | self.bad_era
        for flag in unscorable_flags:
            unscorable = unscorable | flag
        return EraScores(list(self.groups.labels), self.counts.copy(), np.where(unscorable, np.nan, values))

    def spearman(self) -> EraScores:
        target_ranks, target_distinct = _average_ranks(self.target, self.layout)
        values = _pearson(self.prediction_ranks()[0], target_ranks, self.layout)
        return self.scores(values, self.constant_predictions(), target_distinct < 2)

    def numerai_corr(self) -> EraScores:
        powered = _signed_power(self.gaussian_predictions())
        values = _pearson(powered, _powered_target(self.target, self.layout), self.layout)
        return self.scores(values, self.constant_predictions(), self.layout.constant(self.target))


def per_era_spearman(predictions, target, eras) -> EraScores:
    """Spearman rank correlation of predictions with the target in each era (scipy's spearmanr)."""
    return _ScoredRows(predictions, target, eras).spearman()


def per_era_numerai_corr(predictions, target, eras) -> EraScores:
    """Numerai CORR in each era, as numerai_tools.scoring.numerai_corr on that era's rows:
    predictions tie-kept ranked ((rank - 0.5) / n), gaussianised, signed power 1.5; target centred
    on the era's mean, signed power 1.5; Pearson correlation of the two."""
    return _ScoredRows(predictions, target, eras).numerai_corr()


def per_era_scores(predictions, target, eras) -> dict[str, EraScores]:
    """Spearman and Numerai CORR together, sharing the one ranking of the predictions."""
    rows = _ScoredRows(predictions, target, eras)
    return {"spearman": rows.spearman(), "numerai_corr": rows.numerai_corr()}


def per_era_pearson(x, y, eras) -> EraScores:
    """Plain Pearson correlation of x and y per era (rows with NaN y skipped)."""
    rows = _ScoredRows(x, y, eras)
    layout = rows.layout
    x = rows.predictions.astype(np.float64)
    return rows.scores(_pearson(x, rows.target, layout), layout.constant(x),
                       layout.constant(rows.target))


def per_era_mmc(predictions, meta_model, target, eras) -> EraScores:
    """Meta-model contribution per era, as numerai_tools.scoring.correlation_contribution on that
    era's rows: predictions and meta model tie-kept ranked and gaussianised, predictions
    orthogonalised to the meta model, dotted with the centred target (times 4 when it lies in
    [0, 1]) and divided by the row count. Rows without a meta model value are skipped."""
    meta_model = np.asarray(meta_model, dtype=np.float64)
    target = np.where(np.isfinite(meta_model), np.asarray(target, dtype=np.float64), np.nan)
    rows = _ScoredRows(predictions, target, eras, aligned=[meta_model])
    layout, sums = rows.layout, rows.layout.sums
    p = rows.gaussian_predictions()
    meta_ranks, meta_distinct = _average_ranks(rows.aligned[0], layout)
    m = _gaussian(meta_ranks, layout)
    with np.errstate(invalid="ignore", divide="ignore"):
        neutral = p - m * layout.expand(sums(p * m) / sums(m * m))
    # numerai_tools turns 0..1 targets into buckets -2..2 (times 4, then centred); it checks the
    # range on the rows it is given, so per era here.
    outside = (rows.target < 0) | (rows.target > 1)
    scale = np.where(sums(outside) == 0, 4.0, 1.0)
    centred = layout.centre(rows.target * layout.expand(scale))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = sums(centred * neutral) / rows.counts
    # A constant meta model leaves nothing to orthogonalise against: unscorable like the rest.
    return rows.scores(values, rows.constant_predictions(), meta_distinct < 2, layout.constant(rows.target))


def per_era_bmc(predictions, benchmark, target, eras) -> EraScores:
    """Benchmark model contribution per era: numerai_tools.scoring.correlation_contribution with a
    benchmark model's predictions (e.g. v53_lgbm_ender20) in place of the meta model, on each
    era's rows; rows without a benchmark value are skipped. The same arithmetic as MMC."""
    return per_era_mmc(predictions, benchmark, target, eras)


# ---------------------------------------------------------------------------------------------
# Summary of a per-era series


def summarize(values) -> dict:
    """Summary of per-era scores in era order, NaN eras left out: mean, std (ddof 0),
    sharpe (mean / std), max_drawdown (largest fall of the cumulative sum from its running
    maximum, as Numerai's examples compute it), hit_rate (share of eras > 0), eras_scored.
    Undefined statistics are NaN (no eras, or std 0 for sharpe)."""
    values = np.asarray(values.values if isinstance(values, EraScores) else values, dtype=np.float64)
    scored = values[~np.isnan(values)]
    if scored.size == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "sharpe": nan, "max_drawdown": nan, "hit_rate": nan,
                "eras_scored": 0}
    mean = float(scored.mean())
    # A constant series has no spread: std 0 (so no Sharpe), not np.std's rounding error (~1e-18),
    # which gave a constant BMC a Sharpe of 4.6e15.
    std = 0.0 if scored.min() == scored.max() else float(scored.std())
    cumulative = np.cumsum(scored)
    drawdown = float((np.maximum.accumulate(cumulative) - cumulative).max())
    return {
        "mean": mean,
        "std": std,
        "sharpe": mean / std if std > 0 else float("nan"),
        "max_drawdown": drawdown,
        "hit_rate": float((scored > 0).mean()),
        "eras_scored": int(scored.size),
    }
