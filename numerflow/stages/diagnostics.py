"""diagnostics stage: Numerai's own diagnostics of validation predictions, beside numerflow's.

Order: the model's id (credentials and name checked before anything slow), the predictions (a
file, or checkpoints predicting the validation file), the check that they cover every validation
id, numerflow's numbers for them (validate's scoring, unchanged), the upload (numerapi's
upload_diagnostics steps), polling until Numerai reports the run done or failed or --timeout
passes, then the table and reports/<name>/diagnostics.json (Numerai's answer as it came, and the
two side by side). Nothing is written unless the run is done.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import schema
from numerflow.config_base import DEFAULT_REPORTS_DIR
from numerflow.config import DiagnosticsConfig, PredictConfig, ValidateConfig
from numerflow.errors import ApiError, ConfigError, DataError
from numerflow.files import write_json
from numerflow.reports import json_safe

DIAGNOSTICS_FILE = "diagnostics.json"
# Numerai's summary key, its rating key, and where validate's report holds the same number.
SIDE_BY_SIDE = [
    ("CORR mean", "validationCorrMean", "validationCorrMeanRating", ("numerai_corr", "mean")),
    ("CORR std", "validationCorrStd", "validationCorrStdRating", ("numerai_corr", "std")),
    ("CORR sharpe", "validationCorrSharpe", "validationCorrSharpeRating", ("numerai_corr", "sharpe")),
    ("CORR max drawdown", "validationMaxDrawdown", "validationMaxDrawdownRating", ("numerai_corr", "max_drawdown")),
    ("MMC mean", "validationMmcMean", "validationMmcMeanRating", ("mmc", "mean")),
    ("MMC std", "validationMmcStd", "validationMmcStdRating", ("mmc", "std")),
    ("MMC sharpe", "validationMmcSharpe", "validationMmcSharpeRating", ("mmc", "sharpe")),
    ("BMC mean", "validationBmcMean", None, ("bmc", "mean")),
    ("FNC mean", "validationFeatureNeutralCorrMean", "validationFeatureNeutralCorrMeanRating", ("fnc", "mean")),
    ("corr with example preds", "examplePredsCorrMean", None, ("corr_with_example", "mean")),
    ("max feature exposure", "validationFeatureCorrMax", "validationFeatureCorrMaxRating", ("feature_exposure", "max")),
]
CHECKED = ("CORR mean", "MMC mean")  # same definitions on both sides: a difference means different data
# Numerai's site shows 4 decimals; both sides use numerai-tools' definitions, so on the same rows
# they agree far closer than this.
TOLERANCE = 1e-4
SAY_EVERY_SECONDS = 60.0  # a progress line at least this often while the run is unchanged


@dataclass
class DiagnosticsResult:
    model_name: str
    diagnostics_id: str
    source: str  # the predictions file, or the checkpoints
    data: Path
    numerai: dict  # Numerai's answer as it came
    table: list[dict]  # {metric, numerai, numerflow, difference, rating}
    mismatches: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def frame(self):
        """`table` as a DataFrame: metric, numerai, numerflow, difference, rating."""
        import pandas as pd

        return pd.DataFrame(self.table)

    def __str__(self) -> str:
        lines = [f"Numerai diagnostics {self.diagnostics_id} for model '{self.model_name}' ({self.source} on "
                 f"{self.data}):", f"{'':<26}{'Numerai':>10}{'numerflow':>11}{'diff':>9}{'rating':>8}"]
        for row in self.table:
            lines.append(f"{row['metric']:<26}{_fmt(row['numerai']):>10}{_fmt(row['numerflow']):>11}"
                         f"{_fmt(row['difference']):>9}{_fmt(row['rating'], 2):>8}")
        lines += self.mismatches
        if self.path is not None:
            lines.append(f"Saved: {self.path}")
        return "\n".join(lines)


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- inputs -------------------------------------------------------------------------------------

def validation_file(config: DiagnosticsConfig) -> Path:
    if config.data is not None:
        path = Path(config.data)
    else:
        path = schema.find_version_dir(config.data_dir, config.version) / schema.VALIDATION_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found (run `numerflow download`, or pass --data)")
    return path


def validation_ids(path: Path):
    """The ids of the rows Numerai's diagnostics score: data_type == 'validation' where the file
    has a data_type column, else every row."""
    import pandas as pd
    import pyarrow.parquet as pq

    names = schema.parquet_columns(path)
    columns = [schema.ID] + ([schema.DATA_TYPE] if schema.DATA_TYPE in names else [])
    table = pq.read_table(path, columns=columns)
    ids = pd.Index(table.column(schema.ID).cast("string").to_numpy(zero_copy_only=False)).astype(str)
    if schema.DATA_TYPE in names:
        kinds = np.asarray(table.column(schema.DATA_TYPE).cast("string").to_numpy(zero_copy_only=False))
        ids = ids[kinds == "validation"]
    if not len(ids):
        raise DataError(f"{path}: no validation rows")
    return ids


def source_name(config: DiagnosticsConfig) -> str:
    from numerflow.workflow.validation_rows import source_name as named
    if config.ensemble is not None:
        return str(config.ensemble)
    return named(config.predictions) if config.predictions is not None else " + ".join(map(str, config.models))


def report_name(config: DiagnosticsConfig) -> str:
    if config.ensemble is not None:
        return Path(config.ensemble).name
    if config.predictions is not None:
        return Path(source_name(config)).stem
    return "+".join(Path(p).stem for p in config.models)


def read_or_predict(config: DiagnosticsConfig, data: Path):
    """The predictions as a float Series indexed by id: read, or predicted by the checkpoints or
    the fitted ensemble's members (rank-averaged within eras, as `predict` does)."""
    from numerflow.workflow.validation_rows import read_predictions

    if config.predictions is not None:
        return read_predictions(config.predictions)
    from numerflow.stages.predict import predict

    model = ({"ensemble": config.ensemble} if config.ensemble is not None
             else {"models": list(config.models), "weights": config.weights})
    frame = predict(PredictConfig(**model, data=data, device=config.device, batch_size=config.batch_size)).predictions
    return read_predictions(frame)


