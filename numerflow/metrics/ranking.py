"""The per-era ranking engine every score is built on: eras as small integer codes (EraGroups),
rows laid out era by era (one sort, per-era sums by np.add.reduceat), and the mathematical steps
applied to every era at once: rank (ties averaged) -> gaussianise -> signed power 1.5 -> Pearson.
`_average_ranks` is the one place that needs care for speed (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numerflow.metrics.normal import ndtri  # scipy.special.ndtri in numpy: no 0.15 s scipy import
from numerflow.schema import arrow_strings, era_sort_key



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
    text = _arrow_text(eras)
    if text is not None:
        return _group_arrow_text(text)
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


def _arrow_text(eras):
    """Era labels already held as Arrow strings without nulls (a pyarrow array, or a pandas column
    of Arrow-backed text, as numerflow's Parquet reads give them) as one Arrow array, else None:
    numpy or Python labels take group_eras' own path."""
    import pyarrow as pa

    values = getattr(eras, "array", eras)
    if not isinstance(values, (pa.Array, pa.ChunkedArray)) and not hasattr(values, "__arrow_array__"):
        return None
    text = arrow_strings(values)
    return None if text is None or text.null_count else text.combine_chunks()


def _group_arrow_text(text) -> EraGroups:
    """group_eras of Arrow text: Arrow's dictionary encoding numbers the labels in C (no Python
    string per row: 0.02 s for 2M rows where converting them to Python strings took 0.09 s), then
    the few distinct labels are sorted and the codes renumbered in that order."""
    encoded = text.dictionary_encode()
    seen = [str(label) for label in encoded.dictionary.to_pylist()]
    unique = _sorted_labels(seen)
    rank_of = {label: i for i, label in enumerate(unique)}
    dtype = np.int16 if len(unique) < np.iinfo(np.int16).max else np.int32
    renumber = np.array([rank_of[label] for label in seen], dtype=dtype)
    return EraGroups(unique, renumber[encoded.indices.to_numpy(zero_copy_only=False)])


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
