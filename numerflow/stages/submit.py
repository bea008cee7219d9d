"""submit stage: check a predictions file against the live ids exactly as Numerai will, upload it
through numerflow.numerai, and keep a receipt per round and model so a job never submits twice.

Checks run before anything touches the network (and before credentials are needed), so
`--dry-run` proves a file would be accepted without keys."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.version import __version__
from numerflow.config_base import DEFAULT_PREDICTIONS_DIR
from numerflow.config import SubmitConfig
from numerflow.errors import DataError, SubmissionError
from numerflow.files import file_checksum, write_json
from numerflow.workflow.round_inputs import live_file, resolve_model_id

SHOWN_IDS = 3  # ids quoted in an error message


@dataclass
class SubmitResult:
    predictions: Path
    model_name: str | None
    round: int | None
    rows: int
    live_rows: int
    sha256: str
    dry_run: bool
    model_id: str | None = None
    submission_id: str | None = None
    receipt: Path | None = None
    recovered: bool = False  # an interrupted run's upload, found on Numerai: nothing uploaded now
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        model = f"model '{self.model_name}'" if self.model_name else "the account's only model"
        round_text = f"round {self.round}" if self.round is not None else "the current round"
        if self.dry_run:
            lines = [f"Dry run: {self.predictions} passes every check ({self.rows:,} rows covering all "
                     f"{self.live_rows:,} live ids); would submit it as {model} for {round_text}. Nothing uploaded."]
        elif self.recovered:
            lines = [f"Already submitted as {model} for {round_text} by an interrupted run (submission id "
                     f"{self.submission_id}, found on Numerai); not uploaded again", f"Receipt: {self.receipt}"]
        else:
            lines = [f"Submitted {self.predictions} as {model} for {round_text}: submission id "
                     f"{self.submission_id}", f"Receipt: {self.receipt}"]
        return "\n".join(lines + [f"Note: {n}" for n in self.notes])


# ---- the file checks (numerai_tools.submissions.validate_submission_numerai's rules, with counts)

def read_predictions(path: Path):
    """A predictions file (.csv or .parquet) as a DataFrame with `id` and `prediction` columns."""
    frame = schema.read_id_frame(path, SubmissionError, " (run `numerflow predict` first)")
    if list(frame.columns) != [schema.ID, schema.PREDICTION]:
        raise SubmissionError(f"{path}: columns must be exactly id,prediction (found {','.join(map(str, frame.columns))})")
    return frame


def read_live_ids(path: Path):
    """The ids of a live Parquet file (its `id` index or column), as strings."""
    import pyarrow.parquet as pq

    if schema.ID not in schema.parquet_columns(path):
        raise DataError(f"{path}: no '{schema.ID}' column or index")
    return pq.read_table(path, columns=[schema.ID]).column(schema.ID).to_pandas().astype(str)


def _examples(ids) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:SHOWN_IDS])) + (", ..." if len(ids) > SHOWN_IDS else "")


def submission_problems(frame, live_ids) -> list[str]:
    """Every reason Numerai would refuse this submission, each with a count; [] when it passes."""
    import pandas as pd

    problems = []
    ids = frame[schema.ID]
    if ids.isna().any():
        problems.append(f"{int(ids.isna().sum())} row(s) without an id")
    ids = ids.dropna().astype(str)
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicate id(s) ({_examples(duplicated)})")
    missing = pd.Index(live_ids).difference(pd.Index(ids))
    if len(missing):
        problems.append(f"{len(missing)} live id(s) missing ({_examples(missing)})")
    raw = frame[schema.PREDICTION]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)  # text → NaN
    nan = int(raw.isna().sum())
    unreadable = int(np.isnan(values).sum()) - nan
    if unreadable:
        problems.append(f"{unreadable} prediction(s) that are not numbers")
    elif raw.notna().any() and not pd.api.types.is_numeric_dtype(raw):
        problems.append(f"predictions stored as text ({raw.dtype}), not numbers")
    if nan:
        problems.append(f"{nan} NaN prediction(s)")
    outside = int(((values < 0) | (values > 1)).sum())
    if outside:
        problems.append(f"{outside} prediction(s) outside [0, 1]")
    if not problems and np.isclose(np.std(values), 0.0):
        problems.append("predictions are constant (zero standard deviation)")
    return problems


NO_SECOND_OPINION = "numerai-tools is not installed: its submission validator (a second opinion) did not run"


def second_opinion():
    """numerai-tools' validate_submission_numerai, or None where numerai-tools is not installed: it is
    an optional (dev) dependency, imported lazily; numerflow's own checks above apply its rules."""
    try:
        from numerai_tools.submissions import validate_submission_numerai
    except ImportError:
        return None
    return validate_submission_numerai


