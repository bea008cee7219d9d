"""Offline says offline (issue 27): a connection that cannot be made (a closed port, a name that
does not resolve) fails within a second or two with one line that says Numerai could not be
reached and names the offline commands, where it used to back off for ~14 s and say `connection
failed or dropped`; dropped connections are still retried; `submit` says missing credentials
before it calls Numerai at all. Through the CLI, with numerapi pointed at a closed port or the
fake server (tests/fake_numerai.py)."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from numerflow import numerai
from numerflow.cli import app
from tests.fake_numerai import PUBLIC_ID, SECRET_KEY
from tests.test_round import TOML
from tests.test_submit import ROUND, no_credentials, workdir  # noqa: F401 - the fixture, used by name
from tests.helpers import runner

OFFLINE = ("for offline work, `numerflow download --synthetic` writes a synthetic data set and "
           "`numerflow quickstart` runs the whole pipeline on it")


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def offline(monkeypatch) -> str:
    """numerapi's API address pointed at a closed local port; credentials set; the default retry
    waits (2, 4, 8 s) left as a user has them."""
    import numerapi.base_api

    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", f"http://{address}")
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", PUBLIC_ID)
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY)
    monkeypatch.delenv("NUMERFLOW_RETRY_BASE_SECONDS", raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    return address


def timed(*args):
    start = time.monotonic()
    result = runner.invoke(app, [str(a) for a in args])
    return result, time.monotonic() - start


def test_download_offline_fails_fast_naming_the_offline_commands(offline, tmp_path):
    result, seconds = timed("download", "--data-dir", tmp_path / "data")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"Error: Numerai could not be reached ({offline}: connection refused; "
                                     f"2 tries): {OFFLINE}")
    assert seconds < 5, seconds  # the default backoff took ~14 s before
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_a_name_that_does_not_resolve_is_unreachable_too(offline, monkeypatch, tmp_path):
    import numerapi.base_api

    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", "http://numerai-api.invalid/graphql")
    result, seconds = timed("download", "--data-dir", tmp_path / "data")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"Error: Numerai could not be reached (numerai-api.invalid: name not resolved; "
                                     f"2 tries): {OFFLINE}")
    assert seconds < 10, seconds


def test_submit_offline_says_offline(offline, workdir):  # noqa: F811 - pytest's fixture by name
    result, seconds = timed("submit", "--model-name", "fake_model")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [f"Error: Numerai could not be reached ({offline}: connection "
                                                  f"refused; 2 tries): {OFFLINE}"]
    assert seconds < 5, seconds
    assert not (workdir / "receipts").exists() or not any((workdir / "receipts").rglob("*.json"))


def test_round_offline_says_offline(offline, tmp_path, monkeypatch, fake_models):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name, path in fake_models.items():
        shutil.copyfile(path, tmp_path / "models" / f"{name}.pt")
    (tmp_path / "numerflow.toml").write_text(TOML)
    result, seconds = timed("round")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (f"Error: Numerai could not be reached ({offline}: connection refused; "
                                     f"2 tries): {OFFLINE}")
    assert seconds < 5, seconds


def test_submit_without_credentials_says_so_before_any_call(workdir, fake_numerai, monkeypatch):  # noqa: F811
    no_credentials(monkeypatch)
    result = runner.invoke(app, ["submit", "--model-name", "fake_model"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == ("Error: Numerai credentials missing (NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY): "
                                     "set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY in the environment or in a .env file")
    assert fake_numerai.log == []  # not even the round was asked


def test_a_dropped_connection_is_still_retried(fake_numerai):
    """The server reads the ask and closes the connection unanswered, twice: the third try answers."""
    fake_numerai.drop("rounds", times=2)
    assert numerai.current_round(numerai.client()) == ROUND
    assert fake_numerai.ops() == ["rounds"] * 3
