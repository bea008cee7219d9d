"""Numerai's API, through numerapi: the only module that imports it.

numerapi's queries and answer parsing are used as they are; its transport is replaced (a subclass
overrides `raw_query`) because numerapi sleeps 5 s + 10 s on 5xx and then returns `{}` (callers
die on KeyError('data')), sends without a timeout, and reads credentials into the process
environment. Here every call has a timeout, transient failures (5xx, dropped connections,
timeouts) are retried with a short exponential backoff, and every failure becomes an ApiError or
AuthError with one clear line that never contains the secret key.

Files (datasets) are fetched here too, not with numerapi's `download_dataset`: that one always
GETs the file even when it is complete locally, resumes with an unchecked Range request and never
checks the byte count. `download_file` asks numerapi's `dataset` query for the URL, streams to a
partial file that survives kills, resumes it only on a 206 and only while the server's file is the
one the partial file began with (If-Range), accepts it only when it is provably whole (length,
else ETag, else structure) and renames it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import requests
from numerapi import NumerAPI, base_api

from numerflow.errors import ApiError, AuthError, ConfigError, DataError
from numerflow.files import CHECKSUM, file_checksum, plain_md5, read_text

RETRY_ATTEMPTS = 4  # tries per call on transient failures
RETRY_BASE_SECONDS = 2.0  # waits 2, 4, 8 s between tries; env NUMERFLOW_RETRY_BASE_SECONDS overrides
TIMEOUT = (15, 120)  # (connect, read) seconds; read = longest silence inside a response
CHUNK_BYTES = 1 << 20
CREDENTIAL_VARS = ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY")
AUTH_HINTS = ("session is invalid", "not authenticated", "unauthenticated", "authentication",
              "api key", "permission", "not authorized", "unauthorized", "token")

T = TypeVar("T")


class _Transient(Exception):
    """A failure worth another try (5xx, 429, dropped connection, timeout). `retry_after`: the
    seconds the server asked to wait (HTTP 429/503 Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is capped (a cron job must end)


def _raise_for_retryable(resp: requests.Response) -> None:
    """HTTP 429 (rate limited) and 5xx are worth another try, after Retry-After if given."""
    if resp.status_code == 429 or resp.status_code >= 500:
        raise _Transient(f"HTTP {resp.status_code}", retry_after=_retry_after(resp.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    from email.utils import parsedate_to_datetime
    import datetime as dt

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = dt.datetime.now(when.tzinfo or dt.timezone.utc)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER)


class GraphQLError(ApiError, ValueError):
    """Numerai answered with GraphQL errors. Also a ValueError, as numerapi's own methods expect
    (check_round_open catches ValueError between rounds)."""


class GraphQLAuthError(AuthError, ValueError):
    """Numerai refused the credentials."""


# --- credentials -------------------------------------------------------------------------------

def credentials(public_id: str | None = None, secret_key: str | None = None) -> tuple[str | None, str | None]:
    """Explicit values, else NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY from the environment, else from
    `.env` in the working folder (read without touching os.environ)."""
    public_id = public_id or os.environ.get(CREDENTIAL_VARS[0])
    secret_key = secret_key or os.environ.get(CREDENTIAL_VARS[1])
    if not (public_id and secret_key) and Path(".env").is_file():
        from dotenv import dotenv_values

        values = dotenv_values(stream=io.StringIO(read_text(".env", ConfigError)))
        public_id = public_id or values.get(CREDENTIAL_VARS[0])
        secret_key = secret_key or values.get(CREDENTIAL_VARS[1])
    # A key pasted with its line break (`$(cat key)`, a CRLF .env) cannot go into an HTTP header.
    return (public_id or "").strip() or None, (secret_key or "").strip() or None


def missing_credentials_message(public_id: str | None, secret_key: str | None) -> str:
    missing = [name for name, value in zip(CREDENTIAL_VARS, (public_id, secret_key)) if not value]
    return (f"Numerai credentials missing ({' and '.join(missing)}): set NUMERAI_PUBLIC_ID and "
            f"NUMERAI_SECRET_KEY in the environment or in a .env file")


# --- retries and error translation -------------------------------------------------------------

MAX_RETRY_BASE_SECONDS = 3600.0  # the longest first wait: 8 hours by the 4th try, still a number sleep() takes


def retry_base_seconds() -> float:
    """NUMERFLOW_RETRY_BASE_SECONDS, or the default when unset. Anything but a number of seconds
    from 0 to MAX_RETRY_BASE_SECONDS (text, nan, inf, a negative) is a ConfigError: inf used to
    reach time.sleep and overflow, text used to be ignored."""
    value = os.environ.get("NUMERFLOW_RETRY_BASE_SECONDS", "").strip()
    if not value:
        return RETRY_BASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_RETRY_BASE_SECONDS:  # nan fails too
        raise ConfigError(f"NUMERFLOW_RETRY_BASE_SECONDS must be a number of seconds from 0 to "
                          f"{MAX_RETRY_BASE_SECONDS:g}, got '{value}'")
    return seconds


def with_retries(what: str, call: Callable[[], T], attempts: int | None = None) -> T:
    """`call()`, again after base, 2*base, ... seconds (or the server's Retry-After when longer)
    while it fails transiently; then ApiError. The wait is checked before the first try, so a bad
    NUMERFLOW_RETRY_BASE_SECONDS fails every run, not only one that needs a retry."""
    attempts = attempts or RETRY_ATTEMPTS
    base = retry_base_seconds()
    for attempt in range(attempts):
        try:
            return call()
        except _Transient as exc:
            last = exc
            if attempt + 1 < attempts:
                time.sleep(max(base * 2 ** attempt, exc.retry_after or 0.0))
    raise ApiError(f"{what} failed after {attempts} tries: {last}")


def _describe_request_error(exc: requests.RequestException) -> str:
    """A short reason without the URL (presigned URLs are long and carry tokens)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed or dropped"
    return type(exc).__name__


def _scrub(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message


def _looks_like_auth(message: str) -> bool:
    low = message.lower()
    return any(hint in low for hint in AUTH_HINTS)


def root_field(query: str) -> str:
    """The operation's root field (numerapi sends no operationName): used in messages."""
    m = re.search(r"\{\s*([A-Za-z_]\w*)", query)
    return m.group(1) if m else "query"


# --- the client ---------------------------------------------------------------------------------

class NumerflowAPI(NumerAPI):
    """numerapi's Classic client with numerflow's transport (timeouts, retries, typed errors)."""

    def _login(self, public_id: str | None = None, secret_key: str | None = None) -> None:
        # numerapi would load .env into os.environ here; client() has resolved credentials already
        self.token = (public_id, secret_key) if public_id and secret_key else None
        self._given = (public_id, secret_key)  # to name the missing one in errors

    def raw_query(self, query: str, variables: dict | None = None, authorization: bool = False, **_numerapi_retry_args):
        op = root_field(query)
        headers = {"Content-type": "application/json", "Accept": "application/json"}
        secret = self.token[1] if self.token else None
        if authorization:
            if not self.token:
                raise AuthError(missing_credentials_message(*self._given))
            headers["Authorization"] = f"Token {self.token[0]}${self.token[1]}"
        body = {"query": query, "variables": variables}
        result = with_retries(f"Numerai API call '{op}'",
                              lambda: _post_graphql(base_api.API_TOURNAMENT_URL, body, headers, op, secret))
        if result.get("errors"):
            messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e)
                                 for e in result["errors"]) or "unknown error"
            messages = _scrub(messages, secret)
            if authorization and _looks_like_auth(messages):
                raise GraphQLAuthError(f"Numerai refused the credentials ({messages}); check "
                                       f"NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")
            raise GraphQLError(f"Numerai API call '{op}' failed: {messages}")
        if not isinstance(result.get("data"), dict):
            raise ApiError(f"Numerai API call '{op}' gave an answer without data")
        return result


