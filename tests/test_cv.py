"""numerflow cv: the folds' eras for both schemes and the embargo (expected lists written out by
hand), out-of-fold predictions that `numerflow validate` scores to report.json's numbers, --resume
after a fold fails, and bad input. Data: 12 training eras of 30 rows, so each run takes seconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import numerflow
from numerflow.cli import app
from numerflow.errors import ConfigError, DataError
from numerflow.training.folds import plan_folds
from tests.prepared_helpers import FEATURES, TARGETS, prepared_frame
from tests.helpers import runner

pytestmark = pytest.mark.slow  # each fold trains for real: left out of the quick loop

TINY = ["--epochs", "1", "--layers", "8", "--batch-size", "64", "--device", "cpu"]
TINY_API = {"epochs": 1, "layers": [8], "batch_size": 64, "device": "cpu"}


def labels(first: int, last: int) -> list[str]:
    return [f"{i:04d}" for i in range(first, last + 1)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Training eras 0001-0012, validation eras 0013-0016 (right after: the embargo decides)."""
    folder = tmp_path_factory.mktemp("cv") / "prepared"
    folder.mkdir()
    train, valid = labels(1, 12), labels(13, 16)
    prepared_frame(train, 30, seed=1).to_parquet(folder / "train.parquet")
    prepared_frame(valid, 30, seed=2).to_parquet(folder / "validation.parquet")
    (folder / "manifest.json").write_text(json.dumps({
        "version": "test", "feature_set": "all", "features": FEATURES, "target": "target", "targets": TARGETS,
        "eras_train": train, "eras_validation": valid, "embargo": 0, "downsample": 1, "sources": {}}))
    return folder


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def fold_eras(report: dict) -> list[tuple]:
    return [(f["split"], f["test"], f["train"]) for f in report["folds"]]


# --- the folds ----------------------------------------------------------------------------------


