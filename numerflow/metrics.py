"""Era-wise scoring with Numerai's definitions: Spearman, Numerai CORR, MMC, feature exposure,
feature-neutral CORR, and the per-era summary (mean, std, sharpe, drawdown, hit rate).

numpy only (plus scipy.special.ndtri), no I/O. Every era is scored at once: one sort of the values
within their eras (a global argsort, then a stable radix sort on the small integer era codes),
average ranks for ties from the run boundaries, and per-era sums with np.bincount. There is no
Python loop over eras on the Spearman / CORR / MMC paths; feature exposure and neutralisation loop
over eras because each era is one large matrix product.

Conventions, shared by every per-era function:
- `eras` is an array of labels ("0012", "era12", 12, ...) or an `EraGroups` from `group_eras`
  (reuse it to skip the labelling cost when scoring many prediction vectors on the same rows).
  Eras are ordered numerically (schema.era_sort_key), so summaries see them in time order.
- Rows whose target is NaN are skipped, era by era.
- An era is unscorable (NaN) when it has fewer than 2 scored rows, constant predictions, a
  constant target, or a non-finite prediction on a scored row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from numerflow.schema import era_sort_key

MIN_ROWS = 2  # an era with fewer scored rows has no correlation


# ---------------------------------------------------------------------------------------------
# Eras as small integer codes


@dataclass(frozen=True)
class EraGroups:
    """Era labels (sorted numerically) and, per row, the index of its era in `labels`."""

    labels: list[str]
    codes: np.ndarray  # int16 when there are < 32768 eras: numpy's stable sort is a radix sort then

    @property
    def n_eras(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return len(self.codes)

    def subset(self, mask: np.ndarray) -> "EraGroups":
        """The same eras (all labels kept, so results stay aligned) for the rows in `mask`."""
        return EraGroups(self.labels, self.codes[mask])


def _code_dtype(n_eras: int):
    return np.int16 if n_eras < np.iinfo(np.int16).max else np.int32


def group_eras(eras) -> EraGroups:
    """Label each row's era with a small integer, eras numbered in numeric order.

    Data files are nearly always stored era by era, so the labels are compared only at the
    boundaries of runs of equal labels: O(rows) comparisons plus a sort of the few run labels,
    with no hashing or sorting of millions of strings."""
    if isinstance(eras, EraGroups):
        return eras
    labels_in = np.asarray(eras)
    if labels_in.ndim != 1:
        raise ValueError("eras must be one-dimensional")
    n = len(labels_in)
    if n == 0:
        return EraGroups([], np.empty(0, dtype=np.int16))
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(labels_in[1:], labels_in[:-1], out=boundary[1:])
    run_starts = np.flatnonzero(boundary)
    run_labels = [str(x) for x in labels_in[run_starts].tolist()]
    unique = sorted(set(run_labels), key=era_sort_key)
    code_of = {label: i for i, label in enumerate(unique)}
    dtype = _code_dtype(len(unique))
    run_codes = np.fromiter((code_of[label] for label in run_labels), dtype=dtype, count=len(run_labels))
    run_lengths = np.diff(np.append(run_starts, n))
    return EraGroups(unique, np.repeat(run_codes, run_lengths))


# ---------------------------------------------------------------------------------------------
# Ranks within eras


def _sort_within_eras(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Row order sorting by (era, value): a global argsort of the values, then a stable sort
    on the era codes (a radix sort for int16 codes), which keeps the value order inside each era.
    Faster than np.lexsort((values, codes)), which compares both keys at every step."""
    order = np.argsort(values)
    return order[np.argsort(codes[order], kind="stable")]


def _discrete_levels(values: np.ndarray, max_levels: int = 64):
    """If `values` take few distinct values (Numerai targets: 0, .25, .5, .75, 1), return
    (levels, level index per row); else None. Lets ranks be counted instead of sorted."""
    if len(values) == 0:
        return None
    levels = np.unique(values[:4096])
    if len(levels) > max_levels:
        return None
    index = np.searchsorted(levels, values).clip(0, len(levels) - 1)
    if not np.array_equal(levels[index], values):
        return None
    return levels, index


