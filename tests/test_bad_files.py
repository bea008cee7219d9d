"""Bad files and answers (issue 27 point 7), each through the CLI as a user runs it: one `Error:`
line, exit 1, nothing published under a final name."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from numerflow.cli import app
from tests.helpers import error_line, runner



# --- prepare on a user's own files (no download manifest) -------------------------------------

def own_dataset(tmp_path, synthetic_dir, change) -> tuple:
    """A copy of the synthetic version folder without its download manifest, its train.parquet
    changed by `change(frame) -> frame`."""
    folder = tmp_path / "own" / "v"
    shutil.copytree(synthetic_dir, folder)
    (folder / ".download_manifest.json").unlink(missing_ok=True)
    train = pd.read_parquet(folder / "train.parquet")
    change(train).to_parquet(folder / "train.parquet")
    return folder, train


def prepare(folder, out):
    return runner.invoke(app, ["prepare", "--dataset", str(folder), "--feature-set", "all", "--out-dir", str(out)])


def _feature_out_of_range(frame):
    frame.iloc[:, [c.startswith("feature") for c in frame.columns].index(True)] = 9
    return frame


def _target_out_of_range(frame):
    frame["target"] = frame["target"] * 3  # 0..3
    return frame


def _duplicate_id(frame):
    return frame.rename(index={frame.index[1]: frame.index[0]})


def _text_target(frame):
    frame["target"] = frame["target"].astype(str)
    return frame


@pytest.mark.parametrize("change, expected", [
    (_feature_out_of_range, "feature values outside 0..4"),
    (_target_out_of_range, "column target: target values outside 0..1 (from 0 to 3)"),
    (_duplicate_id, "1 id(s) appear more than once (first: "),
    (_text_target, "column target: target values of type "),  # the string type pandas wrote
])
def test_prepare_refuses_bad_own_files_and_publishes_nothing(tmp_path, synthetic_dir, change, expected):
    folder, _ = own_dataset(tmp_path, synthetic_dir, change)
    line = error_line(prepare(folder, tmp_path / "prepared"))
    assert line.startswith(f"Error: {folder / 'train.parquet'}: ") and expected in line
    assert not (tmp_path / "prepared").exists() or list((tmp_path / "prepared").iterdir()) == []


def test_prepare_accepts_good_own_files(tmp_path, synthetic_dir):
    folder, _ = own_dataset(tmp_path, synthetic_dir, lambda frame: frame)
    result = prepare(folder, tmp_path / "prepared")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prepared" / "manifest.json").is_file()


# --- damaged Numerai answers (tests/fake_numerai_live.py's `damage`) ------------------------

REFUSED = [({"date": "not a date"}, "ParserError"), ({"roundNumber": None}, "TypeError"),
           ({"value": "high"}, "ValueError")]


@pytest.mark.parametrize("old_client", [False, True], ids=["submission_scores", "round_model_performances_v2"])
@pytest.mark.parametrize("damage, kind", REFUSED, ids=[next(iter(d)) for d, _ in REFUSED])
def test_scores_refuses_a_damaged_answer_and_writes_nothing(tmp_path, monkeypatch, fake_numerai, damage, kind,
                                                            old_client):
    from numerflow.numerai import scores as client_scores
    from tests.test_scores import plant_rounds

    monkeypatch.chdir(tmp_path)
    if old_client:  # numerapi 2.19 - 2.x: scores from round_model_performances_v2 only
        monkeypatch.setattr(client_scores, "has_submission_scores", lambda api: False)
    plant_rounds(fake_numerai)
    fake_numerai.live.damage = damage
    line = error_line(runner.invoke(app, ["scores", "--model-name", "fake_model"]))
    call = "v2RoundModelPerformances" if old_client else "submissionScores"
    assert line == f"Error: Numerai API call '{call}' gave an unexpected answer ({kind})"
    assert not (tmp_path / "scores").exists()


def test_scores_accepts_a_number_as_a_metric_name(tmp_path, monkeypatch, fake_numerai):
    """A documented acceptance: a metric name is text, and a number's text is one (rounds.csv keeps it)."""
    from tests.test_scores import plant_rounds

    monkeypatch.chdir(tmp_path)
    plant_rounds(fake_numerai)
    fake_numerai.live.damage = {"displayName": 5}
    result = runner.invoke(app, ["scores", "--model-name", "fake_model"])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "scores" / "fake_model" / "rounds.csv")["metric"].astype(str)) >= {"5"}