def _post_graphql(url: str, body: dict, headers: dict, op: str, secret: str | None) -> dict:
    try:
        resp = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)
    except requests.exceptions.InvalidHeader:  # its message quotes the header: the secret key
        raise AuthError("NUMERAI_PUBLIC_ID or NUMERAI_SECRET_KEY holds characters that cannot be sent "
                        "(a line break or control character?)") from None
    except requests.RequestException as exc:
        raise _Transient(_describe_request_error(exc)) from None
    _raise_for_retryable(resp)
    if resp.status_code in (401, 403):
        raise AuthError(f"Numerai refused the credentials (HTTP {resp.status_code}); check "
                        f"NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")
    try:
        result = resp.json()
    except ValueError:
        raise _Transient(f"HTTP {resp.status_code} with an answer that is not JSON") from None
    if not isinstance(result, dict):
        raise ApiError(f"Numerai API call '{op}' gave an unexpected answer")
    if resp.status_code >= 400 and not result.get("errors"):
        raise ApiError(f"Numerai API call '{op}' failed: HTTP {resp.status_code}")
    return result


def client(public_id: str | None = None, secret_key: str | None = None) -> NumerflowAPI:
    """A Numerai Classic client. Credentials are optional (public files need none); calls that
    need them raise AuthError naming NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY and .env."""
    public_id, secret_key = credentials(public_id, secret_key)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # NumerAPI() calls logging.basicConfig: keep the root logger as the application set it
        api = NumerflowAPI(public_id, secret_key, verbosity="WARNING", show_progress_bars=False)
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    return api


