"""validate stage: score a checkpoint (or any model's id,prediction file) era by era on validation
data with Numerai's definitions, and write reports/<name>/{report.json, per_era.csv, per_era.png}.

Data may be a prepared validation.parquet (the default) or a raw Numerai one (rows with
data_type == "validation" are kept), or several files whose rows are scored as one set (a cv run's
out-of-fold predictions cover prepared train.parquet and validation.parquet).
meta_model.parquet and validation_example_preds.parquet are looked up beside a raw file, or in the
version folder a prepared file came from (its manifest's `version_dir`); without them MMC and the
example correlation are left out with a note.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import binning, metrics, schema
from numerflow.config import DEFAULT_REPORTS_DIR, ValidateConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.files import dump_json, publish_set
from numerflow.stages.prepare import MANIFEST_FILE, read_manifest

PREDICTION_SUFFIXES = (".csv", ".parquet")
SUMMARY_KEYS = ("mean", "std", "sharpe", "max_drawdown", "hit_rate", "eras_scored")


@dataclass
class Report:
    """The validation report: `data` is the JSON-able dict written to report.json."""

    data: dict
    source: str  # what was scored (model or predictions file)
    data_path: Path
    report_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2)

    def __str__(self) -> str:
        d = self.data
        rows = [("spearman", d["spearman"]), ("numerai_corr", d["numerai_corr"])]
        rows += [(name, d[name]) for name in ("mmc", "bmc", "corr_with_benchmark", "fnc", "corr_with_example")
                 if name in d]
        rows += [(f"corr {name}", summary) for name, summary in d.get("aux_targets", {}).items()]
        width = max(22, *(len(name) + 2 for name, _ in rows))  # long target names widen the column
        lines = [f"Validated {self.source} on {self.data_path}: {d['rows']:,} rows, {d['eras']} eras",
                 f"{'':<{width}}{'mean':>8}{'std':>8}{'sharpe':>8}{'max_dd':>8}{'hit':>7}{'eras':>6}"]
        lines += [_summary_line(name, summary, width) for name, summary in rows]
        if "benchmark" in d:
            lines.append(f"bmc and corr_with_benchmark against {d['benchmark']}")
        if "feature_exposure" in d:
            fe = d["feature_exposure"]
            lines.append(f"feature exposure (mean over eras): max {_fmt(fe['max'])}, rms {_fmt(fe['rms'])}")
        if d.get("eras_unscored"):
            shown = ", ".join(d["unscored_eras"][:10]) + (" ..." if len(d["unscored_eras"]) > 10 else "")
            lines.append(f"Unscored eras ({d['eras_unscored']}, left out of the summaries): {shown}")
        lines += [f"Note: {note}" for note in self.notes]
        if self.files:
            lines.append(f"Report: {self.report_dir}/ ({', '.join(p.name for p in self.files)})")
        return "\n".join(lines)


def _fmt(value, width: int = 0) -> str:
    text = "nan" if value is None else f"{value:.4f}"
    return text.rjust(width) if width else text


def _summary_line(name: str, s: dict, width: int) -> str:
    sharpe = "nan" if s["sharpe"] is None else f"{s['sharpe']:.2f}"
    hit = "nan" if s["hit_rate"] is None else f"{s['hit_rate']:.0%}"
    return (f"{name:<{width}}{_fmt(s['mean'], 8)}{_fmt(s['std'], 8)}{sharpe:>8}{_fmt(s['max_drawdown'], 8)}"
            f"{hit:>7}{s['eras_scored']:>6}")


def json_safe(value):
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- inputs -------------------------------------------------------------------------------------


class DataFiles(tuple):
    """Several data files scored as one set of rows: how messages and the report name them (as a
    Path names one file: str() is their paths, .name their file names, joined by " + ")."""

    def __str__(self) -> str:
        return " + ".join(map(str, self))

    @property
    def name(self) -> str:
        return " + ".join(path.name for path in self)


@dataclass
class _Data:
    path: Path | DataFiles
    source_dir: Path | None  # where meta_model / example preds live
    target: str
    aux_targets: list[str]
    features: list[str]  # for exposure / FNC
    binned: bool = False  # continuous features read as 5 buckets within each era (binning.py)
    row_ids: "RowIds | None" = None  # the validation rows' ids, hashed once when first matched
    parts: list["_Data"] = field(default_factory=list)  # several data files: each one's own description
    rows: int = 0  # rows read from this file

    @property
    def files(self) -> list["_Data"]:
        """One description per file, in the order given."""
        return self.parts or [self]


def _data_paths(config: ValidateConfig) -> list[Path]:
    if config.data is not None:
        paths = [Path(p) for p in config.data] if isinstance(config.data, (list, tuple)) else [Path(config.data)]
        if not paths:
            raise ConfigError("--data: no file given")
        repeated = sorted({str(p) for p in paths if paths.count(p) > 1})
        if repeated:
            raise ConfigError(f"--data {', '.join(repeated)}: given more than once (its rows would be scored twice)")
        return paths
    path = Path(config.data_dir) / "prepared" / schema.VALIDATION_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found (run `numerflow prepare` first, or pass --data)")
    return [path]


def _describe_files(paths: list[Path], config: ValidateConfig) -> _Data:
    """_describe_data of one file, or of several scored as one set of rows: they must agree on the
    main target; auxiliary targets and features are those every file has; the version folder
    (meta model, example predictions, benchmark) is theirs when they share one."""
    parts = [_describe_data(path, config) for path in paths]
    if len(parts) == 1:
        return parts[0]
    targets = {part.target for part in parts}
    if len(targets) > 1:
        named = ", ".join(f"{part.path.name}: '{part.target}'" for part in parts)
        raise DataError(f"--data files have different main targets ({named}); choose one with --target")
    aux = [t for t in parts[0].aux_targets if all(t in part.aux_targets for part in parts)]
    others = [set(part.features) for part in parts[1:]]
    features = [f for f in parts[0].features if all(f in names for names in others)]
    folders = {part.source_dir for part in parts}
    for part in parts:
        part.aux_targets = aux  # every file is read with the same columns
    return _Data(DataFiles(paths), folders.pop() if len(folders) == 1 else None, parts[0].target, aux, features,
                 parts=parts)


def _describe_data(path: Path, config: ValidateConfig) -> _Data:
    """Which target, auxiliary targets and features a validation file offers, and where its
    version folder is (for meta_model.parquet and the example predictions)."""
    columns = schema.parquet_columns(path)
    manifest = read_manifest(path.parent) if (path.parent / MANIFEST_FILE).is_file() else {}
    prepared = bool(manifest) and schema.DATA_TYPE not in columns
    if prepared:
        source_dir = Path(manifest["version_dir"]) if manifest.get("version_dir") else (
            Path(config.data_dir) / manifest["version"] if manifest.get("version") else None)
        main = config.target or manifest.get("target") or schema.TARGET
        targets = [t for t in manifest.get("targets", []) if t in columns]
        features = [f for f in manifest.get("features", []) if f in columns]
    else:
        source_dir = path.parent
        main = config.target or _default_target(columns)
        targets = [c for c in columns if schema.is_target(c)]
        features = _raw_features(path, columns)
    if schema.ERA not in columns:
        raise DataError(f"{path}: no '{schema.ERA}' column")
    if main not in columns:
        _missing_target(path, main, columns)
    aux = [t for t in targets if t != main]
    return _Data(path, source_dir, main, aux, features)


def _missing_target(path: Path, main: str, columns: list[str]) -> None:
    """The missing-target error, naming the targets the file has and the option that picks one
    (as prepare's does): old releases name theirs target_<name>."""
    available = [c for c in columns if schema.is_target(c)]
    raise DataError(f"{path}: target '{main}' not found (available: {', '.join(available) or 'none'}; "
                    f"choose one with --target)")


def _default_target(columns: list[str]) -> str:
    """`target`, or target_ender_20 (whose alias it is) in a release without the alias."""
    return schema.MAIN_TARGET if schema.TARGET not in columns and schema.MAIN_TARGET in columns else schema.TARGET


def _raw_features(path: Path, columns: list[str]) -> list[str]:
    """Features for exposure on a raw file: features.json's medium set beside it when present
    (all ~2,750 would cost four times the memory for little), or its only/`all` set for releases
    without one; else every feature column, `feature_*` or the `featureN` of pre-2019 releases."""
    meta_path = path.parent / schema.FEATURES_FILE
    present = set(columns)
    named = [c for c in columns if schema.is_feature(c) or re.fullmatch(r"feature\d+", c)]
    if meta_path.is_file():
        try:
            sets = schema.read_feature_sets(meta_path)["feature_sets"]
        except DataError:
            return named
        for name in ("medium", "all", *sets):
            chosen = [f for f in sets.get(name) or [] if isinstance(f, str) and f in present]
            if chosen:
                return chosen
    return named


def _exact_fit_note(eras: list[str], n_features: int, notes: list[str]) -> None:
    if eras:
        shown = ", ".join(eras[:10]) + (" ..." if len(eras) > 10 else "")
        notes.append(f"FNC left out in {len(eras)} era(s) with no more rows than the {n_features} features plus "
                     f"a constant (the neutralising fit is exact there, its score rounding noise): {shown}")


def _no_features_note(config: ValidateConfig, data: _Data, matrix, notes: list[str]) -> None:
    """Say why exposure and FNC are absent, instead of leaving them out silently, and how
    continuous features were read."""
    if data.binned:
        notes.append(f"continuous features in {data.path.name}: read as {binning.SUPPORTED_BINS} equal-frequency "
                     f"buckets within each era (as `prepare --bin-features {binning.SUPPORTED_BINS}`)")
    if config.exposure and (matrix is None or not matrix.shape[1]):
        notes.append(f"no feature columns known for {data.path} (no prepare manifest, no features.json set, no "
                     f"feature_*/featureN columns): feature exposure and FNC left out")


def _foreign_ids_note(predictions, data: _Data, notes: list[str]):
    """Predictions for ids that are the file's other rows (test/live rows of an all-in-one
    tournament file) are not errors: they are left out with a note. Returns the predictions to
    place; ids in no row of the file stay for RowIds.place to refuse."""
    raw = [part.path for part in data.files if schema.DATA_TYPE in schema.parquet_columns(part.path)]
    if not raw:
        return predictions
    unknown = predictions.index[data.row_ids.positions(predictions.index) < 0]
    if not len(unknown):
        return predictions
    import pandas as pd

    kinds = pd.concat([_row_kinds(path) for path in raw])
    other = kinds[kinds.index.isin(unknown)]
    if not len(other):
        return predictions
    if len(other) == len(predictions):
        raise DataError(f"{predictions.name}: none of its {len(predictions)} id(s) are validation rows of "
                        f"{data.path} (they are {_counts(other)} rows); validate scores data_type == 'validation' rows")
    notes.append(f"{len(other):,} predicted id(s) are {_counts(other)} rows of {data.path.name}, not validation "
                 f"rows: left out")
    return predictions.drop(other.index)


def _row_kinds(path: Path):
    """A raw file's data_type per row, indexed by id."""
    import pyarrow.parquet as pq

    import pandas as pd

    table = pq.read_table(path, columns=[schema.ID, schema.DATA_TYPE])
    return pd.Series(table.column(schema.DATA_TYPE).cast("string").to_numpy(zero_copy_only=False),
                     index=table.column(schema.ID).cast("string").to_numpy(zero_copy_only=False)).astype(str)


def _counts(kinds) -> str:
    return ", ".join(f"{count:,} {kind}" for kind, count in kinds.value_counts().sort_index().items())


def _read_validation_rows(data: _Data, features: list[str], names) -> tuple[np.ndarray, object]:
    """The int8 feature matrix and the era/target columns of the validation rows. A raw file is
    filtered on data_type == "validation" while it is read: its other rows (millions on Numerai's
    validation.parquet) are never copied."""
    where = (schema.DATA_TYPE, "validation") if schema.DATA_TYPE in names else None
    matrix, frame = _read_features(data, features, [schema.ERA, data.target] + data.aux_targets, where)
    if not len(frame):
        raise DataError(f"{data.path}: no rows with {schema.DATA_TYPE} == 'validation'" if where
                        else f"{data.path}: no rows to score")
    for name in [data.target] + data.aux_targets:
        if not _is_numeric(frame[name]):
            raise DataError(f"{data.path}: target column '{name}' holds {frame[name].dtype} values, not numbers")
    return matrix, frame


def _read_rows(data: _Data, features: list[str], needed_by=None) -> tuple[np.ndarray, object]:
    """_read_validation_rows of every data file, their rows joined in the order the files were
    given. With `needed_by` (a checkpoint) each file must hold all its features."""
    read = []
    for part in data.files:
        names = schema.parquet_columns(part.path)
        if needed_by is not None:
            schema.require_columns(part.path, features, names, needed_by=needed_by, error=CheckpointError)
        read.append(_read_validation_rows(part, features, names))
        part.rows = len(read[-1][1])
    data.binned = any(part.binned for part in data.files)
    if len(read) == 1:
        return read[0]
    import pandas as pd

    return np.concatenate([matrix for matrix, _ in read]), pd.concat([frame for _, frame in read])


def _row_ids(frame, data: _Data) -> "RowIds":
    """The data rows' ids hashed once. An id in two of several files is an error naming them."""
    try:
        return RowIds(frame.index, data.path)
    except DataError:
        if not data.parts:
            raise
        ids, start = _as_text(frame.index), 0  # repeated ids: within one of the files, or across them
        for part in data.parts:
            repeated = int(ids[start:start + part.rows].duplicated().sum())
            start += part.rows
            if repeated:
                raise DataError(f"{part.path}: {repeated} duplicate id(s)") from None
        raise DataError(f"{int(ids.duplicated().sum())} id(s) are rows of more than one --data file "
                        f"({data.path.name}): each row must come from one file") from None


def _read_features(data: _Data, features: list[str], columns: list[str], where):
    """schema.read_matrix, or for the continuous features of a pre-2019 file the buckets that
    `prepare --bin-features 5` makes (within each era): what its models were trained on."""
    if not binning.is_continuous(data.path, features):
        return schema.read_matrix(data.path, features, columns, where=where)
    data.binned = True
    return binning.read_binned_matrix(data.path, features, columns, binning.SUPPORTED_BINS, where=where)


def _is_numeric(column) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def read_predictions(predictions):
    """Predictions as a float64 Series indexed by id (as text): an id,prediction file (.csv or
    .parquet), or in memory a DataFrame/Series indexed by id or with an `id` column. Repeated ids
    are refused when they are matched to the data's rows (RowIds.place), in the same hash pass."""
    import pandas as pd

    where = source_name(predictions)
    if isinstance(predictions, (str, os.PathLike)):
        path = Path(predictions)
        if path.suffix not in PREDICTION_SUFFIXES:
            raise ConfigError(f"{path}: predictions must be a .csv or .parquet file")
        frame = schema.read_id_frame(path)
    elif isinstance(predictions, pd.Series):
        frame = predictions.rename(schema.PREDICTION).to_frame()
    elif isinstance(predictions, pd.DataFrame):
        frame = predictions
    else:
        raise ConfigError(f"predictions: expected a file path, DataFrame or Series, got {type(predictions).__name__}")
    if schema.ID in frame.columns:
        frame = frame.set_index(schema.ID)
    elif frame.index.name != schema.ID:
        raise DataError(f"{where}: no '{schema.ID}' column")
    if schema.PREDICTION not in frame.columns:
        raise DataError(f"{where}: no '{schema.PREDICTION}' column")
    if frame.empty:
        raise DataError(f"{where}: no rows")
    try:
        values = pd.to_numeric(frame[schema.PREDICTION], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise DataError(f"{where}: non-numeric values in '{schema.PREDICTION}'") from None
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise DataError(f"{where}: {bad} NaN or infinite prediction(s)")
    ids = frame.index if isinstance(frame.index.dtype, pd.StringDtype) else frame.index.astype(str)
    return pd.Series(values, index=ids, name=schema.PREDICTION)


def source_name(predictions) -> str:
    """How messages and the report name what was scored: the file, or `predictions` in memory."""
    return str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"


# --- id matching: every id,value file is placed on the data's rows through one hash of its ids --

HEX_DIGITS = np.full(256, 255, dtype=np.uint8)  # byte → its value as a lowercase hex digit, 255 if none
HEX_DIGITS[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
NUMERAI_ID_BYTES = 16  # "n" + 15 hex digits


def _arrow_strings(ids):
    """`ids` (a pandas Index or Series, a numpy or Arrow array) as one Arrow string array, or None
    when they are not text. Arrow-backed pandas strings are handed over without a copy."""
    import pyarrow as pa

    try:
        array = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(getattr(ids, "array", ids))
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) else None


def numerai_id_keys(ids) -> np.ndarray | None:
    """Numerai's ids ("n" + 15 lowercase hex digits) as the exact 60-bit integers they spell
    (distinct ids, distinct keys), or None when any id has another shape. Matching 2M integer keys
    is about 10x faster than matching 2M strings, and the ids never become Python objects: the
    digits are read straight from Arrow's string buffer."""
    import pyarrow as pa

    array = _arrow_strings(ids)
    if array is None or array.null_count:
        return None
    buffers = array.buffers()
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    if not len(array) or not np.all(np.diff(offsets) == NUMERAI_ID_BYTES):
        return None
    chars = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(-1, NUMERAI_ID_BYTES)
    if not np.all(chars[:, 0] == ord("n")):
        return None
    digits = HEX_DIGITS[chars]
    digits[:, 0] = 0  # the leading "n" as a zero digit: 16 digits fill 8 bytes
    if np.any(digits > 15):
        return None
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])
    return packed.view(">u8").ravel().astype(np.uint64)


