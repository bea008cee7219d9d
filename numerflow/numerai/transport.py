"""numerflow's transport under numerapi: every call with a timeout, transient failures (5xx, 429,
dropped connections, timeouts) retried with exponential backoff, and every failure an ApiError
or AuthError with one clear line. NumerflowAPI is numerapi's client with this transport;
client() makes one."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from typing import Callable, TypeVar

from urllib.parse import urlsplit

import requests
import urllib3
from numerapi import NumerAPI, base_api

from numerflow.errors import ApiError, AuthError, ConfigError
from numerflow.numerai.credentials import credentials, looks_like_auth, missing_credentials_message, scrub

RETRY_ATTEMPTS = 4  # tries per call on transient failures
RETRY_BASE_SECONDS = 2.0  # waits 2, 4, 8 s between tries; env NUMERFLOW_RETRY_BASE_SECONDS overrides
UNREACHABLE_ATTEMPTS = 2  # tries when no connection can be made at all: one more rides out a blip
UNREACHABLE_WAIT_SECONDS = 0.5  # the wait between those tries (the base wait when that is shorter)
OFFLINE_HINT = ("for offline work, `numerflow download --synthetic` writes a synthetic data set and "
                "`numerflow quickstart` runs the whole pipeline on it")
TIMEOUT = (15, 120)  # (connect, read) seconds; read = longest silence inside a response

T = TypeVar("T")


class Transient(Exception):
    """A failure worth another try (5xx, 429, dropped connection, timeout). `retry_after`: the
    seconds the server asked to wait (HTTP 429/503 Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Unreachable(Transient):
    """No connection could be made (refused, name not resolved, no route, connect timeout): offline
    or a wrong address, tried only UNREACHABLE_ATTEMPTS times."""


MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is capped (a cron job must end)


def raise_for_retryable(resp: requests.Response) -> None:
    """HTTP 429 (rate limited) and 5xx are worth another try, after Retry-After if given."""
    if resp.status_code == 429 or resp.status_code >= 500:
        raise Transient(f"HTTP {resp.status_code}", retry_after=_retry_after(resp.headers.get("Retry-After")))


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
    while it fails transiently; then ApiError. A connection that cannot be made (Unreachable) is
    tried UNREACHABLE_ATTEMPTS times, a short wait apart, and then says Numerai could not be
    reached: offline, backing off for 14 s tells the user nothing more. The wait is checked before
    the first try, so a bad NUMERFLOW_RETRY_BASE_SECONDS fails every run, not only one that needs a
    retry."""
    attempts = attempts or RETRY_ATTEMPTS
    base = retry_base_seconds()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Transient as exc:
            last = exc
            unreachable = isinstance(exc, Unreachable)
            if unreachable and attempt >= UNREACHABLE_ATTEMPTS:
                break
            if attempt < attempts:
                wait = min(base, UNREACHABLE_WAIT_SECONDS) if unreachable else base * 2 ** (attempt - 1)
                time.sleep(max(wait, exc.retry_after or 0.0))
    if isinstance(last, Unreachable):
        raise ApiError(f"Numerai could not be reached ({last}; {attempt} tries): {OFFLINE_HINT}")
    raise ApiError(f"{what} failed after {attempts} tries: {last}")


def request_failure(exc: requests.RequestException, detail: str = "") -> Transient:
    """The Transient to raise for a failed request: Unreachable when no connection could be made
    (refused, name not resolved, no route, connect timeout), else a retried Transient. `detail`
    is added to the reason (e.g. how many bytes had arrived)."""
    reason = unreachable_reason(exc)
    if reason is not None:
        return Unreachable(reason)
    return Transient(describe_request_error(exc) + detail)


def unreachable_reason(exc: requests.RequestException) -> str | None:
    """'<host>: connection refused' (or 'name not resolved', 'connect timed out') when the
    connection was never made; None for a dropped or timed-out one. The host only: presigned
    URLs carry tokens in their query."""
    host = urlsplit(exc.request.url).netloc if getattr(exc, "request", None) is not None else "Numerai"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"{host}: connect timed out"
    if not isinstance(exc, requests.ConnectionError):
        return None
    cause = getattr(exc.args[0], "reason", exc.args[0]) if exc.args else None
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        return f"{host}: name not resolved"
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        why = re.sub(r"^.*new connection: (\[Errno -?\d+\] )?", "", str(cause)).lower() or "connection failed"
        return f"{host}: {why}"
    return None


def describe_request_error(exc: requests.RequestException) -> str:
    """A short reason without the URL (presigned URLs are long and carry tokens)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed or dropped"
    return type(exc).__name__


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
            messages = scrub(messages, secret)
            if authorization and looks_like_auth(messages):
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
        raise request_failure(exc) from None
    raise_for_retryable(resp)
    if resp.status_code in (401, 403):
        raise AuthError(f"Numerai refused the credentials (HTTP {resp.status_code}); check "
                        f"NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")
    try:
        result = resp.json()
    except ValueError:
        raise Transient(f"HTTP {resp.status_code} with an answer that is not JSON") from None
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


def unexpected_answer(op: str, exc: Exception) -> ApiError:
    """An answer numerapi could not parse (its KeyError/TypeError/IndexError), as one ApiError line."""
    return ApiError(f"Numerai API call '{op}' gave an unexpected answer ({type(exc).__name__})")


def require_token(api: NumerAPI) -> None:
    """AuthError naming the missing credential before a call that needs them is sent."""
    if not api.token:
        raise AuthError(missing_credentials_message(*getattr(api, "_given", (api.token or (None, None)))))
