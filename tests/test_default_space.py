"""The built-in search space (issue 26 point 4): `numerflow sweep --show-space` prints a file that
loads as a valid space, and `numerflow sweep --cv` without --space searches it on real prepared
data (2 trials), fitted to what is prepared."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from numerflow.cli import app
from numerflow.config import PrepareConfig
from numerflow.sweeps.space import ALL_TARGETS, DEFAULT_SPACE, fit_default_space, load_default_space, load_space
from tests.helpers import fresh_python, runner

ROOT = Path(__file__).resolve().parents[1]
LEVERS = {"lr", "dropout", "layers", "arch", "bmc_weight", "targets"}


def prepared(synthetic_dir: Path, out: Path, **options) -> Path:
    from numerflow.stages.prepare import prepare

    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 out_dir=out, **options)).out_dir


def test_show_space_prints_a_space_that_loads(tmp_path):
    result = runner.invoke(app, ["sweep", "--show-space"])
    assert result.exit_code == 0, result.output
    assert result.output == DEFAULT_SPACE.read_text()
    copy = tmp_path / "sweep.toml"
    copy.write_text(result.output)
    if importlib.util.find_spec("tabm") is not None:  # as written it names --arch tabm, which needs the package
        space = load_space(copy)
        assert set(space.names) == LEVERS
        assert space.ranges["lr"]["log"] and space.choices["arch"] == ["mlp", "tabm"]
        assert space.cv["folds"] >= 2
    # a user's edit of the copy is a space too: fix the epochs, drop tabm
    copy.write_text(result.output.replace('arch = ["mlp", "tabm"]', 'arch = ["mlp"]\nepochs = 2'))
    edited = load_space(copy)
    assert edited.choices["arch"] == ["mlp"] and edited.fixed == {"epochs": 2}


def test_the_space_is_fitted_to_the_prepared_data(synthetic_dir, tmp_path):
    every = json.loads((prepared(synthetic_dir, tmp_path / "every") / "manifest.json").read_text())
    space = fit_default_space(load_default_space(), every)
    tabm_note = [n for n in space.notes if "tabm" in n]  # only where the tabm package is missing
    assert space.choices["targets"] == [every["targets"][0], ALL_TARGETS] and space.notes == tabm_note
    assert space.train_settings({"targets": ALL_TARGETS}).targets is None  # every prepared target
    main_only = dict(every, targets=every["targets"][:1])
    main_only.pop("benchmark")
    space = fit_default_space(load_default_space(), main_only)
    assert set(space.names) == LEVERS - {"targets", "bmc_weight"}
    assert any("targets not searched" in n for n in space.notes)
    assert any("bmc_weight not searched" in n for n in space.notes)


@pytest.mark.slow  # two trials of four folds train for real
def test_sweep_cv_without_space_runs_the_builtin_space(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = prepared(synthetic_dir, tmp_path / "prepared")
    result = runner.invoke(app, ["sweep", "--cv", "--data", str(data), "--trials", "2", "--seed", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "The built-in space (" in result.output
    out = Path("sweeps") / DEFAULT_SPACE.stem
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    assert LEVERS <= set(trials.columns)
    assert (out / "best.pt").is_file()


def test_sweep_without_space_or_cv_says_what_to_give(synthetic_dir, tmp_path):
    result = runner.invoke(app, ["sweep", "--data", str(tmp_path), "--trials", "2"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: give --space FILE (the search space), --cv to search the "
                                            "built-in space")


def test_without_the_tabm_package_the_builtin_space_leaves_tabm_out_and_says_so():
    """A fresh process where `import tabm` fails, as without the extra."""
    code = ("import sys; sys.modules['tabm'] = None\n"
            "from numerflow.sweeps.space import load_default_space\n"
            "space = load_default_space()\n"
            "assert space.choices['arch'] == ['mlp'], space.choices\n"
            "assert any('tabm package is not installed' in n for n in space.notes), space.notes\n")
    fresh_python(code, cwd=ROOT)
