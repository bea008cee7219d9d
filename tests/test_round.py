"""`numerflow round`, the weekly job, against the local fake Numerai server: two models end to end,
idempotent reruns, new rounds, transient failures, auth failures, unknown names, closed rounds, the
lock, a model whose features are not in the live data, and no secret anywhere."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from numerflow.cli import app
from numerflow.files import round_lock
from numerflow.schema import LOCK_FILE
from tests.helpers import cli, runner

ROUND = 600


TOML = """
[round]
data_dir = "data"
version = "v5.2"

[models.fake_model]
model = "models/a.pt"

[models.other_model]
models = ["models/a.pt", "models/b.pt"]
weights = [2, 1]
neutralize = 0.5
"""


@pytest.fixture
def project(tmp_path, monkeypatch, fake_models):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name, path in fake_models.items():
        shutil.copyfile(path, tmp_path / "models" / f"{name}.pt")
    (tmp_path / "numerflow.toml").write_text(TOML)
    return tmp_path


def run_round(*args):
    return runner.invoke(app, ["round", *args])


def model_lines(result, name):
    return [line for line in result.output.splitlines() if f" {name}: " in line]


def test_two_models_end_to_end(project, fake_numerai):
    result = run_round()
    assert result.exit_code == 0, result.output
    assert fake_numerai.file_gets() == ["v5.2/features.json", "v5.2/live.parquet", "v5.2/live_example_preds.parquet"]
    by_model = {s["modelId"]: s for s in fake_numerai.submissions}
    assert set(by_model) == {fake_numerai.models["fake_model"], fake_numerai.models["other_model"]}
    live_ids = list(pd.read_parquet(project / "data" / "v5.2" / "live.parquet", columns=[]).index)
    for name in ("fake_model", "other_model"):
        preds = pd.read_csv(project / "predictions" / f"{name}_{ROUND}.csv", dtype={"id": str})
        assert list(preds["id"]) == live_ids
        assert (project / "receipts" / f"{ROUND}_{name}.json").is_file()
        lines = model_lines(result, name)
        assert len(lines) == 1 and f"round {ROUND} {name}: submitted predictions/{name}_{ROUND}.csv" in lines[0]
    assert result.output.splitlines()[-1] == f"Round {ROUND}: 2 submitted, 0 already done, 0 failed"
    assert (project / "data" / LOCK_FILE).read_text() == ""  # released: the flock file names no holder


def test_rerun_same_round_does_nothing(project, fake_numerai):
    assert run_round().exit_code == 0
    calls, gets = len(fake_numerai.ops()), len(fake_numerai.file_gets())
    result = run_round()
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 2
    assert len(fake_numerai.file_gets()) == gets
    assert fake_numerai.ops()[calls:] == ["rounds"]  # just the current round: no account, no upload
    assert len(model_lines(result, "fake_model")) == 1 and "already submitted" in model_lines(result, "fake_model")[0]
    assert result.output.splitlines()[-1] == f"Round {ROUND}: 0 submitted, 2 already done, 0 failed"


def test_new_round_downloads_and_submits_again(project, fake_numerai):
    assert run_round().exit_code == 0
    fake_numerai.new_round()
    result = run_round()
    assert result.exit_code == 0, result.output
    assert [s["round"] for s in fake_numerai.submissions] == [ROUND, ROUND, ROUND + 1, ROUND + 1]
    assert (project / "receipts" / f"{ROUND + 1}_other_model.json").is_file()
    assert fake_numerai.file_gets().count("v5.2/live.parquet") == 2


def test_transient_500s_then_success_submit_once(project, fake_numerai):
    fake_numerai.fail("create_submission", times=2)
    result = run_round()
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 2
    assert fake_numerai.ops().count("create_submission") == 4


def test_authentication_failure_stops_the_job_without_retries(project, fake_numerai):
    fake_numerai.reject_auth()
    result = run_round()
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Numerai refused the credentials (Your session is invalid or has "
                                     "expired.); check NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")
    assert fake_numerai.ops().count("account") == 1 and fake_numerai.submissions == []


def test_missing_credentials(project, fake_numerai, monkeypatch):
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    result = run_round()
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Numerai credentials missing (NUMERAI_SECRET_KEY): set NUMERAI_PUBLIC_ID "
                                     "and NUMERAI_SECRET_KEY in the environment or in a .env file")
    assert fake_numerai.log == []


def test_one_failing_model_does_not_stop_the_others(project, fake_numerai, synthetic_models):
    shutil.copyfile(synthetic_models["all"], project / "models" / "synthetic.pt")
    (project / "numerflow.toml").write_text(TOML + '\n[models.nope]\nmodel = "models/a.pt"\n'
                                            '\n[models.other_model_2]\nmodel = "models/synthetic.pt"\n')
    fake_numerai.models["other_model_2"] = "77777777-7777-7777-7777-777777777777"
    result = run_round()
    assert result.exit_code == 1
    assert len(fake_numerai.submissions) == 2
    (nope,) = model_lines(result, "nope")
    assert nope.endswith("nope: FAILED: unknown model name 'nope' (this account's models: fake_model, "
                         "other_model, other_model_2)")
    (bad,) = model_lines(result, "other_model_2")
    assert "other_model_2: FAILED: data/v5.2/live.parquet: missing 30 of the 30 feature(s) models/synthetic.pt needs: " in bad
    assert result.output.splitlines()[-1] == f"Round {ROUND}: 2 submitted, 0 already done, 2 failed (nope, other_model_2)"
    assert not (project / "receipts" / f"{ROUND}_nope.json").exists()


def test_round_closed(project, fake_numerai):
    fake_numerai.round_open = False
    result = run_round()
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: round {ROUND} is closed for submissions; not submitted: "
                                     f"fake_model, other_model")
    assert fake_numerai.file_gets() == [] and fake_numerai.submissions == []


def test_round_closed_after_everything_was_submitted_is_fine(project, fake_numerai):
    assert run_round().exit_code == 0
    fake_numerai.round_open = False
    assert run_round().exit_code == 0


def test_a_second_run_while_one_holds_the_lock(project, fake_numerai):
    lock = project / "data" / LOCK_FILE
    with round_lock(lock):
        result = run_round()
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {os.path.join('data', LOCK_FILE)}: another `numerflow round` or "
                                     f"`numerflow submit` is running (pid {os.getpid()}); exiting")
    assert fake_numerai.log == []
    assert lock.read_text() == ""  # released by its holder
    assert run_round().exit_code == 0


def test_a_stale_lock_from_a_dead_process_is_taken_over(project, fake_numerai):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = project / "data" / LOCK_FILE
    lock.parent.mkdir(parents=True)
    lock.write_text(dead.stdout)
    result = run_round()
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 2 and lock.read_text() == ""


def test_dry_run_uploads_nothing(project, fake_numerai):
    result = run_round("--dry-run")
    assert result.exit_code == 0, result.output
    assert fake_numerai.submissions == [] and not (project / "receipts").exists()
    assert "upload" not in [r.path for r in fake_numerai.log]
    assert "fake_model: dry run: predictions/fake_model_600.csv passes every check" in result.output
    assert result.output.splitlines()[-1] == f"Round {ROUND}: 2 checked (dry run), 0 already done, 0 failed"


@pytest.mark.parametrize("toml, message", [
    ("[round]\n", "Error: numerflow.toml: no [models.<name>] tables; add one per Numerai model, e.g. "
                  "[models.my_model] with model = \"models/model.pt\""),
    ("[models.m]\nmodel = \"a.pt\"\nneutralise = 1\n",
     "Error: numerflow.toml: [models.m]: unknown key(s) neutralise (allowed: ensemble, model, models, neutralize, neutralize_benchmark, weights)"),
    ("[models.m]\nmodel = \"a.pt\"\nmodels = [\"b.pt\"]\n",
     "Error: numerflow.toml: [models.m]: give exactly one of model = \"path.pt\", models = [\"a.pt\", ...] or "
     "ensemble = \"ensembles/<name>\""),
    ("[models.m]\nmodels = [\"a.pt\", \"b.pt\"]\nweights = [1]\n",
     "Error: numerflow.toml: [models.m]: weights must be a list with one number per checkpoint"),
])
def test_bad_model_tables_fail_before_any_call(project, fake_numerai, toml, message):
    (project / "numerflow.toml").write_text(toml)
    result = run_round()
    assert result.exit_code == 1
    assert result.output.strip() == message
    assert fake_numerai.log == []


def test_secret_never_appears(project, fake_numerai, caplog, assert_secret_absent):
    caplog.set_level(logging.DEBUG)
    outputs = [run_round(), run_round()]
    fake_numerai.new_round()
    fake_numerai.reject_auth()
    outputs.append(run_round())
    assert [r.exit_code for r in outputs] == [0, 0, 1]
    assert_secret_absent(outputs, caplog.text, project)


def test_secret_never_appears_in_failed_runs(in_tmp, fake_numerai, fake_models, caplog, assert_secret_absent):
    import logging

    caplog.set_level(logging.DEBUG)
    (in_tmp / "models").mkdir()
    shutil.copyfile(fake_models["a"], in_tmp / "models" / "a.pt")
    (in_tmp / "models" / "junk.pt").write_bytes(b"junk")
    (in_tmp / "numerflow.toml").write_text('[round]\ndata_dir = "data"\n[models.fake_model]\nmodel = "models/a.pt"\n'
                                           '[models.other_model]\nmodel = "models/junk.pt"\n[models.nope]\n'
                                           'model = "models/a.pt"\n')
    (in_tmp / "taken").write_text("x")
    results = [cli("round", "--receipts-dir", "taken/r"), cli("round"), cli("round"),
               cli("submit", "--model-name", "fake_model", "--force", "--predictions", "nowhere.csv")]
    fake_numerai.reject_auth()
    fake_numerai.new_round()
    results.append(cli("round"))
    assert [r.exit_code for r in results] == [1, 1, 1, 1, 1]
    assert len(fake_numerai.submissions) == 1  # fake_model once: never again without a receipt
    assert_secret_absent(results, caplog.text, in_tmp)
