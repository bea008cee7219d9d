"""Issue 12, sections 1 and 2: a stage's outputs are published as a set (a failed or killed run
never leaves a mix that readers accept), downloads are accepted only when whole, and submissions
happen once, also under concurrency and kills. Kills are real: a subprocess SIGKILLs itself at a
chosen rename or call."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from numerflow.errors import DataError

runner = CliRunner()
SMALL = ["--eras", "20", "--rows-per-era", "40", "--features", "10"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def run_killed_at_rename(nth: int, *args, cwd: Path) -> subprocess.CompletedProcess:
    """`numerflow <args>` in a subprocess that SIGKILLs itself at its `nth` os.replace (rename),
    before that rename happens: no cleanup code of numerflow's runs."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        real, calls = os.replace, []
        def replace(src, dst, **kw):
            calls.append(dst)
            if len(calls) == {nth}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, **kw)
        os.replace = replace
        from numerflow.cli import main
        sys.argv = ["numerflow"] + sys.argv[1:]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("download", "--synthetic", "--data-dir", "data", "--seed", "0", *SMALL).exit_code == 0
    return tmp_path / "data"


# ---- prepare publishes train.parquet, validation.parquet and manifest.json as one set

def test_prepare_failing_on_its_second_output_keeps_the_old_set(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    prepared = data_dir / "prepared"
    old_train = (prepared / "train.parquet").read_bytes()
    (prepared / "validation.parquet").unlink()
    (prepared / "validation.parquet").mkdir()  # the rename of the second output must fail
    result = cli("prepare", "--data-dir", data_dir, "--feature-set", "all", "--downsample", "2")
    assert (prepared / "train.parquet").read_bytes() == old_train  # nothing renamed
    assert error_line(result) == f"Error: {prepared / 'validation.parquet'}: Is a directory"
    assert temporaries(prepared) == []


def test_prepare_killed_between_renames_is_refused_by_readers_and_redone(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    prepared = data_dir / "prepared"
    # killed after renaming train.parquet, before validation.parquet and the manifest
    run_killed_at_rename(2, "prepare", "--data-dir", "data", "--feature-set", "all", "--downsample", "2",
                         cwd=data_dir.parent)
    with pytest.raises(DataError, match="does not match .*manifest.json .*mixed or incomplete set"):
        schema.read_prepared_manifest(prepared)
    result = cli("train", "--data", prepared, "--out", "m.pt", "--epochs", "1")
    assert error_line(result).startswith(f"Error: {prepared / 'train.parquet'}: does not match "
                                         f"{prepared / 'manifest.json'} (")
    assert error_line(result).endswith("run `numerflow prepare` again")
    assert temporaries(prepared)  # the killed run's validation.parquet, never renamed
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all", "--downsample", "2").exit_code == 0
    assert schema.read_prepared_manifest(prepared)["downsample"] == 2
    assert temporaries(prepared) == []  # the dead writer's temporary file was removed


# ---- download --synthetic publishes its files as one set

def test_synthetic_rerun_killed_after_train_is_refused_by_prepare(data_dir):
    run_killed_at_rename(2, "download", "--synthetic", "--data-dir", "data", "--seed", "5", *SMALL,
                         cwd=data_dir.parent)  # train.parquet of seed 5 beside seed 0's other files
    result = cli("prepare", "--data-dir", data_dir, "--feature-set", "all")
    folder = data_dir / "synthetic"
    assert error_line(result).startswith(f"Error: {folder / 'train.parquet'}: does not match "
                                         f"{folder / '.download_manifest.json'} (")
    assert not (data_dir / "prepared").exists()
    assert cli("download", "--synthetic", "--data-dir", data_dir, "--seed", "5", *SMALL).exit_code == 0
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    assert temporaries(folder) == []


def test_synthetic_rerun_failing_after_train_keeps_the_old_set(data_dir):
    folder = data_dir / "synthetic"
    old = {name: (folder / name).read_bytes() for name in ("train.parquet", "live.parquet")}
    (folder / "validation.parquet").unlink()
    (folder / "validation.parquet").mkdir()
    result = cli("download", "--synthetic", "--data-dir", data_dir, "--seed", "5", *SMALL)
    assert {name: (folder / name).read_bytes() for name in old} == old
    assert error_line(result) == f"Error: {folder / 'validation.parquet'}: Is a directory"
    assert temporaries(folder) == []


# ---- downloads: accepted only whole, checked in the cache, resumed after a kill

@pytest.fixture
def numerai(fake_numerai, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return fake_numerai


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


# ---- validate publishes report.json, per_era.csv and per_era.png as one set

def validate_args(data_dir, report):
    folder = data_dir / "synthetic"
    return ["validate", "--predictions", folder / "validation_example_preds.parquet",
            "--data", folder / "validation.parquet", "--report", report]


def test_validate_whose_plot_cannot_be_written_publishes_no_report(data_dir, tmp_path):
    report = tmp_path / "report"
    (report / "per_era.png").mkdir(parents=True)
    result = cli(*validate_args(data_dir, report))
    assert sorted(p.name for p in report.iterdir()) == ["per_era.png"]  # no report.json, no per_era.csv
    assert error_line(result) == f"Error: {report / 'per_era.png'}: Is a directory"


def test_validate_on_a_full_disk_keeps_the_previous_report(data_dir, tmp_path):
    import resource

    report = tmp_path / "report"
    assert cli(*validate_args(data_dir, report)).exit_code == 0
    sizes = {p.name: p.stat().st_size for p in report.iterdir()}
    assert sorted(sizes) == ["per_era.csv", "per_era.png", "report.json"]
    before = {name: (report / name).read_bytes() for name in sizes}
    small = max(sizes["per_era.csv"], sizes["report.json"])
    assert sizes["per_era.png"] > small + 1024
    limit = small + 1024  # every file but the plot fits: writing the plot fails as on a full disk

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "numerflow", *map(str, validate_args(data_dir, report)),
                           "--target", "target_ender_20"],  # another report than the first
                          cwd=tmp_path, capture_output=True, text=True, preexec_fn=full_disk)
    assert {name: (report / name).read_bytes() for name in sizes} == before
    assert done.returncode == 1 and done.stderr.strip() == f"Error: {report / 'per_era.png'}: File too large"
    assert temporaries(report) == []


# ---- submissions happen once: under concurrency, after kills, whatever the lock file holds

ROUND = 600  # the fake server's current round
ROUND_TOML = "\n".join(f'[models.{name}]\nmodel = "models/{checkpoint}.pt"'
                       for name, checkpoint in (("fake_model", "a"), ("other_model", "b")))  # newest version, data/


@pytest.fixture
def round_project(numerai, tmp_path, fake_models):
    """A project folder for `numerflow round`: two models in numerflow.toml (live data comes from
    the fake server)."""
    import shutil

    (tmp_path / "models").mkdir()
    for name, path in fake_models.items():
        shutil.copyfile(path, tmp_path / "models" / f"{name}.pt")
    (tmp_path / "numerflow.toml").write_text(ROUND_TOML)
    return tmp_path


@pytest.fixture
def project(numerai, tmp_path, synthetic_dir, copy_live):
    """A project folder for `numerflow submit`: the current round's live data and a valid
    predictions file."""
    import numpy as np
    import pandas as pd

    copy_live(synthetic_dir, tmp_path / "data", ROUND)
    ids = pd.read_parquet(tmp_path / "data" / "v5.2" / "live.parquet", columns=[]).index
    (tmp_path / "predictions").mkdir()
    pd.DataFrame({"id": ids, "prediction": np.random.default_rng(0).random(len(ids))}).to_csv(
        tmp_path / "predictions" / f"fake_model_{ROUND}.csv", index=False)
    return tmp_path


def numerflow_job(server, *args, kill_at_receipt: bool = False) -> list[str]:
    """argv running `numerflow <args>` in a subprocess against the fake server; with
    `kill_at_receipt` it SIGKILLs itself when about to write a receipt (after Numerai accepted)."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numerapi.base_api
        numerapi.base_api.API_TOURNAMENT_URL = {server.url!r}
        import numerflow.stages.submit as submit
        if {kill_at_receipt!r}:
            submit.write_receipt = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        from numerflow.cli import main
        sys.argv = ["numerflow"] + {list(map(str, args))!r}
        main()
    """)
    return [sys.executable, "-c", script]


