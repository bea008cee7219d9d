"""The download stage: Numerai's files for one dataset version into <data_dir>/<version>/.

Caching: `.download_manifest.json` in the version folder records each fetched file's size, mtime,
SHA-256 and ETag. A file counts as complete when its content still matches its record (or, for a
file numerflow did not fetch, when it is whole Parquet/JSON), so a rerun sends no file request at
all. A body is accepted only when provably whole (see numerai.download_file); until then it lives in a
`.<name>.partial` file that the next run resumes (with If-Range: only while the server's file is
the one it began with), so a final name always means a complete file.

The live files change every round: they are kept as live_<round>.parquet,
live_example_preds_<round>.parquet and live_benchmark_models_<round>.parquet; the current round's
are also reachable as live.parquet / live_example_preds.parquet / live_benchmark_models.parquet,
and live_round.json ({"round": N}) says which round that is.

Benchmark models' files ({train,validation,live}_benchmark_models.parquet) are fetched when the
version offers them; a version that offers none of them is not reported as lacking them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from numerflow import numerai, schema
from numerflow.config import DownloadConfig
from numerflow.errors import ApiError, ConfigError, DataError
from numerflow import files
from numerflow.files import atomic_path, file_problem, file_record, write_json

MANIFEST_FILE = schema.VERSION_MANIFEST_FILE
# Order matters only for the user: small files first, the 4 GB validation file last.
ALL_FILES = (schema.FEATURES_FILE, schema.LIVE_FILE, schema.LIVE_EXAMPLE_FILE, schema.LIVE_BENCHMARK_FILE,
             schema.TRAIN_FILE, schema.TRAIN_BENCHMARK_FILE, schema.META_MODEL_FILE, schema.VALIDATION_EXAMPLE_FILE,
             schema.VALIDATION_BENCHMARK_FILE, schema.VALIDATION_FILE)
LIVE_ONLY_FILES = (schema.FEATURES_FILE, schema.LIVE_FILE, schema.LIVE_EXAMPLE_FILE, schema.LIVE_BENCHMARK_FILE)
REQUIRED_FILES = (schema.FEATURES_FILE, schema.LIVE_FILE, schema.TRAIN_FILE, schema.VALIDATION_FILE)
# new content every round
ROUND_FILES = (schema.LIVE_FILE, schema.LIVE_EXAMPLE_FILE, schema.LIVE_BENCHMARK_FILE)


@dataclass
class DownloadResult:
    version: str
    directory: Path
    round: int  # the round of the live files handled
    current_round: int
    fetched: list[tuple[str, int]] = field(default_factory=list)  # (local name, bytes)
    cached: list[str] = field(default_factory=list)
    not_offered: list[str] = field(default_factory=list)  # optional files Numerai does not list

    def __str__(self) -> str:
        lines = [f"Dataset {self.version}, round {self.round} in {self.directory}"]
        if self.fetched:
            total = sum(size for _, size in self.fetched)
            shown = ", ".join(f"{name} ({human_bytes(size)})" for name, size in self.fetched)
            lines.append(f"  fetched {len(self.fetched)} file(s), {human_bytes(total)}: {shown}")
        if self.cached:
            lines.append(f"  up to date (not fetched): {', '.join(self.cached)}")
        if self.not_offered:
            lines.append(f"  not offered by Numerai for {self.version}: {', '.join(self.not_offered)}")
        if self.round == self.current_round:
            lines.append(f"  {schema.LIVE_FILE} is round {self.round} ({round_name(schema.LIVE_FILE, self.round)})")
        else:
            lines.append(f"  round {self.round} is a past round (current: {self.current_round}); "
                         f"{schema.LIVE_FILE} was left as it was")
        return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def round_name(name: str, round_number: int) -> str:
    """live.parquet, 612 → live_612.parquet."""
    stem, dot, ext = name.partition(".")
    return f"{stem}_{round_number}{dot}{ext}"


def available_versions(names: list[str]) -> list[str]:
    """The vX.Y folders in Numerai's file list, oldest first."""
    versions = {n.split("/", 1)[0] for n in names if "/" in n}
    return sorted((v for v in versions if schema.version_number(v)), key=schema.version_number)


