"""prepare stage: pick a feature set and targets from a Numerai version folder, keep features int8,
drop unusable rows and eras, and write prepared/train.parquet, prepared/validation.parquet and
manifest.json.

Memory is bounded by one row group, not by the data set: a first pass reads only `era` and
`data_type` to choose eras (downsampling, embargo); a second pass goes row group by row group,
decodes a block of feature columns at a time (sized by bytes, as schema.read_matrix does), keeps
the chosen rows, checks them, and hands the row group's output to a ParquetWriter. The file is
read without Arrow's pre-buffering, which keeps every compressed byte read until it closes.
Features are never turned into a float matrix.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from numerflow import binning, schema
from numerflow.config import PrepareConfig
from numerflow.errors import DataError
from numerflow.files import FileSet, publish_set
from numerflow.parquet_writer import BackgroundWriter, WriterThread, pool_keeping_pages
from numerflow.stages import prepare_benchmark

MANIFEST_FILE = schema.PREPARED_MANIFEST_FILE
OUT_TRAIN, OUT_VALIDATION = schema.PREPARED_FILES
read_manifest = schema.read_prepared_manifest  # tests and bench/quality.py read manifests through the stage
ALL_AUX = "all"  # the default: every other target column
NO_AUX = "none"  # the main target only
# Rows per output row group: the kept rows of small input row groups are gathered up to this size,
# larger ones are split. One row group is encoded while the next is read: at 3,555 int8 features
# two of 65,536 rows take 0.5 GB.
WRITE_ROWS = 65536


@dataclass
class PrepareResult:
    out_dir: Path
    train: Path
    validation: Path
    manifest: Path
    version: str
    feature_set: str
    features: list[str]
    targets: list[str]
    rows_train: int
    rows_validation: int
    eras_train: list[str] = field(default_factory=list)
    eras_validation: list[str] = field(default_factory=list)
    target_choice: str = ""  # how the main target was chosen, when there was a choice (see _main_target)
    benchmark: dict | None = None  # manifest.json's `benchmark` entry, None when none was carried
    benchmark_note: str = ""  # why none was carried

    def __str__(self) -> str:
        aux = len(self.targets) - 1
        width = max(len(str(p)) for p in (self.train, self.validation))
        choice = f" ({self.target_choice})" if self.target_choice else ""
        lines = [f"Prepared {self.version}: feature set '{self.feature_set}' ({len(self.features)} int8 features), "
                 f"target '{self.targets[0]}'{choice}" + (f" + {aux} auxiliary" if aux else ""),
                 f"  train       {str(self.train):<{width}}  {self.rows_train:,} rows, {_era_span(self.eras_train)}",
                 f"  validation  {str(self.validation):<{width}}  {self.rows_validation:,} rows, "
                 f"{_era_span(self.eras_validation)}",
                 f"  manifest    {self.manifest}"]
        if self.benchmark or self.benchmark_note:
            lines.insert(3, prepare_benchmark.describe(self.benchmark) if self.benchmark else f"  {self.benchmark_note}")
        return "\n".join(lines)


def _era_span(eras: list[str]) -> str:
    if not eras:
        return "0 eras"
    return f"{len(eras)} eras ({eras[0]}..{eras[-1]})"


@dataclass
class _Source:
    """One input Parquet file and the rows prepare takes from it."""
    path: Path
    data_type: str  # rows are kept only where data_type equals this (when the column exists)
    columns: list[str]  # every column of the file

    @property
    def has_data_type(self) -> bool:
        return schema.DATA_TYPE in self.columns


def prepare(config: PrepareConfig) -> PrepareResult:
    version_dir = _version_dir(config)
    train_src, valid_src, features_path = _sources(version_dir)
    meta = schema.read_feature_sets(features_path)
    features = schema.feature_set(meta, config.feature_set, source=features_path)
    for src in (train_src, valid_src):
        _require_columns(src, [schema.ID, schema.ERA] + features)
    targets, target_choice = _targets(config, train_src, valid_src)
    benchmark, benchmark_note = prepare_benchmark.plan(version_dir, config.benchmark)  # DataError before any work
    bin_record = binning.record(config.bin_features)  # ConfigError for an unsupported count, before any work

    train_eras_all = _eras_in(train_src)
    if not train_eras_all:
        raise DataError(f"{train_src.path}: no rows with data_type '{train_src.data_type}'")
    train_eras = train_eras_all[::config.downsample]
    last_train = _era_number(train_eras_all[-1], train_src.path)
    valid_eras = [e for e in _eras_in(valid_src) if _era_number(e, valid_src.path) > last_train + config.embargo]
    if not valid_eras:
        raise DataError(f"{valid_src.path}: no validation eras left after era {train_eras_all[-1]} "
                        f"+ embargo of {config.embargo} eras")

    out_dir = Path(config.out_dir) if config.out_dir else Path(config.data_dir) / schema.PREPARED_DIR
    out_train, out_valid, out_manifest = out_dir / OUT_TRAIN, out_dir / OUT_VALIDATION, out_dir / MANIFEST_FILE
    out_schema = _output_schema(features, targets, benchmark is not None)
    manifest = {
        "version": version_dir.name,
        "version_dir": str(version_dir.resolve()),
        "sources": {p.name: p.stat().st_size for p in (train_src.path, valid_src.path, features_path)},
        "feature_set": config.feature_set,
        "features": features,
        "target": targets[0],
        "targets": targets,
        "last_train_era": train_eras_all[-1],
        "embargo": config.embargo,
        "downsample": config.downsample,
        "benchmark": None,  # the benchmark column's record (prepare_benchmark.record), when one is prepared
    }
    if bin_record:
        manifest[binning.BINNING] = bin_record  # predict/export bin live features the same way
    # One set: both files are written under temporary names, renamed only once both are complete,
    # and the manifest (naming each file's size and checksum) is written last; readers check it.
    with (publish_set(out_dir, MANIFEST_FILE, manifest) as outputs, tempfile.TemporaryDirectory() as scratch,
          pool_keeping_pages(), WriterThread() as thread):  # exits first: both files closed before publishing
        train_src, valid_src = binning.binned_sources((train_src, valid_src), features, config.bin_features, scratch)
        coverage = {split: benchmark.coverage(split) for split in ("train", "validation")} if benchmark else {}
        rows_train, kept_train = _copy_rows(train_src, (outputs, OUT_TRAIN), out_schema, features, targets,
                                            train_eras, thread, coverage.get("train"))
        rows_valid, kept_valid = _copy_rows(valid_src, (outputs, OUT_VALIDATION), out_schema, features,
                                            targets, valid_eras, thread, coverage.get("validation"))
        manifest.update(eras_train=kept_train, eras_validation=kept_valid, rows_train=rows_train,
                        rows_validation=rows_valid)
        if benchmark:  # a DataError (nothing published) when it covers no prepared row
            manifest["benchmark"] = prepare_benchmark.record(
                benchmark, coverage, {"train": rows_train, "validation": rows_valid},
                {"train": len(kept_train), "validation": len(kept_valid)})
    return PrepareResult(out_dir=out_dir, train=out_train, validation=out_valid, manifest=out_manifest,
                         version=version_dir.name, feature_set=config.feature_set, features=features,
                         targets=targets, rows_train=rows_train, rows_validation=rows_valid,
                         eras_train=kept_train, eras_validation=kept_valid, target_choice=target_choice,
                         benchmark=manifest.get("benchmark"), benchmark_note=benchmark_note)


# --- inputs -------------------------------------------------------------------------------------

def _version_dir(config: PrepareConfig) -> Path:
    if config.dataset is not None:
        path = Path(config.dataset)
        if not path.is_dir():
            raise DataError(f"{path}: no such dataset folder")
        return path
    return schema.find_version_dir(config.data_dir)


def _sources(version_dir: Path) -> tuple[_Source, _Source, Path]:
    train = _Source(version_dir / schema.TRAIN_FILE, "train", [])
    valid = _Source(version_dir / schema.VALIDATION_FILE, "validation", [])
    schema.check_version_files(version_dir, [schema.TRAIN_FILE, schema.VALIDATION_FILE, schema.FEATURES_FILE])
    for src in (train, valid):
        src.columns = schema.parquet_columns(src.path)  # DataError if missing or unreadable
    return train, valid, version_dir / schema.FEATURES_FILE


def _require_columns(src: _Source, needed: list[str]) -> None:
    schema.require_columns(src.path, needed, src.columns)


def _targets(config: PrepareConfig, train: _Source, valid: _Source) -> tuple[list[str], str]:
    """Main target first, then the auxiliary ones (file order for `all`), each in both files; and
    how the main target was chosen, for the user."""
    available = [c for c in train.columns if schema.is_target(c)]
    main, how = _main_target(config.target, available, train)
    requested = [a.lower() for a in config.aux_targets]
    if requested == [ALL_AUX]:
        aux = [c for c in available if c != main]
    elif requested in ([NO_AUX], []):
        aux = []
    else:
        aux = [a for a in dict.fromkeys(config.aux_targets) if a != main]
        unknown = [a for a in aux if a not in available]
        if unknown:
            raise DataError(f"{train.path}: target(s) {', '.join(unknown)} not found "
                            f"(available: {', '.join(available)})")
    targets = [main] + aux
    _require_columns(valid, targets)
    return targets, how


def _main_target(requested: str, available: list[str], train: _Source) -> tuple[str, str]:
    """The main target column and a note saying why. `target` is an alias of target_ender_20 in
    v5.2 and v5.3; a release without the alias still has target_ender_20, which is then kept."""
    if requested == schema.TARGET and requested not in available and schema.MAIN_TARGET in available:
        return schema.MAIN_TARGET, f"'{schema.TARGET}' is absent: {schema.MAIN_TARGET} is the main target"
    if requested not in available:
        raise DataError(f"{train.path}: target '{requested}' not found "
                        f"(available: {', '.join(available) or 'none'})")
    if requested == schema.TARGET and schema.MAIN_TARGET in available and _same_values(train, requested,
                                                                                        schema.MAIN_TARGET):
        return requested, f"'{schema.TARGET}' is the alias of {schema.MAIN_TARGET}: the same values"
    return requested, ""


def _same_values(src: _Source, first: str, second: str) -> bool:
    """Whether two columns of `src` hold the same values on every row (NaN or null equal to NaN or
    null), read a row group at a time, compared in Arrow."""
    with _open(src) as parquet:
        for group in range(parquet.metadata.num_row_groups):
            table = _read(parquet, group, [first, second], src)
            a, b = (table.column(i).cast(pa.float64()) for i in (0, 1))
            both_missing = pc.and_(pc.is_null(a, nan_is_null=True), pc.is_null(b, nan_is_null=True))
            # null where only one value is missing, so not all true
            if pc.all(pc.or_kleene(both_missing, pc.equal(a, b)), skip_nulls=False).as_py() is not True:
                return False
    return True


def _era_number(label: str, path: Path) -> int:
    number, _ = schema.era_sort_key(label)
    if number == 1 << 62:
        raise DataError(f"{path}: era label '{label}' holds no number (cannot order eras)")
    return number


def _row_mask(batch: pa.RecordBatch, src: _Source) -> pa.Array | None:
    """Rows of this file's own data_type (all rows when the file has no data_type column)."""
    if not src.has_data_type:
        return None
    return pc.fill_null(pc.equal(batch.column(schema.DATA_TYPE).cast(pa.string()), src.data_type), False)


