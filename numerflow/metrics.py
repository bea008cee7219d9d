"""Era-wise scoring with Numerai's definitions: Spearman, Numerai CORR, MMC, feature exposure,
feature-neutral CORR, and the per-era summary (mean, std, sharpe, drawdown, hit rate).

Built, like numerai_tools.scoring, from one small function per mathematical step, each applied to
every era at once:

    rank (ties averaged) -> gaussianise -> signed power 1.5 -> Pearson

Spearman is Pearson of the ranks; CORR is Pearson of the powered gaussian ranks with the powered
target; MMC orthogonalises the gaussian ranks to the meta model's; FNC neutralises them to the
features. The one place that needs care for speed is `_average_ranks`, which every rank goes
through (values with a few levels are counted; others sorted within their eras, all eras in one
numpy call); every other step is a per-era sum (np.add.reduceat on rows laid out era by era) or an
elementwise function. Exposure and FNC share one Gram matrix per era. numpy only (plus
scipy.special.ndtri), no I/O.

Conventions, shared by every per-era function:
- `eras` is an array of labels ("0012", "era12", 12, ...) or an `EraGroups` from `group_eras`
  (reuse it to skip the labelling cost when scoring many prediction vectors on the same rows).
  Eras are ordered numerically (schema.era_sort_key), so summaries see them in time order.
- Rows whose target is NaN are skipped, era by era.
- An era is unscorable (NaN) when it has fewer than 2 scored rows, constant predictions, a
  constant target, or a non-finite prediction on a scored row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def _sorted_labels(labels) -> list[str]:
    """Labels in schema.era_sort_key order; all-digit labels ("0012") take a quicker key."""
    if all(label.isdigit() for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels, key=era_sort_key)


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
    run_starts = np.flatnonzero(np.r_[True, labels_in[1:] != labels_in[:-1]])
    run_labels = [str(x) for x in labels_in[run_starts].tolist()]
    # dict.fromkeys keeps the file's order, nearly always sorted already: the sort is then one pass.
    unique = _sorted_labels(dict.fromkeys(run_labels))
    code_of = {label: i for i, label in enumerate(unique)}
    dtype = np.int16 if len(unique) < np.iinfo(np.int16).max else np.int32
    run_codes = np.fromiter((code_of[label] for label in run_labels), dtype=dtype, count=len(run_labels))
    return EraGroups(unique, np.repeat(run_codes, np.diff(np.append(run_starts, n))))


# ---------------------------------------------------------------------------------------------
# Rows laid out era by era: per-era sums, means, and the one sort


class _EraLayout:
    """Rows regrouped era by era (a stable radix sort of the era codes; nothing moves when the
    rows already come era by era, as Numerai files do). Every era is then one contiguous run, so
    per-era sums are np.add.reduceat and per-era values expand to rows with np.repeat."""

    def __init__(self, groups: EraGroups):
        codes = groups.codes
        self.n_eras, self.n_rows = groups.n_eras, len(codes)
        in_order = self.n_rows < 2 or bool(np.all(codes[1:] >= codes[:-1]))
        self.order = None if in_order else np.argsort(codes, kind="stable")
        if in_order:  # each era's first row by binary search: no pass over the rows
            bounds = np.searchsorted(codes, np.arange(self.n_eras + 1, dtype=codes.dtype))
            self.starts, self.counts = bounds[:-1], np.diff(bounds)
        else:
            self.counts = np.bincount(codes, minlength=self.n_eras)
            self.starts = np.cumsum(self.counts) - self.counts
        self.present = self.counts > 0
        self._era_of_row = None

    def take(self, x: np.ndarray) -> np.ndarray:
        """x (in row order) in era-by-era order."""
        return x if self.order is None else x[self.order]

    def put_back(self, x: np.ndarray) -> np.ndarray:
        """x (in era-by-era order) in the original row order."""
        if self.order is None:
            return x
        out = np.empty_like(x)
        out[self.order] = x
        return out

    def rows_of(self, era: int) -> slice:
        return slice(int(self.starts[era]), int(self.starts[era] + self.counts[era]))

    def sums(self, x: np.ndarray) -> np.ndarray:
        """Per-era sums (0 for eras without rows); booleans are counted."""
        dtype = np.int64 if x.dtype.kind in "biu" else np.float64
        out = np.zeros(self.n_eras, dtype=dtype)
        if self.n_rows:
            out[self.present] = np.add.reduceat(x, self.starts[self.present], dtype=dtype)
        return out

    def means(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums(x) / self.counts

    def expand(self, per_era: np.ndarray) -> np.ndarray:
        """Per-era values, one per row."""
        return np.repeat(per_era, self.counts)

    def centre(self, x: np.ndarray) -> np.ndarray:
        out = self.expand(-self.means(x))
        out += x
        return out

    def constant(self, x: np.ndarray) -> np.ndarray:
        """Per era: True when all its values are equal (exact, unlike a variance test)."""
        first = x[np.minimum(self.starts, max(self.n_rows - 1, 0))] if self.n_rows else np.zeros(self.n_eras)
        return self.sums(x != self.expand(first)) == 0

    def era_of_row(self) -> np.ndarray:
        """Each row's era index (in this layout), built once."""
        if self._era_of_row is None:
            self._era_of_row = self.expand(np.arange(self.n_eras))
        return self._era_of_row

    def sort_within_eras(self, x: np.ndarray) -> np.ndarray:
        """Positions (in this layout) sorting finite x inside each era, eras kept in order.

        The eras become the rows of a 2-D grid (padded past each era's end with +inf) and numpy
        sorts every row in one call: each era's sort runs in cache, several times faster than one
        global sort. When era sizes are so uneven that padding would more than double the data,
        one global sort then a stable sort on the era codes."""
        x = x if x.dtype.kind == "f" else x.astype(np.float64)  # floats pad with +inf
        width = int(self.counts.max(initial=0))
        if self.n_eras * width > 2 * self.n_rows + 4096:
            order = np.argsort(x)
            return order[np.argsort(self.era_of_row()[order], kind="stable")]
        real = None if np.all(self.counts == width) else np.arange(width) < self.counts[:, None]
        if real is None:  # the grid is a free reshape
            grid = x.reshape(self.n_eras, width)
        else:
            grid = np.full((self.n_eras, width), np.inf, dtype=x.dtype)
            grid[real] = x  # row-major order of the real cells is the era-by-era order
        order = _argsort_rows(grid)
        order += self.starts[:, None]
        return order.ravel() if real is None else order[real]