def covering(predictions, ids, source: str, data: Path):
    """The predictions of the validation ids, in their order; DataError naming the missing ones."""
    missing = ids[~ids.isin(predictions.index)]
    if len(missing):
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{source}: {len(missing):,} of the {len(ids):,} validation ids of {data} have no prediction "
                        f"({shown}); Numerai's diagnostics need every one (the prepared validation rows leave out the "
                        f"embargo eras): `numerflow predict --model MODEL --data {data} --out validation_predictions.csv` "
                        f"predicts them all, or give diagnostics --model MODEL")
    if predictions.index.has_duplicates:
        raise DataError(f"{source}: {int(predictions.index.duplicated().sum())} duplicate id(s)")
    return predictions.loc[ids]


def local_numbers(predictions, data: Path) -> dict:
    """validate's report dict for these predictions on this file (no report written)."""
    from numerflow.stages.validate import validate

    return validate(ValidateConfig(predictions=predictions.rename_axis(schema.ID), data=data,
                                   write_report=False)).data


# --- the run ------------------------------------------------------------------------------------

def wait_for_run(api, model_id: str, run_id: str, config: DiagnosticsConfig, say: Callable[[str], None],
                 clock=time.monotonic, sleep=time.sleep) -> dict:
    """Ask for the run's status every poll_interval seconds until Numerai reports it done; ApiError
    when it reports it failed or when --timeout passes first."""
    from numerflow.numerai.diagnostics import DONE, diagnostics_result, run_state

    start, said, last = clock(), -math.inf, None
    while True:
        answer = diagnostics_result(api, model_id, run_id)
        state, elapsed = run_state(answer), clock() - start
        if answer.get("status") != last or elapsed - said >= SAY_EVERY_SECONDS:
            say(f"Numerai diagnostics {run_id}: {answer.get('status')} ({elapsed:.0f}s)")
            said, last = elapsed, answer.get("status")
        if state == DONE:
            return answer
        if state == "failed":
            raise ApiError(f"Numerai reports diagnostics run {run_id} failed: "
                           f"{answer.get('message') or 'no reason given'}")
        if elapsed + config.poll_interval > config.timeout:
            raise ApiError(f"Numerai's diagnostics run {run_id} was still '{answer.get('status')}' after "
                           f"{elapsed:.0f}s (--timeout {config.timeout:g}s); its result stays on numer.ai")
        sleep(config.poll_interval)


