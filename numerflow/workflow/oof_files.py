"""A cv run's out-of-fold predictions: the file names cv writes (oof.parquet with its manifest
report.json, published as one set), the one reader compare and ensemble share, and the record of
a cv run or `sweep --cv` trial (read_oof_source: its data, targets, settings, provenance checked)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.errors import DataError

OOF_FILE = "oof.parquet"
REPORT_FILE = "report.json"  # the manifest of the (oof.parquet, report.json) set


def read_oof(path: Path):
    """Out-of-fold predictions (a cv run's oof.parquet, or a `sweep --cv` trial's) as a float Series
    indexed by id (text): the one reader that compare and ensemble share. Missing columns, an
    unreadable file or repeated ids are a DataError naming the file."""
    import pandas as pd

    schema.require_columns(path, [schema.ID, schema.PREDICTION], schema.parquet_columns(path))
    try:
        frame = pd.read_parquet(path, columns=[schema.ID, schema.PREDICTION])
    except (OSError, ValueError) as exc:
        raise schema.unreadable(path, exc) from None
    predictions = pd.Series(frame[schema.PREDICTION].to_numpy(np.float64), index=frame[schema.ID].astype(str))
    repeated = int(predictions.index.duplicated().sum())
    if repeated:
        raise DataError(f"{path}: {repeated} duplicate id(s)")
    return predictions


@dataclass(frozen=True)
class OofSource:
    """A cv run or a `sweep --cv` trial, as its record (report.json or settings.json) names it:
    what ensemble chooses among and compare scores. Checked against its provenance when read."""

    folder: Path
    settings: dict  # its train settings (a CvConfig's, as config_dict writes them)
    data: Path  # the prepared folder its folds came from, usable from here
    target: str  # the main target it was scored on
    targets: list[str] | None  # the targets it trained on (None: recorded before they were)
    oof: Path
    notes: list[str] = field(default_factory=list)


def read_oof_source(folder: Path, record_file: str, refresh: str) -> OofSource:
    """A cv run's report.json (record_file REPORT_FILE) or a trial's settings.json, checked against
    the oof.parquet it names and against its provenance (a changed prepared folder is a DataError
    naming `refresh`, the command that makes it again). A damaged record is one DataError."""
    from numerflow.files import check_set
    from numerflow.provenance import check_record, recorded_path

    path = folder / record_file
    record = schema.read_json(path)
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a record (expected a JSON object): rerun `{refresh}`")
    check_set(folder, record_file, record.get("files", {}), names=[OOF_FILE])
    missing = [key for key in ("data", "target", "settings") if not record.get(key)]
    if missing or not isinstance(record["settings"], dict):
        raise DataError(f"{path}: '{(missing or ['settings'])[0]}' is missing or damaged: rerun `{refresh}`")
    notes = check_record(record, path, str(folder), refresh)
    targets = record.get("targets")
    return OofSource(folder, record["settings"], recorded_path(record["data"], path), str(record["target"]),
                     list(targets) if isinstance(targets, list) else None, folder / OOF_FILE, notes)