def _argsort_rows(grid: np.ndarray) -> np.ndarray:
    """np.argsort(grid, axis=1). float32 rows (models' usual output) sort faster as one uint64 key
    per cell: the value's bits, mapped so that unsigned order is float order, above its column.
    A plain sort of those keys (SIMD, no index array carried along) then holds the argsort in the
    low 32 bits. Equal values may come out in either order, as with argsort's default."""
    if grid.dtype != np.float32:
        return np.argsort(grid, axis=1)
    bits = grid.view(np.int32)
    # Negative floats: flip every bit (larger magnitude sorts lower); others: set the sign bit.
    key = (bits ^ ((bits >> 31) | np.int32(-(2**31)))).view(np.uint32).astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.arange(grid.shape[1], dtype=np.uint64)
    key.sort(axis=1)
    key &= np.uint64(0xFFFFFFFF)
    return key.view(np.int64)


# ---------------------------------------------------------------------------------------------
# The steps: rank, gaussianise, power, Pearson (each for every era at once, in layout order)


def _average_ranks(x: np.ndarray, layout: _EraLayout) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of finite x within their eras, ties given their average rank (scipy's
    rankdata, pandas rank(method="average")), and the number of distinct values per era.

    Values with few distinct levels (Numerai's five target buckets) are counted, not sorted:
    rank = rows of lower levels in the era + (rows of this level + 1) / 2."""
    levels = _levels(x)
    if levels is not None:
        level, n_levels = levels
        cell = layout.era_of_row() * n_levels
        cell += level
        per_cell = np.bincount(cell, minlength=layout.n_eras * n_levels).reshape(layout.n_eras, n_levels)
        mean_rank = np.cumsum(per_cell, axis=1) - per_cell + (per_cell + 1) / 2.0
        return mean_rank.ravel()[cell], (per_cell > 0).sum(axis=1)
    order = layout.sort_within_eras(x)
    sorted_x = x[order]
    # In sorted order the ranks are the positions 1..n of each era, except in runs of tied values,
    # which share their mean position. Model outputs have few ties: only those rows are revisited.
    sorted_ranks = np.arange(1.0, layout.n_rows + 1)
    sorted_ranks -= layout.expand(layout.starts)
    tied = np.zeros(layout.n_rows, dtype=bool)  # row i ties with row i - 1 of its era
    np.equal(sorted_x[1:], sorted_x[:-1], out=tied[1:])
    tied[layout.starts[layout.present]] = False
    after_first = np.flatnonzero(tied)
    if after_first.size:
        new_run = np.r_[True, np.diff(after_first) != 1]
        first = after_first[new_run] - 1
        length = np.diff(np.r_[np.flatnonzero(new_run), after_first.size]) + 1
        start_of_run = np.repeat(np.cumsum(length) - length, length)
        rows = np.repeat(first, length) + np.arange(length.sum()) - start_of_run
        sorted_ranks[rows] = np.repeat(sorted_ranks[first] + (length - 1) / 2.0, length)
    ranks = np.empty(layout.n_rows)
    ranks[order] = sorted_ranks
    ties_per_era = np.bincount(layout.era_of_row()[after_first], minlength=layout.n_eras)
    return ranks, layout.counts - ties_per_era


def _levels(x: np.ndarray, max_levels: int = 16):
    """(level index per row, number of levels) when x takes few distinct values, else None."""
    levels = np.unique(x[:4096])
    if len(x) <= 4096 or len(levels) > max_levels:
        return None  # small inputs: sorting is as quick
    index = np.zeros(len(x), dtype=np.uint8)
    for level in levels[:-1]:  # a few comparison passes beat a binary search per row
        index += x > level
    matched = sum(np.count_nonzero(x == level) for level in levels)
    return (index, len(levels)) if matched == len(x) else None  # else a level outside the sample


def _percentile(ranks: np.ndarray, layout: _EraLayout) -> np.ndarray:
    """(rank - 0.5) / n: numerai_tools' tie_kept_rank, strictly inside (0, 1)."""
    return (ranks - 0.5) / layout.expand(layout.counts)


def _gaussian(ranks: np.ndarray, layout: _EraLayout) -> np.ndarray:
    """ndtri((rank - 0.5) / n): numerai_tools' gaussian(tie_kept_rank(x)), era by era.

    Average ranks are multiples of 1/2, so when eras share a few sizes the quantiles are looked
    up in one table per size (2n ndtri calls per size, not one per row; the same arithmetic)."""
    sizes, size_of_era = np.unique(layout.counts, return_inverse=True)
    if not layout.n_rows or 2 * sizes.sum() > layout.n_rows:
        return ndtri(_percentile(ranks, layout))
    half_steps = [np.arange(1.0, 2 * size) / 2 + 0.5 for size in sizes]  # every possible rank
    table = ndtri(np.concatenate([(r - 0.5) / size for r, size in zip(half_steps, sizes)]))
    offset = np.r_[0, np.cumsum([len(r) for r in half_steps])][:-1]
    index = (2 * ranks).astype(np.intp)  # rank 1 -> 2: the table's first entry is index 0
    index += layout.expand(offset[size_of_era] - 2)
    return table[index]


def _signed_power(x: np.ndarray) -> np.ndarray:
    """sign(x) * |x| ** 1.5, as x * sqrt(|x|) (one transcendental call instead of two)."""
    return x * np.sqrt(np.abs(x))


def _pearson(x: np.ndarray, y: np.ndarray, layout: _EraLayout) -> np.ndarray:
    """Pearson's r of x and y in each era."""
    xc, yc = layout.centre(x), layout.centre(y)
    sxy = layout.sums(xc * yc)
    sxx, syy = layout.sums(np.square(xc, out=xc)), layout.sums(np.square(yc, out=yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(sxx * syy)


def _powered_target(target: np.ndarray, layout: _EraLayout) -> np.ndarray:
    """numerai_corr's target: centred on the era's mean, then signed power 1.5."""
    return _signed_power(layout.centre(target))


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
# Ranks as a public step (submissions, neutralised predictions)


def rank_within_eras(values, eras) -> np.ndarray:
    """(rank - 0.5) / n within each era, ties averaged: values strictly inside (0, 1), the
    percentile rank numerai_tools' tie_kept_rank uses. NaN stays NaN and is not counted in n."""
    values = np.asarray(values, dtype=np.float64)
    groups = group_eras(eras)
    if len(values) != len(groups):
        raise ValueError(f"values ({len(values)}) and eras ({len(groups)}) differ in length")
    finite = np.isfinite(values)
    layout = _EraLayout(groups.subset(finite))
    finite_values = layout.take(values[finite])
    ranks = layout.put_back(_percentile(_average_ranks(finite_values, layout)[0], layout))
    out = np.full(len(values), np.nan)
    out[finite] = ranks
    return out


def gaussianize_within_eras(values, eras) -> np.ndarray:
    """Normal quantiles of the per-era percentile ranks (numerai_tools' gaussian(tie_kept_rank))."""
    return ndtri(rank_within_eras(values, eras))


# ---------------------------------------------------------------------------------------------
# Features: exposure and neutralisation, from one Gram matrix per era


class _EraFeatures:
    """One era's features, centred, as float64 (int8 features are cast here, one era at a time,
    never the whole matrix), with their Gram matrix x^T x: the one large product per era, shared
    by exposure (its diagonal) and neutralisation (the normal equations)."""

    def __init__(self, features, rows):
        x = np.asarray(features[rows], dtype=np.float64)
        x -= x.mean(axis=0)
        self.x = x
        self.gram = x.T @ x  # numpy runs x.T @ x as one symmetric BLAS product (syrk)
        # Features constant in the era (a group "missing" as all 2s) are left out of every fit.
        self.varying = np.diagonal(self.gram) > 0

    def exposure(self, y_c: np.ndarray, x_t_y: np.ndarray) -> np.ndarray:
        """Pearson correlation of centred y with every varying feature."""
        v = self.varying
        with np.errstate(invalid="ignore", divide="ignore"):  # constant y: NaN, reported unscorable
            return x_t_y[v] / np.sqrt(np.diagonal(self.gram)[v] * (y_c @ y_c))

    def fitted(self, y_c: np.ndarray, x_t_y: np.ndarray) -> np.ndarray:
        """The least-squares fit of centred y on the features (centred: the intercept is implicit).

        The normal equations are solved directly, and the answer accepted when the residual is
        orthogonal to the features. A singular or ill-conditioned era falls back to a
        pseudo-inverse through the Gram matrix's eigen-decomposition, dropping null directions
        as np.linalg.lstsq's rcond does in numerai_tools."""
        v = self.varying
        if not v.any():
            return np.zeros_like(y_c)
        gram, rhs = self.gram[np.ix_(v, v)], x_t_y[v]
        coef = np.zeros((len(v),) + rhs.shape[1:])  # zero for constant features: x is not copied
        try:
            coef[v] = np.linalg.solve(gram, rhs)
            fitted = self.x @ coef
            leftover = (self.x.T @ (y_c - fitted))[v]
            if np.abs(leftover).max(initial=0.0) <= 1e-8 * max(float(np.abs(rhs).max(initial=0.0)), 1e-300):
                return fitted
        except np.linalg.LinAlgError:
            pass
        eigval, eigvec = np.linalg.eigh(gram)
        keep = eigval > 1e-12 * max(float(eigval.max(initial=0.0)), 0.0)
        basis = eigvec[:, keep]
        along_basis = basis.T @ rhs
        along_basis /= eigval[keep][:, None] if along_basis.ndim == 2 else eigval[keep]
        coef[v] = basis @ along_basis
        return self.x @ coef


def _era_rows(groups: EraGroups):
    """(era index, row indices in original order) for every era that has rows."""
    layout = _EraLayout(groups)
    rows = np.arange(len(groups)) if layout.order is None else layout.order
    for era in np.flatnonzero(layout.present):
        yield int(era), rows[layout.rows_of(era)]


def exact_fit(rows: int, n_features: int) -> bool:
    """An era with no more rows than the fit's parameters (the features plus the constant) is fitted
    exactly: what neutralising leaves is rounding noise, not a signal. FNC leaves such eras
    unscored and neutralize leaves their predictions as they are."""
    return rows <= n_features + 1


def exact_fit_eras(eras, n_features: int) -> list[str]:
    """The labels of the eras exact_fit skips (for the notes that say so)."""
    groups = group_eras(eras)
    return [str(groups.labels[era]) for era, idx in _era_rows(groups) if exact_fit(len(idx), n_features)]


def neutralize(predictions, features, eras, proportion: float = 1.0) -> np.ndarray:
    """Remove `proportion` of the predictions' linear exposure to the features within each era
    (numerai_tools.scoring.neutralize applied era by era: least squares on the features plus a
    constant). predictions: (rows,) or (rows, k); features: (rows, n_features), any numeric dtype.
    Returns float64 with the predictions' shape. Rank it again (rank_within_eras) to submit it."""
    predictions = np.asarray(predictions, dtype=np.float64)
    one_d = predictions.ndim == 1
    y = predictions[:, None] if one_d else predictions
    if len(y) != len(features):
        raise ValueError(f"predictions ({len(y)}) and features ({len(features)}) differ in length")
    out = np.empty_like(y)
    for _, idx in _era_rows(group_eras(eras)):
        if exact_fit(len(idx), features.shape[1]):
            out[idx] = y[idx]  # see exact_fit: left as they are
            continue
        era = _EraFeatures(features, idx)
        y_mean = y[idx].mean(axis=0)
        y_c = y[idx] - y_mean
        # The constant column's share is the era mean: at proportion 1 the era is also centred.
        out[idx] = y[idx] - proportion * (era.fitted(y_c, era.x.T @ y_c) + y_mean)
    return out[:, 0] if one_d else out


@dataclass
class FeatureScores:
    """Per-era feature exposure of the predictions and their feature-neutral CORR."""

    max_exposure: EraScores  # per era: max over features of |Pearson(predictions, feature)|
    rms_exposure: EraScores  # per era: root mean square over features of that correlation
    fnc: EraScores  # per era: Numerai CORR of the predictions neutralised to all features
    exact_fit_eras: list[str] = field(default_factory=list)  # FNC unscored there: see exact_fit


def feature_scores(predictions, features, target, eras) -> FeatureScores:
    """Feature exposure and feature-neutral CORR, from one Gram matrix per era.

    FNC is numerai_tools.scoring.feature_neutral_corr era by era: gaussianised ranks neutralised
    to the features (least squares with a constant), then numerai_corr. Exposure follows Numerai's
    example scripts: per era, the Pearson correlation of the raw predictions with every feature
    (features constant in that era are left out), then the era's max |corr| and RMS over features;
    summaries average those over eras. Rows with NaN target are skipped, as everywhere."""
    predictions = np.asarray(predictions, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    groups = group_eras(eras)
    if not (len(predictions) == len(target) == len(groups) == len(features)):
        raise ValueError("predictions, features, target and eras differ in length")
    keep = np.isfinite(target)
    feature_rows = np.flatnonzero(keep)  # rows of `features`: never copy the whole matrix
    predictions, target, groups = predictions[keep], target[keep], groups.subset(keep)
    raw = _ScoredRows(predictions, target, groups)
    gauss = gaussianize_within_eras(predictions, groups)
    max_exp, rms_exp = np.full(groups.n_eras, np.nan), np.full(groups.n_eras, np.nan)
    neutral = np.full(len(predictions), np.nan)
    small: list[str] = []
    for era, idx in _era_rows(groups):
        if raw.bad_era[era]:
            continue  # a non-finite prediction: the era is reported unscorable below
        x = _EraFeatures(features, feature_rows[idx])
        if exact_fit(len(idx), features.shape[1]):
            neutral[idx] = np.nan  # FNC would be rounding noise: unscored (exposure is still measured)
            small.append(str(groups.labels[era]))
        y_c = np.stack([predictions[idx], gauss[idx]], axis=1)
        y_c -= y_c.mean(axis=0)
        x_t_y = x.x.T @ y_c  # both columns in one pass over the era's features
        corr = x.exposure(y_c[:, 0], x_t_y[:, 0])
        if corr.size:
            max_exp[era], rms_exp[era] = np.abs(corr).max(), np.sqrt(np.mean(corr * corr))
        if not exact_fit(len(idx), features.shape[1]):
            neutral[idx] = y_c[:, 1] - x.fitted(y_c[:, 1], x_t_y[:, 1])
    fnc = _ScoredRows(neutral, target, groups).numerai_corr()
    # Exposure of constant predictions is undefined: NaN via max_exp; unscorable eras follow CORR's.
    unscored = np.isnan(raw.numerai_corr().values)
    return FeatureScores(
        max_exposure=EraScores(list(groups.labels), fnc.rows.copy(), np.where(unscored, np.nan, max_exp)),
        rms_exposure=EraScores(list(groups.labels), fnc.rows.copy(), np.where(unscored, np.nan, rms_exp)),
        fnc=fnc,
        exact_fit_eras=small,
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