def _as_text(ids):
    import pandas as pd

    return pd.Index(ids).astype(str)


class RowIds:
    """The data's row ids, hashed once (one uniqueness check, one hash table) for every file placed
    on its rows: predictions, meta model, example predictions, benchmark models. Numerai-shaped
    ids are matched as integer keys, other ids as text."""

    def __init__(self, ids, data_path: Path):
        import pandas as pd

        self.ids, self.data_path, self.size = ids, data_path, len(ids)
        keys = numerai_id_keys(ids)
        self.as_keys = keys is not None
        self.index = pd.Index(keys if self.as_keys else _as_text(ids))
        if not self.index.is_unique:  # fills the hash table that get_indexer then reuses
            raise DataError(f"{data_path}: {int(self.index.duplicated().sum())} duplicate id(s)")
        self._text_index = None
        self.kept = None  # a boolean mask: place() returns these rows only

    def restricted_to(self, rows: np.ndarray) -> "RowIds":
        """The same lookup (no new hash table), placing values on the data rows `rows` only."""
        view = copy.copy(self)
        view.kept = rows if self.kept is None else np.flatnonzero(self.kept)[rows]
        return view

    def positions(self, ids) -> np.ndarray:
        """The data row of each id, -1 where the data has no such id."""
        if not self.as_keys:
            return self.index.get_indexer(_as_text(ids))
        keys = numerai_id_keys(ids)
        if keys is not None:
            return self.index.get_indexer(keys)
        if self._text_index is None:  # ids of other shapes: matched as text (a second table, rarely)
            self._text_index = _as_text(self.ids)
        return self._text_index.get_indexer(_as_text(ids))

    def place(self, ids, values, what, strict: bool) -> np.ndarray:
        """`values` (one per id) on the data's rows, NaN where absent. With `strict` (the
        predictions being scored), repeated ids and ids the data lacks are errors; a side file's
        extra ids are ignored."""
        position = self.positions(ids)
        found = position >= 0
        if strict:
            found_twice = len(position[found]) - int(np.count_nonzero(np.bincount(position[found], minlength=self.size)))
            unknown = ~found
            repeats = found_twice + (int(_as_text(ids)[unknown].duplicated().sum()) if unknown.any() else 0)
            if repeats:
                raise DataError(f"{what}: {repeats} duplicate id(s)")
            if unknown.any():
                raise DataError(f"{what}: {int(unknown.sum())} of {len(position)} id(s) are not in {self.data_path}")
        out = np.full(self.size, np.nan)
        out[position[found]] = np.asarray(values, dtype=np.float64)[found]
        return out if self.kept is None else out[self.kept]


