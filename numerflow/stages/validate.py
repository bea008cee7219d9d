"""validate stage: score a checkpoint (or any model's id,prediction file) era by era on validation
data with Numerai's definitions, and write reports/<name>/{report.json, per_era.csv, per_era.png}.

Data may be a prepared validation.parquet (the default) or a raw Numerai one (rows with
data_type == "validation" are kept), or several files whose rows are scored as one set (a cv run's
out-of-fold predictions cover prepared train.parquet and validation.parquet).
meta_model.parquet and validation_example_preds.parquet are looked up beside a raw file, or in the
version folder a prepared file came from (its manifest's `version_dir`); without them MMC and the
example correlation are left out with a note.

The data files are described and read by numerflow.workflow.validation_rows (a frozen
description, shared with compare); this module gets the predictions on those rows and scores
them, each step returning its notes; ids are matched by numerflow.scoring.ids, the side files
read by numerflow.scoring.side_files, and the report's format (printed, written, read back) is
numerflow.reports'.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from numerflow import binning, memory, metrics, schema
from numerflow.config_base import DEFAULT_REPORTS_DIR
from numerflow.config import ValidateConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.provenance import PROVENANCE, make_record, prepared_folder_of
from numerflow.reports import REPORT_FILE, Report, json_safe, per_era_table, summary, write_report
from numerflow.scoring.ids import RowIds
from numerflow.scoring.side_files import read_benchmark, read_side_file
from numerflow.workflow import benchmark_rows
from numerflow.workflow.model_scores import ensemble_ranks
from numerflow.workflow.validation_rows import (ValidationData, ValidationRows, data_paths, describe_files,
                                                read_predictions, read_rows, row_ids, source_name)


@dataclass(frozen=True)
class _Predicted:
    """Predictions aligned with the rows read (NaN where a row has none), and what came with them."""

    values: np.ndarray
    rows: ValidationRows
    data: ValidationData  # its features: those the predictions' exposure is measured against
    row_ids: RowIds | None = None  # hashed already when predictions were matched by id
    notes: tuple[str, ...] = ()


# --- notes --------------------------------------------------------------------------------------


def _exact_fit_notes(eras: list[str], n_features: int) -> list[str]:
    if not eras:
        return []
    shown = ", ".join(eras[:10]) + (" ..." if len(eras) > 10 else "")
    return [f"FNC left out in {len(eras)} era(s) with no more rows than the {n_features} features plus "
            f"a constant (the neutralising fit is exact there, its score rounding noise): {shown}"]


def _feature_notes(config: ValidateConfig, data: ValidationData, rows: ValidationRows) -> list[str]:
    """Say why exposure and FNC are absent, instead of leaving them out silently, and how
    continuous features were read."""
    notes = []
    if rows.binned:
        notes.append(f"continuous features in {data.path.name}: read as {binning.SUPPORTED_BINS} equal-frequency "
                     f"buckets within each era (as `prepare --bin-features {binning.SUPPORTED_BINS}`)")
    if config.exposure and (rows.matrix is None or not rows.matrix.shape[1]):
        notes.append(f"no feature columns known for {data.path} (no prepare manifest, no features.json set, no "
                     f"feature_*/featureN columns): feature exposure and FNC left out")
    return notes


def _foreign_ids(predictions, position: np.ndarray, data: ValidationData) -> tuple[np.ndarray, list[str]]:
    """Predictions for ids that are the file's other rows (test/live rows of an all-in-one
    tournament file) are not errors: they are left out with a note. Returns which predictions to
    place (a boolean mask) and the note; ids in no row of the file stay for RowIds.place to refuse.
    `position`: the predictions' rows in the data (RowIds.positions), looked up once."""
    keep = np.ones(len(position), dtype=bool)
    unknown = position < 0
    raw = [part.path for part in data.files if schema.DATA_TYPE in schema.parquet_columns(part.path)]
    if not raw or not unknown.any():
        return keep, []
    import pandas as pd

    kinds = pd.concat([_row_kinds(path) for path in raw])
    other = kinds.index.isin(predictions.index[unknown])
    if not other.any():
        return keep, []
    if other.sum() == len(predictions):
        raise DataError(f"{predictions.name}: none of its {len(predictions)} id(s) are validation rows of "
                        f"{data.path} (they are {_counts(kinds[other])} rows); validate scores data_type == 'validation' rows")
    keep[unknown] = ~predictions.index[unknown].isin(kinds.index[other])
    return keep, [f"{int(other.sum()):,} predicted id(s) are {_counts(kinds[other])} rows of {data.path.name}, not "
                  f"validation rows: left out"]


