"""A project folder moved elsewhere (issue 27 point 7): files the project writes record paths
relative to themselves, so `compare` and `ensemble` of a `sweep --cv` and a cv run work after
`cp -r` to a new folder and removing the old one; older records holding absolute paths still work;
a cv run's report.json without settings and a sweep trial whose settings.json is gone are one
Error line each. Through the CLI on the synthetic set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from numerflow.cli import app
from tests.helpers import TINY, ok, one_error, runner

@pytest.fixture(scope="module")
def built(synthetic_dir, tmp_path_factory):
    """A project with data/prepared, a two-trial `sweep --cv` sweeps/s and a cv run cv/c."""
    import os

    old = tmp_path_factory.mktemp("moved") / "old"
    old.mkdir()
    here = os.getcwd()
    os.chdir(old)
    try:
        ok(runner.invoke(app, ["prepare", "--data-dir", str(synthetic_dir.parent), "--feature-set", "all",
                               "--downsample", "1", "--out-dir", "data/prepared"]))
        Path("space.toml").write_text('lr = [0.005, 0.02]\nlayers = "8"\nepochs = 1\nbatch_size = 256\n'
                                      'device = "cpu"\n[cv]\nfolds = 2\nembargo = 1\n')
        ok(runner.invoke(app, ["sweep", "--space", "space.toml", "--data", "data/prepared", "--trials", "2", "--cv",
                               "--pruner", "none", "--name", "s"]))
        ok(runner.invoke(app, ["cv", "--data", "data/prepared", "--name", "c", "--folds", "2", "--embargo", "1", *TINY]))
    finally:
        os.chdir(here)
    return old


@pytest.fixture
def moved(built, tmp_path, monkeypatch):
    """The project copied to a new folder (cp -r), the original gone."""
    original = tmp_path / "original"
    shutil.copytree(built, original)
    new = tmp_path / "elsewhere" / "project"
    shutil.copytree(original, new)
    shutil.rmtree(original)
    monkeypatch.chdir(new)
    return new


def test_the_records_hold_relative_paths(moved):
    assert json.loads(Path("sweeps/s/sweep.json").read_text())["data"] == "../../data/prepared"
    assert json.loads(Path("sweeps/s/trials/0/settings.json").read_text())["data"] == "../../../../data/prepared"
    assert json.loads(Path("cv/c/report.json").read_text())["data"] == "../../data/prepared"


def test_compare_and_ensemble_of_a_moved_sweep_work(moved):
    result = ok(runner.invoke(app, ["compare", "sweeps/s", "cv/c", "--trials", "--name", "m"]))
    assert "s:0" in result.output and "s:1" in result.output and "c" in result.output
    ok(runner.invoke(app, ["compare", "sweeps/s", "--name", "best"]))  # best.pt on sweep.json's data
    ok(runner.invoke(app, ["ensemble", "sweeps/s", "cv/c", "--name", "e"]))
    assert json.loads(Path("ensembles/e/ensemble.json").read_text())["data"] == "../../data/prepared"


def test_older_absolute_paths_still_work(moved):
    for path in (Path("sweeps/s/trials/0/settings.json"), Path("sweeps/s/sweep.json")):
        record = json.loads(path.read_text())
        record["data"] = str((moved / "data" / "prepared").resolve())
        path.write_text(json.dumps(record))
    ok(runner.invoke(app, ["ensemble", "sweeps/s", "--name", "abs"]))
    ok(runner.invoke(app, ["compare", "sweeps/s", "--trials", "--name", "abs"]))


def test_a_cv_report_without_settings_is_one_error(moved):
    path = Path("cv/c/report.json")
    record = json.loads(path.read_text())
    del record["settings"]
    path.write_text(json.dumps(record))
    one_error(runner.invoke(app, ["ensemble", "cv/c", "--name", "x"]), "cv/c/report.json: 'settings' is missing",
              "numerflow cv --name c")
    one_error(runner.invoke(app, ["compare", "cv/c", "--name", "x"]), "'settings' is missing")
    assert not Path("ensembles/x").exists() and not Path("compare/x").exists()


def test_a_trial_whose_settings_json_is_gone_is_one_error(moved):
    Path("sweeps/s/trials/1/settings.json").unlink()
    one_error(runner.invoke(app, ["ensemble", "sweeps/s", "--name", "x"]), "sweeps/s/trials/1/settings.json: missing")
    one_error(runner.invoke(app, ["compare", "sweeps/s", "--trials", "--name", "x"]), "settings.json: missing")
    assert not Path("ensembles/x").exists() and not Path("compare/x").exists()
