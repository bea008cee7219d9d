"""The Numerai data layout: column names, dtypes, feature sets, era labels, and reading/validating
Parquet files. Every other module asks this one for column names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from numerflow.errors import DataError

ID = "id"
ERA = "era"
DATA_TYPE = "data_type"
FEATURE_PREFIX = "feature_"
TARGET = "target"
TARGET_PREFIX = "target_"
PREDICTION = "prediction"
META_MODEL = "numerai_meta_model"

TRAIN_FILE = "train.parquet"
VALIDATION_FILE = "validation.parquet"
LIVE_FILE = "live.parquet"
FEATURES_FILE = "features.json"
META_MODEL_FILE = "meta_model.parquet"
VALIDATION_EXAMPLE_FILE = "validation_example_preds.parquet"
LIVE_EXAMPLE_FILE = "live_example_preds.parquet"


def is_feature(name: str) -> bool:
    return name.startswith(FEATURE_PREFIX)


def is_target(name: str) -> bool:
    return name == TARGET or name.startswith(TARGET_PREFIX)


def era_sort_key(label: str) -> tuple[int, str]:
    """Sort era labels numerically: "era12" < "era100", "0012" < "0100"; non-numeric labels last."""
    digits = re.findall(r"\d+", str(label))
    return (int(digits[-1]), str(label)) if digits else (1 << 62, str(label))


def sorted_eras(labels) -> list[str]:
    return sorted({str(x) for x in labels}, key=era_sort_key)


def parquet_columns(path: str | Path) -> list[str]:
    """Column names of a Parquet file (index columns included), or a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several kinds for truncated/corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None


def read_feature_sets(path: str | Path) -> dict:
    """features.json as a dict with `feature_sets` and `targets`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise DataError(f"{path}: not valid JSON") from None
    if "feature_sets" not in meta:
        raise DataError(f"{path}: no 'feature_sets' key")
    return meta


def feature_set(meta: dict, name: str, source: str | Path = "features.json") -> list[str]:
    sets = meta["feature_sets"]
    if name not in sets:
        raise DataError(f"{source}: unknown feature set '{name}' (available: {', '.join(sorted(sets))})")
    return list(sets[name])


def features_to_int8(values: np.ndarray, source: str = "data") -> np.ndarray:
    """Numerai features as int8 0..4. Older releases store floats 0, .25, .5, .75, 1: map them
    exactly; anything else (other floats, values outside 0..4) is a DataError."""
    if values.dtype.kind in "iu":
        if values.size and (values.min() < 0 or values.max() > 4):
            raise DataError(f"{source}: feature values outside 0..4")
        return values.astype(np.int8, copy=False)
    scaled = values * 4
    as_int = np.rint(scaled)
    if np.isnan(values).any():
        raise DataError(f"{source}: missing (NaN) feature values")
    if not np.array_equal(as_int, scaled) or as_int.min(initial=0) < 0 or as_int.max(initial=0) > 4:
        raise DataError(f"{source}: float feature values that are not 0, .25, .5, .75 or 1")
    return as_int.astype(np.int8)