def _row_kinds(path: Path):
    """A raw file's data_type per row, indexed by id."""
    import pyarrow.parquet as pq

    import pandas as pd

    table = pq.read_table(path, columns=[schema.ID, schema.DATA_TYPE])
    return pd.Series(table.column(schema.DATA_TYPE).cast("string").to_numpy(zero_copy_only=False),
                     index=table.column(schema.ID).cast("string").to_numpy(zero_copy_only=False)).astype(str)


def _counts(kinds) -> str:
    return ", ".join(f"{count:,} {kind}" for kind, count in kinds.value_counts().sort_index().items())


# --- predictions on the rows: a checkpoint's, an ensemble's, a file's ------------------------------


def _model_predictions(config: ValidateConfig, data: ValidationData) -> _Predicted:
    """Load the checkpoint, read its features from the data, and predict every row."""
    from numerflow.checkpoint import load_checkpoint, load_model, predict_scores
    from numerflow.devices import resolve_device

    checkpoint = load_checkpoint(config.model)
    features = list(checkpoint["features"])
    rows = read_rows(data, features, needed_by=config.model)
    model = load_model(checkpoint)
    device = resolve_device(config.device)
    raw = predict_scores(model, rows.matrix, device=device, predict_with=checkpoint.get("predict_with", "main"),
                         batch_rows=config.batch_size)
    bad = int((~np.isfinite(raw)).sum())
    if bad:
        raise CheckpointError(f"{config.model}: the model produced {bad} non-finite prediction(s)")
    # exposure is measured against the features the model saw
    return _Predicted(raw.astype(np.float64), rows, replace(data, features=tuple(features)))


def _ensemble_predictions(config: ValidateConfig, data: ValidationData) -> _Predicted:
    ranks, rows, features = ensemble_ranks(config.ensemble, data, config)
    # exposure is measured against the features the members saw
    return _Predicted(ranks, rows, replace(data, features=tuple(features)))


def _file_predictions(config: ValidateConfig, data: ValidationData) -> _Predicted:
    predictions = read_predictions(config.predictions)
    rows = read_rows(data, data.features if config.exposure else [])
    ids = row_ids(rows, data)
    name = source_name(config.predictions)
    position = ids.positions(predictions.index)  # the one lookup of the predictions' ids
    keep, notes = _foreign_ids(predictions.rename(name), position, data)
    if not keep.all():
        predictions, position = predictions[keep], position[keep]
    values = ids.place(predictions.index, predictions.to_numpy(), name, strict=True, position=position)
    return _Predicted(values, rows, data, ids, tuple(notes))


# --- scores -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scoring:
    """The rows that have a prediction, as score() reads them."""

    predictions: np.ndarray
    frame: object
    matrix: np.ndarray | None
    row_ids: RowIds
    target: np.ndarray
    eras: object  # metrics.group_eras of the rows


def _rows_with_predictions(predicted: _Predicted) -> tuple[_Scoring, list[str]]:
    """Only the rows with a prediction are scored: a note says how many have none."""
    predictions, frame, matrix = predicted.values, predicted.rows.frame, predicted.rows.matrix
    data = predicted.data
    with_prediction = np.isfinite(predictions)
    if not with_prediction.any():
        raise DataError(f"{data.path}: no rows to score")
    ids = predicted.row_ids if predicted.row_ids is not None else row_ids(predicted.rows, data)
    notes = []
    if not with_prediction.all():
        ids = ids.restricted_to(with_prediction)
        notes.append(f"{int((~with_prediction).sum()):,} validation rows have no prediction: scored the "
                     f"{int(with_prediction.sum()):,} that do")
        predictions, frame = predictions[with_prediction], frame[with_prediction]
        matrix = matrix[with_prediction] if matrix is not None and matrix.shape[1] else matrix
    eras = metrics.group_eras(frame[schema.ERA])  # Arrow text is numbered in C, no Python strings
    target = frame[data.target].to_numpy(dtype=np.float64, na_value=np.nan)
    return _Scoring(predictions, frame, matrix, ids, target, eras), notes


