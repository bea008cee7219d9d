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
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(labels_in[1:], labels_in[:-1], out=boundary[1:])
    run_starts = np.flatnonzero(boundary)
    run_labels = [str(x) for x in labels_in[run_starts].tolist()]
    unique = _sorted_labels(set(run_labels))
    code_of = {label: i for i, label in enumerate(unique)}
    dtype = _code_dtype(len(unique))
    run_codes = np.fromiter((code_of[label] for label in run_labels), dtype=dtype, count=len(run_labels))
    run_lengths = np.diff(np.append(run_starts, n))
    return EraGroups(unique, np.repeat(run_codes, run_lengths))


# ---------------------------------------------------------------------------------------------
# Rows regrouped era by era


class _EraLayout:
    """Rows regrouped era by era (a stable radix sort of the int16 codes; nothing moves when the
    rows already come era by era, as Numerai files do). In this layout every era is one
    contiguous run, so per-era sums are np.add.reduceat calls and per-era values expand to rows
    with np.repeat."""

    def __init__(self, codes: np.ndarray, n_eras: int):
        self.n_eras = n_eras
        self.n_rows = len(codes)
        in_order = self.n_rows < 2 or bool(np.all(codes[1:] >= codes[:-1]))
        self.order = None if in_order else np.argsort(codes, kind="stable")
        self.counts = np.bincount(codes, minlength=n_eras)
        self.starts = np.cumsum(self.counts) - self.counts
        self._present = self.counts > 0
        self._present_starts = self.starts[self._present]
        self._row_codes = None

    def take(self, x: np.ndarray) -> np.ndarray:
        """x (in row order) in era-by-era order."""
        return x if self.order is None else x[self.order]

    def put_back(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x (in era-by-era order) in the original row order."""
        if self.order is None:
            return x if out is None else np.copyto(out, x) or out
        out = np.empty_like(x) if out is None else out
        out[self.order] = x
        return out

    def sums(self, x: np.ndarray) -> np.ndarray:
        """Per-era sums (0 for eras without rows); booleans are counted."""
        dtype = np.int64 if x.dtype.kind in "biu" else np.float64
        out = np.zeros(self.n_eras, dtype=dtype)
        if self.n_rows:
            out[self._present] = np.add.reduceat(x, self._present_starts, dtype=dtype)
        return out

    def means(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums(x) / self.counts

    def expand(self, per_era: np.ndarray) -> np.ndarray:
        """Per-era values, one per row."""
        return per_era[self.row_codes()]

    def centre(self, x: np.ndarray) -> np.ndarray:
        return x - self.expand(self.means(x))

    def row_codes(self) -> np.ndarray:
        """Each row's era index (in this layout), built once."""
        if self._row_codes is None:
            self._row_codes = np.repeat(np.arange(self.n_eras, dtype=np.intp), self.counts)
        return self._row_codes

    def slices(self):
        """(era, slice of its rows in this layout) for every era that has rows."""
        for era in np.flatnonzero(self._present):
            yield int(era), slice(int(self.starts[era]), int(self.starts[era] + self.counts[era]))

    def constant(self, values: np.ndarray) -> np.ndarray:
        """Per era: True when all its values are equal (exact, unlike a variance test)."""
        if not self.n_rows:
            return np.ones(self.n_eras, dtype=bool)
        first = values[np.minimum(self.starts, self.n_rows - 1)]
        return self.sums(values != self.expand(first)) == 0

    def era_grid(self, values: np.ndarray):
        """The eras as the rows of a 2-D array, each padded with +inf past its end, and the mask
        of real cells (None when all eras have the same size: the grid is then a free reshape).
        None when era sizes are too uneven for padding to be cheap."""
        width = int(self.counts.max(initial=0))
        if self.n_rows == 0 or self.n_eras * width > 2 * self.n_rows + 4096:
            return None
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        if np.all(self.counts == width):
            return values.reshape(self.n_eras, width), None
        grid = np.full((self.n_eras, width), np.inf, dtype=values.dtype)
        real = np.arange(width) < self.counts[:, None]
        grid[real] = values  # row-major order of the real cells is the era-by-era order
        return grid, real

    def sort_within_eras(self, values: np.ndarray) -> np.ndarray:
        """Positions (in this layout) sorting the values inside each era, eras kept in order.

        One argsort per era, done by numpy in a single call on the era grid (sorted along axis 1;
        padding is +inf and values are finite, so padding sorts last). Each era's sort runs in
        cache, several times faster than one global argsort of all rows. When era sizes are too
        uneven to pad: a global argsort, then a stable radix sort on the era codes (which keeps
        the value order inside each era)."""
        if self.n_rows == 0:
            return np.empty(0, dtype=np.intp)
        grid = self.era_grid(values)
        if grid is None:
            codes = self.row_codes()
            order = np.argsort(values)
            return order[np.argsort(codes[order], kind="stable")]
        return self._grid_order(np.argsort(grid[0], axis=1), grid[1])

    def _grid_order(self, within: np.ndarray, real) -> np.ndarray:
        within = within + self.starts[:, None]
        return within.ravel() if real is None else within[real]

    def grid_sort(self, values: np.ndarray) -> "_GridSort | None":
        """Sort `values` (finite) inside each era of the era grid; None when the grid does not
        apply (very uneven eras)."""
        grid = self.era_grid(values)
        if grid is None:
            return None
        cells, real = grid
        within = np.argsort(cells, axis=1)
        sorted_cells = np.take_along_axis(cells, within, axis=1)
        ties = sorted_cells[:, 1:] == sorted_cells[:, :-1]
        if real is not None:
            ties &= real[:, 1:]  # +inf padding equals itself: not a tie
        # A tie at grid cell (e, j) joins sorted cells j and j + 1 of era e; consecutive ones chain
        # into runs. Only the tied cells are touched later, so ties cost in proportion to their count.
        era, column = np.nonzero(ties)
        joined = era * cells.shape[1] + column
        breaks = np.flatnonzero(np.diff(joined) != 1)
        run_first = joined[np.r_[0, breaks + 1]] if joined.size else joined
        run_last = joined[np.r_[breaks, joined.size - 1]] + 1 if joined.size else joined
        tied_pairs = np.bincount(era, minlength=self.n_eras)
        return _GridSort(within, real, bool(joined.size), run_first, run_last, self.counts - tied_pairs)

    def to_grid(self, x: np.ndarray, real, fill=0) -> np.ndarray:
        """x (in this layout) on the era grid, padding cells `fill`."""
        if real is None:
            return x.reshape(self.n_eras, -1)
        out = np.full(real.shape, fill, dtype=x.dtype)
        out[real] = x
        return out

    def average_ranks(self, values: np.ndarray, sorted_grid: "_GridSort | None" = None):
        """1-based ranks of `values` (finite, in this layout) within their eras, ties given their
        average rank (scipy.stats.rankdata / pandas rank(method="average")), and the number of
        distinct values per era. `sorted_grid`: grid_sort(values), when already computed."""
        levels = _discrete_levels(values)
        if levels is not None:
            return self._counted_ranks(*levels)
        sorted_grid = sorted_grid or self.grid_sort(values)
        if sorted_grid is None:
            return self._ranks_from_order(values, self.sort_within_eras(values))
        within, real = sorted_grid.within, sorted_grid.real
        # Ranks are the sorted positions (tie runs: their mean), written back era by era inside
        # the grid: every gather and scatter stays in cache.
        ranks = np.empty(within.shape, dtype=np.float64)
        np.put_along_axis(ranks, within, _sorted_ranks(sorted_grid, within.shape), axis=1)
        return (ranks.ravel() if real is None else ranks[real]), sorted_grid.distinct.copy()

    def _ranks_from_order(self, values: np.ndarray, order: np.ndarray):
        n = self.n_rows
        sorted_values = values[order]
        new_run = np.empty(n, dtype=bool)
        new_run[:1] = True
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=new_run[1:])
        new_run[self._present_starts] = True  # a tie never spans two eras
        # A tie run over sorted positions [s, s + len) gets the mean position s + (len - 1) / 2.
        run_starts = np.flatnonzero(new_run)
        run_lengths = np.diff(np.append(run_starts, n))
        position = np.repeat(run_starts + (run_lengths - 1) / 2.0, run_lengths)
        position -= self.expand(self.starts) - 1.0
        ranks = np.empty(n, dtype=np.float64)
        ranks[order] = position
        return ranks, self.sums(new_run)

    def _counted_ranks(self, n_levels: int, level_index: np.ndarray):
        """Average ranks for values with few levels, without sorting: count each (era, level)
        pair; a level's rank is the count of smaller values in its era plus the mean position
        among its equals."""
        cell = self.row_codes() * n_levels + level_index
        per_cell = np.bincount(cell, minlength=self.n_eras * n_levels).reshape(self.n_eras, n_levels)
        below = np.cumsum(per_cell, axis=1) - per_cell
        rank_of_cell = (below + (per_cell + 1) / 2.0).ravel()
        return rank_of_cell[cell], (per_cell > 0).sum(axis=1)

    def percentile_ranks(self, values: np.ndarray):
        """((rank - 0.5) / n within each era, distinct values per era)."""
        ranks, distinct = self.average_ranks(values)
        return (ranks - 0.5) / self.expand(self.counts), distinct


