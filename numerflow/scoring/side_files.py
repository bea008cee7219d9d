"""The files validate reads beside the data, from its version folder: the meta model
(meta_model.parquet, for MMC), the example model's predictions (for corr_with_example) and the
benchmark models (validation_benchmark_models.parquet, for BMC). Each is an id-indexed Parquet
file whose one column is placed on the data's rows through RowIds; a missing or unmatched file
is left out with a note rather than failing the run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.errors import DataError
from numerflow.scoring.ids import RowIds


def version_folder(path: Path, columns: list[str], manifest: dict, data_dir: Path) -> Path | None:
    """Where a validation file's side files live: for a prepared file (its folder's manifest, no
    data_type column), the version folder the manifest names; for a raw Numerai file, its own folder."""
    if not manifest or schema.DATA_TYPE in columns:
        return path.parent
    if manifest.get("version_dir"):
        return Path(manifest["version_dir"])
    return Path(data_dir) / manifest["version"] if manifest.get("version") else None


def prepared_manifest_beside(path: Path) -> dict:
    """The prepare manifest in a data file's folder, or {} for a file prepare did not write."""
    folder = path.parent
    return schema.read_prepared_manifest(folder) if (folder / schema.PREPARED_MANIFEST_FILE).is_file() else {}


def meta_model_on_rows(data_path: Path, ids, data_dir: Path = Path("data")) -> np.ndarray | None:
    """The meta model placed on the rows `ids` of a validation file, read as validate reads it
    (None when the file's version folder has none): sweeps score MMC objectives with it."""
    source_dir = version_folder(data_path, schema.parquet_columns(data_path), prepared_manifest_beside(data_path),
                                data_dir)
    if source_dir is None:
        return None
    return read_side_file(source_dir / schema.META_MODEL_FILE, schema.META_MODEL, RowIds(ids, data_path), data_path, [])


def read_id_column(path: Path, column: str):
    """(ids as an Arrow ChunkedArray, float64 values) of one numeric column of an id-indexed
    Parquet file; only `id` and that column are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema.require_columns(path, [schema.ID, column], schema.parquet_columns(path))
    try:
        table = pq.read_table(path, columns=[schema.ID, column])
        values = table.column(column).cast(pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{path}: column '{column}' does not hold numbers") from None
    except (pa.ArrowException, OSError) as exc:
        raise schema.unreadable(path, exc) from None
    return table.column(schema.ID), values


def read_side_column(path: Path, column: str, row_ids: RowIds) -> np.ndarray:
    """One numeric column of an id-indexed Parquet file (meta model, example predictions,
    benchmark models), placed on the data's rows."""
    ids, values = read_id_column(path, column)
    return row_ids.place(ids, values, path, strict=False)


def read_side_file(path: Path, column: str, row_ids: RowIds, data_path: Path, notes: list[str]):
    """meta_model / example predictions aligned to the data's rows, or None (with a note)."""
    if not path.is_file():
        notes.append(f"{path.name} not found in {path.parent}: {'MMC' if column == schema.META_MODEL else 'corr_with_example'} left out")
        return None
    aligned = read_side_column(path, column, row_ids)
    if not np.isfinite(aligned).any():
        notes.append(f"{path.name} shares no ids with {data_path.name}: left out")
        return None
    return aligned


def read_benchmark(source_dir: Path, requested: str | None, row_ids: RowIds, data_path: Path,
                   notes: list[str], file: str = schema.VALIDATION_BENCHMARK_FILE) -> tuple[str, np.ndarray] | None:
    """(benchmark column, its values on the data's rows) from validation_benchmark_models.parquet
    in the data's version folder, or None with a note. The column is `requested` (--benchmark),
    else the version's main benchmark (v53_lgbm_ender20 for v5.3). Rows the benchmark file has no
    value for are NaN, with a note: BMC and corr_with_benchmark are measured without them."""
    path = source_dir / file  # train_benchmark_models.parquet for training rows
    if not path.is_file():
        if requested is not None:
            raise DataError(f"--benchmark {requested}: {path.name} not found in {path.parent}")
        notes.append(f"{path.name} not found in {path.parent}: BMC left out")
        return None
    available = [c for c in schema.parquet_columns(path) if c not in (schema.ID, schema.ERA, schema.DATA_TYPE)
                 and not c.startswith("__")]
    column = requested if requested is not None else default_benchmark(source_dir.name, available)
    if column not in available:
        if requested is not None:
            raise DataError(f"{path}: no benchmark column '{requested}' (available: {', '.join(available) or 'none'})")
        notes.append(f"{path.name} has no main benchmark column ({schema.main_benchmark(source_dir.name) or 'vNN_lgbm_ender20'}"
                     f"): BMC left out; pick one with --benchmark (available: {', '.join(available) or 'none'})")
        return None
    values = read_side_column(path, column, row_ids)
    covered = int(np.isfinite(values).sum())
    if covered == 0:
        notes.append(f"{path.name} shares no ids with {data_path.name}: BMC left out")
        return None
    if covered < len(values):
        notes.append(f"{path.name} covers {covered:,} of the {len(values):,} scored rows: BMC and "
                     f"corr_with_benchmark are measured on those rows")
    return column, values


def default_benchmark(version: str, available: list[str]) -> str | None:
    """The version's main benchmark, else the newest vNN_lgbm_ender20 the file has."""
    main = schema.main_benchmark(version)
    if main in available:
        return main
    numbered = [(int(m.group(1)), c) for c in available if (m := re.fullmatch(r"v(\d+)_lgbm_ender20", c))]
    return max(numbered)[1] if numbered else None