def _side_file_scores(rows: _Scoring, data: ValidationData, config: ValidateConfig):
    """MMC, the example model's and the benchmark's scores from the version folder's side files:
    (report entries, per-era entries, notes)."""
    if data.source_dir is None:
        if config.benchmark is not None:
            raise DataError(f"--benchmark {config.benchmark}: no source data folder known for {data.path}, "
                            f"so no {schema.VALIDATION_BENCHMARK_FILE} to read")
        return {}, {}, ["no source data folder known: MMC, BMC and corr_with_example left out"]
    report, per_era, notes = {}, {}, []  # notes: read_side_file and read_benchmark add theirs
    predictions, target, eras = rows.predictions, rows.target, rows.eras
    meta = read_side_file(data.source_dir / schema.META_MODEL_FILE, schema.META_MODEL, rows.row_ids, data.path, notes)
    if meta is not None:
        per_era["mmc"] = metrics.per_era_mmc(predictions, meta, target, eras)
        report["mmc"] = summary(per_era["mmc"])
    example = read_side_file(data.source_dir / schema.VALIDATION_EXAMPLE_FILE, schema.PREDICTION, rows.row_ids,
                             data.path, notes)
    if example is not None:
        # Rank correlation per era with the example model: how much of it the model repeats.
        report["corr_with_example"] = summary(metrics.per_era_spearman(predictions, example, eras))
    benchmark = read_benchmark(data.source_dir, config.benchmark, rows.row_ids, data.path, notes)
    if benchmark is not None:
        report["benchmark"], values = benchmark
        # Rows without a benchmark value (NaN) are left out of both, as MMC leaves out the meta model's.
        bmc = metrics.per_era_bmc(predictions, values, target, eras)
        with_benchmark = metrics.per_era_spearman(predictions, values, eras)
        per_era["bmc"], per_era["corr_with_benchmark"] = bmc, with_benchmark
        report["bmc"], report["corr_with_benchmark"] = summary(bmc), summary(with_benchmark)
    return report, per_era, notes


def _feature_scores(rows: _Scoring, config: ValidateConfig):
    """Feature exposure and FNC against the features read: (report entries, per-era entries, notes)."""
    matrix = rows.matrix
    if not (config.exposure and matrix is not None and matrix.shape[1]):
        return {}, {}, []
    fs = metrics.feature_scores(rows.predictions, matrix, rows.target, rows.eras)
    exposure = json_safe({"max": float(np.nanmean(fs.max_exposure.values))
                          if np.isfinite(fs.max_exposure.values).any() else None,
                          "rms": float(np.nanmean(fs.rms_exposure.values))
                          if np.isfinite(fs.rms_exposure.values).any() else None,
                          "features": int(matrix.shape[1])})
    return ({"feature_exposure": exposure, "fnc": summary(fs.fnc)}, {"fnc": fs.fnc},
            _exact_fit_notes(fs.exact_fit_eras, matrix.shape[1]))


def _aux_target_scores(rows: _Scoring, data: ValidationData) -> dict:
    if not data.aux_targets:
        return {}
    return {"aux_targets": {
        name: summary(metrics.per_era_numerai_corr(
            rows.predictions, rows.frame[name].to_numpy(dtype=np.float64, na_value=np.nan), rows.eras))
        for name in data.aux_targets}}


def score(predicted: _Predicted, config: ValidateConfig) -> tuple[dict, list[str]]:
    """The report dict for aligned predictions (NaN where a row has none), and its notes."""
    rows, notes = _rows_with_predictions(predicted)
    data = predicted.data
    per_era = metrics.per_era_scores(rows.predictions, rows.target, rows.eras)
    report = {
        "rows": int(len(rows.predictions)),
        "eras": rows.eras.n_eras,
        "target": data.target,
        "spearman": summary(per_era["spearman"]),
        "numerai_corr": summary(per_era["numerai_corr"]),
    }
    for scores, per_era_scores, more_notes in (_side_file_scores(rows, data, config), _feature_scores(rows, config)):
        report.update(scores)
        per_era.update(per_era_scores)
        notes += more_notes
    report.update(_aux_target_scores(rows, data))
    unscored = per_era["numerai_corr"].unscored
    report["eras_unscored"] = len(unscored)
    report["unscored_eras"] = unscored
    report["per_era"] = per_era_table(per_era)
    return report, notes


