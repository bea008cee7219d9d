"""Downloads are accepted only whole: a body that ends early is resumed, not kept; a truncated or
damaged file is fetched again; a killed download resumes from its partial file; HTTP 429 waits for
Retry-After."""

from __future__ import annotations
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
import pytest
from tests.helpers import cli, error_line


def file_gets(server, name):
    return [(r.status, r.range) for r in server.log if r.method == "GET" and r.path == name]


@pytest.mark.parametrize("etag", [True, False], ids=["etag", "no-etag"])
def test_a_body_without_length_that_ends_early_is_resumed_not_kept(numerai, tmp_path, monkeypatch, etag):
    import numerflow.numerai

    monkeypatch.setattr(numerflow.numerai.downloads, "CHUNK_BYTES", 256)  # partial chunks reach the disk before the drop
    numerai.send_length, numerai.send_etag = False, etag
    numerai.drop("v5.2/train.parquet", after=1000)
    dest = tmp_path / "train.parquet"
    got = numerflow.numerai.download_file(numerflow.numerai.client(), "v5.2/train.parquet", dest)
    assert dest.read_bytes() == numerai.datasets["v5.2/train.parquet"]
    assert got.size == dest.stat().st_size
    assert file_gets(numerai, "v5.2/train.parquet") == [(200, None), (206, "bytes=1000-")]  # all 1000 bytes kept


def test_a_truncated_download_is_never_called_up_to_date(numerai, tmp_path):
    import numerflow.numerai

    numerai.send_length = False
    numerai.drop("v5.2/train.parquet", times=numerflow.numerai.RETRY_ATTEMPTS, after=0)
    result = cli("download", "--data-dir", "data")
    assert error_line(result).startswith("Error: download of v5.2/train.parquet failed after 4 tries: ")
    assert not (tmp_path / "data" / "v5.2" / "train.parquet").exists()
    result = cli("download", "--data-dir", "data")
    assert result.exit_code == 0, result.output
    assert "fetched 4 file(s)" in result.output and "train.parquet (" in result.output
    assert (tmp_path / "data" / "v5.2" / "train.parquet").read_bytes() == numerai.datasets["v5.2/train.parquet"]


def test_a_file_damaged_in_place_is_fetched_again(numerai, tmp_path):
    assert cli("download", "--data-dir", "data").exit_code == 0
    path = tmp_path / "data" / "v5.2" / "validation.parquet"
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, and the mtime is put back: bit rot
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    numerai.log.clear()
    result = cli("download", "--data-dir", "data")
    assert result.exit_code == 0, result.output
    assert numerai.file_gets() == ["v5.2/validation.parquet"]
    assert path.read_bytes() == numerai.datasets["v5.2/validation.parquet"]


@pytest.mark.slow
def test_a_killed_download_resumes_from_its_partial_file(numerai, tmp_path):
    import time

    numerai.stall("v5.2/validation.parquet", after=2000, seconds=60)
    script = textwrap.dedent(f"""
        import sys
        import numerapi.base_api
        import numerflow.numerai.downloads
        numerapi.base_api.API_TOURNAMENT_URL = {numerai.url!r}
        numerflow.numerai.downloads.CHUNK_BYTES = 256  # partial chunks reach the disk before the stall
        from numerflow.cli import main
        sys.argv = ["numerflow", "download", "--data-dir", "data"]
        main()
    """)
    partial = tmp_path / "data" / "v5.2" / ".validation.parquet.partial"
    job = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (partial.is_file() and partial.stat().st_size >= 1792) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert partial.stat().st_size >= 1792
    numerai.log.clear()
    result = cli("download", "--data-dir", "data")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("  fetched 1 file(s), ")
    assert "validation.parquet (" in result.output.splitlines()[1]
    assert file_gets(numerai, "v5.2/validation.parquet") == [(206, f"bytes={1792}-")]
    folder = tmp_path / "data" / "v5.2"
    assert (folder / "validation.parquet").read_bytes() == numerai.datasets["v5.2/validation.parquet"]
    assert not partial.exists()


def test_http_429_is_retried_after_retry_after(numerai, monkeypatch):
    import numerflow.numerai

    waits = []
    monkeypatch.setattr(numerflow.numerai.transport.time, "sleep", waits.append)
    numerai.fail("rounds", status=429, retry_after="3")
    numerai.fail("v5.2/features.json", status=429, retry_after="2")
    client = numerflow.numerai.client()
    assert numerflow.numerai.current_round(client) == 600
    numerflow.numerai.download_file(client, "v5.2/features.json", Path("features.json"))
    assert Path("features.json").read_bytes() == numerai.datasets["v5.2/features.json"]
    assert waits == [3.0, 2.0]  # the server's Retry-After, longer than the 0.01 s backoff
