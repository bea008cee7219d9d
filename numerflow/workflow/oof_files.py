"""A cv run's out-of-fold predictions: the file names cv writes (oof.parquet with its manifest
report.json, published as one set) and the one reader compare and ensemble share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.errors import DataError

OOF_FILE = "oof.parquet"
REPORT_FILE = "report.json"  # the manifest of the (oof.parquet, report.json) set


def read_oof(path: Path):
    """Out-of-fold predictions (a cv run's oof.parquet, or a `sweep --cv` trial's) as a float Series
    indexed by id (text): the one reader that compare and ensemble share. Missing columns, an
    unreadable file or repeated ids are a DataError naming the file."""
    import pandas as pd

    schema.require_columns(path, [schema.ID, schema.PREDICTION], schema.parquet_columns(path))
    try:
        frame = pd.read_parquet(path, columns=[schema.ID, schema.PREDICTION])
    except (OSError, ValueError) as exc:
        raise schema.unreadable(path, exc) from None
    predictions = pd.Series(frame[schema.PREDICTION].to_numpy(np.float64), index=frame[schema.ID].astype(str))
    repeated = int(predictions.index.duplicated().sum())
    if repeated:
        raise DataError(f"{path}: {repeated} duplicate id(s)")
    return predictions
