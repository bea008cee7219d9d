"""Validation rows as validate scores them, and compare too: which data files, a frozen
description of what they offer (target, auxiliary targets, features, version folder), their rows
read (a raw file filtered on data_type == "validation" while it is read; several files joined as
one set), the rows' ids hashed once for matching, and an id,prediction file read as a Series.

Nothing here changes a description once made: reading returns the rows with what was learnt on
the way (rows per file, whether continuous features were binned)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from numerflow import binning, schema
from numerflow.config import ValidateConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.reports import DataFiles
from numerflow.scoring.ids import RowIds, as_text
from numerflow.scoring.side_files import prepared_manifest_beside, version_folder

PREDICTION_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class ValidationData:
    """What one validation file, or several scored as one set, offers."""

    path: Path | DataFiles
    source_dir: Path | None  # where meta_model / example preds live
    target: str
    aux_targets: tuple[str, ...]
    features: tuple[str, ...]  # for exposure / FNC
    parts: tuple["ValidationData", ...] = ()  # several data files: each one's own description

    @property
    def files(self) -> tuple["ValidationData", ...]:
        """One description per file, in the order given."""
        return self.parts or (self,)


@dataclass(frozen=True)
class ValidationRows:
    """The rows read: the int8 feature matrix, the era/target columns indexed by id, the rows
    each file gave (in the order given) and whether continuous features were read as buckets."""

    matrix: np.ndarray
    frame: object
    rows_per_file: tuple[int, ...]
    binned: bool = False


def data_paths(config: ValidateConfig) -> list[Path]:
    """--data's files (each once), else DATA_DIR/prepared/validation.parquet."""
    if config.data is not None:
        paths = [Path(p) for p in config.data] if isinstance(config.data, (list, tuple)) else [Path(config.data)]
        paths = [_file_of(p) for p in paths]
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


def _file_of(path: Path) -> Path:
    """--data PATH: a file as given; the prepared folder (train, cv and sweep's --data) as its
    validation file."""
    if not path.is_dir():
        return path
    if (path / schema.VALIDATION_FILE).is_file():
        return path / schema.VALIDATION_FILE
    raise DataError(f"{path}: a folder without {schema.VALIDATION_FILE}; --data takes a validation Parquet "
                    f"file or the prepared folder")


def describe_files(paths: list[Path], config: ValidateConfig) -> ValidationData:
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
    aux = tuple(t for t in parts[0].aux_targets if all(t in part.aux_targets for part in parts))
    others = [set(part.features) for part in parts[1:]]
    features = tuple(f for f in parts[0].features if all(f in names for names in others))
    folders = {part.source_dir for part in parts}
    parts = [replace(part, aux_targets=aux) for part in parts]  # every file is read with the same columns
    return ValidationData(DataFiles(paths), folders.pop() if len(folders) == 1 else None, parts[0].target, aux,
                          features, parts=tuple(parts))


def _describe_data(path: Path, config: ValidateConfig) -> ValidationData:
    """Which target, auxiliary targets and features a validation file offers, and where its
    version folder is (for meta_model.parquet and the example predictions)."""
    columns = schema.parquet_columns(path)
    manifest = prepared_manifest_beside(path)
    source_dir = version_folder(path, columns, manifest, config.data_dir)
    if bool(manifest) and schema.DATA_TYPE not in columns:  # prepared
        main = config.target or manifest.get("target") or schema.TARGET
        targets = [t for t in manifest.get("targets", []) if t in columns]
        features = [f for f in manifest.get("features", []) if f in columns]
    else:
        main = config.target or _default_target(columns)
        targets = [c for c in columns if schema.is_target(c)]
        features = _raw_features(path, columns)
    if schema.ERA not in columns:
        raise DataError(f"{path}: no '{schema.ERA}' column")
    if main not in columns:
        _missing_target(path, main, columns)
    aux = tuple(t for t in targets if t != main)
    return ValidationData(path, source_dir, main, aux, tuple(features))


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




def _read_validation_rows(data: ValidationData, features: list[str], names) -> tuple[np.ndarray, object, bool]:
    """The int8 feature matrix and the era/target columns of the validation rows, and whether
    continuous features were read as buckets. A raw file is filtered on data_type == "validation"
    while it is read: its other rows (millions on Numerai's validation.parquet) are never copied."""
    where = (schema.DATA_TYPE, "validation") if schema.DATA_TYPE in names else None
    matrix, frame, binned = _read_features(data, features, [schema.ERA, data.target, *data.aux_targets], where)
    if not len(frame):
        raise DataError(f"{data.path}: no rows with {schema.DATA_TYPE} == 'validation'" if where
                        else f"{data.path}: no rows to score")
    for name in [data.target, *data.aux_targets]:
        if not _is_numeric(frame[name]):
            raise DataError(f"{data.path}: target column '{name}' holds {frame[name].dtype} values, not numbers")
    return matrix, frame, binned


def read_rows(data: ValidationData, features, needed_by=None) -> ValidationRows:
    """_read_validation_rows of every data file, their rows joined in the order the files were
    given. With `needed_by` (a checkpoint) each file must hold all its features."""
    features = list(features)
    read = []
    for part in data.files:
        names = schema.parquet_columns(part.path)
        if needed_by is not None:
            schema.require_columns(part.path, features, names, needed_by=needed_by, error=CheckpointError)
        read.append(_read_validation_rows(part, features, names))
    rows_per_file = tuple(len(frame) for _, frame, _ in read)
    binned = any(binned for _, _, binned in read)
    if len(read) == 1:
        return ValidationRows(read[0][0], read[0][1], rows_per_file, binned)
    import pandas as pd

    return ValidationRows(np.concatenate([matrix for matrix, _, _ in read]), pd.concat([frame for _, frame, _ in read]),
                          rows_per_file, binned)


def row_ids(rows: ValidationRows, data: ValidationData) -> RowIds:
    """The data rows' ids hashed once. An id in two of several files is an error naming them."""
    try:
        return RowIds(rows.frame.index, data.path)
    except DataError:
        if not data.parts:
            raise
        ids, start = as_text(rows.frame.index), 0  # repeated ids: within one of the files, or across them
        for part, count in zip(data.parts, rows.rows_per_file):
            repeated = int(ids[start:start + count].duplicated().sum())
            start += count
            if repeated:
                raise DataError(f"{part.path}: {repeated} duplicate id(s)") from None
        raise DataError(f"{int(ids.duplicated().sum())} id(s) are rows of more than one --data file "
                        f"({data.path.name}): each row must come from one file") from None


def _read_features(data: ValidationData, features: list[str], columns: list[str], where):
    """schema.read_matrix, or for the continuous features of a pre-2019 file the buckets that
    `prepare --bin-features 5` makes (within each era): what its models were trained on."""
    if not binning.is_continuous(data.path, features):
        return (*schema.read_matrix(data.path, features, columns, where=where), False)
    return (*binning.read_binned_matrix(data.path, features, columns, binning.SUPPORTED_BINS, where=where), True)


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
