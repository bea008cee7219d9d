"""Numerai credentials, and keeping the secret key out of every message: NUMERAI_PUBLIC_ID and
NUMERAI_SECRET_KEY from arguments, the environment or `.env` (read without touching os.environ,
as numerapi would), the message that names a missing one, and the scrubbing of the key from
Numerai's error text."""

from __future__ import annotations

import io
import os
from pathlib import Path

from numerflow.errors import AuthError, ConfigError
from numerflow.files import read_text

CREDENTIAL_VARS = ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY")
AUTH_HINTS = ("session is invalid", "not authenticated", "unauthenticated", "authentication",
              "api key", "permission", "not authorized", "unauthorized", "token")


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


def require_credentials(public_id: str | None = None, secret_key: str | None = None) -> tuple[str, str]:
    """Both credentials (see credentials()), or AuthError naming the missing one: called before a
    command that needs them (submit, round) makes its first call, so a missing key is said as
    such, not found after a round lookup, or hidden behind `Numerai could not be reached`."""
    public_id, secret_key = credentials(public_id, secret_key)
    if not (public_id and secret_key):
        raise AuthError(missing_credentials_message(public_id, secret_key))
    return public_id, secret_key


def missing_credentials_message(public_id: str | None, secret_key: str | None) -> str:
    missing = [name for name, value in zip(CREDENTIAL_VARS, (public_id, secret_key)) if not value]
    return (f"Numerai credentials missing ({' and '.join(missing)}): set NUMERAI_PUBLIC_ID and "
            f"NUMERAI_SECRET_KEY in the environment or in a .env file")


def scrub(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message


def looks_like_auth(message: str) -> bool:
    low = message.lower()
    return any(hint in low for hint in AUTH_HINTS)
