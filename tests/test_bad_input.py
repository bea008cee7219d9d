"""Bad input to every command, found by an adversarial audit: each gives one `Error: ...` line and
exit 1 (a usage error and exit 2 for a bad option value), never a traceback, never a half-written or
clobbered artifact; and the secret key appears nowhere. Each test pins one fix."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from numerflow.errors import DataError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The single line a failed command printed (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def usage_error(result) -> str:
    """The `Error: ...` line of a click usage error (exit 2)."""
    assert result.exit_code == 2, result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")][-1]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- validate filters a raw file on data_type while reading ------------------------------------

def mixed_frame(n: int = 12) -> pd.DataFrame:
    """Validation rows interleaved with rows of another data_type."""
    data_type = np.where(np.arange(n) % 3 == 1, "validation", "test")
    return pd.DataFrame({
        "era": [f"{1 + i // 4:04d}" for i in range(n)],
        "data_type": data_type,
        "feature_a": (np.arange(n) % 5).astype(np.int8),
        "feature_b": ((np.arange(n) * 3) % 5).astype(np.int8),
        "target": np.linspace(0, 1, n),
    }, index=pd.Index([f"n{i}" for i in range(n)], name="id"))


def test_read_matrix_where_keeps_only_matching_rows(tmp_path):
    frame = mixed_frame()
    path = tmp_path / "v.parquet"
    frame.to_parquet(path)
    matrix, extra = schema.read_matrix(path, ["feature_b", "feature_a"], ["era", "target"], read_bytes=1,
                                       where=("data_type", "validation"))
    kept = frame[frame.data_type == "validation"]
    assert matrix.dtype == np.int8 and matrix.shape == (len(kept), 2)
    assert matrix.tolist() == kept[["feature_b", "feature_a"]].to_numpy().tolist()
    assert list(extra.index) == list(kept.index) and list(extra.columns) == ["era", "target"]
    assert extra["target"].tolist() == kept["target"].tolist()
    with pytest.raises(DataError, match=r"v.parquet: missing 1 column\(s\): kind"):
        schema.read_matrix(path, ["feature_a"], where=("kind", "validation"))


def test_read_matrix_where_never_allocates_the_skipped_rows(tmp_path):
    """A raw validation.parquet is mostly other rows: only the kept rows may be allocated."""
    rows, features = 20_000, 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(0, 5, size=(rows, features), dtype=np.int8),
                         columns=[f"feature_{j}" for j in range(features)])
    frame["data_type"] = np.where(np.arange(rows) % 10 == 0, "validation", "test")
    path = tmp_path / "v.parquet"
    frame.to_parquet(path)
    tracemalloc.start()
    try:
        matrix, _ = schema.read_matrix(path, list(frame.columns[:features]), where=("data_type", "validation"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert matrix.shape == (rows // 10, features)
    assert peak < 0.5 * rows * features  # the whole int8 matrix would be rows * features bytes


def test_validate_scores_only_validation_rows_of_a_raw_file(in_tmp, synthetic_dir, synthetic_models):
    """Results on a raw file holding other rows too equal those on its validation rows alone."""
    mixed_dir = in_tmp / "mixed"
    shutil.copytree(synthetic_dir, mixed_dir)
    valid = pd.read_parquet(synthetic_dir / schema.VALIDATION_FILE)
    other = valid.assign(data_type="test", target=valid["target"].sample(frac=1, random_state=0).to_numpy())
    other.index = "t" + other.index.astype(str)
    other.index.name = "id"
    pd.concat([other, valid]).sort_values("era", kind="stable").to_parquet(mixed_dir / schema.VALIDATION_FILE)
    preds = pd.DataFrame({"id": valid.index, "prediction": np.random.default_rng(1).random(len(valid))})
    preds.to_csv("preds.csv", index=False)
    for source in (["--predictions", "preds.csv"], ["--model", synthetic_models["all"]]):
        reports = []
        for folder in (synthetic_dir, mixed_dir):
            result = run("validate", *source, "--data", folder / schema.VALIDATION_FILE, "--json", "--no-report")
            assert result.exit_code == 0, result.output
            report = {k: v for k, v in json.loads(result.output).items() if k != "data"}
            # notes name the folder the side files were looked for in
            report["notes"] = [note.replace(str(folder), "<folder>") for note in report["notes"]]
            reports.append(report)
        assert reports[0] == reports[1]
        assert reports[0]["rows"] == len(valid)


# ---- malformed data files ----------------------------------------------------------------------

def test_text_feature_column_is_a_data_error(in_tmp, synthetic_dir, synthetic_models):
    live = pd.read_parquet(synthetic_dir / schema.LIVE_FILE)
    feature = next(c for c in live.columns if c.startswith("feature_"))
    live.astype({feature: str}).to_parquet("live.parquet")
    result = run("predict", "--model", synthetic_models["all"], "--data", "live.parquet", "--out", "p.csv")
    assert error_line(result) == (f"Error: live.parquet: column {feature}: feature values of type object, "
                                  f"expected integers 0..4")
    assert not (in_tmp / "p.csv").exists()


HAND_MADE = shutil.ignore_patterns(schema.VERSION_MANIFEST_FILE)  # its records would refuse edited files


def text_target_dataset(synthetic_dir, folder):
    shutil.copytree(synthetic_dir, folder, ignore=HAND_MADE)  # files changed below: no download record
    train = pd.read_parquet(folder / schema.TRAIN_FILE)
    train.assign(target=train["target"].astype(str)).to_parquet(folder / schema.TRAIN_FILE)
    return folder


def test_prepare_text_target_is_a_data_error_and_keeps_the_old_output(in_tmp, synthetic_dir):
    assert run("prepare", "--data-dir", synthetic_dir.parent, "--feature-set", "small", "--out-dir", "prep").exit_code == 0
    before = {p.name: p.read_bytes() for p in (in_tmp / "prep").iterdir()}
    dataset = text_target_dataset(synthetic_dir, in_tmp / "bad")
    result = run("prepare", "--dataset", dataset.name, "--feature-set", "small", "--out-dir", "prep")
    assert error_line(result) == "Error: bad/train.parquet: column target: target values of type large_string, expected numbers"
    assert {p.name: p.read_bytes() for p in (in_tmp / "prep").iterdir()} == before  # no temp files left either


def test_validate_text_target_is_a_data_error(in_tmp, synthetic_dir, synthetic_models):
    valid = pd.read_parquet(synthetic_dir / schema.VALIDATION_FILE)
    valid.assign(target="high").to_parquet("v.parquet")
    result = run("validate", "--model", synthetic_models["all"], "--data", "v.parquet", "--no-report")
    assert error_line(result) == "Error: v.parquet: target column 'target' holds str values, not numbers"


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "no 'feature_sets' object"),
    ('{"feature_sets": [1, 2]}', "no 'feature_sets' object"),
    ('{"feature_sets": {"small": "feature_a"}}', "feature set 'small' is not a list of column names"),
])
def test_malformed_features_json(in_tmp, synthetic_dir, text, message):
    shutil.copytree(synthetic_dir, in_tmp / "ds", ignore=HAND_MADE)  # files changed below: no download record
    (in_tmp / "ds" / schema.FEATURES_FILE).write_text(text)
    result = run("prepare", "--dataset", "ds", "--feature-set", "small", "--out-dir", "prep")
    assert error_line(result) == f"Error: ds/features.json: {message}"
    assert not (in_tmp / "prep").exists()


def test_manifest_that_is_not_an_object(in_tmp, synthetic_dir, synthetic_models):
    shutil.copytree(synthetic_models["all"].parent / "prepared_all", in_tmp / "prep")
    (in_tmp / "prep" / "manifest.json").write_text("[1, 2]")
    message = "Error: prep/manifest.json: not a prepare manifest (expected a JSON object)"
    assert error_line(run("train", "--data", "prep", "--epochs", "1", "--device", "cpu", "--out", "m.pt")) == message
    assert error_line(run("validate", "--model", synthetic_models["all"], "--data", "prep/validation.parquet",
                          "--no-report")) == message
    assert not (in_tmp / "m.pt").exists()


def test_manifest_lists_that_are_not_lists(in_tmp, synthetic_models):
    shutil.copytree(synthetic_models["all"].parent / "prepared_all", in_tmp / "prep")
    manifest = json.loads((in_tmp / "prep" / "manifest.json").read_text())
    (in_tmp / "prep" / "manifest.json").write_text(json.dumps({**manifest, "targets": "target"}))
    result = run("train", "--data", "prep", "--epochs", "1", "--device", "cpu", "--out", "m.pt")
    assert error_line(result) == "Error: prep/manifest.json: 'targets' is not a list of column names"


def test_empty_predictions_file_names_it(in_tmp, synthetic_dir):
    (in_tmp / "p.csv").write_text("id,prediction\n")
    result = run("validate", "--predictions", "p.csv", "--data", synthetic_dir / schema.VALIDATION_FILE, "--no-report")
    assert error_line(result) == "Error: p.csv: no rows"


def test_predict_on_a_file_without_rows(in_tmp, synthetic_dir, synthetic_models):
    pd.read_parquet(synthetic_dir / schema.LIVE_FILE).iloc[:0].to_parquet("empty.parquet")
    result = run("predict", "--model", synthetic_models["all"], "--data", "empty.parquet", "--out", "p.csv")
    assert error_line(result) == "Error: empty.parquet: no rows"


def scribbled(source, dest):
    """A copy of a Parquet file with its data pages overwritten: the footer still reads."""
    data = bytearray(source.read_bytes())
    for i in range(len(data) // 4, len(data) // 2, 7):
        data[i] = (data[i] * 31 + 7) % 256
    dest.write_bytes(bytes(data))
    return dest


def test_parquet_broken_mid_file(in_tmp, synthetic_dir, synthetic_models):
    scribbled(synthetic_dir / schema.LIVE_FILE, in_tmp / "live.parquet")
    result = run("predict", "--model", synthetic_models["all"], "--data", "live.parquet", "--out", "p.csv")
    assert error_line(result) == "Error: live.parquet: not a readable Parquet file (OSError)"
    assert not (in_tmp / "p.csv").exists()


def test_outputs_never_replace_inputs(in_tmp, synthetic_dir, synthetic_models):
    shutil.copyfile(synthetic_dir / schema.LIVE_FILE, in_tmp / "live.parquet")
    shutil.copyfile(synthetic_models["all"], in_tmp / "m.pt")
    before = {p.name: p.read_bytes() for p in in_tmp.iterdir()}
    result = run("predict", "--model", "m.pt", "--data", "live.parquet", "--out", "live.parquet")
    assert error_line(result) == "Error: live.parquet: is one of the inputs; choose another output path"
    assert error_line(run("export", "--model", "m.pt", "--out", "m.pt")) == (
        "Error: m.pt: is one of the inputs; choose another output path")
    assert {p.name: p.read_bytes() for p in in_tmp.iterdir()} == before


# ---- outputs that cannot be written ------------------------------------------------------------

def test_output_under_a_file_is_one_error_line(in_tmp, synthetic_dir, synthetic_models):
    (in_tmp / "taken").write_text("a file, not a folder")
    model = synthetic_models["all"]
    live = synthetic_dir / schema.LIVE_FILE
    cases = [
        (["predict", "--model", model, "--data", live, "--out", "taken/p.csv"], "taken: exists and is not a folder"),
        (["export", "--model", model, "--out", "taken/sub/m.pkl"], "taken/sub: Not a directory"),
        (["validate", "--model", model, "--data", synthetic_models["all"].parent / "prepared_all" / "validation.parquet",
          "--report", "taken"], "taken: exists and is not a folder"),
        (["prepare", "--data-dir", synthetic_dir.parent, "--feature-set", "small", "--out-dir", "taken/prep"],
         "taken/prep: Not a directory"),
    ]
    for args, message in cases:
        assert error_line(run(*args)) == f"Error: {message}", args
    assert (in_tmp / "taken").read_text() == "a file, not a folder"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["taken"]


def test_output_that_is_a_folder_keeps_the_folder(in_tmp, synthetic_models):
    (in_tmp / "out.pkl").mkdir()
    result = run("export", "--model", synthetic_models["all"], "--out", "out.pkl")
    assert error_line(result) == "Error: out.pkl: Is a directory"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["out.pkl"]  # no temporary file left behind


def test_quickstart_never_writes_into_a_users_project(in_tmp):
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "model.pt").write_text("my real model")
    result = run("quickstart", "--dir", ".")
    assert error_line(result) == ("Error: .: not empty and not made by `numerflow quickstart`; choose a new --dir "
                                  "(quickstart would overwrite data/, models/ and predictions/ in it)")
    assert (in_tmp / "models" / "model.pt").read_text() == "my real model"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["models"]


def test_quickstart_may_reuse_its_own_folder(in_tmp):
    from numerflow.stages.quickstart import MARKER, claim_folder

    claim_folder(in_tmp / "qs")
    (in_tmp / "qs" / "models").mkdir()
    claim_folder(in_tmp / "qs")  # a rerun: allowed
    assert (in_tmp / "qs" / MARKER).is_file()
    (in_tmp / "file").write_text("x")
    assert error_line(run("quickstart", "--dir", "file")) == "Error: file: exists and is not a folder"


# ---- option values fail at parse time (exit 2) -------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["predict", "--model", "a.pt", "--model", "b.pt", "--weights", "1"],
     "Error: Invalid value for '--weights': got 1 weight(s) for 2 --model(s)"),
    (["predict", "--model", "a.pt", "--weights", "-1"],
     "Error: Invalid value for '--weights': weights must be non-negative numbers with a positive sum"),
    (["export", "--model", "a.pt", "--weights", "0"],
     "Error: Invalid value for '--weights': weights must be non-negative numbers with a positive sum"),
    (["export", "--model", "a.pt", "--weights", "x"],
     "Error: Invalid value for '--weights': expected comma-separated numbers, got 'x'"),
    (["predict", "--model", "a.pt", "--out", "p.txt"], "Error: Invalid value for '--out': 'p.txt' must end in .csv or .parquet"),
    (["validate", "--predictions", "p.txt"], "Error: Invalid value for '--predictions': 'p.txt' must end in .csv or .parquet"),
    (["download", "--round", "0"], "Error: Invalid value for '--round': Input should be greater than or equal to 1"),
    (["train", "--lr", "0"], "Error: Invalid value for '--lr': must be a number above 0, got 0.0"),
])
def test_bad_option_values_are_usage_errors(in_tmp, args, message):
    assert usage_error(run(*args)) == message


# ---- numerflow.toml ----------------------------------------------------------------------------

@pytest.mark.parametrize("toml, message", [
    ("[train]\nepochz = 3\n", "numerflow.toml: [train]: unknown key(s) epochz (allowed: activation, batch_size, "
     "batchnorm, data, data_dir, device, dropout, epochs, input_batchnorm, l1, layers, loss, lr, memory_check, out, "
     "patience, "
     "precision, predict_with, resume, "
     "schedule, seed, targets, weight_decay)"),
    ("[predict]\nmodelz = \"a.pt\"\n", "numerflow.toml: [predict]: unknown key(s) modelz (allowed: batch_size, data, "
     "data_dir, device, ensemble, memory_check, model, neutralize, neutralize_benchmark, out, version, weights)"),
    ("[trian]\nepochs = 3\n", "numerflow.toml: unknown table [trian] (tables: compare, cv, diagnostics, download, ensemble, export, predict, "
     "prepare, quickstart, round, scores, submit, sweep, train, validate, models)"),
    ("train = 3\n", "numerflow.toml: 'train' must be a table: [train] with option = value lines"),
])
def test_toml_typos_are_errors_not_ignored(in_tmp, toml, message):
    (in_tmp / "numerflow.toml").write_text(toml)
    assert error_line(run("prepare")) == f"Error: {message}"


def test_toml_wrong_type_is_a_usage_error(in_tmp):
    (in_tmp / "numerflow.toml").write_text('[train]\nepochs = "six"\n')
    assert usage_error(run("train")) == ("Error: Invalid value for '--epochs': Input should be a valid integer, "
                                         "unable to parse string as an integer")


def test_toml_lists_and_hyphenated_keys(in_tmp, synthetic_dir):
    (in_tmp / "numerflow.toml").write_text(f'[prepare]\ndata-dir = "{synthetic_dir.parent}"\nfeature_set = "small"\n'
                                           f'aux-targets = ["target_ender_20", "target_cyrusd_20"]\nout_dir = "prep"\n')
    result = run("prepare")
    assert result.exit_code == 0, result.output
    manifest = json.loads((in_tmp / "prep" / "manifest.json").read_text())
    assert manifest["targets"] == ["target", "target_ender_20", "target_cyrusd_20"]


@pytest.mark.parametrize("toml, message", [
    ("models = 5\n", "'models' must be [models.<name>] tables, one per Numerai model"),
    ('[models.a]\nmodel = "a.pt"\nweights = ["x"]\n', "[models.a]: weights must be a list with one number per checkpoint"),
    ('[models.a]\nmodel = "a.pt"\nneutralize = true\n', "[models.a]: neutralize must be a number within [0, 1]"),
])
def test_round_models_tables_are_checked_first(in_tmp, toml, message):
    (in_tmp / "numerflow.toml").write_text(toml)
    assert error_line(run("round", "--dry-run")) == f"Error: numerflow.toml: {message}"


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
    result = run("submit", "--predictions", "p.parquet", "--dry-run")
    assert error_line(result) == ("Error: p.parquet: predictions stored as text (str), not numbers "
                                  "(checked against data/v5.2/live.parquet)")


def test_submit_refuses_before_uploading_when_receipts_cannot_be_written(live_project, in_tmp, fake_numerai):
    (in_tmp / "taken").write_text("x")
    result = run("submit", "--model-name", "fake_model", "--receipts-dir", "taken/receipts")
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
    result = run("submit", "--model-name", "fake_model")
    [submission] = fake_numerai.submissions
    line = error_line(result)
    assert line.startswith(f"Error: receipts/{ROUND}_fake_model.json: submitted (submission ")
    assert line.endswith(f") but the receipt could not be written (No space left on device); do not resubmit "
                         f"round {ROUND} for 'fake_model'")


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
    results = [run("round", "--receipts-dir", "taken/r"), run("round"), run("round"),
               run("submit", "--model-name", "fake_model", "--force", "--predictions", "nowhere.csv")]
    fake_numerai.reject_auth()
    fake_numerai.new_round()
    results.append(run("round"))
    assert [r.exit_code for r in results] == [1, 1, 1, 1, 1]
    assert len(fake_numerai.submissions) == 1  # fake_model once: never again without a receipt
    assert_secret_absent(results, caplog.text, in_tmp)


def test_secret_key_with_a_line_break(live_project, in_tmp, fake_numerai, monkeypatch):
    from tests.fake_numerai import SECRET_KEY

    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY + "\r\n")  # pasted from a CRLF file
    result = run("submit", "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY[:5] + "\n" + SECRET_KEY[5:])
    result = run("submit", "--model-name", "fake_model", "--force")
    assert error_line(result) == ("Error: NUMERAI_PUBLIC_ID or NUMERAI_SECRET_KEY holds characters that cannot be "
                                  "sent (a line break or control character?)")
    assert SECRET_KEY[5:] not in result.output
    assert len(fake_numerai.submissions) == 1


def test_numerflow_config_naming_no_file(in_tmp, monkeypatch):
    monkeypatch.setenv("NUMERFLOW_CONFIG", "conf/typo.toml")
    assert error_line(run("prepare")) == "Error: conf/typo.toml: file not found (named by NUMERFLOW_CONFIG)"


def test_unwritable_output_names_the_final_file_not_the_temporary_one(in_tmp, synthetic_models):
    from numerflow.cli import os_error_line

    assert os_error_line(PermissionError(13, "Permission denied", "out/.p.csv.k2j3h4.tmp")) == "out/p.csv: Permission denied"
    assert os_error_line(OSError(30, "Read-only file system", "/mnt/ro/models")) == "/mnt/ro/models: Read-only file system"
    if Path("/proc/self").is_dir():  # Linux: nobody, root included, can create files in /proc
        result = run("export", "--model", synthetic_models["all"], "--out", "/proc/m.pkl")
        assert error_line(result) == "Error: /proc/m.pkl: No such file or directory"
