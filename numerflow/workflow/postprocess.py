"""The post-processing steps a prediction takes in `numerflow predict` and in the exported pickle
alike: rank within eras, neutralise against the features (metrics/least_squares.py, the same
least squares validate's FNC takes), and tell float features (0, .25, ... 1) from integer ones (0..4).

`numerflow export` registers this module and metrics/least_squares.py with
cloudpickle.register_pickle_by_value, so the pickle carries these very functions and runs where
numerflow is not installed: nothing here may import numerflow beyond least_squares (numpy only).
tests/test_export.py checks that predict and the pickle give the same ranks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from numerflow.metrics.least_squares import EraFeatures, exact_fit, neutralised  # also stored by value


def era_labels(frame) -> np.ndarray:
    """Era labels as text; a frame without an era column is one era (live files have one label)."""
    if "era" in frame.columns:
        return frame["era"].astype(str).to_numpy()
    return np.zeros(len(frame), dtype=np.int8)


def rank_per_era(values, eras) -> np.ndarray:
    """(rank - 0.5) / n within each era, ties averaged: values strictly inside (0, 1)."""
    grouped = pd.Series(values).groupby(eras)
    return ((grouped.rank(method="average") - 0.5) / grouped.transform("count")).to_numpy()


def feature_unit(frame, features: list[str]) -> float:
    """4.0 for float features (older releases store 0, .25, .5, .75, 1), else 1.0 (v5's integers
    0..4): decided once, on the whole frame, so a small batch of low values is never rescaled."""
    floats = all(pd.api.types.is_float_dtype(frame[f]) for f in features)
    return 4.0 if floats and max(float(frame[f].max()) for f in features) <= 1.0 else 1.0


def feature_matrix(frame, features: list[str], unit: float) -> np.ndarray:
    """The features as numbers on v5's 0..4 scale (older releases' floats times `unit`), Numerai's
    "missing" value (NaN) as the middle bucket, 2."""
    x = frame[features].to_numpy(dtype=np.float64, na_value=np.nan) * unit
    return np.where(np.isnan(x), 2.0, x)


def rows_per_era(eras) -> list[np.ndarray]:
    """Each era's row indices (in row order), from one sort: no pass over every row per era."""
    codes = np.unique(eras, return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def neutralise_per_era(ranks: np.ndarray, matrix: np.ndarray, eras, proportion: float) -> np.ndarray:
    """Remove `proportion` of the ranks' linear exposure to the features (`matrix`: rows x features,
    any numeric dtype) within each era: least_squares.neutralised, the step validate's FNC takes too.
    Then rank again after rounding to float32, so that identical rows stay tied. An era with no more
    rows than the features plus the constant is fitted exactly: it is left as it is (exact_fit)."""
    neutral = np.empty(len(ranks))
    for rows in rows_per_era(eras):
        if exact_fit(len(rows), matrix.shape[1]):
            neutral[rows] = ranks[rows]
            continue
        neutral[rows] = neutralised(ranks[rows], EraFeatures(matrix, rows), proportion)
    return rank_per_era(neutral.astype(np.float32).astype(np.float64), eras)


def benchmark_on_index(live_benchmark_models, index, column: str | None) -> np.ndarray:
    """The benchmark model's predictions placed on the rows of `index` by id (NaN where it has
    none), from the frame Numerai's runner passes a hosted model (indexed by id, or with an id
    column): `column` when it has it, else its newest vNN_lgbm_ender20 (as predict chooses)."""
    import re

    if live_benchmark_models is None:
        raise ValueError("this model neutralises to the benchmark model and needs live_benchmark_models, "
                         "which Numerai's runner passes; none was given")
    frame = live_benchmark_models
    if "id" in frame.columns:
        frame = frame.set_index("id")
    if column is None or column not in frame.columns:
        numbered = [(int(m.group(1)), c) for c in frame.columns if (m := re.fullmatch(r"v(\d+)_lgbm_ender20", str(c)))]
        if not numbered:
            raise ValueError(f"live_benchmark_models has no benchmark column ({column or 'vNN_lgbm_ender20'}; "
                             f"it has: {', '.join(map(str, frame.columns)) or 'none'})")
        column = max(numbered)[1]
    values = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    if not values.index.equals(index):
        values.index = values.index.astype(str)
        values = values.reindex(pd.Index(index).astype(str))
    placed = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(placed).any():
        raise ValueError(f"live_benchmark_models ({column}) has no value for any of the {len(index)} live rows")
    return placed