def side_by_side(numerai: dict, local: dict) -> tuple[list[dict], list[str]]:
    """The table's rows (where either side has the number) and one line per disagreement."""
    table, mismatches = [], []
    for label, key, rating_key, (score, stat) in SIDE_BY_SIDE:
        theirs, ours = _number(numerai.get(key)), _number((local.get(score) or {}).get(stat))
        if theirs is None and ours is None:
            continue
        difference = None if theirs is None or ours is None else ours - theirs
        table.append({"metric": label, "numerai": theirs, "numerflow": ours, "difference": difference,
                      "rating": _number(numerai.get(rating_key)) if rating_key else None, "numerai_key": key})
        if label in CHECKED and difference is not None and abs(difference) > TOLERANCE:
            mismatches.append(f"Mismatch: {label} is {theirs:.4f} at Numerai and {ours:.4f} here (difference "
                              f"{difference:+.4f}): the local validation data or meta model is not Numerai's "
                              f"(check the version and download it again)")
    return table, mismatches


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def diagnostics(config: DiagnosticsConfig, say: Callable[[str], None]) -> DiagnosticsResult:
    from numerflow import numerai
    from numerflow.numerai.diagnostics import upload_diagnostics

    data = validation_file(config)
    api = numerai.client()
    model_name, model_id = _model_id(api, config.model_name)
    source = source_name(config)
    predictions = covering(read_or_predict(config, data), validation_ids(data), source, data)
    local = local_numbers(predictions, data)
    with tempfile.TemporaryDirectory(prefix="numerflow-diagnostics-") as folder:
        upload = Path(folder) / f"{report_name(config)}_validation.csv"
        predictions.rename_axis(schema.ID).rename(schema.PREDICTION).to_frame().to_csv(upload)
        run_id = upload_diagnostics(api, upload, model_id)
    say(f"Uploaded {len(predictions):,} validation predictions for model '{model_name}': diagnostics run {run_id}")
    answer = wait_for_run(api, model_id, run_id, config, say)
    table, mismatches = side_by_side(answer, local)
    result = DiagnosticsResult(model_name, run_id, source, data, answer, table, mismatches)
    out = Path(config.report_dir) if config.report_dir else DEFAULT_REPORTS_DIR / report_name(config)
    result.path = write_json(out / DIAGNOSTICS_FILE, json_safe({
        "model_name": model_name, "diagnostics_id": run_id, "source": source, "data": str(data),
        "numerai": answer, "side_by_side": table, "mismatches": mismatches,
        "numerflow": {k: v for k, v in local.items() if k != "per_era"}}))
    return result


def _model_id(api, name: str | None) -> tuple[str, str]:
    from numerflow import numerai

    ids = numerai.model_ids(api)
    if name is None:
        if len(ids) != 1:
            raise ConfigError(f"--model-name: the account has {len(ids)} models ({', '.join(sorted(ids)) or 'none'}); "
                              f"name one")
        name = next(iter(ids))
    if name not in ids:
        raise ConfigError(f"--model-name {name}: not a model of this account ({', '.join(sorted(ids)) or 'none'})")
    return name, ids[name]