def check_submission(path: Path, live_path: Path) -> tuple[int, int]:
    """Raise a SubmissionError listing every problem of `path` against `live_path`'s ids; else
    (rows, live rows). numerai_tools' own validator runs last as a second opinion, where installed."""
    frame = read_predictions(path)
    live_ids = read_live_ids(live_path)
    problems = submission_problems(frame, live_ids)
    if problems:
        raise SubmissionError(f"{path}: " + "; ".join(problems) + f" (checked against {live_path})")
    validate_submission_numerai = second_opinion()
    if validate_submission_numerai is None:
        return len(frame), len(live_ids)
    try:
        validate_submission_numerai(live_ids.reset_index(drop=True), frame.astype({schema.ID: str}))
    except (AssertionError, TypeError, ValueError) as exc:
        raise SubmissionError(f"{path}: numerai-tools refuses it: {exc or type(exc).__name__}") from None
    return len(frame), len(live_ids)


# ---- receipts: one JSON per round and model

def receipt_path(receipts_dir: Path, round_num: int, model_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return Path(receipts_dir) / f"{round_num}_{safe}.json"


def intent_path(receipts_dir: Path, round_num: int, model_name: str) -> Path:
    """Written before uploading, removed once the receipt is written: an intent without a receipt
    means a run died around the upload, and Numerai is asked before uploading again."""
    receipt = receipt_path(receipts_dir, round_num, model_name)
    return receipt.with_name(receipt.stem + ".intent.json")


def read_receipt(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        # A corrupt receipt still proves something was submitted: refuse rather than double-submit.
        return {"submission_id": "unknown (unreadable receipt)", "submitted_at": "unknown"}


def refuse_resubmission(receipts_dir: Path, round_num: int, model_name: str) -> None:
    path = receipt_path(receipts_dir, round_num, model_name)
    receipt = read_receipt(path)
    if receipt is not None:
        raise SubmissionError(f"{path}: model '{model_name}' was already submitted for round {round_num} "
                              f"(submission {receipt.get('submission_id')} at {receipt.get('submitted_at')}); "
                              f"use --force to submit again")


def check_receipts_dir(folder: Path) -> None:
    """Fail before uploading, not after: an upload whose receipt cannot be written would be
    submitted again by the next run. Creates nothing (a failed upload leaves no folder behind)."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not a folder" if existing.exists() and not existing.is_dir() else "is not writable"
        raise SubmissionError(f"{folder}: cannot write receipts there ({existing} {problem}); nothing uploaded")


# ---- resolving defaults

def resolve_live(config: SubmitConfig) -> tuple[Path, int | None]:
    if config.live is not None:
        live = Path(config.live)
        return live, schema.read_live_round(live.parent) if live.name == schema.LIVE_FILE else None
    return live_file(config.data_dir, config.version)


def resolve_predictions(config: SubmitConfig, round_num: int | None) -> Path:
    """The file given, else predictions/<model name>_<round>.csv, else the only *_<round>.csv."""
    if config.predictions is not None:
        return Path(config.predictions)
    suffix = f"_{round_num if round_num is not None else 'live'}.csv"
    if config.model_name and (DEFAULT_PREDICTIONS_DIR / f"{config.model_name}{suffix}").is_file():
        return DEFAULT_PREDICTIONS_DIR / f"{config.model_name}{suffix}"
    candidates = sorted(DEFAULT_PREDICTIONS_DIR.glob(f"*{suffix}"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise SubmissionError(f"{DEFAULT_PREDICTIONS_DIR}: no *{suffix} predictions for this round "
                              f"(run `numerflow predict` first, or give --predictions)")
    raise SubmissionError(f"{DEFAULT_PREDICTIONS_DIR}: several predictions for this round "
                          f"({', '.join(p.name for p in candidates)}); choose one with --predictions")


# ---- the stage

def submit(config: SubmitConfig, client=None, lock_held: bool = False) -> SubmitResult:
    """Check, then (unless dry_run) upload and write the receipt. `client` lets the weekly job share
    one numerapi client across models; `lock_held`: the caller (`numerflow round`) holds the data
    folder's lock already."""
    live, round_num = resolve_live(config)
    predictions = resolve_predictions(config, round_num)
    rows, live_rows = check_submission(predictions, live)
    result = SubmitResult(predictions=predictions, model_name=config.model_name, round=round_num, rows=rows,
                          live_rows=live_rows, sha256=file_checksum(predictions, "sha256"), dry_run=config.dry_run)
    if second_opinion() is None:
        result.notes.append(NO_SECOND_OPINION)
    if config.model_name and round_num is not None and not config.force:
        refuse_resubmission(config.receipts_dir, round_num, config.model_name)
    check_receipts_dir(config.receipts_dir)
    if config.dry_run:
        if round_num is None:
            result.notes.append(f"{live.parent} has no {schema.LIVE_ROUND_FILE}: the round is checked at upload")
        return result
    if lock_held:
        return upload(config, result, live, client)
    from numerflow.files import round_lock

    with round_lock(Path(config.data_dir) / schema.LOCK_FILE):  # one upload at a time per data folder
        return upload(config, result, live, client)


def upload(config: SubmitConfig, result: SubmitResult, live: Path, client=None) -> SubmitResult:
    """Upload once: the receipt check, an intent record, the upload, the receipt. Call with the
    lock held (see submit)."""
    from numerflow import numerai

    client = client if client is not None else numerai.client(*numerai.require_credentials())
    current = numerai.current_round(client)
    if result.round is not None and result.round != current:
        raise SubmissionError(f"{live} is round {result.round}'s live data but the current round is {current}: "
                              f"run `numerflow download --live-only` and predict again")
    if not numerai.round_is_open(client):
        raise SubmissionError(f"round {current} is closed for submissions; wait for the next round to open")
    result.round = current
    result.model_name, result.model_id = resolve_model_id(client, config.model_name)
    receipt = receipt_path(config.receipts_dir, current, result.model_name)
    intent = intent_path(config.receipts_dir, current, result.model_name)
    if not config.force:
        refuse_resubmission(config.receipts_dir, current, result.model_name)
        if intent.is_file() and _recover(client, result, intent, receipt):
            return result
    write_json(intent, _receipt_fields(result, current, started_at=_now()))
    result.submission_id = numerai.upload_predictions(client, result.predictions, result.model_id)
    result.receipt = write_receipt(receipt, _receipt_fields(result, current, submission_id=result.submission_id,
                                                              submitted_at=_now()))
    intent.unlink(missing_ok=True)
    return result


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _receipt_fields(result: SubmitResult, round_num: int, **extra) -> dict:
    return {"round": round_num, "model": result.model_name, "model_id": result.model_id, **extra,
            "file": str(result.predictions), "sha256": result.sha256, "rows": result.rows,
            "numerflow_version": __version__}


def _recover(client, result: SubmitResult, intent: Path, receipt: Path) -> bool:
    """An earlier run wrote `intent` and died before its receipt: if Numerai holds a submission of
    this model for this round, write the receipt from it and report it (True); else False, and
    the caller uploads."""
    from numerflow import numerai

    found = numerai.round_submission(client, result.model_id, result.round)
    if found is None:
        return False
    try:
        started = json.loads(intent.read_text())
    except (OSError, ValueError):
        started = {}
    result.submission_id = found["submission_id"] or f"unknown (Numerai file {found['filename']})"
    result.recovered = True
    fields = _receipt_fields(result, result.round, submission_id=result.submission_id,
                             numerai_filename=found["filename"], recovered_at=_now())
    # what was uploaded then is what the intent names, not this run's file
    fields.update({k: started[k] for k in ("file", "sha256", "rows", "started_at") if k in started})
    result.predictions = Path(fields["file"])
    result.receipt = write_receipt(receipt, fields)
    intent.unlink(missing_ok=True)
    return True


def write_receipt(path: Path, receipt: dict) -> Path:
    try:
        return write_json(path, receipt)
    except OSError as exc:  # uploaded already: say so, or the user would submit again blindly
        raise SubmissionError(f"{path}: submitted (submission {receipt['submission_id']}) but the receipt could not "
                              f"be written ({exc.strerror or type(exc).__name__}); do not resubmit round "
                              f"{receipt['round']} for '{receipt['model']}'") from None
