"""submit: the file checks against the live ids, dry runs, receipts, and uploads through the real
numerapi client to the local fake Numerai server (retries, auth failures, unknown names, closed
rounds) — and the secret key never showing up anywhere."""

from __future__ import annotations

import hashlib
import json
import logging
import sys

import numpy as np
import pandas as pd
import pytest

from numerflow.cli import app
from tests.fake_numerai import SECRET_KEY
from tests.helpers import cli, error_line, runner

ROUND = 600  # the fake server's current round


@pytest.fixture
def workdir(tmp_path, monkeypatch, synthetic_dir, copy_live):
    """A project folder: data/v5.2/live.parquet of the fake server's current round and a valid
    predictions file for it."""
    monkeypatch.chdir(tmp_path)
    copy_live(synthetic_dir, tmp_path / "data", ROUND)
    ids = pd.read_parquet(tmp_path / "data" / "v5.2" / "live.parquet", columns=[]).index
    rng = np.random.default_rng(0)
    write_preds(tmp_path / "predictions" / f"model_{ROUND}.csv", pd.DataFrame({"id": ids, "prediction": rng.random(len(ids))}))
    return tmp_path


def write_preds(path, frame):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def preds_path():
    return f"predictions/model_{ROUND}.csv"


def run_submit(*args):
    return runner.invoke(app, ["submit", *map(str, args)])


def no_credentials(monkeypatch):
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)


# ---- the checks (no network)

def test_dry_run_needs_no_credentials_and_writes_nothing(workdir, monkeypatch):
    no_credentials(monkeypatch)
    result = run_submit("--model-name", "fake_model", "--dry-run")
    assert result.exit_code == 0, result.output
    n = len(pd.read_csv(preds_path()))
    assert result.output.strip() == (f"Dry run: {preds_path()} passes every check ({n:,} rows covering all {n:,} "
                                     f"live ids); would submit it as model 'fake_model' for round {ROUND}. Nothing uploaded.")
    assert not (workdir / "receipts").exists()