def _read_side_column(path: Path, column: str, row_ids: RowIds) -> np.ndarray:
    """One numeric column of an id-indexed Parquet file (meta model, example predictions,
    benchmark models), placed on the data's rows; only `id` and that column are read."""
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
    return row_ids.place(table.column(schema.ID), values, path, strict=False)


def _read_side_file(path: Path, column: str, row_ids: RowIds, data_path: Path, notes: list[str]):
    """meta_model / example predictions aligned to the data's rows, or None (with a note)."""
    if not path.is_file():
        notes.append(f"{path.name} not found in {path.parent}: {'MMC' if column == schema.META_MODEL else 'corr_with_example'} left out")
        return None
    aligned = _read_side_column(path, column, row_ids)
    if not np.isfinite(aligned).any():
        notes.append(f"{path.name} shares no ids with {data_path.name}: left out")
        return None
    return aligned


def meta_model_on_rows(data_path: Path, ids) -> np.ndarray | None:
    """The meta model placed on the rows `ids` of a validation file, read as validate reads it
    (None when the file's version folder has none): sweeps score MMC objectives with it."""
    from numerflow.config import ValidateConfig

    data = _describe_data(data_path, ValidateConfig(data=data_path))
    if data.source_dir is None:
        return None
    return _read_side_file(data.source_dir / schema.META_MODEL_FILE, schema.META_MODEL, RowIds(ids, data_path),
                           data_path, [])


