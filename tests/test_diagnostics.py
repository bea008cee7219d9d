"""diagnostics: the real numerapi client uploads validation predictions to the fake Numerai server
and polls its diagnostics run (done, failed, timed out, retried); numerflow's side of the table
is validate's numbers for the same file; bad input and faults are one Error line with nothing
written and the secret never shown."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

import numerflow
from numerflow.cli import app
from numerflow.numerai import transport
from tests.fake_numerai import make_version_files
from tests.helpers import runner

FAST = ["--poll-interval", "0.01"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A project folder with the fake server's v5.2 files in data/v5.2/ and predictions.csv
    covering every validation id."""
    monkeypatch.chdir(tmp_path)
    for name, body in make_version_files("v5.2").items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(body)
    ids = pd.read_parquet(tmp_path / "data" / "v5.2" / "validation.parquet", columns=[]).index
    rng = np.random.default_rng(3)
    pd.DataFrame({"id": ids, "prediction": rng.random(len(ids))}).to_csv(tmp_path / "preds.csv", index=False)
    return tmp_path


def run(*args):
    return runner.invoke(app, ["diagnostics", *map(str, args)])


def saved(workdir):
    return workdir / "reports" / "preds" / "diagnostics.json"


def test_done_run_prints_both_sides_and_keeps_numerais_answer(workdir, fake_numerai):
    fake_numerai.live.delay = 0.05  # a few polls answer "running"
    result = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    assert result.exit_code == 0, result.output
    assert "running" in result.output and "done" in result.output
    kept = json.loads(saved(workdir).read_text())
    assert kept["numerai"]["validationCorrMean"] == fake_numerai.live.summary["validationCorrMean"]
    assert kept["numerai"]["status"] == "done"
    run_id = kept["diagnostics_id"]
    uploaded = pd.read_csv(pd.io.common.BytesIO(fake_numerai.live.runs[run_id]["body"]))
    assert list(uploaded.columns) == ["id", "prediction"] and len(uploaded) == 120
    # the planted summary is not what these predictions score here: the mismatch is named
    assert "Mismatch: CORR mean is 0.0125 at Numerai" in result.output
    assert fake_numerai.ops().count("diagnostics") >= 2


def test_numerflow_side_equals_validate_and_agreement_prints_no_mismatch(workdir, fake_numerai):
    report = numerflow.validate(predictions="preds.csv", data="data/v5.2/validation.parquet", write_report=False)
    ours = report.data
    fake_numerai.live.summary.update(validationCorrMean=ours["numerai_corr"]["mean"] + 4e-5,
                                     validationMmcMean=ours["mmc"]["mean"])
    result = numerflow.diagnostics(model_name="fake_model", predictions="preds.csv", poll_interval=0.01, say=None)
    table = result.frame.set_index("metric")["numerflow"]
    assert table["CORR mean"] == ours["numerai_corr"]["mean"]
    assert table["CORR sharpe"] == ours["numerai_corr"]["sharpe"]
    assert table["MMC mean"] == ours["mmc"]["mean"]
    assert table["FNC mean"] == ours["fnc"]["mean"]
    assert table["max feature exposure"] == ours["feature_exposure"]["max"]
    assert result.mismatches == []
    kept = json.loads(saved(workdir).read_text())
    assert kept["numerflow"]["numerai_corr"] == ours["numerai_corr"]


def test_checkpoint_predicts_the_validation_rows(workdir, fake_numerai, fake_models):
    result = run("--model-name", "fake_model", "--model", fake_models["a"], *FAST)
    assert result.exit_code == 0, result.output
    assert (workdir / "reports" / "a" / "diagnostics.json").is_file()


def test_failed_run_is_one_error_and_writes_nothing(workdir, fake_numerai):
    fake_numerai.live.fail_with = "Predictions must cover every validation id"
    result = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: Numerai reports diagnostics run ") and last.endswith(
        "failed: Predictions must cover every validation id")
    assert not (workdir / "reports").exists()


def test_run_past_timeout_is_one_error(workdir, fake_numerai):
    fake_numerai.live.delay = 60
    result = run("--model-name", "fake_model", "--predictions", "preds.csv", "--poll-interval", "0.02",
                 "--timeout", "0.2s")
    assert result.exit_code == 1
    assert "was still 'running' after" in result.output and "--timeout 0.2s" in result.output
    assert not (workdir / "reports").exists()