# --- the stage ----------------------------------------------------------------------------------


def _check_memory(config: ValidateConfig, data: ValidationData) -> None:
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


def _predictions(config: ValidateConfig, data: ValidationData) -> tuple[Path, _Predicted]:
    """What is scored (its path, for the report) and its predictions on the data's rows."""
    if config.predictions is not None:
        return Path(source_name(config.predictions)), _file_predictions(config, data)
    if config.ensemble is not None:
        return Path(config.ensemble), _ensemble_predictions(config, data)
    return Path(config.model), _model_predictions(config, data)


def _neutralised_to_benchmark(config: ValidateConfig, predicted: _Predicted) -> _Predicted:
    """--neutralize-benchmark P (or an --ensemble's stored P): a model's predictions ranked within
    eras and neutralised to the benchmark it is scored against, as predict writes them."""
    amount = benchmark_rows.proportion(config)
    if amount == 0:
        return predicted
    data, notes = predicted.data, []
    if data.source_dir is None:
        raise DataError(f"--neutralize-benchmark: no source data folder known for {data.path}, so no "
                        f"{schema.VALIDATION_BENCHMARK_FILE} to read")
    ids = row_ids(predicted.rows, data)
    benchmark = read_benchmark(data.source_dir, config.benchmark, ids, data.path, notes)
    if benchmark is None:
        raise DataError(f"--neutralize-benchmark: {notes[-1]}")
    column, values = benchmark
    eras = predicted.rows.frame[schema.ERA].astype(str).to_numpy()
    neutral, more = benchmark_rows.neutralise_ranks(metrics.rank_within_eras(predicted.values, eras), values, eras,
                                                    amount, f"{schema.VALIDATION_BENCHMARK_FILE} ({column})")
    return replace(predicted, values=neutral, row_ids=ids, notes=(*predicted.notes, *more))


def validate(config: ValidateConfig) -> Report:
    """Score a model or a predictions file era by era; write the report files unless told not to."""
    if config.predictions is None and config.model is None and config.ensemble is None:
        raise ConfigError("validate: give --model, --ensemble or --predictions")
    if config.predictions is not None and config.neutralize_benchmark:
        raise ConfigError("--neutralize-benchmark applies to --model or --ensemble, not to a --predictions file")
    data = describe_files(data_paths(config), config)
    _check_memory(config, data)
    source, predicted = _predictions(config, data)
    predicted = _neutralised_to_benchmark(config, predicted)
    scores, score_notes = score(predicted, config)
    notes = [*predicted.notes, *_feature_notes(config, data, predicted.rows), *score_notes]
    named = [str(p) for p in data.path] if data.parts else str(data.path)  # several files: a list
    report_dir = Path(config.report_dir) if config.report_dir else DEFAULT_REPORTS_DIR / source.stem
    report_data = {"source": str(source), "source_kind": _source_kind(config), "data": named, **scores,
                   "notes": notes, PROVENANCE: _provenance(config, data, report_dir / REPORT_FILE)}
    report = Report(data=json_safe(report_data), source=str(source), data_path=data.path, notes=notes)
    if config.write_report:
        report.report_dir = report_dir
        write_report(report)
    return report


def _source_kind(config: ValidateConfig) -> str:
    """The option that names the source: `numerflow validate --<kind> SOURCE` writes the report again."""
    return "predictions" if config.predictions is not None else "ensemble" if config.ensemble is not None else "model"


def _provenance(config: ValidateConfig, data: ValidationData, report_file: Path) -> dict:
    """The checkpoints scored (the model, or the ensemble's members) with their SHA-256, and the
    prepared data's fingerprint when the files are one prepared folder's."""
    from numerflow.ensembles import load_ensemble

    checkpoints = [config.model] if config.model is not None else \
        load_ensemble(config.ensemble)[0] if config.ensemble is not None else []
    prepared = {prepared_folder_of(part.path) for part in data.files}
    return make_record(report_file, checkpoints, prepared.pop() if len(prepared) == 1 else None,
                       [data.target, *data.aux_targets])