# --- BMC: contribution beyond Numerai's benchmark model -----------------------------------------


def _benchmark_scores(source_dir: Path, requested: str | None, predictions, target, eras, row_ids: RowIds,
                      data_path: Path, notes: list[str]):
    """(benchmark column, per-era BMC, per-era rank correlation with the benchmark) against
    validation_benchmark_models.parquet in the data's version folder, or None with a note. The
    column is `requested` (--benchmark), else the version's main benchmark (v53_lgbm_ender20 for
    v5.3). Rows the benchmark file has no value for are left out of both, with a note."""
    path = source_dir / schema.VALIDATION_BENCHMARK_FILE
    if not path.is_file():
        if requested is not None:
            raise DataError(f"--benchmark {requested}: {path.name} not found in {path.parent}")
        notes.append(f"{path.name} not found in {path.parent}: BMC left out")
        return None
    available = [c for c in schema.parquet_columns(path) if c not in (schema.ID, schema.ERA, schema.DATA_TYPE)
                 and not c.startswith("__")]
    column = requested if requested is not None else _default_benchmark(source_dir.name, available)
    if column not in available:
        if requested is not None:
            raise DataError(f"{path}: no benchmark column '{requested}' (available: {', '.join(available) or 'none'})")
        notes.append(f"{path.name} has no main benchmark column ({schema.main_benchmark(source_dir.name) or 'vNN_lgbm_ender20'}"
                     f"): BMC left out; pick one with --benchmark (available: {', '.join(available) or 'none'})")
        return None
    values = _read_side_column(path, column, row_ids)
    covered = int(np.isfinite(values).sum())
    if covered == 0:
        notes.append(f"{path.name} shares no ids with {data_path.name}: BMC left out")
        return None
    if covered < len(values):
        notes.append(f"{path.name} covers {covered:,} of the {len(values):,} scored rows: BMC and "
                     f"corr_with_benchmark are measured on those rows")
    return (column, metrics.per_era_bmc(predictions, values, target, eras),
            metrics.per_era_spearman(predictions, values, eras))


