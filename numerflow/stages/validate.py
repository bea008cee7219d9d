"""validate stage: score a checkpoint (or any model's id,prediction file) era by era on validation
data with Numerai's definitions, and write reports/<name>/{report.json, per_era.csv, per_era.png}.

Data may be a prepared validation.parquet (the default) or a raw Numerai one (rows with
data_type == "validation" are kept), or several files whose rows are scored as one set (a cv run's
out-of-fold predictions cover prepared train.parquet and validation.parquet).
meta_model.parquet and validation_example_preds.parquet are looked up beside a raw file, or in the
version folder a prepared file came from (its manifest's `version_dir`); without them MMC and the
example correlation are left out with a note.

This module reads the data files (and their row kinds) and the predictions, and scores them;
ids are matched by numerflow.scoring.ids, the side files read by numerflow.scoring.side_files,
and the report's format (printed, written, read back) is numerflow.reports'.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import binning, memory, metrics, schema
from numerflow.config_base import DEFAULT_REPORTS_DIR
from numerflow.config import ValidateConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.reports import DataFiles, Report, json_safe, per_era_table, summary, write_report
from numerflow.scoring.ids import RowIds, as_text
from numerflow.scoring.side_files import prepared_manifest_beside, read_benchmark, read_side_file, version_folder

PREDICTION_SUFFIXES = (".csv", ".parquet")


# --- inputs -------------------------------------------------------------------------------------


@dataclass
class _Data:
    path: Path | DataFiles
    source_dir: Path | None  # where meta_model / example preds live
    target: str
    aux_targets: list[str]
    features: list[str]  # for exposure / FNC
    binned: bool = False  # continuous features read as 5 buckets within each era (binning.py)
    row_ids: RowIds | None = None  # the validation rows' ids, hashed once when first matched
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


def _foreign_ids_note(predictions, position: np.ndarray, data: _Data, notes: list[str]) -> np.ndarray:
    """Predictions for ids that are the file's other rows (test/live rows of an all-in-one
    tournament file) are not errors: they are left out with a note. Returns which predictions to
    place (a boolean mask); ids in no row of the file stay for RowIds.place to refuse.
    `position`: the predictions' rows in the data (RowIds.positions), looked up once."""
    keep = np.ones(len(position), dtype=bool)
    unknown = position < 0
    raw = [part.path for part in data.files if schema.DATA_TYPE in schema.parquet_columns(part.path)]
    if not raw or not unknown.any():
        return keep
    import pandas as pd

    kinds = pd.concat([_row_kinds(path) for path in raw])
    other = kinds.index.isin(predictions.index[unknown])
    if not other.any():
        return keep
    if other.sum() == len(predictions):
        raise DataError(f"{predictions.name}: none of its {len(predictions)} id(s) are validation rows of "
                        f"{data.path} (they are {_counts(kinds[other])} rows); validate scores data_type == 'validation' rows")
    notes.append(f"{int(other.sum()):,} predicted id(s) are {_counts(kinds[other])} rows of {data.path.name}, not "
                 f"validation rows: left out")
    keep[unknown] = ~predictions.index[unknown].isin(kinds.index[other])
    return keep


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


def _row_ids(frame, data: _Data) -> RowIds:
    """The data rows' ids hashed once. An id in two of several files is an error naming them."""
    try:
        return RowIds(frame.index, data.path)
    except DataError:
        if not data.parts:
            raise
        ids, start = as_text(frame.index), 0  # repeated ids: within one of the files, or across them
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


def _ensemble_predictions(config: ValidateConfig, data: _Data):
    ranks, matrix, frame, features = ensemble_ranks(config.ensemble, data, config)
    data.features = features  # exposure is measured against the features the members saw
    return ranks, matrix, frame


def ensemble_ranks(folder, data: _Data, settings: ValidateConfig):
    """A fitted ensemble's predictions of every row of `data` (validate's and compare's): its
    members' within-era ranks, weighted and averaged exactly as `predict --ensemble` averages them
    (`settings`: the device and batch size). Returns them with the features read and their names."""
    from numerflow.checkpoint import load_checkpoint
    from numerflow.ensembles import load_ensemble
    from numerflow.stages.predict import ensemble_weights, score_models, union_of_features

    paths, weights = load_ensemble(folder)
    checkpoints = [load_checkpoint(path) for path in paths]
    features = union_of_features([c["features"] for c in checkpoints])
    matrix, frame = _read_rows(data, features, needed_by=folder)
    eras = frame[schema.ERA].astype(str).to_numpy()
    values = score_models(checkpoints, paths, matrix, features, eras, ensemble_weights(weights, len(paths)), settings)
    return metrics.rank_within_eras(values, eras), matrix, frame, features


