"""Provenance (issue 27 point 2), through the CLI as a user runs it on the synthetic set: a report,
a cv run and a compare record the SHA-256 of each checkpoint and the prepared data's fingerprint
with the resolved targets; compare and ensemble refuse a source that changed since (one Error
line naming the command that refreshes it, nothing written); older records without provenance are
accepted with a note; `ensemble --fit` refuses data that lacks a member's recorded targets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from numerflow.cli import app
from tests.helpers import TINY, ok, one_error, runner

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(synthetic_dir: Path, *more: str):
    ok(runner.invoke(app, ["prepare", "--data-dir", str(synthetic_dir.parent), "--feature-set", "all",
                           "--downsample", "1", "--out-dir", "data/prepared", *more]))


@pytest.fixture
def project(synthetic_dir, tmp_path, monkeypatch):
    """A project folder: data/prepared, models/model.pt and its report reports/model."""
    monkeypatch.chdir(tmp_path)
    prepare(synthetic_dir)
    ok(runner.invoke(app, ["train", "--data", "data/prepared", "--out", "models/model.pt", *TINY]))
    ok(runner.invoke(app, ["validate", "--model", "models/model.pt", "--data", "data/prepared/validation.parquet"]))
    return tmp_path


def test_a_report_records_its_checkpoint_and_data(project):
    from numerflow.provenance import data_fingerprint

    report = json.loads(Path("reports/model/report.json").read_text())
    record = report["provenance"]
    assert record["checkpoints"] == {"../../models/model.pt": sha256(Path("models/model.pt"))}
    assert record["data"] == {"path": "../../data/prepared", "fingerprint": data_fingerprint("data/prepared")}
    assert record["targets"][0] == "target"


def test_compare_after_a_retrain_refuses_the_report(project):
    ok(runner.invoke(app, ["compare", "reports/model", "--name", "before"]))
    summary = json.loads(Path("compare/before/compare.json").read_text())
    assert summary["provenance"]["checkpoints"] == {"../../models/model.pt": sha256(Path("models/model.pt"))}
    recorded = json.loads(Path("reports/model/report.json").read_text())["provenance"]["checkpoints"]
    ok(runner.invoke(app, ["train", "--data", "data/prepared", "--out", "models/model.pt", *TINY, "--seed", "7"]))
    one_error(runner.invoke(app, ["compare", "reports/model", "--name", "after"]),
              f"reports/model was made from models/model.pt sha256 {recorded['../../models/model.pt'][:12]}",
              "which has changed since: rerun `numerflow validate --model models/model.pt`")
    assert not Path("compare/after").exists()


def test_a_report_from_before_provenance_is_compared_with_a_note(project):
    path = Path("reports/model/report.json")
    report = json.loads(path.read_text())
    del report["provenance"]
    path.write_text(json.dumps(report))
    result = ok(runner.invoke(app, ["compare", "reports/model", "--name", "old"]))
    assert "written before numerflow recorded provenance" in result.output


def test_a_cv_run_records_its_targets_and_is_refused_after_prepare_changes_them(synthetic_dir, tmp_path, monkeypatch):
    from numerflow.provenance import data_fingerprint

    monkeypatch.chdir(tmp_path)
    prepare(synthetic_dir, "--aux-targets", "none")
    ok(runner.invoke(app, ["cv", "--data", "data/prepared", "--name", "c", "--folds", "2", "--embargo", "1", *TINY]))
    report = json.loads(Path("cv/c/report.json").read_text())
    assert report["targets"] == ["target"] and report["data"] == "../../data/prepared"
    assert report["provenance"]["data"]["fingerprint"] == data_fingerprint("data/prepared")
    assert report["provenance"]["targets"] == ["target"]
    prepare(synthetic_dir, "--aux-targets", "all")
    one_error(runner.invoke(app, ["compare", "cv/c", "--name", "x"]),
              "cv/c was made from the prepared data in data/prepared", "rerun `numerflow cv --name c`")
    one_error(runner.invoke(app, ["ensemble", "cv/c", "--fit", "--name", "e", "--device", "cpu"]),
              "changed since", "rerun `numerflow cv --name c`")
    assert not Path("compare/x").exists() and not Path("ensembles/e").exists()


def test_ensemble_fit_refuses_data_lacking_a_members_targets(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare(synthetic_dir, "--aux-targets", "none")
    ok(runner.invoke(app, ["cv", "--data", "data/prepared", "--name", "c", "--folds", "2", "--embargo", "1", *TINY]))
    path = Path("cv/c/report.json")
    report = json.loads(path.read_text())
    report["targets"] = ["target", "target_not_prepared"]  # as a cv run on data prepared with that target
    path.write_text(json.dumps(report))
    one_error(runner.invoke(app, ["ensemble", "cv/c", "--fit", "--name", "e", "--device", "cpu"]),
              "cv/c trained on target(s) target, target_not_prepared", "lacks target_not_prepared")
    assert not Path("ensembles/e").exists()
    report["targets"] = ["target"]
    path.write_text(json.dumps(report))
    ok(runner.invoke(app, ["ensemble", "cv/c", "--fit", "--name", "e", "--device", "cpu"]))
    record = json.loads(Path("ensembles/e/ensemble.json").read_text())
    assert record["members"][0]["targets"] == ["target"] and record["data"] == "../../data/prepared"
    from numerflow.checkpoint import load_checkpoint

    assert list(load_checkpoint(Path("ensembles/e") / record["members"][0]["checkpoint"])["targets"]) == ["target"]