def choose_version(requested: str | None, names: list[str]) -> str:
    versions = available_versions(names)
    if not versions:
        raise ApiError("Numerai lists no dataset versions (listDatasets gave no vX.Y files)")
    if requested is None:
        return versions[-1]
    if requested not in versions:
        raise ConfigError(f"unknown dataset version '{requested}' (available: {', '.join(versions)})")
    return requested


# --- the manifest ------------------------------------------------------------------------------

def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_FILE
    try:
        files = json.loads(path.read_text())[schema.MANIFEST_FILES]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no or unreadable manifest: files are checked by content instead


def is_complete(path: Path, record: dict | None) -> bool:
    """A file numerflow fetched counts as complete when its whole content still matches its
    record (SHA-256, or the ETag's MD5 and size for older records): hashing costs about 2 s per GB
    and catches a file damaged in place. A file it did not fetch must be whole Parquet/JSON."""
    if not path.is_file():
        return False
    if record is not None:
        return file_problem(path, record, full=True) is None
    return schema.looks_whole(path)


# --- the stage ---------------------------------------------------------------------------------

def download(config: DownloadConfig, client=None) -> DownloadResult:
    """Fetch what is missing or out of date for one dataset version; see the module docstring.
    `client`: a numerai.client() to reuse (default: a new one)."""
    if config.round is not None and config.round < 1:
        raise ConfigError(f"--round must be a positive round number, got {config.round}")
    client = client if client is not None else numerai.client()
    current = numerai.current_round(client)
    live_round = config.round or current
    past = live_round != current
    names = numerai.list_datasets(client, live_round if past else None)
    version = choose_version(config.version, names)
    directory = Path(config.data_dir) / version
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{directory}: exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)

    manifest = read_manifest(directory)
    result = DownloadResult(version, directory, live_round, current)
    wanted = LIVE_ONLY_FILES if config.live_only else ALL_FILES
    if not any(f"{version}/{name}" in names for name in schema.BENCHMARK_FILES):
        wanted = [name for name in wanted if name not in schema.BENCHMARK_FILES]  # a release without them
    for name in wanted:
        remote = f"{version}/{name}"
        if remote not in names:
            if name in REQUIRED_FILES:
                raise ApiError(f"Numerai does not offer {remote}"
                               + (f" for round {live_round}" if past else ""))
            result.not_offered.append(name)
            continue
        is_round_file = name in ROUND_FILES
        local = round_name(name, live_round) if is_round_file else name
        if not config.force and is_complete(directory / local, manifest.get(local)):
            if files.CHECKSUM not in manifest.get(local, {}):  # adopt a file fetched by other means or
                # recorded by an older numerflow: from now on its checksum is checked
                manifest[local] = {"source": remote, **manifest.get(local, {}), **file_record(directory / local)}
            result.cached.append(local)
            continue
        got = numerai.download_file(client, remote, directory / local,
                                round_num=live_round if (past and is_round_file) else None)
        manifest[local] = {"source": remote, **file_record(directory / local, got.sha256), "etag": got.etag,
                           "round": live_round if is_round_file else None,
                           "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(directory / MANIFEST_FILE, {"files": manifest})  # after each file: survives an interruption
        result.fetched.append((local, got.size))

    write_json(directory / MANIFEST_FILE, {"files": manifest})
    if not past:
        point_live_files_at(directory, live_round,
                            [n for n in ROUND_FILES if round_name(n, live_round) in manifest])
    return result


def point_live_files_at(directory: Path, round_number: int, names: list[str]) -> None:
    """Make live.parquet (etc.) the given round's files, then write live_round.json: the marker is
    written last, so it never names a round whose files are not in place. An alias this round
    has no file for is removed rather than left pointing at an older round."""
    for name in set(ROUND_FILES) - set(names):
        (directory / name).unlink(missing_ok=True)
    for name in names:
        source = directory / round_name(name, round_number)
        with atomic_path(directory / name) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)  # no copy of the data; atomically replaces the old alias
            except OSError:
                shutil.copyfile(source, tmp)  # file systems without hard links
    write_json(directory / schema.LIVE_ROUND_FILE, {"round": round_number})