def _default_benchmark(version: str, available: list[str]) -> str | None:
    """The version's main benchmark, else the newest vNN_lgbm_ender20 the file has."""
    main = schema.main_benchmark(version)
    if main in available:
        return main
    numbered = [(int(m.group(1)), c) for c in available if (m := re.fullmatch(r"v(\d+)_lgbm_ender20", c))]
    return max(numbered)[1] if numbered else None



def _model_predictions(config: ValidateConfig, data: _Data):
    """Load the checkpoint, read its features from the data, and predict every row."""
    from numerflow.checkpoint import load_checkpoint, load_model, predict_scores
    from numerflow.devices import resolve_device

    checkpoint = load_checkpoint(config.model)
    features = list(checkpoint["features"])
    matrix, frame = _read_rows(data, features, needed_by=config.model)
    model = load_model(checkpoint)
    device = resolve_device(config.device)
    raw = predict_scores(model, matrix, device=device, predict_with=checkpoint.get("predict_with", "main"),
                         batch_rows=config.batch_size)
    bad = int((~np.isfinite(raw)).sum())
    if bad:
        raise CheckpointError(f"{config.model}: the model produced {bad} non-finite prediction(s)")
    data.features = features  # exposure is measured against the features the model saw
    return raw.astype(np.float64), matrix, frame