def _unexpected(op: str, exc: Exception) -> ApiError:
    return ApiError(f"Numerai API call '{op}' gave an unexpected answer ({type(exc).__name__})")


# --- datasets -----------------------------------------------------------------------------------

def list_datasets(api: NumerAPI, round_num: int | None = None) -> list[str]:
    """File names Numerai offers (["v5.2/train.parquet", ...]) for the current or a given round."""
    try:
        names = api.list_datasets(round_num)
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("listDatasets", exc) from None
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
        with requests.get(url, stream=True, timeout=TIMEOUT, headers=headers) as resp:
            if resp.status_code == 416:  # the partial file is not a prefix of this file: start over
                out.truncate(0)
                raise _Transient("HTTP 416 on resuming; starting over")
            _raise_for_retryable(resp)
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
        raise _Transient(f"{_describe_request_error(exc)} after {os.fstat(out.fileno()).st_size} bytes") from None
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
    """Raise _Transient unless the partial file is the whole file (see download_file). A short
    file is kept to be resumed; one that cannot be a prefix of the file is emptied."""
    if total is not None:
        if size > total:
            out.truncate(0)
            raise _Transient(f"got {size} bytes, more than the {total} announced; starting over")
        if size < total:
            raise _Transient(f"got {size} of {total} bytes")
        return
    expected_md5 = plain_md5(etag)
    if expected_md5 is not None:
        if file_checksum(out.name, "md5") != expected_md5:
            if resumed:  # resumed and still wrong: the kept part was not this file's
                out.truncate(0)
            raise _Transient(f"got {size} bytes that do not match the ETag (no Content-Length sent)")
        return
    from numerflow.schema import looks_whole

    if not looks_whole(Path(out.name)):
        raise _Transient(f"got {size} bytes and no Content-Length; the file is not whole")


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


# --- rounds -------------------------------------------------------------------------------------

def current_round(api: NumerAPI) -> int:
    """The number of the newest round."""
    try:
        number = api.get_current_round()
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("rounds", exc) from None
    if number is None:
        raise ApiError("Numerai reports no current round")
    return int(number)


def round_is_open(api: NumerAPI) -> bool:
    """True while the current round accepts submissions (openTime < now < closeStakingTime)."""
    try:
        return bool(api.check_round_open())
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("rounds", exc) from None


# --- models and submissions ---------------------------------------------------------------------

def _require_token(api: NumerAPI) -> None:
    if not api.token:
        raise AuthError(missing_credentials_message(*getattr(api, "_given", (api.token or (None, None)))))


def model_ids(api: NumerAPI) -> dict[str, str]:
    """{model name: model id} of the account's Classic models (needs credentials)."""
    _require_token(api)
    try:
        return dict(api.get_models())
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("account", exc) from None


def round_submission(api: NumerAPI, model_id: str, round_num: int) -> dict | None:
    """Numerai's record of `model_id`'s (selected) submission for `round_num`, as {"filename",
    "submission_id" (None when Numerai's list of submissions does not name it)}, or None when
    there is none. Uses numerapi's get_submission_filenames and submission_ids."""
    _require_token(api)
    try:
        files = api.get_submission_filenames(round_num=round_num, model_id=model_id)
        if not files:
            return None
        filename = files[-1]["filename"]
        ids = {s["filename"]: s["id"] for s in api.submission_ids(model_id)}
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("model", exc) from None
    return {"filename": filename, "submission_id": ids.get(filename)}


