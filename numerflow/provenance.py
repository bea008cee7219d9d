"""Provenance: what a written result (validate's report.json, a cv run's report.json, a `sweep --cv`
trial's settings.json, ensemble.json, compare.json) was made from, and the check that it still is.

A record is {"checkpoints": {path: sha256}, "data": {"path", "fingerprint"}, "targets": [...]}
under the key "provenance". Paths in it (and every path a project file records) are relative to
the folder of the file that records them, so a project folder moved elsewhere keeps working;
`recorded_path` reads both those and the absolute or working-folder-relative paths older files hold.

The prepared data's fingerprint is the SHA-256 of its manifest's content-defining fields (what
`prepare` kept, and each prepared file's SHA-256), leaving out where it lives and file times, so a
copied project has the same fingerprint and a `prepare` with other targets or eras another.

A checkpoint is hashed once per process for a given path, size and mtime (about 0.1 s per 100 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from numerflow import schema
from numerflow.errors import DataError
from numerflow.files import CHECKSUM, file_checksum

PROVENANCE = "provenance"
# The prepared manifest's keys that define its content (not version_dir: where the data came from on disk).
FINGERPRINT_KEYS = ("version", "feature_set", "features", "target", "targets", "eras_train", "eras_validation",
                    "last_train_era", "embargo", "downsample", "rows_train", "rows_validation", "binning")

_checksums: dict[tuple[str, int, int], str] = {}


# --- paths as files record them --------------------------------------------------------------------


def record_path(path: str | os.PathLike, recording_file: str | os.PathLike) -> str:
    """`path` as `recording_file` records it: relative to the folder that file lies in."""
    return os.path.relpath(Path(path).resolve(), Path(recording_file).resolve().parent)


def recorded_path(value: str | os.PathLike, recording_file: str | os.PathLike) -> Path:
    """A path `recording_file` records, as a path usable here: relative ones are relative to its
    folder (as record_path writes them), or, in files written before that, to the working folder;
    absolute ones (older sweeps) are taken as they are."""
    value = Path(value)
    if value.is_absolute():
        return value
    beside = Path(os.path.normpath(Path(recording_file).parent / value))
    return beside if beside.exists() or not value.exists() else value


# --- hashes ----------------------------------------------------------------------------------------


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256, hashed once per process while its size and mtime stay the same."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _checksums:
        _checksums[key] = file_checksum(path)
    return _checksums[key]


def manifest_fingerprint(manifest: dict) -> str:
    """SHA-256 over the manifest's content-defining fields and its files' checksums (sorted JSON)."""
    defining = {key: manifest[key] for key in FINGERPRINT_KEYS if key in manifest}
    files = manifest.get(schema.MANIFEST_FILES)
    if isinstance(files, dict):
        defining["files"] = {name: record.get(CHECKSUM) for name, record in sorted(files.items())
                             if isinstance(record, dict)}
    text = json.dumps(defining, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(prepared_dir: str | os.PathLike) -> str:
    """The prepared folder's fingerprint (its manifest checked against its files first)."""
    return manifest_fingerprint(schema.read_prepared_manifest(prepared_dir))


def prepared_folder_of(data_file: str | os.PathLike) -> Path | None:
    """The prepared folder a data file belongs to (its manifest beside it names it), else None."""
    folder = Path(data_file).parent
    path = folder / schema.PREPARED_MANIFEST_FILE
    try:
        files = json.loads(path.read_text()).get(schema.MANIFEST_FILES) or {}
    except (OSError, ValueError, AttributeError):
        return None
    return folder if Path(data_file).name in files else None


# --- records ---------------------------------------------------------------------------------------


def make_record(recording_file: str | os.PathLike, checkpoints=(), data: str | os.PathLike | None = None,
                targets: list[str] | None = None) -> dict:
    """The provenance of a file about to be written at `recording_file`: each checkpoint's SHA-256
    and the prepared data's fingerprint, their paths relative to that file, and the resolved targets."""
    record: dict = {"checkpoints": {record_path(p, recording_file): checkpoint_sha256(p) for p in checkpoints}}
    if data is not None:
        has_manifest = (Path(data) / schema.PREPARED_MANIFEST_FILE).is_file()  # (hand-made files have none)
        record["data"] = {"path": record_path(data, recording_file),
                          "fingerprint": data_fingerprint(data) if has_manifest else None}
    if targets is not None:
        record["targets"] = list(targets)
    return record


def check_record(recorded: dict, recording_file: str | os.PathLike, what: str, refresh: str) -> list[str]:
    """Refuse (DataError naming what changed and the command `refresh` that makes `what` again)
    when a checkpoint or the prepared data it records has changed since; a file written before
    provenance was recorded is accepted with a note (returned)."""
    record = recorded.get(PROVENANCE) if isinstance(recorded, dict) else None
    if record is None:
        return [f"{what} was written before numerflow recorded provenance: its checkpoints and data are not "
                f"checked (rerun `{refresh}` to record them)"]
    if not isinstance(record, dict):
        raise DataError(f"{recording_file}: '{PROVENANCE}' is not a record: rerun `{refresh}`")
    for value, sha in (record.get("checkpoints") or {}).items():
        path = recorded_path(value, recording_file)
        if not path.is_file():
            raise DataError(f"{what} was made from {path}, which is no longer there: rerun `{refresh}`")
        if checkpoint_sha256(path) != sha:
            raise DataError(f"{what} was made from {path} sha256 {str(sha)[:12]}..., which has changed since: "
                            f"rerun `{refresh}`")
    data = record.get("data")
    if isinstance(data, dict) and data.get("fingerprint"):
        folder = recorded_path(data.get("path", ""), recording_file)
        if not (folder / schema.PREPARED_MANIFEST_FILE).is_file():
            raise DataError(f"{what} was made from the prepared data in {folder}, which is no longer there: "
                            f"rerun `{refresh}`")
        if data_fingerprint(folder) != data["fingerprint"]:
            raise DataError(f"{what} was made from the prepared data in {folder} fingerprint "
                            f"{data['fingerprint'][:12]}..., which has changed since (prepared again): "
                            f"rerun `{refresh}`")
    return []