def _eras_in(src: _Source) -> list[str]:
    """Sorted era labels of the rows prepare takes from `src` (first pass: era and data_type only)."""
    columns = [schema.ERA] + ([schema.DATA_TYPE] if src.has_data_type else [])
    eras: set[str] = set()
    for batch in _batches(src, columns, 1 << 20):
        era = batch.column(schema.ERA).cast(pa.string())
        mask = _row_mask(batch, src)
        if mask is not None:
            era = era.filter(mask)
        eras.update(e for e in pc.unique(era).to_pylist() if e is not None)
    return schema.sorted_eras(eras)


def _batches(src: _Source, columns: list[str], batch_rows: int):
    """Record batches of `columns`; a file that breaks mid-read is a DataError naming it."""
    try:
        parquet = pq.ParquetFile(src.path, pre_buffer=False)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True):
            yield batch
    except (pa.ArrowException, OSError) as exc:
        raise schema.unreadable(src.path, exc) from None


# --- output -------------------------------------------------------------------------------------

def _output_schema(features: list[str], targets: list[str], benchmark: bool = False) -> pa.Schema:
    """id (as the pandas index), era string, int8 features in feature-set order, float32 targets,
    then (with `benchmark`) the float32 benchmark predictions."""
    targets = targets + ([prepare_benchmark.COLUMN] if benchmark else [])  # stored as a target is: float32
    # Features are declared required (never null, checked on reading): Parquet then stores no
    # definition levels for them, a third of the CPU time of writing them.
    fields = ([pa.field(schema.ERA, pa.string())] + [pa.field(f, pa.int8(), nullable=False) for f in features]
              + [pa.field(t, pa.float32()) for t in targets] + [pa.field(schema.ID, pa.string())])
    # pandas metadata written by hand (pandas is not imported here) so that pandas.read_parquet
    # restores `id` as the index, as it does for Numerai's own files.
    kinds = ([(schema.ERA, "unicode", "object")] + [(f, "int8", "int8") for f in features]
             + [(t, "float32", "float32") for t in targets] + [(schema.ID, "unicode", "object")])
    columns = [{"name": n, "field_name": n, "pandas_type": pandas_type, "numpy_type": numpy_type, "metadata": None}
               for n, pandas_type, numpy_type in kinds]
    pandas_meta = {"index_columns": [schema.ID],
                   "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                       "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": columns, "creator": {"library": "numerflow"}, "pandas_version": "2.0.0"}
    return pa.schema(fields, metadata={b"pandas": json.dumps(pandas_meta).encode()})


def _copy_rows(src: _Source, dest: tuple[FileSet, str], out_schema: pa.Schema, features: list[str],
               targets: list[str], eras: list[str], thread: WriterThread,
               benchmark: prepare_benchmark.Coverage | None = None) -> tuple[int, list[str]]:
    """Copy the rows of `eras` whose main target is known from `src` into the member `dest` of a
    file set, row group by row group, with the benchmark's values on them when out_schema has the
    column (NaN throughout when `benchmark` is None). Returns (rows written, sorted eras written)."""
    era_set = pa.array(eras, pa.string())
    pending: list[pa.Table] = []
    pending_rows = 0
    written: set[str] = set()
    ids: list[pa.ChunkedArray] = []  # every kept row's id: a user's own files may repeat one
    parquet = _open(src)
    with parquet, BackgroundWriter(dest, out_schema, thread) as writer:
        for group in _progress(range(parquet.metadata.num_row_groups), src):
            mask = _kept_rows(parquet, group, src, era_set, targets[0])
            kept = mask.true_count
            if kept == 0:
                continue
            if pending and pending_rows + kept > WRITE_ROWS:  # gather small groups, never past WRITE_ROWS
                writer.write(pa.concat_tables(pending))
                pending, pending_rows = [], 0
            table = _read_group(parquet, group, mask, src, out_schema, features, targets, benchmark)
            written.update(pc.unique(table.column(schema.ERA)).to_pylist())
            ids.append(table.column(schema.ID))
            pending.append(table)
            pending_rows += kept
            if pending_rows >= WRITE_ROWS:
                writer.write(pa.concat_tables(pending))
                pending, pending_rows = [], 0
        if pending:
            writer.write(pa.concat_tables(pending))
        _refuse_duplicate_ids(ids, src)  # inside the file set: a refusal publishes nothing
    if writer.rows == 0:
        raise DataError(f"{src.path}: no rows left after filtering (data_type '{src.data_type}', "
                        f"{len(eras)} era(s) selected, rows with a missing '{targets[0]}' dropped)")
    return writer.rows, schema.sorted_eras(written)


def _refuse_duplicate_ids(ids: list[pa.ChunkedArray], src: _Source) -> None:
    """Each row is one id: a repeated one would be trained on twice and make predictions ambiguous."""
    if not ids:
        return
    every = pa.chunked_array([chunk for column in ids for chunk in column.chunks], pa.string())
    if pc.count_distinct(every).as_py() == len(every):
        return
    counts = pc.value_counts(every)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    raise DataError(f"{src.path}: {len(repeated):,} id(s) appear more than once (first: {repeated[0].as_py()}); "
                    f"each row needs its own id")


def _open(src: _Source) -> pq.ParquetFile:
    """The source without Arrow's pre-buffering (it keeps every compressed byte read until the
    file closes: gigabytes on a full train.parquet)."""
    try:
        return pq.ParquetFile(src.path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise schema.unreadable(src.path, exc) from None


def _read(parquet: pq.ParquetFile, group: int, columns: list[str], src: _Source) -> pa.Table:
    """`columns` of one row group; a file that breaks mid-read is a DataError naming it."""
    try:
        return parquet.read_row_group(group, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise schema.unreadable(src.path, exc) from None


def _kept_rows(parquet: pq.ParquetFile, group: int, src: _Source, era_set: pa.Array, main_target: str) -> pa.BooleanArray:
    """Mask of the rows of one row group that prepare keeps: a chosen era, a known main target
    (NaN and null both count as unknown: such rows cannot be trained on or scored), this file's
    own data_type."""
    columns = [schema.ERA, main_target] + ([schema.DATA_TYPE] if src.has_data_type else [])
    table = _read(parquet, group, columns, src)
    target = table.column(main_target)
    known = pc.invert(pc.is_nan(target.cast(pa.float64()))) if pa.types.is_floating(target.type) else pc.is_valid(target)
    chosen = pc.is_in(table.column(schema.ERA).cast(pa.string()), value_set=era_set)
    mask = pc.and_kleene(chosen, pc.fill_null(known, False))
    if src.has_data_type:
        mask = pc.and_kleene(mask, pc.equal(table.column(schema.DATA_TYPE).cast(pa.string()), src.data_type))
    return pc.fill_null(mask, False).combine_chunks()


def _read_group(parquet: pq.ParquetFile, group: int, mask: pa.BooleanArray, src: _Source, out_schema: pa.Schema,
                features: list[str], targets: list[str], benchmark: prepare_benchmark.Coverage | None = None) -> pa.Table:
    """The output columns of one row group's kept rows: era, int8 features (checked 0..4), float32
    targets, id. Features are decoded a block of columns at a time, each block about
    schema.READ_BYTES, so memory holds the kept int8 rows plus one block whatever the width."""
    step = max(1, schema.READ_BYTES // max(1, len(mask) * schema.DECODED_VALUE_BYTES))
    keep = (lambda table: table) if mask.true_count == len(mask) else (lambda table: table.filter(mask))
    checked = _within_feature_range(parquet, group)
    columns = {}
    for first in range(0, len(features), step):
        block = keep(_read(parquet, group, features[first:first + step], src))
        for name in block.column_names:
            columns[name] = _feature_int8(block.column(name), f"{src.path}: column {name}", name in checked)
        del block
    others = keep(_read(parquet, group, [schema.ERA, schema.ID] + targets, src))
    arrays = [others.column(schema.ERA).cast(pa.string())] + [columns.pop(name) for name in features]
    arrays += [_target_float32(others.column(name), f"{src.path}: column {name}") for name in targets]
    if prepare_benchmark.COLUMN in out_schema.names:
        arrays.append(benchmark.on_rows(others.column(schema.ID), arrays[0]) if benchmark is not None
                      else pa.array(np.full(others.num_rows, np.nan, dtype=np.float32)))
    arrays.append(others.column(schema.ID).cast(pa.string()))
    return pa.Table.from_arrays(arrays, schema=out_schema)


def _target_float32(column: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type)):
        raise DataError(f"{source}: target values of type {column.type}, expected numbers")
    values = column.cast(pa.float32())
    bounds = pc.min_max(values)  # NaN and null rows are skipped: they are missing targets
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < 0 or high > 1):
        raise DataError(f"{source}: target values outside 0..1 (from {low:g} to {high:g})")
    return values


def _within_feature_range(parquet: pq.ParquetFile, group: int) -> set[str]:
    """Columns of one row group whose Parquet statistics say every value is within 0..4: their
    int8 values need no range check of their own (the statistics cover the whole row group, a
    superset of the rows kept)."""
    meta = parquet.metadata.row_group(group)
    names = set()
    for i in range(meta.num_columns):
        chunk = meta.column(i)
        stats = chunk.statistics
        if (chunk.physical_type == "INT32" and stats is not None and stats.has_min_max
                and 0 <= stats.min and stats.max <= 4):
            names.add(chunk.path_in_schema)
    return names


def _feature_int8(column: pa.ChunkedArray, source: str, in_range: bool = False) -> pa.ChunkedArray | np.ndarray:
    """int8 0..4 as-is (after a range check, unless the file's statistics already showed it);
    other integers and the quarter-step floats of older releases through schema.features_to_int8,
    which rejects anything else."""
    if column.null_count:
        raise DataError(f"{source}: missing (null) feature values")
    if pa.types.is_int8(column.type) and in_range:
        return column
    if pa.types.is_int8(column.type):
        bounds = pc.min_max(column)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None and (low < 0 or high > 4):
            raise DataError(f"{source}: feature values outside 0..4")
        return column
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"{source}: feature values of type {column.type}, expected integers 0..4")
    return pa.array(schema.features_to_int8(column.to_numpy(), source), pa.int8())


def _progress(groups, src: _Source):
    """A tqdm bar over the row groups of one file, on a terminal only."""
    if not sys.stderr.isatty():
        return groups
    from tqdm import tqdm

    return tqdm(groups, desc=f"prepare {src.path.name}", unit="row group", leave=False)