def test_blocked_folds_train_on_every_other_era_minus_the_embargo(prepared, in_tmp):
    result = numerflow.cv(data=prepared, folds=3, scheme="blocked", embargo=1, say=None, **TINY_API)
    # Blocks of 4 eras; one era on each side of the test block is left out of its training eras.
    assert fold_eras(result.data) == [
        ("train", ["0001", "0004"], [["0006", "0012"]]),
        ("train", ["0005", "0008"], [["0001", "0003"], ["0010", "0012"]]),
        ("train", ["0009", "0012"], [["0001", "0007"]]),
    ]
    assert [f["train_eras"] for f in result.data["folds"]] == [7, 6, 7]
    assert [f["rows_train"] for f in result.data["folds"]] == [7 * 30, 6 * 30, 7 * 30]
    oof = pd.read_parquet(in_tmp / "cv" / "model" / "oof.parquet")
    assert list(oof.columns) == ["id", "era", "fold", "prediction"]
    # Every training row is predicted once, by the fold whose test block holds its era.
    train = pd.read_parquet(prepared / "train.parquet")
    assert sorted(oof["id"]) == sorted(train.index)
    expected_fold = {era: 1 + (int(era) - 1) // 4 for era in labels(1, 12)}
    assert (oof["fold"] == oof["era"].map(expected_fold)).all()


def test_expanding_folds_walk_forward_and_validation_is_a_last_fold(prepared, in_tmp):
    out = run("cv", "--data", prepared, "--folds", "3", "--scheme", "expanding", "--embargo", "1",
              "--include-validation", "--name", "walk", *TINY)
    assert out.exit_code == 0, out.output
    report = json.loads((in_tmp / "cv" / "walk" / "report.json").read_text())
    # 4 blocks of 3 eras; the first is never tested (no eras before it); validation (0013-0016)
    # trains on the training eras more than one era before 0013.
    assert fold_eras(report) == [
        ("train", ["0004", "0006"], [["0001", "0002"]]),
        ("train", ["0007", "0009"], [["0001", "0005"]]),
        ("train", ["0010", "0012"], [["0001", "0008"]]),
        ("validation", ["0013", "0016"], [["0001", "0011"]]),
    ]
    oof = pd.read_parquet(in_tmp / "cv" / "walk" / "oof.parquet")
    assert sorted(oof["era"].unique()) == labels(4, 16)
    assert [line for line in out.output.splitlines() if line.startswith("fold ") and ": test eras" in line] != []
    assert sum(": test eras" in line for line in out.output.splitlines()) == 4  # a progress line per fold


def test_the_embargo_counts_era_numbers_not_positions():
    # A downsampled prepared file (every 4th era): an embargo of 5 era numbers reaches one
    # neighbouring prepared era on each side, not five.
    eras = [f"{i:04d}" for i in range(1, 41, 4)]  # 0001, 0005, ..., 0037
    folds = plan_folds(eras, 5, "blocked", 5, Path("train.parquet"))
    assert [f.test_eras for f in folds][1] == ["0009", "0013"]
    assert folds[1].train_eras == ["0001", "0021", "0025", "0029", "0033", "0037"]
    assert plan_folds(eras, 5, "blocked", 3, Path("train.parquet"))[1].train_eras == \
        ["0001", "0005", "0017", "0021", "0025", "0029", "0033", "0037"]


# --- the out-of-fold file is a validate input with the same scores --------------------------------


def test_oof_scores_with_validate_to_report_json(prepared, in_tmp):
    result = numerflow.cv(data=prepared, folds=3, scheme="expanding", embargo=0, name="scored", say=None, **TINY_API)
    out = run("validate", "--predictions", result.oof, "--data", prepared / "train.parquet", "--json",
              "--no-report", "--no-exposure")
    assert out.exit_code == 0, out.output
    validated = json.loads(out.output)
    report = json.loads(result.report.read_text())
    assert validated["spearman"] == report["overall"]["spearman"]
    assert validated["numerai_corr"] == report["overall"]["numerai_corr"]
    assert validated["rows"] == report["overall"]["rows"] == 9 * 30  # the first block is not scored
    assert validated["spearman"]["eras_scored"] == 9
    # Each fold's numbers too: the fold's rows scored alone.
    oof = pd.read_parquet(result.oof)
    for fold in report["folds"]:
        rows = oof[oof["fold"] == fold["fold"]][["id", "prediction"]]
        alone = numerflow.validate(predictions=rows, data=prepared / "train.parquet", write_report=False,
                                   exposure=False)
        assert alone.data["numerai_corr"] == fold["numerai_corr"]
        assert alone.data["spearman"] == fold["spearman"]
    assert report["files"]["oof.parquet"]["size"] == result.oof.stat().st_size  # the set's manifest


SUMMARY = ("mean", "std", "sharpe", "max_drawdown")


def test_include_validation_oof_scores_in_one_validate_command_to_report_json(prepared, in_tmp):
    """The oof rows of --include-validation come from two files: `--data` given twice scores them
    as one set, to report.json's overall numbers."""
    result = numerflow.cv(data=prepared, folds=3, scheme="blocked", embargo=1, include_validation=True,
                          name="both", say=None, **TINY_API)
    out = run("validate", "--predictions", result.oof, "--data", prepared / "train.parquet",
              "--data", prepared / "validation.parquet", "--json", "--no-report", "--no-exposure")
    assert out.exit_code == 0, out.output
    validated = json.loads(out.output)
    overall = json.loads(result.report.read_text())["overall"]
    assert validated["rows"] == overall["rows"] == 16 * 30 and validated["eras"] == overall["eras"] == 16
    for metric in ("numerai_corr", "spearman"):
        assert validated[metric]["eras_scored"] == overall[metric]["eras_scored"] == 16
        assert [validated[metric][k] for k in SUMMARY] == pytest.approx([overall[metric][k] for k in SUMMARY],
                                                                        abs=1e-9, rel=0)
    assert validated["data"] == [str(prepared / "train.parquet"), str(prepared / "validation.parquet")]
    # The Python API takes the same list; one file alone refuses the other file's ids.
    api = numerflow.validate(predictions=result.oof, data=[prepared / "train.parquet", prepared / "validation.parquet"],
                             write_report=False, exposure=False)
    assert api.data["spearman"] == validated["spearman"]
    alone = run("validate", "--predictions", result.oof, "--data", prepared / "train.parquet", "--no-report")
    assert alone.exit_code == 1 and "120 of 480 id(s) are not in" in alone.output, alone.output


@pytest.mark.parametrize("second,message", [
    ("copy.parquet", "120 id(s) are rows of more than one --data file (validation.parquet + copy.parquet)"),
    ("missing.parquet", "missing.parquet: file not found"),
    ("validation.parquet", "given more than once"),
])
def test_several_data_files_refuse_shared_ids_missing_files_and_repeats(prepared, in_tmp, second, message):
    import shutil

    shutil.copy(prepared / "validation.parquet", in_tmp / "copy.parquet")
    predictions = in_tmp / "p.csv"
    pd.read_parquet(prepared / "validation.parquet").assign(prediction=0.5)[["prediction"]].to_csv(predictions)
    folder = in_tmp if second != "validation.parquet" else prepared
    out = run("validate", "--predictions", predictions, "--data", prepared / "validation.parquet",
              "--data", folder / second, "--report", in_tmp / "report")
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1, out.output
    assert out.output.startswith("Error: ") and message in out.output, out.output
    assert not (in_tmp / "report").exists()


# --- resume --------------------------------------------------------------------------------------


def test_resume_after_a_failed_fold_trains_only_the_rest_and_matches_an_uninterrupted_run(
        prepared, in_tmp, monkeypatch):
    import numerflow.training.folds as train_stage  # run_fold calls train_arrays from here

    real = train_stage.train_arrays
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        if fail_on_call == len(calls):
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during this fold
        return real(*args, **kwargs)

    settings = dict(data=prepared, folds=3, scheme="blocked", embargo=1, say=None, **TINY_API)
    monkeypatch.setattr(train_stage, "train_arrays", counted)
    fail_on_call = 2
    with pytest.raises(KeyboardInterrupt):
        numerflow.cv(name="run", **settings)
    folder = in_tmp / "cv" / "run"
    assert not (folder / "oof.parquet").exists() and not (folder / "report.json").exists()
    assert sorted(p.name for p in (folder / "folds").iterdir()) == ["fold_1.json", "fold_1.parquet"]

    # Without --resume the earlier run is not silently replaced.
    refused = run("cv", "--data", prepared, "--folds", "3", "--embargo", "1", "--name", "run", *TINY)
    assert refused.exit_code == 1 and refused.output.startswith("Error: ") and "--resume" in refused.output
    # Other settings cannot continue it.
    with pytest.raises(ConfigError, match="different settings: lr"):
        numerflow.cv(name="run", resume=True, **{**settings, "lr": 0.02})

    calls.clear()
    fail_on_call = None
    lines = []
    resumed = numerflow.cv(name="run", resume=True, **{**settings, "say": lines.append})
    assert len(calls) == 2  # folds 2 and 3 only
    assert (resumed.folds_run, resumed.folds_reused) == (2, 1)
    assert "fold 1/3: finished by an earlier run, reused" in lines

    monkeypatch.setattr(train_stage, "train_arrays", real)
    whole = numerflow.cv(name="whole", **settings)
    pd.testing.assert_frame_equal(pd.read_parquet(resumed.oof), pd.read_parquet(whole.oof))
    assert resumed.data["overall"] == whole.data["overall"]
    assert [f["numerai_corr"] for f in resumed.data["folds"]] == [f["numerai_corr"] for f in whole.data["folds"]]


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--folds", "13"], "12 training era(s) cannot make 13 blocked folds"),
    (["--folds", "12", "--scheme", "expanding"], "cannot make 12 expanding folds"),
    (["--folds", "3", "--embargo", "8"], "fold 1 (test eras 0001-0004) has no training eras left after the embargo"),
    (["--folds", "2", "--scheme", "expanding", "--include-validation", "--embargo", "12"],
     "fold 1 (test eras 0005-0008) has no training eras"),
])
def test_too_few_eras_for_the_folds_or_the_embargo_is_one_error_line_and_writes_nothing(prepared, in_tmp,
                                                                                        args, message):
    out = run("cv", "--data", prepared, *args, *TINY)
    assert out.exit_code == 1, out.output
    assert out.output.strip().splitlines() == [out.output.strip()] and out.output.startswith("Error: ")
    assert message in out.output
    assert not (in_tmp / "cv").exists()