def _average_ranks(values: np.ndarray, codes: np.ndarray, n_eras: int):
    """1-based ranks of `values` within their eras, ties given their average rank (as
    scipy.stats.rankdata / pandas rank(method="average")), and the number of distinct values
    per era. `values` must be finite."""
    discrete = _discrete_levels(values)
    if discrete is not None:
        return _counted_ranks(discrete[1], len(discrete[0]), codes, n_eras)
    n = len(values)
    order = _sort_within_eras(values, codes)
    sorted_values, sorted_codes = values[order], codes[order]
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new_run[1:])
    new_run[1:] |= sorted_codes[1:] != sorted_codes[:-1]
    run_starts = np.flatnonzero(new_run)
    run_lengths = np.diff(np.append(run_starts, n))
    counts = np.bincount(codes, minlength=n_eras)
    era_first = np.cumsum(counts) - counts  # position of each era's first row in sorted order
    # A tie run spanning positions [s, s+len) gets the mean position s + (len-1)/2.
    mean_position = run_starts + (run_lengths - 1) / 2.0
    ranks_sorted = np.repeat(mean_position, run_lengths) - era_first[sorted_codes] + 1.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ranks_sorted
    distinct = np.bincount(sorted_codes[run_starts], minlength=n_eras)
    return ranks, distinct


def _counted_ranks(level_index: np.ndarray, n_levels: int, codes: np.ndarray, n_eras: int):
    """Average ranks for values with few levels: count each (era, level) pair; a level's rank
    is the count of smaller values in its era plus the mean position among its equals."""
    cell = codes.astype(np.int64) * n_levels + level_index
    per_cell = np.bincount(cell, minlength=n_eras * n_levels).reshape(n_eras, n_levels)
    below = np.cumsum(per_cell, axis=1) - per_cell
    rank_of_cell = (below + (per_cell + 1) / 2.0).ravel()
    distinct = (per_cell > 0).sum(axis=1)
    return rank_of_cell[cell], distinct


def _constant_within_eras(values: np.ndarray, codes: np.ndarray, n_eras: int) -> np.ndarray:
    """Per era: True when every value equals the era's first value (eras without rows: True)."""
    first = np.zeros(n_eras, dtype=np.int64)
    rows = np.arange(len(values))
    first[codes] = rows  # any row of the era serves as its reference value
    differs = values != values[first[codes]] if len(values) else np.zeros(0, dtype=bool)
    return np.bincount(codes[differs], minlength=n_eras) == 0


def rank_within_eras(values, eras) -> np.ndarray:
    """(rank - 0.5) / n within each era, ties averaged: values strictly inside (0, 1), the
    percentile rank numerai_tools' tie_kept_rank uses. NaN stays NaN and is not counted in n."""
    values = np.asarray(values)
    groups = group_eras(eras)
    out = np.full(len(values), np.nan)
    finite = np.isfinite(values)
    codes = groups.codes if finite.all() else groups.codes[finite]
    ranks, _ = _average_ranks(values[finite] if not finite.all() else values, codes, groups.n_eras)
    counts = np.bincount(codes, minlength=groups.n_eras)
    out[finite] = (ranks - 0.5) / counts[codes]
    return out


def gaussianize_within_eras(values, eras) -> np.ndarray:
    """Normal quantiles of the per-era percentile ranks (numerai_tools' gaussian(tie_kept_rank))."""
    return ndtri(rank_within_eras(values, eras))


def _signed_power(x: np.ndarray, p: float = 1.5) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** p


# ---------------------------------------------------------------------------------------------
# Per-era scores


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

    def as_dict(self) -> dict:
        return dict(zip(self.eras, self.values.tolist()))