def test_dry_run_uploads_nothing(workdir, fake_numerai):
    result = run_submit("--model-name", "fake_model", "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake_numerai.log == [] and fake_numerai.submissions == []


def corrupt(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    frame = frame.copy()
    if how == "missing":
        return frame.iloc[12:]
    if how == "duplicate":
        return pd.concat([frame, frame.iloc[:2]])
    if how == "nan":
        frame.loc[frame.index[:3], "prediction"] = np.nan
    elif how == "outside":
        frame.loc[frame.index[:4], "prediction"] = 1.5
    elif how == "constant":
        frame["prediction"] = 0.5
    elif how == "text":
        frame["prediction"] = frame["prediction"].astype(str)
        frame.loc[frame.index[0], "prediction"] = "abc"
    return frame


@pytest.mark.parametrize("how, message", [
    ("missing", "12 live id(s) missing ("),
    ("duplicate", "2 duplicate id(s) ("),
    ("nan", "3 NaN prediction(s)"),
    ("outside", "4 prediction(s) outside [0, 1]"),
    ("constant", "predictions are constant (zero standard deviation)"),
    ("text", "1 prediction(s) that are not numbers"),
])
def test_bad_predictions_are_refused_with_the_reason(workdir, monkeypatch, how, message):
    no_credentials(monkeypatch)
    frame = pd.read_csv(preds_path(), dtype={"id": str})
    write_preds(workdir / "bad.csv", corrupt(frame, how))
    result = run_submit("--predictions", "bad.csv", "--model-name", "fake_model", "--dry-run")
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith("Error: bad.csv: ") and message in line, line
    assert line.endswith("(checked against data/v5.2/live.parquet)"), line


def test_missing_ids_are_counted_and_named(workdir):
    frame = pd.read_csv(preds_path(), dtype={"id": str})
    write_preds(workdir / "bad.csv", frame.iloc[12:])
    result = run_submit("--predictions", "bad.csv", "--dry-run")
    first = ", ".join(sorted(frame["id"].iloc[:12])[:3])
    assert result.output.strip() == (f"Error: bad.csv: 12 live id(s) missing ({first}, ...) "
                                     f"(checked against data/v5.2/live.parquet)")


def test_wrong_columns(workdir):
    frame = pd.read_csv(preds_path(), dtype={"id": str})
    frame.to_csv(workdir / "indexed.csv")  # an unnamed index column
    result = run_submit("--predictions", "indexed.csv", "--dry-run")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: indexed.csv: columns must be exactly id,prediction (found Unnamed: 0,id,prediction)"


def test_parquet_predictions_and_extra_ids_are_accepted(workdir):
    frame = pd.read_csv(preds_path(), dtype={"id": str})
    extra = pd.DataFrame({"id": ["nextra0000000001"], "prediction": [0.3]})
    pd.concat([frame, extra]).to_parquet(workdir / "p.parquet", index=False)
    result = run_submit("--predictions", "p.parquet", "--dry-run")
    assert result.exit_code == 0, result.output


def test_missing_predictions_file(workdir):
    result = run_submit("--predictions", "nope.csv", "--dry-run")
    assert result.output.strip() == "Error: nope.csv: file not found (run `numerflow predict` first)"


# ---- uploads against the fake server

def receipt(workdir, model="fake_model"):
    return json.loads((workdir / "receipts" / f"{ROUND}_{model}.json").read_text())


def test_submit_uploads_once_and_writes_a_receipt(workdir, fake_numerai):
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 1
    sub = fake_numerai.submissions[0]
    assert sub["modelId"] == fake_numerai.models["fake_model"]
    assert fake_numerai.uploads[sub["filename"]] == (workdir / preds_path()).read_bytes()
    rec = receipt(workdir)
    assert rec["round"] == ROUND and rec["model"] == "fake_model" and rec["submission_id"] == sub["id"]
    assert rec["sha256"] == hashlib.sha256((workdir / preds_path()).read_bytes()).hexdigest()
    assert result.output.splitlines() == [
        f"Submitted {preds_path()} as model 'fake_model' for round {ROUND}: submission id {sub['id']}",
        f"Receipt: receipts/{ROUND}_fake_model.json"]


def test_resubmission_is_refused_unless_forced(workdir, fake_numerai):
    assert run_submit("--model-name", "fake_model").exit_code == 0
    first = receipt(workdir)["submission_id"]
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: receipts/{ROUND}_fake_model.json: model 'fake_model' was already "
                                     f"submitted for round {ROUND} (submission {first} at "
                                     f"{receipt(workdir)['submitted_at']}); use --force to submit again")
    assert len(fake_numerai.submissions) == 1
    result = run_submit("--model-name", "fake_model", "--force")
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 2
    assert receipt(workdir)["submission_id"] == fake_numerai.submissions[1]["id"]


@pytest.mark.parametrize("target", ["create_submission", "upload", "submission_upload_auth"])
def test_transient_500s_are_retried_into_one_submission(workdir, fake_numerai, target):
    fake_numerai.fail(target, times=2)
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 1
    failed = [r for r in fake_numerai.log if r.status == 500]
    assert len(failed) == 2


def test_persistent_500s_give_a_clear_error_and_no_receipt(workdir, fake_numerai):
    fake_numerai.fail("create_submission", times=10)
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Numerai API call 'create_submission' failed after 4 tries: HTTP 500")
    # no receipt; the intent stays, so the next run asks Numerai before uploading again
    assert sorted(p.name for p in (workdir / "receipts").iterdir()) == [f"{ROUND}_fake_model.intent.json"]


def test_authentication_failure_is_not_retried(workdir, fake_numerai):
    fake_numerai.reject_auth()
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Numerai refused the credentials (Your session is invalid or has "
                                     "expired.); check NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")
    assert fake_numerai.ops().count("account") == 1
    assert fake_numerai.submissions == [] and not (workdir / "receipts").exists()


def test_missing_credentials_name_the_variables_and_env_file(workdir, fake_numerai, monkeypatch):
    no_credentials(monkeypatch)
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: Numerai credentials missing (NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY): "
                                     "set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY in the environment or in a .env file")


def test_credentials_from_env_file(workdir, fake_numerai, monkeypatch):
    no_credentials(monkeypatch)
    (workdir / ".env").write_text(f"NUMERAI_PUBLIC_ID=FAKEPUBLICID\nNUMERAI_SECRET_KEY={SECRET_KEY}\n")
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert len(fake_numerai.submissions) == 1


def test_unknown_model_name_lists_the_account_models(workdir, fake_numerai):
    result = run_submit("--model-name", "nope")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unknown model name 'nope' (this account's models: fake_model, other_model)"
    assert fake_numerai.submissions == []


def test_no_model_name_with_several_models(workdir, fake_numerai):
    result = run_submit()
    assert result.output.strip() == "Error: give --model-name: this account has 2 models (fake_model, other_model)"


def test_only_model_is_used_when_no_name_is_given(workdir, fake_numerai):
    del fake_numerai.models["other_model"]
    result = run_submit()
    assert result.exit_code == 0, result.output
    assert (workdir / "receipts" / f"{ROUND}_fake_model.json").is_file()


def test_round_closed(workdir, fake_numerai):
    fake_numerai.round_open = False
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: round {ROUND} is closed for submissions; wait for the next round to open"
    assert fake_numerai.submissions == []


def test_stale_live_data_is_refused(workdir, fake_numerai):
    fake_numerai.new_round()
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: data/v5.2/live.parquet is round {ROUND}'s live data but the current "
                                     f"round is {ROUND + 1}: run `numerflow download --live-only` and predict again")


