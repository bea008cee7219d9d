"""prepare's benchmark column: Numerai's benchmark model predictions (train_/validation_benchmark_models.parquet
in the version folder, one column chosen by --benchmark, else the version's main one) placed on the
prepared rows by id as the float32 column `benchmark`, NaN where the file has no row (Numerai's
training benchmark starts late). The levers aimed at contribution (BMC) read it from there.

Each benchmark file's ids are hashed once (scoring.ids.RowIds); every written row group looks its
ids up in that table, so memory holds one benchmark file's ids and values, not the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from numerflow import schema
from numerflow.errors import DataError
from numerflow.scoring.ids import RowIds
from numerflow.scoring.side_files import default_benchmark, read_id_column

COLUMN = "benchmark"  # the prepared files' column
FILES = {"train": schema.TRAIN_BENCHMARK_FILE, "validation": schema.VALIDATION_BENCHMARK_FILE}


@dataclass
class Coverage:
    """The benchmark values of one prepared file's rows, looked up a row group at a time, and
    how many rows and eras got one."""

    path: Path
    ids: RowIds
    values: np.ndarray  # float32, one per row of the benchmark file
    rows: int = 0
    eras: set = field(default_factory=set)

    def on_rows(self, ids: pa.ChunkedArray, eras: pa.ChunkedArray) -> pa.Array:
        position = self.ids.positions(ids)
        found = position >= 0
        values = np.full(len(position), np.nan, dtype=np.float32)
        values[found] = self.values[position[found]]
        known = np.isfinite(values)
        self.rows += int(known.sum())
        if known.any():
            self.eras.update(np.asarray(eras.to_numpy(zero_copy_only=False))[known].tolist())
        return pa.array(values, pa.float32())


@dataclass
class Plan:
    """The chosen column and the files to read it from (a split without a file gets NaN)."""

    column: str
    paths: dict[str, Path]

    def coverage(self, split: str) -> Coverage | None:
        return _read(self.paths[split], self.column) if split in self.paths else None


def plan(version_dir: Path, requested: str | None) -> tuple[Plan | None, str]:
    """The benchmark column to carry, or None with the line that says why not. With --benchmark
    (`requested`) a missing file or column is a DataError; by default, a version without
    benchmark files, or without its main benchmark column, is prepared as before."""
    paths = {split: version_dir / name for split, name in FILES.items()}
    present = {split: path for split, path in paths.items() if path.is_file()}
    if requested is not None:
        missing = [path.name for path in paths.values() if not path.is_file()]
        if missing:
            raise DataError(f"--benchmark {requested}: {' and '.join(missing)} not found in {version_dir}")
    if not present:
        return None, f"no benchmark files in {version_dir}: prepared without benchmark predictions"
    available = {split: _benchmark_columns(path) for split, path in present.items()}
    first = next(iter(available.values()))
    column = requested if requested is not None else default_benchmark(version_dir.name, first)
    for split, path in present.items():
        if column in available[split]:
            continue
        if requested is not None:
            raise DataError(f"{path}: no benchmark column '{requested}' "
                            f"(available: {', '.join(available[split]) or 'none'})")
        return None, (f"{path.name} has no main benchmark column: prepared without benchmark predictions; "
                      f"pick one with --benchmark (available: {', '.join(available[split]) or 'none'})")
    return Plan(column, present), ""


def record(chosen: Plan, coverage: dict[str, Coverage | None], rows: dict[str, int], eras: dict[str, int]) -> dict:
    """manifest.json's `benchmark`: the column, its source files, and per split the rows and
    eras that have a value, against the prepared ones. A DataError when no row has one."""
    entry = {"column": COLUMN, "source_column": chosen.column,
             "sources": {split: path.name for split, path in chosen.paths.items()}}
    for split in ("train", "validation"):
        found = coverage.get(split)
        entry[split] = {"rows": found.rows if found else 0, "eras": len(found.eras) if found else 0,
                        "rows_prepared": rows[split], "eras_prepared": eras[split]}
    if not any(entry[split]["rows"] for split in ("train", "validation")):
        names = " and ".join(path.name for path in chosen.paths.values())
        raise DataError(f"{names}: '{chosen.column}' covers none of the prepared rows (no id in common)")
    return entry


def describe(entry: dict) -> str:
    """The line prepare prints: which column, and how much of each file has it."""
    parts = [f"{split} {entry[split]['rows']:,} of {entry[split]['rows_prepared']:,} rows "
             f"({entry[split]['eras']} of {entry[split]['eras_prepared']} eras)" for split in ("train", "validation")]
    return f"  benchmark   '{entry['source_column']}' as column '{COLUMN}': {', '.join(parts)}"


def _benchmark_columns(path: Path) -> list[str]:
    return [c for c in schema.parquet_columns(path) if c not in (schema.ID, schema.ERA, schema.DATA_TYPE)
            and not c.startswith("__")]


def _read(path: Path, column: str) -> Coverage:
    """The file's ids (hashed once) and the column's values as float32."""
    ids, values = read_id_column(path, column)
    return Coverage(path, RowIds(ids, path), values.astype(np.float32))