def _file_predictions(config: ValidateConfig, data: _Data, notes: list[str]):
    predictions = read_predictions(config.predictions)
    features = data.features if config.exposure else []
    matrix, frame = _read_rows(data, features)
    data.row_ids = _row_ids(frame, data)
    predictions = _foreign_ids_note(predictions.rename(source_name(config.predictions)), data, notes)
    values = data.row_ids.place(predictions.index, predictions.to_numpy(), source_name(config.predictions), strict=True)
    return values, matrix, frame


def _summary(scores: metrics.EraScores) -> dict:
    return json_safe(metrics.summarize(scores.values))


def _per_era_table(scores: dict[str, metrics.EraScores]) -> list[dict]:
    main = scores["spearman"]
    table = []
    for i, era in enumerate(main.eras):
        row = {"era": era, "rows": int(main.rows[i])}
        row.update({name: s.values[i] for name, s in scores.items()})
        table.append(json_safe(row))
    return table


def score(predictions: np.ndarray, frame, matrix, data: _Data, config: ValidateConfig,
          notes: list[str]) -> dict:
    """The report dict for aligned predictions (NaN where a row has none)."""
    with_prediction = np.isfinite(predictions)
    if not with_prediction.any():
        raise DataError(f"{data.path}: no rows to score")
    row_ids = data.row_ids if data.row_ids is not None else _row_ids(frame, data)
    if not with_prediction.all():
        row_ids = row_ids.restricted_to(with_prediction)
        notes.append(f"{int((~with_prediction).sum()):,} validation rows have no prediction: scored the "
                     f"{int(with_prediction.sum()):,} that do")
        predictions, frame = predictions[with_prediction], frame[with_prediction]
        matrix = matrix[with_prediction] if matrix is not None and matrix.shape[1] else matrix
    eras = metrics.group_eras(frame[schema.ERA].astype(str).to_numpy())
    target = frame[data.target].to_numpy(dtype=np.float64, na_value=np.nan)
    per_era = metrics.per_era_scores(predictions, target, eras)
    report = {
        "rows": int(len(predictions)),
        "eras": eras.n_eras,
        "target": data.target,
        "spearman": _summary(per_era["spearman"]),
        "numerai_corr": _summary(per_era["numerai_corr"]),
    }
    if data.source_dir is not None:
        meta = _read_side_file(data.source_dir / schema.META_MODEL_FILE, schema.META_MODEL, row_ids, data.path,
                               notes)
        if meta is not None:
            per_era["mmc"] = metrics.per_era_mmc(predictions, meta, target, eras)
            report["mmc"] = _summary(per_era["mmc"])
        example = _read_side_file(data.source_dir / schema.VALIDATION_EXAMPLE_FILE, schema.PREDICTION, row_ids,
                                  data.path, notes)
        if example is not None:
            # Rank correlation per era with the example model: how much of it the model repeats.
            report["corr_with_example"] = _summary(metrics.per_era_spearman(predictions, example, eras))
        benchmark = _benchmark_scores(data.source_dir, config.benchmark, predictions, target, eras, row_ids,
                                      data.path, notes)
        if benchmark is not None:
            report["benchmark"], bmc, with_benchmark = benchmark
            per_era["bmc"], per_era["corr_with_benchmark"] = bmc, with_benchmark
            report["bmc"], report["corr_with_benchmark"] = _summary(bmc), _summary(with_benchmark)
    else:
        if config.benchmark is not None:
            raise DataError(f"--benchmark {config.benchmark}: no source data folder known for {data.path}, "
                            f"so no {schema.VALIDATION_BENCHMARK_FILE} to read")
        notes.append("no source data folder known: MMC, BMC and corr_with_example left out")
    if config.exposure and matrix is not None and matrix.shape[1]:
        fs = metrics.feature_scores(predictions, matrix, target, eras)
        report["feature_exposure"] = json_safe({"max": float(np.nanmean(fs.max_exposure.values))
                                                if np.isfinite(fs.max_exposure.values).any() else None,
                                                "rms": float(np.nanmean(fs.rms_exposure.values))
                                                if np.isfinite(fs.rms_exposure.values).any() else None,
                                                "features": int(matrix.shape[1])})
        per_era["fnc"] = fs.fnc
        report["fnc"] = _summary(fs.fnc)
        _exact_fit_note(fs.exact_fit_eras, matrix.shape[1], notes)
    if data.aux_targets:
        report["aux_targets"] = {
            name: _summary(metrics.per_era_numerai_corr(
                predictions, frame[name].to_numpy(dtype=np.float64, na_value=np.nan), eras))
            for name in data.aux_targets}
    unscored = per_era["numerai_corr"].unscored
    report["eras_unscored"] = len(unscored)
    report["unscored_eras"] = unscored
    report["per_era"] = _per_era_table(per_era)
    return report