def test_secret_never_appears(workdir, fake_numerai, caplog, assert_secret_absent):
    caplog.set_level(logging.DEBUG)
    outputs = [run_submit("--model-name", "fake_model"), run_submit("--model-name", "fake_model"),
               run_submit("--model-name", "nope", "--force")]
    fake_numerai.reject_auth()
    outputs.append(run_submit("--model-name", "fake_model", "--force"))
    assert [r.exit_code for r in outputs] == [0, 1, 1, 1]
    assert_secret_absent(outputs, caplog.text, workdir)


def test_a_refusal_that_quotes_the_secret_key_is_scrubbed_from_the_output(workdir, fake_numerai, caplog,
                                                                          assert_secret_absent):
    caplog.set_level(logging.DEBUG)
    fake_numerai.reject_auth(echo_credentials=True)  # the server's error quotes "Token <public>$<secret>"
    result = run_submit("--model-name", "fake_model")
    assert result.exit_code == 1
    assert "got Token FAKEPUBLICID$" in result.output  # the server's words reach the user, scrubbed
    assert_secret_absent([result], caplog.text, workdir)


# ---- submit and round: nothing uploaded that cannot be receipted; no secret anywhere -----------

@pytest.fixture
def live_project(in_tmp, synthetic_dir, copy_live):
    """data/v5.2/live.parquet of the fake server's round and valid predictions for it."""
    copy_live(synthetic_dir, in_tmp / "data", ROUND)
    ids = pd.read_parquet(in_tmp / "data" / "v5.2" / "live.parquet", columns=[]).index
    preds = pd.DataFrame({"id": ids, "prediction": np.random.default_rng(0).random(len(ids))})
    (in_tmp / "predictions").mkdir()
    preds.to_csv(in_tmp / "predictions" / f"model_{ROUND}.csv", index=False)
    return preds


ROUND = 600  # the fake server's current round


def test_submit_text_predictions_in_parquet(live_project, in_tmp):
    live_project.astype({"prediction": str}).to_parquet("p.parquet", index=False)
    result = cli("submit", "--predictions", "p.parquet", "--dry-run")
    assert error_line(result) == ("Error: p.parquet: predictions stored as text (str), not numbers "
                                  "(checked against data/v5.2/live.parquet)")


def test_submit_refuses_before_uploading_when_receipts_cannot_be_written(live_project, in_tmp, fake_numerai):
    (in_tmp / "taken").write_text("x")
    result = cli("submit", "--model-name", "fake_model", "--receipts-dir", "taken/receipts")
    assert error_line(result) == ("Error: taken/receipts: cannot write receipts there (taken is not a folder); "
                                  "nothing uploaded")
    assert fake_numerai.submissions == []


def test_submit_says_it_uploaded_when_the_receipt_write_fails(live_project, in_tmp, fake_numerai, monkeypatch):
    import numerflow.stages.submit

    write_json = numerflow.stages.submit.write_json

    def disk_full(path, obj):  # after the upload: the intent record before it was written
        if str(path).endswith(".intent.json"):
            return write_json(path, obj)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(numerflow.stages.submit, "write_json", disk_full)
    result = cli("submit", "--model-name", "fake_model")
    [submission] = fake_numerai.submissions
    line = error_line(result)
    assert line.startswith(f"Error: receipts/{ROUND}_fake_model.json: submitted (submission ")
    assert line.endswith(f") but the receipt could not be written (No space left on device); do not resubmit "
                         f"round {ROUND} for 'fake_model'")


def test_secret_key_with_a_line_break(live_project, in_tmp, fake_numerai, monkeypatch):
    from tests.fake_numerai import SECRET_KEY

    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY + "\r\n")  # pasted from a CRLF file
    result = cli("submit", "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY[:5] + "\n" + SECRET_KEY[5:])
    result = cli("submit", "--model-name", "fake_model", "--force")
    assert error_line(result) == ("Error: NUMERAI_PUBLIC_ID or NUMERAI_SECRET_KEY holds characters that cannot be "
                                  "sent (a line break or control character?)")
    assert SECRET_KEY[5:] not in result.output
    assert len(fake_numerai.submissions) == 1


def test_without_numerai_tools_submit_says_its_second_opinion_did_not_run(live_project, in_tmp, monkeypatch):
    args = ["submit", "--predictions", f"predictions/model_{ROUND}.csv", "--dry-run"]
    installed = cli(*args)
    assert installed.exit_code == 0, installed.output
    assert "numerai-tools is not installed" not in installed.output
    monkeypatch.setitem(sys.modules, "numerai_tools.submissions", None)  # the import raises ImportError
    absent = cli(*args)
    assert absent.exit_code == 0, absent.output
    assert ("Note: numerai-tools is not installed: its submission validator (a second opinion) did not run"
            in absent.output.splitlines())
