"""`--neutralize-benchmark P` for the stages that score models (predict, validate, round through
predict, ensemble): where the benchmark model's predictions of the rows come from, the proportion
that applies, and the one call of metrics.benchmark.neutralize_to_benchmark they all make (the
exported pickle carries that same function by value).

Where the benchmark comes from: a live file, `live_benchmark_models.parquet` beside it; a
prepared file, its `benchmark` column (prepare placed it by id); any other file,
`validation_benchmark_models.parquet` in its version folder. The column is the version's main
benchmark (side_files.default_benchmark: v53_lgbm_ender20 for v5.3, else the newest vNN_lgbm_ender20).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.errors import ConfigError, DataError
from numerflow.metrics.benchmark import neutralize_to_benchmark
from numerflow.scoring.ids import RowIds
from numerflow.scoring.side_files import default_benchmark, prepared_manifest_beside, read_side_column, version_folder

PREPARED_COLUMN = "benchmark"  # prepare's column (stages/prepare_benchmark.COLUMN; a stage may not import it)


def proportion(settings) -> float:
    """The proportion that applies: the option when given, else a fitted --ensemble's stored one
    (ensemble.json's `neutralize_benchmark`), else 0. Outside 0..1 is a ConfigError."""
    from numerflow.ensembles import stored_neutralize_benchmark

    value = getattr(settings, "neutralize_benchmark", None)
    if value is None:
        ensemble = getattr(settings, "ensemble", None)
        value = stored_neutralize_benchmark(ensemble) if ensemble is not None else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"--neutralize-benchmark: proportion must be within [0, 1], got {value}")
    return float(value)


def benchmark_file_of(data: Path, columns: list[str], data_dir: Path) -> Path:
    """The benchmark models file for the rows of `data` (a live or a validation-like file)."""
    if data.name == schema.LIVE_FILE:
        return data.parent / schema.LIVE_BENCHMARK_FILE
    folder = version_folder(data, columns, prepared_manifest_beside(data), Path(data_dir))
    if folder is None:
        raise DataError(f"--neutralize-benchmark: no version folder known for {data}, so no "
                        f"{schema.VALIDATION_BENCHMARK_FILE} to read")
    return folder / schema.VALIDATION_BENCHMARK_FILE


def benchmark_on_rows(data: Path, ids, columns: list[str], data_dir: Path) -> tuple[np.ndarray, str]:
    """(the benchmark's values on the rows `ids` of `data`, NaN where it has none; where they came
    from). No file, no benchmark column, or no row covered is a DataError."""
    if PREPARED_COLUMN in columns and data.name != schema.LIVE_FILE:
        values = read_side_column(data, PREPARED_COLUMN, RowIds(ids, data))
        source = f"{data.name}'s '{PREPARED_COLUMN}' column"
    else:
        path = benchmark_file_of(data, columns, data_dir)
        if not path.is_file():
            raise DataError(f"--neutralize-benchmark: {path.name} not found in {path.parent}")
        available = [c for c in schema.parquet_columns(path) if c not in (schema.ID, schema.ERA, schema.DATA_TYPE)
                     and not c.startswith("__")]
        column = default_benchmark(path.parent.name, available)
        if column is None:
            raise DataError(f"--neutralize-benchmark: {path} has no benchmark column "
                            f"(vNN_lgbm_ender20; it has: {', '.join(available) or 'none'})")
        values = read_side_column(path, column, RowIds(ids, data))
        source = f"{path.name} ({column})"
    if not np.isfinite(values).any():
        raise DataError(f"--neutralize-benchmark: {source} has no value for any of the {len(ids):,} rows of {data}")
    return values, source


def neutralise_ranks(ranks: np.ndarray, benchmark: np.ndarray, eras, amount: float,
                     source: str) -> tuple[np.ndarray, list[str]]:
    """The ranks with `amount` of their per-era projection on the benchmark removed, ranked again
    (metrics.benchmark.neutralize_to_benchmark, the exported pickle's own function), and a note
    when rows had no benchmark value."""
    neutral = neutralize_to_benchmark(ranks, benchmark, eras, amount)
    missing = int((~np.isfinite(benchmark) & np.isfinite(ranks)).sum())
    return neutral, [f"neutralised {amount:g} to the benchmark from {source}; {missing:,} of {len(ranks):,} rows "
                     f"had no benchmark value (they keep their gaussianised prediction)"]
