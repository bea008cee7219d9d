"""ensemble.json edited or damaged (issue 27 point 7): a member's weight missing or not a number,
a member checkpoint path pointing outside the folder, a member checkpoint replaced with its `files`
record removed: each is one Error line from predict, validate and compare, nothing written.
Through the CLI on a real fitted ensemble of a cv run on the synthetic set."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from numerflow.cli import app
from tests.helpers import TINY, ok, one_error, runner

@pytest.fixture(scope="module")
def built(synthetic_dir, tmp_path_factory):
    """data/prepared, a cv run cv/c, its fitted ensemble ensembles/e and another checkpoint models/other.pt."""
    root = tmp_path_factory.mktemp("ensemble_files")
    here = os.getcwd()
    os.chdir(root)
    try:
        ok(runner.invoke(app, ["prepare", "--data-dir", str(synthetic_dir.parent), "--feature-set", "all",
                               "--downsample", "1", "--out-dir", "data/prepared"]))
        ok(runner.invoke(app, ["cv", "--data", "data/prepared", "--name", "c", "--folds", "2", "--embargo", "1", *TINY]))
        ok(runner.invoke(app, ["ensemble", "cv/c", "--fit", "--name", "e", "--device", "cpu"]))
        ok(runner.invoke(app, ["train", "--data", "data/prepared", "--out", "models/other.pt", *TINY, "--seed", "3"]))
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def project(built, tmp_path, monkeypatch):
    shutil.copytree(built, tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    return tmp_path / "p"


def edit(change) -> None:
    path = Path("ensembles/e/ensemble.json")
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def refused_everywhere(*expected: str) -> None:
    data = "data/prepared/validation.parquet"
    one_error(runner.invoke(app, ["predict", "--ensemble", "ensembles/e", "--data", data, "--out", "p.csv"]), *expected)
    one_error(runner.invoke(app, ["validate", "--ensemble", "ensembles/e", "--data", data]), *expected)
    one_error(runner.invoke(app, ["compare", "ensembles/e", "--name", "x"]), *expected)
    assert not Path("p.csv").exists() and not Path("reports/e").exists() and not Path("compare/x").exists()


def test_the_fitted_ensemble_is_used(project):
    ok(runner.invoke(app, ["validate", "--ensemble", "ensembles/e", "--data", "data/prepared/validation.parquet"]))
    report = json.loads(Path("reports/e/report.json").read_text())
    record = json.loads(Path("ensembles/e/ensemble.json").read_text())
    member = record["members"][0]["checkpoint"]
    assert report["provenance"]["checkpoints"] == {f"../../ensembles/e/{member}": record["files"][member]["sha256"]}


@pytest.mark.parametrize("weight", [None, "heavy", -1])
def test_a_members_weight_missing_or_not_a_number(project, weight):
    def change(record):
        if weight is None:
            del record["members"][0]["weight"]
        else:
            record["members"][0]["weight"] = weight

    edit(change)
    refused_everywhere("member 0's weight is", "not a number of at least 0", "--fit")


def test_a_member_checkpoint_outside_the_folder(project):
    edit(lambda record: record["members"][0].update(checkpoint="../../models/other.pt"))
    refused_everywhere("member 0's checkpoint '../../models/other.pt' points outside the ensemble folder")


def test_a_replaced_member_checkpoint_without_its_files_record(project):
    member = json.loads(Path("ensembles/e/ensemble.json").read_text())["members"][0]["checkpoint"]
    shutil.copyfile("models/other.pt", Path("ensembles/e") / member)
    edit(lambda record: record["files"].pop(member))
    refused_everywhere(f"member 0's checkpoint '{member}' is not recorded in its 'files'")


def test_a_replaced_member_checkpoint_with_its_record(project):
    member = json.loads(Path("ensembles/e/ensemble.json").read_text())["members"][0]["checkpoint"]
    shutil.copyfile("models/other.pt", Path("ensembles/e") / member)
    refused_everywhere(f"ensembles/e/{member}: does not match")
