"""The post-processing steps of an exported model, in numpy and pandas only: rank within eras,
neutralise against the features, and tell float features (0, .25, ... 1) from integer ones (0..4).

`numerflow export` registers this module with cloudpickle.register_pickle_by_value, so the
pickle carries these very functions: it runs where numerflow is not installed. Nothing here may
import numerflow. They follow `numerflow predict` step for step (metrics.rank_within_eras and
metrics.neutralize, the engines predict runs on millions of rows): the same (rank - 0.5) / n with
ties averaged, the same exact-fit rule, the same float32 rounding before the last ranking, and
tests/test_export.py checks that both give the same ranks."""

from __future__ import annotations

import numpy as np
import pandas as pd


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


def neutralise_per_era(ranks: np.ndarray, frame, features: list[str], eras, proportion: float,
                       unit: float) -> np.ndarray:
    """Remove `proportion` of the ranks' linear exposure to the features within each era (least
    squares on the centred features plus a constant), then rank again after rounding to float32
    as predict does, so that identical rows stay tied. An era with no more rows than the features
    plus the constant is fitted exactly: it is left as it is (metrics.exact_fit)."""
    neutral = np.empty(len(ranks))
    for era in np.unique(eras):
        rows = np.flatnonzero(eras == era)
        if len(rows) <= len(features) + 1:
            neutral[rows] = ranks[rows]
            continue
        x = frame.iloc[rows][features].to_numpy(dtype=np.float64) * unit
        x = np.where(np.isnan(x), 2.0, x)  # Numerai's "missing" value is the middle bucket
        x = np.hstack([x - x.mean(axis=0), np.ones((len(rows), 1))])
        beta = np.linalg.lstsq(x, ranks[rows], rcond=1e-6)[0]
        neutral[rows] = ranks[rows] - proportion * (x @ beta)
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