def test_5xx_and_timeouts_while_polling_are_retried(workdir, fake_numerai, monkeypatch):
    monkeypatch.setattr(transport, "TIMEOUT", (2, 0.3))
    fake_numerai.fail("diagnostics", times=2, status=502)
    fake_numerai.hang("diagnostics", seconds=0.6)  # the third ask times out on the client's side
    result = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    assert result.exit_code == 0, result.output
    statuses = [r.status for r in fake_numerai.log if r.op == "diagnostics"]
    assert statuses[:2] == [502, 502] and statuses[-1] == 200 and len(statuses) >= 4


def test_a_dropped_connection_while_polling_is_retried(workdir, fake_numerai):
    fake_numerai.drop("diagnostics", times=2)  # two asks read, then the connection closed unanswered
    result = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    assert result.exit_code == 0, result.output
    statuses = [r.status for r in fake_numerai.log if r.op == "diagnostics"]
    assert statuses[:2] == [None, None] and statuses[-1] == 200
    assert json.loads(saved(workdir).read_text())["numerai"]["status"] == "done"


def test_a_fitted_ensemble_predicts_the_validation_rows(workdir, fake_numerai, fake_models):
    """--ensemble: the fitted ensemble's members predict the validation rows and their weighted
    rank average is what is uploaded, as `predict --ensemble` makes it."""
    from tests.test_ensemble import write_trial

    prepared = fake_models["a"].parent / "prepared_a"  # conftest's train_tiny prepared it for a.pt
    train = pd.read_parquet(prepared / "train.parquet", columns=["target"])
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_trial(workdir / name, prepared, pd.Series(rng.random(len(train)), index=train.index.astype(str)))
    numerflow.ensemble(candidates=[workdir / "a", workdir / "b"], size=2, name="e", fit=True, device="cpu", say=None)
    result = run("--model-name", "fake_model", "--ensemble", "ensembles/e", *FAST)
    assert result.exit_code == 0, result.output
    kept = json.loads((workdir / "reports" / "e" / "diagnostics.json").read_text())
    uploaded = pd.read_csv(pd.io.common.BytesIO(fake_numerai.live.runs[kept["diagnostics_id"]]["body"]),
                           dtype={"id": str}).set_index("id")
    expected = numerflow.predict(ensemble="ensembles/e", data=workdir / "data" / "v5.2" / "validation.parquet").frame
    np.testing.assert_allclose(uploaded["prediction"].to_numpy(),
                               expected["prediction"].reindex(uploaded.index).to_numpy(), rtol=0, atol=1e-12)
    both = run("--model-name", "fake_model", "--ensemble", "ensembles/e", "--model", fake_models["a"])
    assert both.exit_code == 2 and "give one of --predictions, --model or --ensemble" in both.output


def test_predictions_missing_validation_ids_are_refused_before_upload(workdir, fake_numerai):
    frame = pd.read_csv("preds.csv")
    frame.iloc[5:].to_csv("short.csv", index=False)
    result = run("--model-name", "fake_model", "--predictions", "short.csv", *FAST)
    assert result.exit_code == 1
    assert result.output.startswith("Error: short.csv: 5 of the 120 validation ids of data/v5.2/validation.parquet "
                                    "have no prediction (")
    # the command that predicts every validation id (it does: test_trust_rest) (issue 27)
    assert result.output.rstrip().endswith("`numerflow predict --model MODEL --data data/v5.2/validation.parquet "
                                           "--out validation_predictions.csv` predicts them all, or give diagnostics "
                                           "--model MODEL")
    assert fake_numerai.live.runs == {} and "diagnosticsUploadAuth" not in fake_numerai.ops()
    assert not (workdir / "reports").exists()


def test_unknown_model_name(workdir, fake_numerai):
    result = run("--model-name", "nope", "--predictions", "preds.csv", *FAST)
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --model-name nope: not a model of this account "
                                     "(fake_model, other_model)")


def test_no_credentials_and_the_secret_never_shows(workdir, fake_numerai, monkeypatch, caplog,
                                                   assert_secret_absent):
    caplog.set_level(logging.DEBUG)
    done = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    fake_numerai.reject_auth(echo_credentials=True)
    refused = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    assert refused.exit_code == 1 and refused.output.startswith("Error: Numerai refused the credentials")
    monkeypatch.delenv("NUMERAI_PUBLIC_ID")
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    missing = run("--model-name", "fake_model", "--predictions", "preds.csv", *FAST)
    assert missing.exit_code == 1
    assert missing.output.strip().startswith(
        "Error: Numerai credentials missing (NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY)")
    assert_secret_absent([done, refused, missing], caplog.text, workdir)


def test_bad_timeout_is_a_usage_error(workdir):
    result = run("--model-name", "fake_model", "--predictions", "preds.csv", "--timeout", "soon")
    assert result.exit_code == 2 and "duration" in result.output