def test_two_submits_at_once_upload_once(project, numerai):
    numerai.hang("upload", seconds=3, times=2)  # both runs would be inside the upload together
    jobs = [subprocess.Popen(numerflow_job(numerai, "submit", "--model-name", "fake_model"), cwd=project,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((job.wait(), job.stderr.read().strip()) for job in jobs)
    assert len(numerai.submissions) == 1
    assert outcomes[0] == (0, "")
    assert outcomes[1][0] == 1 and outcomes[1][1].startswith("Error: ")
    assert ("another `numerflow round` or `numerflow submit` is running" in outcomes[1][1]
            or "was already submitted for round 600" in outcomes[1][1])
    receipt = json.loads((project / "receipts" / f"{ROUND}_fake_model.json").read_text())
    assert receipt["submission_id"] == numerai.submissions[0]["id"]


def test_submit_while_the_lock_is_held_uploads_nothing(project, numerai):
    from numerflow.files import round_lock
    from numerflow.schema import LOCK_FILE

    with round_lock(project / "data" / LOCK_FILE):
        result = cli("submit", "--model-name", "fake_model")
    assert error_line(result) == (f"Error: {Path('data') / LOCK_FILE}: another `numerflow round` or "
                                  f"`numerflow submit` is running (pid {os.getpid()}); exiting")
    assert numerai.submissions == [] and "upload" not in [r.path for r in numerai.log]


def test_submit_killed_before_its_receipt_does_not_upload_again(project, numerai):
    job = subprocess.run(numerflow_job(numerai, "submit", "--model-name", "fake_model", kill_at_receipt=True),
                         cwd=project, capture_output=True, text=True)
    assert job.returncode == -signal.SIGKILL and len(numerai.submissions) == 1
    first = numerai.submissions[0]
    result = cli("submit", "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert len(numerai.submissions) == 1  # asked Numerai, found the upload, did not upload again
    receipt = json.loads((project / "receipts" / f"{ROUND}_fake_model.json").read_text())
    assert receipt["submission_id"] == first["id"] and receipt["numerai_filename"] == first["filename"]
    assert result.output.splitlines()[0] == (f"Already submitted as model 'fake_model' for round {ROUND} by an "
                                             f"interrupted run (submission id {first['id']}, found on Numerai); "
                                             f"not uploaded again")
    assert sorted(p.name for p in (project / "receipts").iterdir()) == [f"{ROUND}_fake_model.json"]


def test_round_killed_before_a_receipt_does_not_submit_that_model_again(round_project, numerai):
    project = round_project
    job = subprocess.run(numerflow_job(numerai, "round", kill_at_receipt=True), cwd=project,
                         capture_output=True, text=True)
    assert job.returncode == -signal.SIGKILL and len(numerai.submissions) == 1
    result = cli("round")
    assert result.exit_code == 0, result.output
    assert len(numerai.submissions) == 2  # the killed run's model once, the other model once
    assert sorted(s["modelId"] for s in numerai.submissions) == sorted(numerai.models.values())
    assert "an interrupted run had submitted it" in result.output


def test_an_empty_lock_file_does_not_block_the_next_round(round_project, numerai):
    from numerflow.schema import LOCK_FILE

    project = round_project
    (project / "data").mkdir()
    (project / "data" / LOCK_FILE).write_text("")  # a crash right after creating it
    result = cli("round")
    assert result.exit_code == 0, result.output
    assert len(numerai.submissions) == 2


def test_a_rate_limited_upload_is_retried_once(project, numerai, monkeypatch):
    import numerflow.numerai

    waits = []
    monkeypatch.setattr(numerflow.numerai.transport.time, "sleep", waits.append)
    numerai.fail("upload", status=429, retry_after="5")
    numerai.fail("create_submission", status=429, retry_after="1")
    result = cli("submit", "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert len(numerai.submissions) == 1 and waits == [5.0, 1.0]


def test_prepare_writes_the_manifest_keys_schema_defines(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    manifest = schema.read_prepared_manifest(data_dir / schema.PREPARED_DIR)
    assert sorted(manifest) == sorted(schema.PREPARED_MANIFEST_KEYS)
    assert sorted(manifest[schema.MANIFEST_FILES]) == sorted(schema.PREPARED_FILES)
    for name, record in manifest[schema.MANIFEST_FILES].items():
        path = data_dir / schema.PREPARED_DIR / name
        assert record["size"] == path.stat().st_size
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