# --- outputs ------------------------------------------------------------------------------------


def _write_per_era_csv(path: Path, per_era: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(per_era[0]))
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in per_era])


def _write_per_era_png(path: Path, per_era: list[dict], title: str) -> bool:
    """Per-era CORR bars with the cumulative CORR line; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    values = np.array([np.nan if r["numerai_corr"] is None else r["numerai_corr"] for r in per_era])
    labels = [r["era"] for r in per_era]
    x = np.arange(len(values))
    fig, bars = plt.subplots(figsize=(max(6.0, min(24.0, len(values) * 0.08)), 4))
    bars.bar(x, np.nan_to_num(values), color=np.where(values >= 0, "tab:blue", "tab:red"), width=0.9)
    bars.set_ylabel("CORR per era")
    bars.set_xlabel("era")
    step = max(1, len(labels) // 12)
    bars.set_xticks(x[::step], labels[::step], rotation=45, fontsize=7)
    line = bars.twinx()
    line.plot(x, np.nancumsum(values), color="black", linewidth=1.2)
    line.set_ylabel("cumulative CORR")
    bars.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return True


def write_report(report: Report) -> None:
    """report.json, per_era.csv and per_era.png as one set: all are written under temporary names
    and renamed only once every one is complete, so a full disk leaves the previous report whole."""
    out = report.report_dir
    per_era = report.data["per_era"]
    with publish_set(out) as files:
        _write_per_era_csv(files.path("per_era.csv"), per_era)
        if not _write_per_era_png(files.path("per_era.png"), per_era, f"{report.source} on {report.data_path.name}"):
            files.drop("per_era.png")
            report.notes.append("matplotlib is not installed: per_era.png not drawn (pip install matplotlib)")
        dump_json(files.path("report.json"), report.data)  # renamed last
    report.files.extend(out / name for name in ("report.json", "per_era.csv", "per_era.png") if name in files.temporaries)


# --- the stage ----------------------------------------------------------------------------------


def validate(config: ValidateConfig) -> Report:
    """Score a model or a predictions file era by era; write the report files unless told not to."""
    if config.predictions is None and config.model is None:
        raise ConfigError("validate: give --model or --predictions")
    data = _describe_files(_data_paths(config), config)
    notes: list[str] = []
    if config.predictions is not None:
        source = Path(source_name(config.predictions))
        predictions, matrix, frame = _file_predictions(config, data, notes)
    else:
        source = Path(config.model)
        predictions, matrix, frame = _model_predictions(config, data)
    _no_features_note(config, data, matrix, notes)
    report_data = score(predictions, frame, matrix, data, config, notes)
    named = [str(p) for p in data.path] if data.parts else str(data.path)  # several files: a list
    report_data = {"source": str(source), "data": named, **report_data, "notes": notes}
    report = Report(data=json_safe(report_data), source=str(source), data_path=data.path, notes=notes)
    if config.write_report:
        report.report_dir = Path(config.report_dir) if config.report_dir else DEFAULT_REPORTS_DIR / source.stem
        write_report(report)
    return report