DIAGNOSTICS_DAMAGE = [{"updatedAt": "not a date"}, {"validationCorrMean": "x"}, {"validationCorrMean": None},
                      {"status": 7}]


@pytest.mark.parametrize("damage", DIAGNOSTICS_DAMAGE, ids=["updatedAt", "word", "null", "status"])
def test_diagnostics_with_a_damaged_answer_never_shows_a_traceback(tmp_path, monkeypatch, fake_numerai, damage):
    import numpy as np

    from tests.fake_numerai import make_version_files

    monkeypatch.chdir(tmp_path)
    for name, body in make_version_files("v5.2").items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(body)
    ids = pd.read_parquet(tmp_path / "data" / "v5.2" / "validation.parquet", columns=[]).index
    pd.DataFrame({"id": ids, "prediction": np.random.default_rng(3).random(len(ids))}).to_csv("preds.csv", index=False)
    fake_numerai.live.damage = damage
    result = runner.invoke(app, ["diagnostics", "--model-name", "fake_model", "--predictions", "preds.csv",
                                 "--poll-interval", "0.01", "--timeout", "2"])
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None))), result.output
    if "status" in damage:  # an unknown status is "still working": the run's timeout ends it, one Error line last
        last = result.output.strip().splitlines()[-1]
        assert result.exit_code == 1 and last.startswith("Error: Numerai's diagnostics run ") and "'7'" in last
    else:  # the summary is kept as Numerai sent it
        assert result.exit_code == 0, result.output
        assert (tmp_path / "reports" / "preds" / "diagnostics.json").is_file()


def test_scores_over_two_models_reads_every_report_before_writing(tmp_path, monkeypatch, fake_numerai):
    from tests.test_scores import plant_report, plant_rounds

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NUMERFLOW_CONFIG", raising=False)
    plant_rounds(fake_numerai, "fake_model")
    plant_rounds(fake_numerai, "other_model")
    (tmp_path / "numerflow.toml").write_text('[models.fake_model]\nmodel = "models/a.pt"\n\n'
                                             '[models.other_model]\nmodel = "models/b.pt"\n')
    plant_report(tmp_path / "reports" / "a", [0.02, 0.03, 0.01, 0.04])
    (tmp_path / "reports" / "b").mkdir(parents=True)
    (tmp_path / "reports" / "b" / "report.json").write_text("{ damaged")
    line = error_line(runner.invoke(app, ["scores"]))
    assert "reports/b" in line and "report.json" in line
    assert not (tmp_path / "scores").exists()  # the first model's files are not written either


# --- smaller items (issue 27 point 8) -----------------------------------------------------------

@pytest.mark.parametrize("command, flag, value", [("train", "--layers", "256,,128"), ("train", "--layers", "256,"),
                                                  ("export", "--weights", "1,,2")])
def test_an_empty_item_in_a_list_option_is_refused(tmp_path, monkeypatch, command, flag, value):
    monkeypatch.chdir(tmp_path)
    extra = ["--model", "a.pt", "--model", "b.pt"] if command == "export" else []
    result = runner.invoke(app, [command, *extra, flag, value])
    assert result.exit_code == 2, result.output
    assert f"got '{value}' (an empty item)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_validate_data_takes_the_prepared_folder(tmp_path, monkeypatch, synthetic_dir, synthetic_models):
    monkeypatch.chdir(tmp_path)
    prepared = tmp_path / "prepared"
    assert prepare(synthetic_dir, prepared).exit_code == 0
    model = str(synthetic_models["all"])
    by_file = runner.invoke(app, ["validate", "--model", model, "--data", str(prepared / "validation.parquet"),
                                  "--no-report"])
    by_folder = runner.invoke(app, ["validate", "--model", model, "--data", str(prepared), "--no-report"])
    assert by_file.exit_code == 0 and by_folder.exit_code == 0, by_file.output + by_folder.output
    first = by_file.output.splitlines()[0]  # "Validated M on F: rows, eras": the folder is read as its file
    assert by_folder.output.splitlines()[0] == first and first.endswith("validation.parquet: 1,200 rows, 8 eras")
    (tmp_path / "empty").mkdir()
    line = error_line(runner.invoke(app, ["validate", "--model", model, "--data", "empty", "--no-report"]))
    assert line == ("Error: empty: a folder without validation.parquet; --data takes a validation Parquet file "
                    "or the prepared folder")