# same mutation numerapi's upload_predictions sends
CREATE_SUBMISSION_QUERY = """
mutation($filename: String!
         $tournament: Int!
         $modelId: String
         $triggerId: String,
         $dataDatestamp: Int) {
    create_submission(filename: $filename
                      tournament: $tournament
                      modelId: $modelId
                      triggerId: $triggerId
                      source: "numerapi"
                      dataDatestamp: $dataDatestamp) {
        id
    }
}
"""


def upload_predictions(api: NumerAPI, path: str | os.PathLike, model_id: str) -> str:
    """Upload a predictions file for `model_id`; returns the submission id. Same three steps as
    numerapi's upload_predictions (upload slot, PUT, create_submission), but the PUT's status is
    checked and transient failures are retried; auth failures are not."""
    _require_token(api)
    path = Path(path)
    if not path.is_file():
        raise ApiError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        slot = api._upload_auth("submission_upload_auth", str(path), api.tournament_id, model_id)
        with_retries(f"upload of {path.name}", lambda: _put(slot["url"], data, path.name))
        result = api.raw_query(CREATE_SUBMISSION_QUERY, {
            "filename": slot["filename"], "tournament": api.tournament_id, "modelId": model_id,
            "triggerId": os.getenv("TRIGGER_ID"), "dataDatestamp": None}, authorization=True)
        return str(result["data"]["create_submission"]["id"])
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("create_submission", exc) from None


def _put(url: str, data: bytes, name: str) -> None:
    headers = {"x_compute_id": os.getenv("NUMERAI_COMPUTE_ID")} if os.getenv("NUMERAI_COMPUTE_ID") else {}
    try:
        resp = requests.put(url, data=data, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise _Transient(_describe_request_error(exc)) from None
    _raise_for_retryable(resp)
    if resp.status_code >= 400:
        raise ApiError(f"upload of {name} refused: HTTP {resp.status_code}")


# --- hosted model uploads (export --upload) -----------------------------------------------------

def model_upload_options(api: NumerAPI) -> tuple[dict[str, str], dict[str, str]]:
    """({docker image name: id}, {data version name: id}) that Numerai's model uploads offer, from
    numerapi's model_upload_docker_images and model_upload_data_versions (needs credentials)."""
    _require_token(api)
    options = []
    for op, ask in (("computePickleDockerImages", api.model_upload_docker_images),
                    ("computePickleDataVersions", api.model_upload_data_versions)):
        try:
            options.append({str(name): str(ident) for name, ident in ask().items()})
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise _unexpected(op, exc) from None
    return options[0], options[1]


# same query and mutation numerapi's model_upload sends
MODEL_UPLOAD_AUTH_QUERY = """
    query($filename: String! $modelId: String) {
        computePickleUploadAuth(filename: $filename
                                modelId: $modelId) {
            filename
            url
        }
    }
"""
CREATE_MODEL_UPLOAD_QUERY = """
    mutation($filename: String!
             $tournament: Int!
             $modelId: String
             $dataVersionId: String
             $dockerImageId: String) {
        createComputePickleUpload(filename: $filename
                                  tournament: $tournament
                                  modelId: $modelId
                                  dataVersionId: $dataVersionId
                                  dockerImageId: $dockerImageId) {
            id
        }
    }"""


def upload_model(api: NumerAPI, path: str | os.PathLike, model_id: str, data_version_id: str,
                 docker_image_id: str) -> str:
    """Upload a model pickle for `model_id`; returns the model upload id. Same three steps as
    numerapi's model_upload (upload slot, PUT, createComputePickleUpload), with the PUT's status
    checked and transient failures retried, as upload_predictions does."""
    _require_token(api)
    path = Path(path)
    data = path.read_bytes()
    try:
        slot = api.raw_query(MODEL_UPLOAD_AUTH_QUERY, {"filename": path.name, "modelId": model_id},
                             authorization=True)["data"]["computePickleUploadAuth"]
        with_retries(f"upload of {path.name}", lambda: _put(slot["url"], data, path.name))
        result = api.raw_query(CREATE_MODEL_UPLOAD_QUERY, {
            "filename": slot["filename"], "tournament": api.tournament_id, "modelId": model_id,
            "dataVersionId": data_version_id, "dockerImageId": docker_image_id}, authorization=True)
        return str(result["data"]["createComputePickleUpload"]["id"])
    except (KeyError, TypeError, IndexError) as exc:
        raise _unexpected("createComputePickleUpload", exc) from None