@dataclass
class _GridSort:
    """Per-era argsort on the era grid: `within[e]` lists era e's grid columns in value order
    (padding last); `real` masks real cells (None: equal era sizes); `ties`: any era has ties."""

    within: np.ndarray
    real: np.ndarray | None
    ties: bool
    run_first: np.ndarray  # flat grid index of each tie run's first sorted cell
    run_last: np.ndarray  # ... and last (inclusive)
    distinct: np.ndarray  # distinct values per era

    def tied_cells(self, width: int):
        """(flat grid index of every tied cell, its run's mean 1-based position in the era)."""
        lengths = self.run_last - self.run_first + 1
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cells = np.repeat(self.run_first, lengths) + offsets
        mean_position = (self.run_first % width + self.run_last % width) / 2.0 + 1.0
        return cells, np.repeat(mean_position, lengths)

    def tie_correction(self, n_eras: int, width: int) -> np.ndarray:
        """Per era sum over tie runs of (len^3 - len) / 12: what ties remove from the ranks'
        sum of squares n(n^2 - 1) / 12."""
        lengths = (self.run_last - self.run_first + 1).astype(np.float64)
        return np.bincount(self.run_first // width, weights=(lengths ** 3 - lengths) / 12.0, minlength=n_eras)


def _sorted_ranks(sorted_grid: _GridSort, shape) -> np.ndarray:
    """1-based ranks in sorted order on the grid: positions, tie runs replaced by their mean."""
    positions = np.broadcast_to(np.arange(1.0, shape[1] + 1.0), shape)
    if not sorted_grid.ties:
        return positions
    positions = positions.copy()
    cells, mean_position = sorted_grid.tied_cells(shape[1])
    positions.reshape(-1)[cells] = mean_position
    return positions


def _gaussian_rank_table(counts: np.ndarray, width: int, n_rows: int):
    """Signed-power-1.5 normal quantiles of (position - 0.5) / n for positions 1..n, one row per
    era size on the era grid (padding 0), and which row each era uses. They depend only on the
    era size: computed once per distinct size when that is cheaper (equal-sized eras: one row of
    ndtri calls instead of one per data row)."""
    sizes, era_size = np.unique(counts, return_inverse=True)
    if len(sizes) * width > n_rows:
        sizes, era_size = counts, np.arange(len(counts))
    column = np.arange(width)
    real = column < sizes[:, None]
    quantile = np.where(real, (column + 0.5) / np.maximum(sizes, 1)[:, None], 0.5)
    return np.where(real, _signed_power(ndtri(quantile)), 0.0), era_size


def _discrete_levels(values: np.ndarray, max_levels: int = 16):
    """If `values` take few distinct values (Numerai targets: 0, .25, .5, .75, 1), return
    (number of levels, level index per row), else None: such ranks are counted, not sorted."""
    if len(values) == 0:
        return None
    levels = np.unique(values[:4096])
    if len(levels) > max_levels:
        return None
    # A few passes of comparisons beat a binary search per row; int8 keeps the passes light.
    index = np.zeros(len(values), dtype=np.int8)
    matched = 0
    for level in levels:
        matched += np.count_nonzero(values == level)
        if level != levels[-1]:
            np.add(index, values > level, out=index, casting="unsafe")
    if matched != len(values):
        return None
    return len(levels), index


def rank_within_eras(values, eras) -> np.ndarray:
    """(rank - 0.5) / n within each era, ties averaged: values strictly inside (0, 1), the
    percentile rank numerai_tools' tie_kept_rank uses. NaN stays NaN and is not counted in n."""
    values = np.asarray(values)
    groups = group_eras(eras)
    if len(values) != len(groups):
        raise ValueError(f"values ({len(values)}) and eras ({len(groups)}) differ in length")
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    if not all_finite:
        values, groups = values[finite], groups.subset(finite)
    layout = _EraLayout(groups.codes, groups.n_eras)
    ranks = layout.put_back(layout.percentile_ranks(layout.take(values))[0])
    if all_finite:
        return ranks
    out = np.full(len(finite), np.nan)
    out[finite] = ranks
    return out


def gaussianize_within_eras(values, eras) -> np.ndarray:
    """Normal quantiles of the per-era percentile ranks (numerai_tools' gaussian(tie_kept_rank))."""
    return ndtri(rank_within_eras(values, eras))


def _signed_power(x: np.ndarray) -> np.ndarray:
    """sign(x) * |x| ** 1.5, as x * sqrt(|x|) (one transcendental call instead of two)."""
    return x * np.sqrt(np.abs(x))


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


class _ScoredRows:
    """The rows of one (predictions, target, eras) triple that can be scored, regrouped era by
    era, with per era: row counts and whether a non-finite prediction disqualifies it.
    `aligned` arrays (e.g. the meta model) follow the same row selection and order."""

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
        self.labels, self.n_eras = groups.labels, groups.n_eras
        self.layout = layout = _EraLayout(groups.codes, groups.n_eras)
        self.counts = layout.counts
        self.target = layout.take(target)
        self.aligned = [layout.take(np.asarray(a)) for a in aligned]
        predictions = layout.take(predictions)
        bad = ~np.isfinite(predictions)
        self.bad_era = layout.sums(bad.astype(np.int64)) > 0
        # Placeholders keep the sort valid; their eras are reported as NaN.
        self.predictions = np.where(bad, 0, predictions) if self.bad_era.any() else predictions
        self._pred_ranks = None
        self._grid_sort = None
        self._grid_sorted = False

    def sorted_grid(self) -> _GridSort | None:
        """The predictions sorted within eras on the era grid (computed once, shared by every
        score), or None when the grid does not apply."""
        if not self._grid_sorted:
            self._grid_sort = self.layout.grid_sort(self.predictions)
            self._grid_sorted = True
        return self._grid_sort

    def sorted_scoring(self) -> _GridSort | None:
        """The grid sort, when scores are best computed in prediction order: there, each era's
        prediction ranks are 1..n (tie runs averaged), so a score needs only the target gathered
        into that order. None for very uneven eras and for predictions with few distinct values
        (counted ranks are cheaper there)."""
        if _discrete_levels(self.predictions) is not None:
            return None
        return self.sorted_grid()

    def gathered(self, x: np.ndarray, sorted_grid: _GridSort) -> np.ndarray:
        """x (per row, this layout) on the era grid in prediction order; padding 0."""
        return np.take_along_axis(self.layout.to_grid(x, sorted_grid.real), sorted_grid.within, axis=1)

    def scores(self, values: np.ndarray, *unscorable_flags: np.ndarray) -> EraScores:
        unscorable = (self.counts < MIN_ROWS) | self.bad_era
        for flag in unscorable_flags:
            unscorable = unscorable | flag
        return EraScores(list(self.labels), self.counts.copy(), np.where(unscorable, np.nan, values))

    def cosine(self, xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
        """Per era sum(x y) / sqrt(sum(x x) sum(y y)): Pearson's r for per-era centred x, y."""
        sums = self.layout.sums
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums(xc * yc) / np.sqrt(sums(xc * xc) * sums(yc * yc))

    def pearson(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.cosine(self.layout.centre(x), self.layout.centre(y))

    def prediction_ranks(self):
        if self._pred_ranks is None:
            levels = _discrete_levels(self.predictions)
            self._pred_ranks = self.layout.average_ranks(
                self.predictions, None if levels is not None else self.sorted_grid())
        return self._pred_ranks

    def gaussian_predictions(self) -> np.ndarray:
        ranks, _ = self.prediction_ranks()
        return ndtri((ranks - 0.5) / self.layout.expand(self.counts))

    def _discrete_target_in_order(self, sorted_grid: _GridSort, half: np.ndarray):
        """For a target with few levels (Numerai's five buckets): its centred ranks in prediction
        order from a per-(era, level) table, gathering one byte per row instead of a float; and
        per era the sum of squares and the number of distinct values. None for other targets."""
        levels = _discrete_levels(self.target)
        if levels is None:
            return None
        n_levels, level_index = levels
        # Padding cells get an extra level whose centred rank is 0, so they add nothing.
        level_grid = self.layout.to_grid(level_index, sorted_grid.real, fill=n_levels)
        per_cell = np.stack([np.count_nonzero(level_grid == level, axis=1) for level in range(n_levels)], axis=1)
        below = np.cumsum(per_cell, axis=1) - per_cell
        centred = np.zeros((self.n_eras, n_levels + 1))
        centred[:, :n_levels] = below + (per_cell + 1) / 2.0 - half[:, None]
        t = np.take_along_axis(centred, np.take_along_axis(level_grid, sorted_grid.within, axis=1), axis=1)
        squares = (per_cell * centred[:, :n_levels] ** 2).sum(axis=1)
        return t, squares, (per_cell > 0).sum(axis=1)

    def spearman(self) -> EraScores:
        # Average ranks of n rows always have mean (n + 1) / 2: centre without a pass.
        half = (self.counts + 1) / 2.0
        sorted_grid = self.sorted_scoring()
        discrete = self._discrete_target_in_order(sorted_grid, half) if sorted_grid is not None else None
        if discrete is not None:
            t, t_squares, target_distinct = discrete
        else:
            target_ranks, target_distinct = self.layout.average_ranks(self.target)
            target_centred = target_ranks - self.layout.expand(half)
        if sorted_grid is None:
            pred_ranks, pred_distinct = self.prediction_ranks()
            values = self.cosine(pred_ranks - self.layout.expand(half), target_centred)
            return self.scores(values, pred_distinct < 2, target_distinct < 2)
        if discrete is None:
            t = self.gathered(target_centred, sorted_grid)
            t_squares = (t * t).sum(axis=1)
        width = t.shape[1]
        if sorted_grid.ties:
            sxy = np.einsum("ij,ij->i", t, _sorted_ranks(sorted_grid, t.shape))
        else:
            sxy = t @ np.arange(1.0, width + 1.0)
        sxy -= half * t.sum(axis=1)  # the ranks' centre; t sums to ~0 already
        # Sum of squares of centred ranks 1..n is n(n^2 - 1)/12, less (len^3 - len)/12 per tie run.
        sxx = self.counts * (self.counts ** 2 - 1.0) / 12.0 - sorted_grid.tie_correction(self.n_eras, width)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = sxy / np.sqrt(sxx * t_squares)
        return self.scores(values, sorted_grid.distinct < 2, target_distinct < 2)

    def numerai_corr(self) -> EraScores:
        powered_target = self.layout.centre(_signed_power(self.layout.centre(self.target)))
        sorted_grid = self.sorted_scoring()
        if sorted_grid is None:
            _, pred_distinct = self.prediction_ranks()
            gauss = _signed_power(self.gaussian_predictions())
            values = self.cosine(self.layout.centre(gauss), powered_target)
            return self.scores(values, pred_distinct < 2, self.layout.constant(self.target))
        # In sorted order the gaussianised predictions depend only on the era size, except at
        # tie runs (recomputed from their mean rank).
        t = self.gathered(powered_target, sorted_grid)
        width = t.shape[1]
        table, era_size = _gaussian_rank_table(self.counts, width, self.layout.n_rows)
        n = self.counts.astype(np.float64)
        if not sorted_grid.ties and len(table) == 1:
            g = table[0]
            g_sum, g_squares = np.full(self.n_eras, g.sum()), np.full(self.n_eras, g @ g)
            sxy = t @ g
        else:
            g = table[era_size]
            if sorted_grid.ties:
                cells, mean_position = sorted_grid.tied_cells(width)
                era_of_cell = cells // width
                g.reshape(-1)[cells] = _signed_power(ndtri((mean_position - 0.5) / n[era_of_cell]))
            g_sum, g_squares = g.sum(axis=1), np.einsum("ij,ij->i", g, g)
            sxy = np.einsum("ij,ij->i", t, g)
        with np.errstate(invalid="ignore", divide="ignore"):
            g_mean = g_sum / n
            sxy -= g_mean * t.sum(axis=1)
            sxx = g_squares - n * g_mean ** 2
            values = sxy / np.sqrt(sxx * (t * t).sum(axis=1))
        return self.scores(values, sorted_grid.distinct < 2, self.layout.constant(self.target))


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
    """Plain Pearson correlation of x and y per era (rows with NaN y skipped)."""
    rows = _ScoredRows(x, y, eras)
    x_values = rows.predictions.astype(np.float64)
    return rows.scores(rows.pearson(x_values, rows.target), rows.layout.constant(x_values),
                       rows.layout.constant(rows.target))


def per_era_mmc(predictions, meta_model, target, eras) -> EraScores:
    """Meta-model contribution per era, as numerai_tools.scoring.correlation_contribution on that
    era's rows: predictions and meta model tie-kept ranked and gaussianised, predictions
    orthogonalised to the meta model, dotted with the centred target (times 4 when it lies in
    [0, 1]) and divided by the row count. Rows without a meta model value are skipped."""
    meta_model = np.asarray(meta_model, dtype=np.float64)
    target = np.where(np.isfinite(meta_model), np.asarray(target, dtype=np.float64), np.nan)
    rows = _ScoredRows(predictions, target, eras, aligned=[meta_model])
    layout, sums = rows.layout, rows.layout.sums
    _, pred_distinct = rows.prediction_ranks()
    p = rows.gaussian_predictions()
    meta_pct, meta_distinct = layout.percentile_ranks(rows.aligned[0])
    m = ndtri(meta_pct)
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
    return rows.scores(values, pred_distinct < 2, meta_distinct < 2, layout.constant(rows.target))


# ---------------------------------------------------------------------------------------------
# Features: exposure and neutralisation (one matrix product per era)


def _project_out(features_c: np.ndarray, y_c: np.ndarray) -> np.ndarray:
    """The least-squares fit of y_c on features_c (both centred, so the intercept is implicit).

    Features constant in the era (a group "missing" as all 2s) are dropped first; then the normal
    equations are solved directly (rows x features^2 / 2 for the Gram matrix, a small solve), and
    accepted when the residual is orthogonal to the features. A singular or ill-conditioned era
    falls back to a pseudo-inverse through the Gram matrix's eigen-decomposition, dropping null
    directions as np.linalg.lstsq's rcond does in numerai_tools."""
    varying = np.einsum("ij,ij->j", features_c, features_c) > 0
    x = features_c if varying.all() else features_c[:, varying]
    if x.shape[1] == 0:
        return np.zeros_like(y_c)
    gram = x.T @ x
    rhs = x.T @ y_c
    try:
        fitted = x @ np.linalg.solve(gram, rhs)
        leftover = x.T @ (y_c - fitted)
        if np.abs(leftover).max(initial=0.0) <= 1e-8 * max(float(np.abs(rhs).max(initial=0.0)), 1e-300):
            return fitted
    except np.linalg.LinAlgError:
        pass
    eigval, eigvec = np.linalg.eigh(gram)
    keep = eigval > 1e-12 * max(float(eigval.max(initial=0.0)), 0.0)
    basis = eigvec[:, keep]
    along_basis = basis.T @ rhs
    along_basis /= eigval[keep][:, None] if along_basis.ndim == 2 else eigval[keep]
    return x @ (basis @ along_basis)


def _era_rows(groups: EraGroups):
    """(era index, row indices in original order) for every era that has rows."""
    layout = _EraLayout(groups.codes, groups.n_eras)
    rows = np.arange(len(groups)) if layout.order is None else layout.order
    for era, part in layout.slices():
        yield era, rows[part]


def _centred_features(features, idx) -> np.ndarray:
    x = np.asarray(features[idx], dtype=np.float64)  # int8 is cast here, one era at a time
    x -= x.mean(axis=0)
    return x


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
        x = _centred_features(features, idx)
        y_era = y[idx]
        y_mean = y_era.mean(axis=0)
        fitted = _project_out(x, y_era - y_mean)
        # The constant column's share is the era mean: at proportion 1 the era is also centred.
        out[idx] = y_era - proportion * (fitted + y_mean)
    return out[:, 0] if one_d else out


@dataclass
class FeatureScores:
    """Per-era feature exposure of the predictions and their feature-neutral CORR."""

    max_exposure: EraScores  # per era: max over features of |Pearson(predictions, feature)|
    rms_exposure: EraScores  # per era: root mean square over features of that correlation
    fnc: EraScores  # per era: Numerai CORR of the predictions neutralised to all features


def feature_scores(predictions, features, target, eras) -> FeatureScores:
    """Feature exposure and feature-neutral CORR.

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
    feature_rows = np.arange(len(target))  # rows of `features`: never copy the whole matrix
    if not keep.all():
        predictions, target, groups = predictions[keep], target[keep], groups.subset(keep)
        feature_rows = feature_rows[keep]
    max_exp = np.full(groups.n_eras, np.nan)
    rms_exp = np.full(groups.n_eras, np.nan)
    neutral = np.full(len(predictions), np.nan)
    gauss = gaussianize_within_eras(predictions, groups)
    for era, idx in _era_rows(groups):
        p = predictions[idx]
        if not np.isfinite(p).all():
            continue  # the era is reported unscorable below
        x = _centred_features(features, feature_rows[idx])
        p = p - p.mean()
        scale = np.sqrt((x * x).sum(axis=0) * (p @ p))
        varying = scale > 0
        if varying.any():
            corr = (x[:, varying].T @ p) / scale[varying]
            max_exp[era] = np.abs(corr).max()
            rms_exp[era] = np.sqrt(np.mean(corr * corr))
        g = gauss[idx] - gauss[idx].mean()
        neutral[idx] = g - _project_out(x, g)
    fnc = _ScoredRows(neutral, target, groups).numerai_corr()
    # Exposure of constant predictions is undefined: NaN via max_exp; unscorable eras follow fnc's.
    unscored = np.isnan(_ScoredRows(predictions, target, groups).numerai_corr().values)
    counts = fnc.rows
    return FeatureScores(
        max_exposure=EraScores(list(groups.labels), counts.copy(), np.where(unscored, np.nan, max_exp)),
        rms_exposure=EraScores(list(groups.labels), counts.copy(), np.where(unscored, np.nan, rms_exp)),
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
