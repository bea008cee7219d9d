"""Numerai's data files, fetched here rather than with numerapi's `download_dataset` (see the
package docstring): asked for by name, streamed to a partial file that survives kills, resumed
only while the server's file is the one it began with, and accepted only when provably whole."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import requests
from numerapi import NumerAPI

from numerflow.errors import ApiError, DataError
from numerflow.files import CHECKSUM, file_checksum, plain_md5
# transport.TIMEOUT is read at each call: one setting for every request (tests shorten it there)
from numerflow.numerai import transport
from numerflow.numerai.transport import (Transient, raise_for_retryable, request_failure, unexpected_answer,
                                         with_retries)

CHUNK_BYTES = 1 << 20  # bytes written (and hashed) per read of the response


def list_datasets(api: NumerAPI, round_num: int | None = None) -> list[str]:
    """File names Numerai offers (["v5.2/train.parquet", ...]) for the current or a given round."""
    try:
        names = api.list_datasets(round_num)
    except (KeyError, TypeError, IndexError) as exc:
        raise unexpected_answer("listDatasets", exc) from None
    if not isinstance(names, list):
        raise ApiError("Numerai API call 'listDatasets' gave an unexpected answer")
    return [str(n) for n in names]


# same query numerapi's download_dataset sends, used to get the URL only
DATASET_QUERY = """
query ($filename: String!
       $round: Int
       $tournament: Int) {
    dataset(filename: $filename
            round: $round
            tournament: $tournament)
}
"""


def dataset_url(api: NumerAPI, filename: str, round_num: int | None = None) -> str:
    result = api.raw_query(DATASET_QUERY, {"filename": filename, "round": round_num,
                                           "tournament": api.tournament_id})
    url = result["data"].get("dataset")
    if not isinstance(url, str) or not url:
        raise ApiError(f"Numerai API call 'dataset' gave no URL for {filename}")
    return url


@dataclass
class FetchedFile:
    name: str  # Numerai's name, e.g. v5.2/train.parquet
    path: Path
    size: int
    etag: str | None
    sha256: str


def partial_path(dest: Path) -> Path:
    """Where the body of `dest` accumulates until it is checked whole; kept across runs."""
    return dest.with_name(f".{dest.name}.partial")


def validator_path(partial: Path) -> Path:
    """Where the partial file's HTTP validator lives: the ETag (else Last-Modified) of the response
    its first byte came from, sent as If-Range when resuming it."""
    return partial.with_name(partial.name + ".validator")


def _keep_validator(partial: Path, resp: requests.Response) -> None:
    """Record the validator of a body that starts the partial file afresh. If-Range takes strong
    validators only: a weak ETag (W/...) gives way to Last-Modified. A validator damaged by a kill
    costs no data: the server then finds no match and sends the whole file."""
    etag = resp.headers.get("ETag")
    value = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
    path = validator_path(partial)
    if value:
        path.write_text(value)
    else:
        path.unlink(missing_ok=True)


def _resume_headers(have: int, partial: Path) -> dict:
    """Range from the bytes already held, with If-Range so that a file changed on the server since
    (a new upload under the same name) comes whole (200) instead of being spliced onto the old
    bytes. A partial file without a recorded validator (the server sent none) resumes unchecked,
    as before: the length and ETag checks of _check_whole are then the only guard."""
    if not have:
        return {}
    headers = {"Range": f"bytes={have}-"}
    path = validator_path(partial)
    if path.is_file():
        headers["If-Range"] = path.read_text().strip()
    return headers


def download_file(api: NumerAPI, filename: str, dest: str | os.PathLike, round_num: int | None = None,
                  progress: bool | None = None) -> FetchedFile:
    """Fetch Numerai's `filename` to `dest`, accepted only whole: its length must equal the one the
    server announced (Content-Length, or Content-Range's total), or, when the server announces
    none, its ETag's MD5 (when the ETag is one) or else its structure (Parquet's PAR1 at both ends,
    JSON that parses). Until then the body lives in `.<name>.partial` beside `dest`: it survives
    failures and kills, and the next try or run resumes it with a Range request. Transient failures
    are retried (a fresh URL each time). `progress`: a tqdm bar (default: on a terminal)."""
    import fcntl

    dest = Path(dest)
    partial = partial_path(dest)
    if progress is None:
        progress = sys.stderr.isatty()
    holding = False
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "ab", buffering=0) as out:  # unbuffered: a kill loses no written chunk
            try:
                fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when closed or when we die
            except BlockingIOError:
                raise DataError(f"{dest}: another numerflow process is downloading it; exiting") from None
            holding = True
            size, etag, sha256 = with_retries(f"download of {filename}",
                                              lambda: _fetch_once(api, filename, out, round_num, progress))
            os.replace(partial, dest)
            validator_path(partial).unlink(missing_ok=True)
    except OSError as exc:  # full disk, no permission: not worth a retry
        raise DataError(f"{dest}: cannot write ({exc.strerror or type(exc).__name__})") from None
    finally:
        if holding and partial.is_file() and partial.stat().st_size == 0:
            partial.unlink()  # nothing to resume
            validator_path(partial).unlink(missing_ok=True)
    return FetchedFile(filename, dest, size, etag, sha256)


def _fetch_once(api: NumerAPI, filename: str, out, round_num: int | None, progress: bool):
    """One try: resume (or restart) the partial file `out` (opened for appending) and check it."""
    from tqdm import tqdm

    url = dataset_url(api, filename, round_num)
    partial = Path(out.name)
    have = os.fstat(out.fileno()).st_size
    headers = _resume_headers(have, partial)
    digest = hashlib.new(CHECKSUM)
    try:
        with requests.get(url, stream=True, timeout=transport.TIMEOUT, headers=headers) as resp:
            if resp.status_code == 416:  # the partial file is not a prefix of this file: start over
                out.truncate(0)
                raise Transient("HTTP 416 on resuming; starting over")
            raise_for_retryable(resp)
            if resp.status_code >= 400:
                raise ApiError(f"download of {filename} failed: HTTP {resp.status_code} from the file server")
            resumed = have > 0 and resp.status_code == 206
            if resumed:
                _hash_into(digest, partial)
            else:  # a whole body: no Range asked, or If-Range found the file changed
                out.truncate(0)
                _keep_validator(partial, resp)
            total = _total_size(resp, resumed)
            start = have if resumed else 0
            _check_disk_space(partial.parent, filename, (total or 0) - start)
            with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=filename, disable=not progress, leave=False) as bar:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            etag = resp.headers.get("ETag")
    except requests.RequestException as exc:
        out.flush()
        raise request_failure(exc, f" after {os.fstat(out.fileno()).st_size} bytes") from None
    finally:
        out.flush()
    size = os.fstat(out.fileno()).st_size
    _check_whole(out, filename, size, total, etag, resumed)
    return size, etag, digest.hexdigest()


def _hash_into(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)


def _check_whole(out, filename: str, size: int, total: int | None, etag: str | None, resumed: bool) -> None:
    """Raise Transient unless the partial file is the whole file (see download_file). A short
    file is kept to be resumed; one that cannot be a prefix of the file is emptied."""
    if total is not None:
        if size > total:
            out.truncate(0)
            raise Transient(f"got {size} bytes, more than the {total} announced; starting over")
        if size < total:
            raise Transient(f"got {size} of {total} bytes")
        return
    expected_md5 = plain_md5(etag)
    if expected_md5 is not None:
        if file_checksum(out.name, "md5") != expected_md5:
            if resumed:  # resumed and still wrong: the kept part was not this file's
                out.truncate(0)
            raise Transient(f"got {size} bytes that do not match the ETag (no Content-Length sent)")
        return
    from numerflow.schema import looks_whole

    if not looks_whole(Path(out.name)):
        raise Transient(f"got {size} bytes and no Content-Length; the file is not whole")


def _check_disk_space(folder: Path, filename: str, needed: int) -> None:
    """Fail before writing rather than on a full disk halfway through a 4 GB file."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DataError(f"{folder}: not enough disk space for {filename} "
                        f"(needs {needed / 2**30:.2f} GiB, {free / 2**30:.2f} GiB free)")


def _total_size(resp: requests.Response, resumed: bool) -> int | None:
    """The whole file's size: Content-Range's total on a 206, else Content-Length."""
    if resumed:
        m = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range", ""))
        return int(m.group(1)) if m else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None
