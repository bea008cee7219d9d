"""Equal-frequency bucketing of continuous features within each era (`prepare --bin-features 5`).

Pre-2019 Numerai releases store continuous float features (`feature1..feature50`); numerflow's
model and files take integer buckets 0..4. The opt-in rule here turns each feature into BINS
equal-frequency buckets within each era: a value's bucket is floor(p * BINS), p its mid-rank
percentile (average rank - 0.5) / rows in the era, so ties share a bucket and 5 distinct values
in an era give 0, 1, 2, 3, 4. Live data is one era, so the same rule applies to it unchanged.

Only 5 buckets are accepted: the model centres features assuming 0..4 (model.FEATURE_CENTRE = 2,
FEATURE_SCALE = 0.5), and another count would need its own centre and scale everywhere.

prepare records {"method", "bins"} under the manifest's BINNING key, train copies it into the
checkpoint, and predict and the exported pickle bin live features the same way before scoring.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from numerflow.errors import CheckpointError, ConfigError, DataError

BINNING = "binning"  # the key in the prepared manifest and in checkpoints
METHOD = "equal_frequency_per_era"
SUPPORTED_BINS = 5


def record(bins: int | None) -> dict | None:
    """The manifest/checkpoint record of `--bin-features bins` (None: no binning)."""
    if bins is None:
        return None
    if bins != SUPPORTED_BINS:
        raise ConfigError(f"--bin-features: only {SUPPORTED_BINS} buckets are supported (the model's 0..4 "
                          f"feature scale), got {bins}")
    return {"method": METHOD, "bins": bins}


def bins_of(entry, where) -> int | None:
    """The bucket count of a manifest's or checkpoint's binning record (None: features as they are)."""
    if entry is None:
        return None
    if not (isinstance(entry, dict) and entry.get("method") == METHOD and entry.get("bins") == SUPPORTED_BINS):
        raise DataError(f"{where}: unknown feature binning {entry!r}")
    return SUPPORTED_BINS


def make_binner():
    """bin_within_eras(values, eras, bins) -> int8 buckets: the rule above for a (rows, features)
    float array. Built inside a function so that cloudpickle stores it by value: the exported
    pickle runs where numerflow is not installed. NaN (Numerai's "missing") is the middle bucket."""

    def bin_within_eras(values, eras, bins):
        import numpy as np

        values = np.asarray(values, dtype=np.float64)
        out = np.empty(values.shape, dtype=np.int8)
        labels, inverse = np.unique(np.asarray(eras).astype(str), return_inverse=True)
        for era in range(len(labels)):
            rows = np.flatnonzero(inverse == era)
            block = values[rows]
            buckets = np.full(block.shape, bins // 2, dtype=np.int8)
            for j in range(block.shape[1]):
                column = block[:, j]
                known = ~np.isnan(column)
                ordered = np.sort(column[known])
                if not ordered.size:
                    continue
                below = np.searchsorted(ordered, column[known], side="left")
                upto = np.searchsorted(ordered, column[known], side="right")
                percentile = (below + upto) / (2.0 * ordered.size)  # (average rank - 0.5) / rows
                buckets[known, j] = np.minimum(np.floor(percentile * bins), bins - 1).astype(np.int8)
            out[rows] = buckets
        return out

    return bin_within_eras


bin_within_eras = make_binner()


def is_continuous(path, features: list[str]) -> bool:
    """Whether `features` of a Parquet file are continuous floats (pre-2019 releases) rather than
    buckets: float columns whose first row group holds values other than 0, .25, .5, .75, 1.
    Integer columns (every release since) are answered from the schema alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file_schema = pq.read_schema(path)
    floats = [f for f in features if f in file_schema.names and pa.types.is_floating(file_schema.field(f).type)]
    if not floats:
        return False
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        if not parquet.metadata.num_row_groups:
            return False
        table = parquet.read_row_group(0, columns=floats[:64])
    for column in table.columns:
        scaled = column.to_numpy(zero_copy_only=False).astype(np.float64) * 4
        scaled = scaled[~np.isnan(scaled)]
        if not np.array_equal(scaled, np.rint(scaled)):
            return True
    return False


def read_binned_matrix(path, features: list[str], columns: list[str], bins: int, where=None):
    """schema.read_matrix for continuous features: the (rows, features) int8 buckets within each
    era (the whole file is one era without an era column) and a DataFrame of `columns` by id.
    `where=(column, value)` keeps only those rows, before binning."""
    import pyarrow.parquet as pq

    from numerflow import schema

    names = schema.parquet_columns(path)
    schema.require_columns(path, list(features) + list(columns), names)
    extra = list(dict.fromkeys(c for c in columns if c not in features))
    era_column = [schema.ERA] if schema.ERA in names and schema.ERA not in extra else []
    filter_column = [where[0]] if where and where[0] not in extra + era_column else []
    wanted = list(features) + extra + era_column + filter_column + ([schema.ID] if schema.ID in names else [])
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))
    except Exception as exc:  # pyarrow raises several kinds for truncated/corrupt files
        raise schema.unreadable(path, exc) from None
    frame = table.replace_schema_metadata(None).to_pandas()
    if where:
        frame = frame[frame[where[0]].astype(str) == where[1]]
    values = _float_features(frame, features, path)
    eras = frame[schema.ERA].astype(str).to_numpy() if schema.ERA in frame.columns else np.zeros(len(frame), np.int8)
    matrix = bin_within_eras(values, eras, bins)
    rest = frame[extra + ([schema.ID] if schema.ID in frame.columns else [])]
    return matrix, rest.set_index(schema.ID) if schema.ID in rest.columns else rest


def _float_features(frame, features: list[str], path) -> np.ndarray:
    import pandas as pd

    for name in features:
        if not pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name]):
            raise DataError(f"{path}: column {name}: feature values of type {frame[name].dtype}, expected numbers")
    return frame[features].to_numpy(dtype=np.float64, na_value=np.nan)


def binned_copy(source: Path, dest: Path, features: list[str], bins: int, era: str = "era") -> Path:
    """A copy of the Parquet file `source` at `dest` with `features` as int8 buckets within each
    era (every other column as it is): what prepare reads instead of the source. Old releases are
    small (tens of features, a few hundred thousand rows), so the file is read whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from numerflow import schema

    try:
        table = pq.read_table(source)
    except Exception as exc:
        raise schema.unreadable(source, exc) from None
    eras = table.column(era).cast(pa.string()).to_numpy(zero_copy_only=False)
    values = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DataError(f"{source}: column {name}: feature values of type {column.type}, expected numbers")
        values[:, j] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if np.isnan(values).any():
        raise DataError(f"{source}: missing (NaN) feature values")
    buckets = bin_within_eras(values, eras, bins)
    for j, name in enumerate(features):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(buckets[:, j], pa.int8()))
    pq.write_table(table, dest)
    return dest


def binned_sources(sources, features: list[str], bins: int | None, folder: Path):
    """prepare's hook: its sources unchanged without binning, else binned copies in `folder`
    (same data_type filtering, same columns)."""
    if bins is None:
        return sources
    copies, done = [], {}
    for i, src in enumerate(sources):
        if src.path not in done:
            done[src.path] = binned_copy(src.path, Path(folder) / f"{i}-{src.path.name}", features, bins)
        copies.append(dataclasses.replace(src, path=done[src.path]))
    return copies


def checkpoints_bins(checkpoints: list[dict], paths) -> int | None:
    """The binning every checkpoint of an ensemble shares (None: none bins); mixing is an error,
    as one feature matrix feeds them all."""
    found = {bins_of(c.get(BINNING), path) for c, path in zip(checkpoints, paths)}
    if len(found) > 1:
        raise CheckpointError(f"{', '.join(map(str, paths))}: some checkpoints were trained on binned features "
                              f"(prepare --bin-features) and some not; ensemble them separately")
    return found.pop() if found else None