@pytest.mark.parametrize("args", [["--folds", "1"], ["--embargo", "-1"], ["--scheme", "random"]])
def test_bad_option_values_are_usage_errors(prepared, in_tmp, args):
    out = run("cv", "--data", prepared, *args, *TINY)
    assert out.exit_code == 2, out.output
    assert not (in_tmp / "cv").exists()


@pytest.mark.parametrize("options,message", [
    ({"folds": 1}, "--folds: Input should be greater than or equal to 2"),  # the CLI's message (option bounds)
    ({"embargo": -1}, "--embargo: Input should be greater than or equal to 0"),
    ({"patience": 2}, "--patience does not apply"), ({"name": "../x"}, "--name"),
    ({"scheme": "random"}, "--scheme"),
])
def test_the_python_api_refuses_the_same_settings(prepared, in_tmp, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        numerflow.cv(data=prepared, say=None, **{**TINY_API, **options})
    assert not (in_tmp / "cv").exists()


def test_a_missing_prepared_folder_is_an_error(in_tmp):
    with pytest.raises(DataError):
        numerflow.cv(data=in_tmp / "nowhere", say=None, **TINY_API)
    assert not (in_tmp / "cv").exists()


# --- the in-memory training entry point ----------------------------------------------------------


def test_train_arrays_on_loaded_splits_matches_train_from_files(prepared, tmp_path):
    """The entry point cv (and sweeps) call: on the same rows it trains exactly what `train` does."""
    import torch

    from numerflow.config import TrainConfig
    from numerflow.stages.train import train
    from numerflow.training.fit import train_arrays
    from numerflow.training.data import read_manifest, read_split

    config = TrainConfig(data=prepared, out=tmp_path / "m.pt", epochs=2, layers=[8], batch_size=64, device="cpu")
    from_files = train(config)
    splits = [read_split(prepared / f"{name}.parquet", FEATURES, TARGETS) for name in ("train", "validation")]
    seen = []
    in_memory = train_arrays(config, splits[0], FEATURES, TARGETS, splits[1], on_epoch=seen.append)
    assert in_memory.metrics == from_files.metrics and seen == in_memory.metrics
    assert in_memory.best_epoch == from_files.best_epoch
    saved = torch.load(from_files.checkpoint, weights_only=True)
    kept = in_memory.checkpoint(config, read_manifest(prepared))
    assert all(torch.equal(saved["state_dict"][k], kept["state_dict"][k]) for k in saved["state_dict"])
    assert {k: v for k, v in kept.items() if k != "state_dict"} == {k: v for k, v in saved.items() if k != "state_dict"}
    # Without a validation split every epoch runs and the last one is kept.
    last = train_arrays(config, splits[0], FEATURES, TARGETS)
    assert [row["epoch"] for row in last.metrics] == [1, 2] and last.best_epoch == 2
    assert "val_mean" not in last.metrics[0]