def _file_predictions(config: ValidateConfig, data: _Data, notes: list[str]):
    predictions = read_predictions(config.predictions)
    features = data.features if config.exposure else []
    matrix, frame = _read_rows(data, features)
    data.row_ids = _row_ids(frame, data)
    name = source_name(config.predictions)
    position = data.row_ids.positions(predictions.index)  # the one lookup of the predictions' ids
    keep = _foreign_ids_note(predictions.rename(name), position, data, notes)
    if not keep.all():
        predictions, position = predictions[keep], position[keep]
    values = data.row_ids.place(predictions.index, predictions.to_numpy(), name, strict=True, position=position)
    return values, matrix, frame


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
    eras = metrics.group_eras(frame[schema.ERA])  # Arrow text is numbered in C, no Python strings
    target = frame[data.target].to_numpy(dtype=np.float64, na_value=np.nan)
    per_era = metrics.per_era_scores(predictions, target, eras)
    report = {
        "rows": int(len(predictions)),
        "eras": eras.n_eras,
        "target": data.target,
        "spearman": summary(per_era["spearman"]),
        "numerai_corr": summary(per_era["numerai_corr"]),
    }
    if data.source_dir is not None:
        meta = read_side_file(data.source_dir / schema.META_MODEL_FILE, schema.META_MODEL, row_ids, data.path,
                               notes)
        if meta is not None:
            per_era["mmc"] = metrics.per_era_mmc(predictions, meta, target, eras)
            report["mmc"] = summary(per_era["mmc"])
        example = read_side_file(data.source_dir / schema.VALIDATION_EXAMPLE_FILE, schema.PREDICTION, row_ids,
                                  data.path, notes)
        if example is not None:
            # Rank correlation per era with the example model: how much of it the model repeats.
            report["corr_with_example"] = summary(metrics.per_era_spearman(predictions, example, eras))
        benchmark = read_benchmark(data.source_dir, config.benchmark, row_ids, data.path, notes)
        if benchmark is not None:
            report["benchmark"], values = benchmark
            # Rows without a benchmark value (NaN) are left out of both, as MMC leaves out the meta model's.
            bmc = metrics.per_era_bmc(predictions, values, target, eras)
            with_benchmark = metrics.per_era_spearman(predictions, values, eras)
            per_era["bmc"], per_era["corr_with_benchmark"] = bmc, with_benchmark
            report["bmc"], report["corr_with_benchmark"] = summary(bmc), summary(with_benchmark)
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
        report["fnc"] = summary(fs.fnc)
        _exact_fit_note(fs.exact_fit_eras, matrix.shape[1], notes)
    if data.aux_targets:
        report["aux_targets"] = {
            name: summary(metrics.per_era_numerai_corr(
                predictions, frame[name].to_numpy(dtype=np.float64, na_value=np.nan), eras))
            for name in data.aux_targets}
    unscored = per_era["numerai_corr"].unscored
    report["eras_unscored"] = len(unscored)
    report["unscored_eras"] = unscored
    report["per_era"] = per_era_table(per_era)
    return report


# --- the stage ----------------------------------------------------------------------------------


def _check_memory(config: ValidateConfig, data: _Data) -> None:
    """Issue 20: the estimated peak against the memory available, before any row is read. Rows
    from the footers (an upper bound on a raw file's validation rows, counted exactly only when
    that bound does not fit); features: the checkpoint's, or those exposure reads."""
    if config.model is not None:
        from numerflow.checkpoint import load_checkpoint

        features = len(load_checkpoint(config.model)["features"])
    else:
        features = len(data.features) if config.exposure else 0
    targets = 1 + len(data.aux_targets)
    try:
        memory.check(memory.validate_estimate(sum(memory.parquet_rows(p.path) for p in data.files), features, targets),
                     config.memory_check)
    except memory.MemoryCheckError:
        where = (schema.DATA_TYPE, "validation")
        rows = sum(memory.parquet_rows(p.path, where if schema.DATA_TYPE in schema.parquet_columns(p.path) else None)
                   for p in data.files)
        memory.check(memory.validate_estimate(rows, features, targets), config.memory_check)




def validate(config: ValidateConfig) -> Report:
    """Score a model or a predictions file era by era; write the report files unless told not to."""
    if config.predictions is None and config.model is None and config.ensemble is None:
        raise ConfigError("validate: give --model, --ensemble or --predictions")
    data = _describe_files(_data_paths(config), config)
    _check_memory(config, data)
    notes: list[str] = []
    if config.predictions is not None:
        source = Path(source_name(config.predictions))
        predictions, matrix, frame = _file_predictions(config, data, notes)
    elif config.ensemble is not None:
        source = Path(config.ensemble)
        predictions, matrix, frame = _ensemble_predictions(config, data)
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
