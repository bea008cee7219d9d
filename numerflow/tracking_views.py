"""What each tracked command logs to MLflow, read from what the stage returned and the files it
wrote (issue 28): the files under reports/, cv/, sweeps/, ensembles/ and compare/ stay the source
of truth, MLflow is a view of them. One function per command; the stages know nothing of MLflow.

python_api.py runs every tracked stage as

    plan = tracking_views.plan(settings)      # before the work: a bad [tracking] table is an Error
    result = run_stage(settings)
    tracking_views.record("train", result, settings, plan)

`record` writes the command's runs down (tracking.RecordedRun: plain data, no MLflow), makes the
cheap checks (tracking.preflight) and hands the runs to a detached logging process,
`python -m numerflow.tracking_jobs`, so the command returns without waiting
seconds for `import mlflow` and the store; `[tracking] wait = true` / NUMERFLOW_TRACK_WAIT=1 waits.

Nothing here fails a command: a bad URI or a server that does not answer is one warning line, a
file this module cannot read is the same one warning, and a failure in the logging process goes
to .numerflow/tracking.log (the next tracked command says so in one warning line).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from pathlib import Path

from numerflow import tracking, tracking_jobs
from numerflow.provenance import manifest_fingerprint
from numerflow.tracking import DATA_VERSION_TAG, FINGERPRINT_TAG, TrackingConfig

TRACK_ENV = "NUMERFLOW_TRACK"  # 0/false/no/off: the Python API's (and the CLI's) --no-track
OFF_WORDS = {"0", "false", "no", "off"}
MANIFEST = "manifest.json"  # the prepared folder's manifest (stages/prepare.py)
TRIAL_COLUMNS = {"number", "state", "score", "epochs", "best_epoch", "folds", "best_fold", "seconds", "finished_s"}
METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow accepts in a metric key


def plan(settings) -> TrackingConfig | None:
    """Where this command's run goes, or None when it is not tracked (--no-track, NUMERFLOW_TRACK=0,
    `[tracking] enabled = false`, or no mlflow installed: then nothing of MLflow is imported)."""
    if not getattr(settings, "track", True) or os.environ.get(TRACK_ENV, "1").strip().lower() in OFF_WORDS:
        return None
    if not tracking.mlflow_installed():
        return None
    config = tracking.tracking_config()
    return config if config.enabled else None


def record(kind: str, result, settings, config: TrackingConfig | None) -> None:
    """Log `result` of command `kind` (train, cv, sweep, ensemble, validate, compare)."""
    if config is None or result is None:
        return
    job = Job()
    try:
        RECORDERS[kind](result, settings, job)
    except Exception as exc:  # a result file that cannot be read: tracking never fails the command
        tracking.warn(f"MLflow tracking of this {kind} run skipped: {exc}")
        return
    if job.runs:
        tracking_jobs.submit(job.runs, config)


class Job:
    """The runs one command logs, written down in order (each a RecordedRun's spec)."""

    def __init__(self):
        self.runs: list[dict] = []

    @contextlib.contextmanager
    def run(self, kind: str, name: str, settings=None, tags: dict | None = None):
        recorded = tracking.RecordedRun(kind, name, settings, tags)
        self.runs.append(recorded.spec)
        yield recorded


# --- the commands --------------------------------------------------------------------------------


def record_train(result, settings, job: Job) -> None:
    """Every setting, the per-epoch rows of model.json as metric histories, the best epoch's
    scores, model.json (and the checkpoint's validate report, when one was written) as artifacts."""
    if result.config_json is None:  # a torchrun rank other than 0 writes nothing
        return
    sidecar = _read_json(result.config_json)
    with job.run("train", Path(result.checkpoint).stem, settings, _data_tags(settings.data)) as run:
        _log_epochs(run, sidecar.get("metrics", []))
        best = result.best
        run.log_final({**{f"best_{key}": value for key, value in best.items() if key != "epoch"},
                       "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": result.seconds})
        run.log_artifacts([result.config_json])
        report = Path("reports") / Path(result.checkpoint).stem
        run.log_artifacts([p for p in (report / "report.json", report / "per_era.png") if p.is_file()], "report")


def record_cv(result, settings, job: Job) -> None:
    """A parent run (settings, the out-of-fold summary, report.json) with a child per fold (its
    plan, scores and per-epoch training rows)."""
    report = result.data
    with job.run("cv", settings.name, settings, _data_tags(settings.data)) as run:
        run.log_final(_flat(report.get("overall", {})) | {"folds_run": result.folds_run, "seconds": result.seconds})
        run.log_artifacts([result.report])
        for fold in report.get("folds", []):
            number = fold.get("fold", len(report["folds"]))
            with run.child(f"fold {number}", {k: v for k, v in fold.items() if not isinstance(v, dict)}) as child:
                # train_loss there is the last epoch's, already the last point of the history below
                child.log_final({k: v for k, v in _flat(fold).items() if k != "train_loss"})
                record_file = Path(result.folder) / "folds" / f"fold_{number}.json"
                if record_file.is_file():
                    _log_epochs(child, _read_json(record_file).get("epochs", []))


def record_sweep(result, settings, job: Job) -> None:
    """A parent run (settings, the best trial, the deflated Sharpe, trials.csv and best.json) with a
    child per trial (its row of trials.csv: params and score)."""
    out_dir = Path(result.out_dir)
    with job.run("sweep", out_dir.name, settings, _data_tags(settings.data)) as run:
        best = result.best or {}
        deflated = result.deflated or {}
        run.log_final({"trials": result.trials, "pruned": result.pruned, "failed": result.failed,
                       "best_score": best.get("score"), "best_trial": best.get("number"),
                       "seconds": result.seconds, **{f"deflated_{k}": v for k, v in deflated.items()}})
        run.log_artifacts([p for p in (out_dir / "trials.csv", out_dir / "best.json", out_dir / "sweep.json")
                           if p.is_file()])
        for row in _read_csv(out_dir / "trials.csv"):
            params = {k: v for k, v in row.items() if k not in TRIAL_COLUMNS}
            with run.child(f"trial {row.get('number')}", params, {"numerflow.trial_state": row.get("state", "")}) as child:
                child.log_final({k: _float(v) for k, v in row.items() if k in TRIAL_COLUMNS - {"state"}})


def record_ensemble(result, settings, job: Job) -> None:
    """Settings, the members and their weights, the objective's score, ensemble.json."""
    record_data = result.record
    folder = Path(result.folder)
    with job.run("ensemble", folder.name, settings, _ensemble_data_tags(settings.candidates)) as run:
        members = record_data.get("members", [])
        run.log_params({f"member_{i}": m.get("source") for i, m in enumerate(members, start=1)})
        best_single = max((c.get("objective", -math.inf) for c in record_data.get("candidates", [])), default=None)
        run.log_final({"ensemble_objective": record_data.get("ensemble_objective"), "kept_steps":
                       record_data.get("kept_steps"), "best_single_objective": best_single, "seconds": result.seconds,
                       **{f"weight_member_{i}": m.get("weight") for i, m in enumerate(members, start=1)}})
        for step in record_data.get("steps", []):
            run.log_metrics(step.get("step", 0), {"step_objective": step.get("objective")})
        run.log_artifacts([result.ensemble_json])


def record_validate(report, settings, job: Job) -> None:
    """report.json's summaries (CORR, BMC, MMC, sharpe, max drawdown, payout, ...) as metrics,
    report.json and per_era.png as artifacts."""
    name = Path(report.report_dir).name if report.report_dir else Path(str(report.source)).stem
    data = settings.data[0] if isinstance(settings.data, list) else settings.data
    prepared = Path(data).parent if data is not None else Path(settings.data_dir) / "prepared"
    with job.run("validate", name, settings, _data_tags(prepared)) as run:
        run.log_params({"source": report.source})
        run.log_final(_flat(report.data))
        run.log_artifacts([p for p in report.files if p.suffix in (".json", ".png", ".csv")])


def record_compare(result, settings, job: Job) -> None:
    """compare.csv, compare.json and cumulative.png as artifacts; each row's headline metrics in a
    child run per model, so MLflow's UI can chart them side by side."""
    folder = Path(result.folder) if result.folder else Path(settings.compare_dir) / settings.name
    data = settings.data[0] if settings.data else Path(settings.data_dir) / "prepared" / "validation.parquet"
    with job.run("compare", folder.name, settings, _data_tags(Path(data).parent)) as run:
        run.log_final({"models": len(result.table), "eras": result.summary.get("eras"), "rows": result.summary.get("rows")})
        run.log_artifacts([p for p in result.files if p.suffix in (".csv", ".json", ".png")])
        for row in result.table.to_dict("records"):
            with run.child(str(row.get("model")), {"model": row.get("model")}) as child:
                child.log_final({k: v for k, v in row.items() if k != "model"})


RECORDERS = {"train": record_train, "cv": record_cv, "sweep": record_sweep, "ensemble": record_ensemble,
             "validate": record_validate, "compare": record_compare}


# --- reading the files ---------------------------------------------------------------------------


def _data_tags(prepared) -> dict:
    """The data version and the prepared data's fingerprint, from the prepared folder's manifest:
    provenance's fingerprint, the one reports, cv runs, sweeps and ensembles record."""
    manifest_path = Path(prepared) / MANIFEST if prepared is not None else None
    if manifest_path is None or not manifest_path.is_file():
        return {}
    manifest = _read_json(manifest_path)
    return {DATA_VERSION_TAG: manifest.get("version", ""), FINGERPRINT_TAG: manifest_fingerprint(manifest)}


def _ensemble_data_tags(candidates) -> dict:
    """An ensemble's data: the prepared folder its first candidate (cv run or sweep) was run on."""
    for candidate in candidates or []:
        for name in ("report.json", "sweep.json"):
            path = Path(candidate) / name
            if path.is_file() and _read_json(path).get("data"):
                return _data_tags(Path(_read_json(path)["data"]))
    return {}


def _log_epochs(run, rows: list) -> None:
    """Per-epoch rows ({"epoch": 1, "train_loss": ..., "val_mean": ...}) as metric histories."""
    for index, row in enumerate(rows, start=1):
        run.log_metrics(int(row.get("epoch", index)), {k: v for k, v in row.items() if k != "epoch"})


def _flat(summary: dict) -> dict:
    """A report's numbers as metric keys: top-level numbers, and each summary's numbers as
    <summary>_<field> (numerai_corr_mean, bmc_sharpe, ...); nested deeper is left out."""
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{sub}": v for sub, v in value.items() if not isinstance(v, (dict, list))})
        elif not isinstance(value, list):
            flat[key] = value
    return {METRIC_KEY.sub("_", k): v for k, v in flat.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v)}


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _read_json(path) -> dict:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
