"""Submissions happen once: two submits at once, a submit while the lock is held, a submit or a
round killed (a real SIGKILL) before its receipt, an empty lock file, a rate-limited upload. The
concurrent runs are real subprocesses against the fake Numerai server."""

from __future__ import annotations
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
import pytest
from tests.helpers import cli, error_line

pytestmark = pytest.mark.slow  # concurrent and killed subprocesses: left out of the quick loop


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