class _ScoredRows:
    """The rows of one (predictions, target, eras) triple that can be scored, and per era: row
    counts and whether a non-finite prediction disqualifies it."""

    def __init__(self, predictions, target, eras):
        predictions, target = np.asarray(predictions), np.asarray(target, dtype=np.float64)
        groups = group_eras(eras)
        if not (len(predictions) == len(target) == len(groups)):
            raise ValueError(f"predictions ({len(predictions)}), target ({len(target)}) and eras "
                             f"({len(groups)}) differ in length")
        if predictions.ndim != 1:
            raise ValueError("predictions must be one-dimensional")
        keep = np.isfinite(target)
        if not keep.all():
            predictions, target, groups = predictions[keep], target[keep], groups.subset(keep)
        self.labels, self.codes, self.n_eras = groups.labels, groups.codes, groups.n_eras
        self.target = target
        bad = ~np.isfinite(predictions)
        self.bad_era = np.bincount(self.codes[bad], minlength=self.n_eras) > 0
        # Placeholders keep the sort valid; their eras are reported as NaN.
        self.predictions = np.where(bad, 0, predictions) if bad.any() else predictions
        self.counts = np.bincount(self.codes, minlength=self.n_eras)

    def scores(self, values: np.ndarray, *constant_flags: np.ndarray) -> EraScores:
        unscorable = (self.counts < MIN_ROWS) | self.bad_era
        for flag in constant_flags:
            unscorable |= flag
        return EraScores(list(self.labels), self.counts.copy(), np.where(unscorable, np.nan, values))

    def era_mean(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(self.codes, weights=x, minlength=self.n_eras) / self.counts

    def pearson(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pearson correlation of x and y within each era (centred sums, no cancellation)."""
        xc = x - self.era_mean(x)[self.codes]
        yc = y - self.era_mean(y)[self.codes]
        return self._cosine(xc, yc)

    def _cosine(self, xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
        sxy = np.bincount(self.codes, weights=xc * yc, minlength=self.n_eras)
        sxx = np.bincount(self.codes, weights=xc * xc, minlength=self.n_eras)
        syy = np.bincount(self.codes, weights=yc * yc, minlength=self.n_eras)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sxy / np.sqrt(sxx * syy)

    def prediction_ranks(self):
        if not hasattr(self, "_pred_ranks"):
            self._pred_ranks = _average_ranks(self.predictions, self.codes, self.n_eras)
        return self._pred_ranks

    def gaussian_predictions(self) -> np.ndarray:
        ranks, _ = self.prediction_ranks()
        return ndtri((ranks - 0.5) / self.counts[self.codes])

    def spearman(self) -> EraScores:
        pred_ranks, pred_distinct = self.prediction_ranks()
        target_ranks, target_distinct = _average_ranks(self.target, self.codes, self.n_eras)
        # Average ranks of n rows always have mean (n + 1) / 2: centre without a pass.
        centre = ((self.counts + 1) / 2.0)[self.codes]
        values = self._cosine(pred_ranks - centre, target_ranks - centre)
        return self.scores(values, pred_distinct < 2, target_distinct < 2)

    def constant_target(self) -> np.ndarray:
        """True for eras whose scored targets are all equal (exact, unlike a variance test)."""
        return _constant_within_eras(self.target, self.codes, self.n_eras)

    def numerai_corr(self) -> EraScores:
        _, pred_distinct = self.prediction_ranks()
        gauss = _signed_power(self.gaussian_predictions())
        centred_target = _signed_power(self.target - self.era_mean(self.target)[self.codes])
        values = self.pearson(gauss, centred_target)
        return self.scores(values, pred_distinct < 2, self.constant_target())


def per_era_spearman(predictions, target, eras) -> EraScores:
    """Spearman rank correlation of predictions with the target in each era (scipy's spearmanr)."""
    return _ScoredRows(predictions, target, eras).spearman()


def per_era_numerai_corr(predictions, target, eras) -> EraScores:
    """Numerai CORR in each era, as numerai_tools.scoring.numerai_corr on that era's rows:
    predictions tie-kept ranked ((rank - 0.5) / n), gaussianised, signed power 1.5; target centred
    on the era's mean, signed power 1.5; Pearson correlation of the two."""
    return _ScoredRows(predictions, target, eras).numerai_corr()


def per_era_scores(predictions, target, eras) -> dict[str, EraScores]:
    """Spearman and Numerai CORR together, sharing the one sort of the predictions."""
    rows = _ScoredRows(predictions, target, eras)
    return {"spearman": rows.spearman(), "numerai_corr": rows.numerai_corr()}


def per_era_pearson(x, y, eras) -> EraScores:
    """Plain Pearson correlation per era (rows with NaN `y` skipped)."""
    rows = _ScoredRows(x, y, eras)
    x_const = np.bincount(rows.codes, weights=(rows.predictions - rows.era_mean(rows.predictions)[rows.codes]) ** 2,
                          minlength=rows.n_eras) == 0
    return rows.scores(rows.pearson(rows.predictions.astype(np.float64), rows.target), x_const,
                       rows.constant_target())


def per_era_mmc(predictions, meta_model, target, eras) -> EraScores:
    """Meta-model contribution per era, as numerai_tools.scoring.correlation_contribution on that
    era's rows: predictions and meta model tie-kept ranked and gaussianised, predictions
    orthogonalised to the meta model, dotted with the centred target (times 4 when it lies in
    [0, 1]) and divided by the row count. Rows without a meta model value are skipped."""
    predictions = np.asarray(predictions)
    meta_model = np.asarray(meta_model, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    groups = group_eras(eras)
    keep = np.isfinite(meta_model)
    if not keep.all():
        predictions, meta_model, target, groups = (predictions[keep], meta_model[keep], target[keep],
                                                   groups.subset(keep))
    rows = _ScoredRows(predictions, target, groups)
    meta = meta_model[np.isfinite(target)] if len(meta_model) != len(rows.target) else meta_model
    _, pred_distinct = rows.prediction_ranks()
    p = rows.gaussian_predictions()
    meta_ranks, meta_distinct = _average_ranks(meta, rows.codes, rows.n_eras)
    m = ndtri((meta_ranks - 0.5) / rows.counts[rows.codes])
    pm = np.bincount(rows.codes, weights=p * m, minlength=rows.n_eras)
    mm = np.bincount(rows.codes, weights=m * m, minlength=rows.n_eras)
    with np.errstate(invalid="ignore", divide="ignore"):
        neutral = p - m * (pm / mm)[rows.codes]
    # numerai_tools scales 0..1 targets to buckets -2..2 (times 4, then centred) — per era here,
    # as the check runs on the rows it is given.
    outside = (rows.target < 0) | (rows.target > 1)
    in_unit = np.bincount(rows.codes[outside], minlength=rows.n_eras) == 0
    scaled = rows.target * np.where(in_unit, 4.0, 1.0)[rows.codes]
    centred = scaled - rows.era_mean(scaled)[rows.codes]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.bincount(rows.codes, weights=centred * neutral, minlength=rows.n_eras) / rows.counts
    # A constant meta model leaves nothing to orthogonalise against: unscorable like the rest.
    return rows.scores(values, pred_distinct < 2, meta_distinct < 2, rows.constant_target())


# ---------------------------------------------------------------------------------------------
# Features: exposure and neutralisation (one matrix product per era)


def _era_slices(groups: EraGroups):
    """(era index, row indices) for each era present, rows in their original order."""
    order = np.argsort(groups.codes, kind="stable")
    counts = np.bincount(groups.codes, minlength=groups.n_eras)
    bounds = np.append(0, np.cumsum(counts))
    for era in range(groups.n_eras):
        if counts[era]:
            yield era, order[bounds[era]:bounds[era + 1]]


def _project_out(features_c: np.ndarray, y_c: np.ndarray, rcond: float = 1e-6) -> np.ndarray:
    """Least-squares fit of y_c on features_c (both centred, so the intercept is implicit),
    through the Gram matrix's eigen-decomposition: rank-deficient eras (constant features, a
    feature group "missing" as all 2s) drop their null directions as lstsq's rcond does."""
    gram = features_c.T @ features_c
    eigval, eigvec = np.linalg.eigh(gram)
    keep = eigval > (rcond ** 2) * max(eigval.max(initial=0.0), 0.0)
    if not keep.any():
        return np.zeros_like(y_c)
    basis = eigvec[:, keep]
    inverse_eig = 1.0 / eigval[keep]
    along_basis = basis.T @ (features_c.T @ y_c)
    along_basis *= inverse_eig[:, None] if along_basis.ndim == 2 else inverse_eig
    return features_c @ (basis @ along_basis)


def neutralize(predictions, features, eras, proportion: float = 1.0) -> np.ndarray:
    """Remove `proportion` of the predictions' linear exposure to the features within each era
    (numerai_tools.scoring.neutralize applied era by era: least squares on the features plus a
    constant). predictions: (rows,) or (rows, k); features: (rows, n_features), any numeric dtype
    (int8 is cast one era at a time). Returns float64, same shape as predictions."""
    predictions = np.asarray(predictions, dtype=np.float64)
    one_d = predictions.ndim == 1
    y = predictions[:, None] if one_d else predictions
    out = np.empty_like(y)
    for _, idx in _era_slices(group_eras(eras)):
        x = np.asarray(features[idx], dtype=np.float64)
        x -= x.mean(axis=0)
        y_era = y[idx]
        y_mean = y_era.mean(axis=0)
        fitted = _project_out(x, y_era - y_mean)
        # The constant column's share is the era mean: removing it (proportion 1) centres the era.
        out[idx] = y_era - proportion * (fitted + y_mean)
    return out[:, 0] if one_d else out


@dataclass
class FeatureScores:
    """Per-era feature exposure of the predictions and their feature-neutral CORR."""

    max_exposure: EraScores  # per era: max over features of |Pearson(predictions, feature)|
    rms_exposure: EraScores  # per era: root mean square over features of that correlation
    fnc: EraScores  # per era: Numerai CORR of the predictions neutralised to all features


def feature_scores(predictions, features, target, eras) -> FeatureScores:
    """Feature exposure and feature-neutral CORR (numerai_tools.scoring.feature_neutral_corr
    era by era: gaussianised ranks neutralised to the features, then numerai_corr).

    Exposure follows Numerai's example scripts: per era, the Pearson correlation of the raw
    predictions with every feature (features constant in the era are left out); the era's max
    |corr| and RMS over features. Summaries average those over eras. Rows with NaN target are
    skipped like everywhere else."""
    predictions = np.asarray(predictions, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    groups = group_eras(eras)
    keep = np.isfinite(target)
    if not keep.all():
        predictions, target, groups = predictions[keep], target[keep], groups.subset(keep)
        features = features[keep]
    gauss = gaussianize_within_eras(predictions, groups)
    max_exp = np.full(groups.n_eras, np.nan)
    rms_exp = np.full(groups.n_eras, np.nan)
    neutral = np.zeros(len(predictions))
    for era, idx in _era_slices(groups):
        x = np.asarray(features[idx], dtype=np.float64)
        x -= x.mean(axis=0)
        p = predictions[idx] - predictions[idx].mean()
        scale = np.sqrt((x * x).sum(axis=0) * (p @ p))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = (x.T @ p) / scale
        corr = corr[scale > 0]
        if corr.size:
            max_exp[era] = np.abs(corr).max()
            rms_exp[era] = np.sqrt(np.mean(corr * corr))
        g = gauss[idx]
        g = g - g.mean() if np.isfinite(g).all() else g
        neutral[idx] = g - _project_out(x, g) if np.isfinite(g).all() else np.nan
    rows = _ScoredRows(predictions, target, groups)
    fnc = _ScoredRows(neutral, target, groups).numerai_corr()
    _, pred_distinct = rows.prediction_ranks()
    invalid = (rows.counts < MIN_ROWS) | rows.bad_era | (pred_distinct < 2)
    counts = rows.counts.copy()
    return FeatureScores(
        max_exposure=EraScores(list(groups.labels), counts, np.where(invalid, np.nan, max_exp)),
        rms_exposure=EraScores(list(groups.labels), counts.copy(), np.where(invalid, np.nan, rms_exp)),
        fnc=fnc,
    )


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
    mean, std = float(scored.mean()), float(scored.std())
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
