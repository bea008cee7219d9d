"""predict stage: score a live (or any Numerai-layout) Parquet file with one checkpoint or a
rank-averaged ensemble of several, rank within eras into (0, 1), optionally neutralise against the
features, and return them (a DataFrame indexed by id); write `id,prediction` atomically when asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import binning, memory, schema
from numerflow.config_base import DEFAULT_PREDICTIONS_DIR
from numerflow.config import PredictConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.files import atomic_path
from numerflow.workflow import benchmark_rows
from numerflow.workflow.model_scores import ensemble_weights, refuse_overwriting_inputs, score_models, union_of_features
from numerflow.workflow.postprocess import era_labels, rank_per_era
from numerflow.workflow.round_inputs import live_file



@dataclass
class PredictResult:
    predictions: object  # pandas DataFrame indexed by id, one `prediction` column
    out: Path | None  # the file written; None: none was asked for
    data: Path
    models: list[Path]
    rows: int
    eras: int
    round: int | None
    mean: float
    std: float
    neutralize: float = 0.0
    neutralize_benchmark: float = 0.0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # --neutralize-benchmark: the rows without a benchmark value
    ensemble: Path | None = None  # --ensemble: the folder `models` came from

    @property
    def frame(self):
        """The predictions as a DataFrame indexed by id (every table-like result has `.frame`)."""
        return self.predictions

    def __str__(self) -> str:
        names = ", ".join(p.name for p in self.models) if self.ensemble is None else \
            f"the ensemble {self.ensemble} ({len(self.models)} member(s))"
        round_text = f"round {self.round}" if self.round is not None else "no round marker"
        lines = [f"Predicted {self.rows:,} rows in {self.eras} era(s) of {self.data} ({round_text}) "
                 f"with {names}" + (f", neutralised {self.neutralize:g}" if self.neutralize else "")
                 + (f", neutralised {self.neutralize_benchmark:g} to the benchmark" if self.neutralize_benchmark else ""),
                 (f"Wrote {self.out}" if self.out is not None else "No file written") +
                 f" (mean {self.mean:.4f}, std {self.std:.4f})"]
        lines += [f"Note: {n}" for n in self.notes] + [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def default_output(models: list[Path], round_num: int | None) -> Path:
    stem = "+".join(Path(m).stem for m in models)
    return DEFAULT_PREDICTIONS_DIR / f"{stem}_{round_num if round_num is not None else 'live'}.csv"


def read_features(data: Path, features: list[str], columns: list[str], bins: int | None):
    """The int8 feature matrix: as stored, or binned within each era as prepare did for the
    checkpoints (continuous features of pre-2019 releases)."""
    if bins is None:
        return schema.read_matrix(data, features, columns)
    return binning.read_binned_matrix(data, features, columns, bins)


def exact_fit_warning(eras, n_features: int) -> list[str]:
    from numerflow.metrics import exact_fit_eras

    small = exact_fit_eras(eras, n_features)
    if not small:
        return []
    return [f"not neutralised in {len(small)} era(s) with no more rows than the {n_features} features plus a "
            f"constant (the fit is exact there: only rounding noise would be left): "
            + ", ".join(small[:10]) + (" ..." if len(small) > 10 else "")]


def predictions_frame(ids, values: np.ndarray):
    import pandas as pd

    return pd.DataFrame({schema.PREDICTION: values}, index=pd.Index(ids, name=schema.ID))


def write_predictions(frame, out: Path) -> None:
    """id,prediction columns (no pandas index metadata): what Numerai and other tools read."""
    columns = frame.reset_index()
    with atomic_path(out) as tmp:
        if out.suffix == ".csv":
            columns.to_csv(tmp, index=False)
        else:
            columns.to_parquet(tmp, index=False)


def predict(config: PredictConfig) -> PredictResult:
    from numerflow.metrics import neutralize, rank_within_eras
    from numerflow.checkpoint import load_checkpoint

    from numerflow.ensembles import models_and_weights

    model_paths, given_weights = models_and_weights(config)  # --ensemble: its members and weights
    if not model_paths:
        raise ConfigError("predict: give at least one --model")
    weights = ensemble_weights(given_weights, len(model_paths))
    to_benchmark = benchmark_rows.proportion(config)

    if config.data is None:
        data, round_num = live_file(config.data_dir, config.version)
    else:
        data = Path(config.data)
        # Only a live file's folder marker names its round; validation.parquet has none.
        round_num = schema.read_live_round(data.parent) if data.name == schema.LIVE_FILE else None
    out = Path(config.out) if config.out is not None else (
        default_output([config.ensemble] if config.ensemble else model_paths, round_num) if config.write else None)
    if out is not None:
        refuse_overwriting_inputs(out, [data, *model_paths])

    checkpoints = [load_checkpoint(p) for p in model_paths]
    columns = set(schema.parquet_columns(data))
    for path, checkpoint in zip(model_paths, checkpoints):
        # A checkpoint whose features are not all in the data cannot predict it: say which are absent.
        schema.require_columns(data, checkpoint["features"], columns, needed_by=path, error=CheckpointError)
    features = union_of_features([c["features"] for c in checkpoints])
    memory.check(memory.predict_estimate(memory.parquet_rows(data), len(features)), config.memory_check)  # issue 20
    matrix, frame = read_features(data, features, [schema.ERA] if schema.ERA in columns else [],
                                  binning.checkpoints_bins(checkpoints, model_paths))
    if matrix.shape[0] == 0:
        raise DataError(f"{data}: no rows")
    if frame.index.name != schema.ID:
        raise DataError(f"{data}: no '{schema.ID}' column or index")
    eras = era_labels(frame)  # the exported pickle's own reading of the eras
    if to_benchmark > 0:  # read before scoring: a missing benchmark fails in seconds
        benchmark, benchmark_source = benchmark_rows.benchmark_on_rows(data, frame.index.to_numpy(), sorted(columns),
                                                                       config.data_dir)

    # the pickle's own ranking (postprocess.rank_per_era: 4 ms on 7k live rows, 30 ms on 100k, where
    # metrics.rank_within_eras took 1 and 6); feature neutralising stays on metrics.neutralize (1.1 s on
    # live at 2,376 features, where postprocess.neutralise_per_era on a DataFrame took 5.2 s)
    ranked = rank_per_era(score_models(checkpoints, model_paths, matrix, features, eras, weights, config), eras)
    if config.neutralize > 0:
        # rounded to float32 as the exported pickle does, so identical rows stay tied in both
        ranked = rank_within_eras(neutralize(ranked, matrix, eras, config.neutralize).astype(np.float32), eras)
    notes = []
    if to_benchmark > 0:  # last, so that P = 1 leaves no per-era correlation with the benchmark
        ranked, notes = benchmark_rows.neutralise_ranks(ranked, benchmark, eras, to_benchmark, benchmark_source)

    predictions = predictions_frame(frame.index.to_numpy(), ranked)
    if out is not None:
        write_predictions(predictions, out)
    warnings = []
    if config.neutralize > 0:
        warnings += exact_fit_warning(eras, matrix.shape[1])
    if np.isclose(np.std(ranked), 0.0):
        warnings.append("predictions are constant; Numerai will refuse them")
    return PredictResult(predictions=predictions, out=out, data=data, models=model_paths, rows=len(ranked), eras=len(np.unique(eras)),
                         round=round_num, mean=float(np.mean(ranked)), std=float(np.std(ranked)),
                         neutralize=config.neutralize, neutralize_benchmark=to_benchmark, warnings=warnings, notes=notes,
                         ensemble=config.ensemble)
