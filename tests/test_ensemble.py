"""numerflow ensemble: the greedy path reproduced by hand (scipy ranks, numerai-tools' CORR) on
hand-made out-of-fold files; a real `sweep --cv` and `cv` run ensembled and fitted on the synthetic
set; a fitted ensemble used as a model by predict (equal to the weighted rank average of its
members), validate, export and round; and bad input refused with one Error line, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from numerflow.cli import app
from numerflow.config import PrepareConfig
from numerflow.files import publish_set
from tests.helpers import runner

pytestmark = pytest.mark.slow  # the candidates are trained for real: left out of the quick loop

TINY = {"layers": [8], "epochs": 1, "batch_size": 256, "device": "cpu", "lr": 0.01, "dropout": 0.0}


def write_trial(folder: Path, data: Path, predictions: pd.Series, settings: dict | None = None, target="target"):
    """A `sweep --cv` trial's files (trials/<n>/oof.parquet + settings.json, one publish_set), as
    numerflow.sweeps.local.keep_trial_oof writes them."""
    from numerflow.config import CvConfig
    from numerflow.training.settings import config_dict

    record = {"number": 0, "params": {}, "data": str(data), "target": target,
              "settings": config_dict(CvConfig(data=data, **(settings or TINY)))}
    frame = pd.DataFrame({"id": predictions.index, "era": predictions.attrs.get("eras", "x"), "fold": 1,
                          "prediction": predictions.to_numpy()})
    with publish_set(folder, "settings.json", record) as files:
        frame.to_parquet(files.path("oof.parquet"), index=False)
    return folder


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def one_error(result, expected: str):
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error: "), result.output
    assert expected in result.output, result.output


# --- the greedy path by hand ---------------------------------------------------------------------


@pytest.fixture
def hand_made(tmp_path):
    """A training file of 6 eras x 40 rows and three candidates with known noise levels."""
    rng = np.random.default_rng(13)
    eras = np.repeat([f"{e:04d}" for e in range(1, 7)], 40)
    ids = np.array([f"n{i:05d}" for i in range(len(eras))])
    target = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=len(eras))
    data = tmp_path / "prepared"
    data.mkdir()
    pd.DataFrame({"id": ids, "era": eras, "target": target}).set_index("id").to_parquet(data / "train.parquet")
    signal = target - 0.5
    candidates = {"a": signal + 0.6 * rng.standard_normal(len(eras)), "b": signal + 0.8 * rng.standard_normal(len(eras)),
                  "c": rng.standard_normal(len(eras))}
    for name, values in candidates.items():
        write_trial(tmp_path / "trials" / name, data, pd.Series(values, index=ids))
    return tmp_path, eras, target, candidates


def by_hand(candidates: dict, eras, target, size: int, objective: str):
    """Greedy forward selection with replacement, written independently: scipy's per-era ranks,
    numerai-tools' numerai_corr per era, the best step kept."""
    from numerai_tools.scoring import numerai_corr

    labels = sorted(set(eras))

    def ranks(values):
        out = np.empty(len(values))
        for era in labels:
            rows = eras == era
            out[rows] = (scipy.stats.rankdata(values[rows]) - 0.5) / rows.sum()
        return out

    def score(values):
        per_era = []
        for era in labels:
            rows = eras == era
            frame = pd.DataFrame({"p": values[rows]})
            per_era.append(float(numerai_corr(frame, pd.Series(target[rows], name="target")).iloc[0]))
        per_era = np.array(per_era)
        return per_era.mean() if objective == "corr_mean" else per_era.mean() / per_era.std()

    names = list(candidates)
    ranked = {n: ranks(v) for n, v in candidates.items()}
    total, path = np.zeros(len(target)), []
    for step in range(1, size + 1):
        values = {n: score((total + ranked[n]) / step) for n in names}
        best = max(names, key=lambda n: (values[n], -names.index(n)))
        total += ranked[best]
        path.append((best, values[best]))
    kept = 1 + int(np.argmax([v for _, v in path]))
    weights = {n: sum(1 for c, _ in path[:kept] if c == n) / kept for n in names}
    return path, kept, weights


@pytest.mark.parametrize("objective", ["corr_mean", "corr_sharpe"])
def test_the_greedy_path_is_the_one_computed_by_hand(hand_made, monkeypatch, objective):
    folder, eras, target, candidates = hand_made
    monkeypatch.chdir(folder)
    result = ok(runner.invoke(app, ["ensemble", "trials/a", "trials/b", "trials/c", "--size", "6",
                                    "--objective", objective, "--name", "e"]))
    record = json.loads((folder / "ensembles" / "e" / "ensemble.json").read_text())
    path, kept, weights = by_hand(candidates, eras, target, 6, objective)
    assert [s["chose"] for s in record["steps"]] == [f"trials/{name}" for name, _ in path]
    np.testing.assert_allclose([s["objective"] for s in record["steps"]], [v for _, v in path], rtol=0, atol=1e-9)
    assert record["kept_steps"] == kept
    assert {m["source"]: m["weight"] for m in record["members"]} == \
        {f"trials/{n}": w for n, w in weights.items() if w > 0}
    assert record["weights"] == [m["weight"] for m in record["members"]] and sum(record["weights"]) == pytest.approx(1)
    # the hand-made path mixes a and b and never takes the noise candidate c: no weight, and it is said
    assert weights["a"] > 0 and weights["b"] > 0 and weights["c"] == 0
    assert record["unused"] == ["trials/c"]
    assert any(line.startswith("No weight") and "trials/c" in line for line in result.output.splitlines())
    assert record["selection"]["kind"] == "out-of-fold training" and record["selection"]["eras"] == 6
    assert "Not fitted" in result.output and record["fitted"] is None


def test_choosing_on_validation_is_explicit_and_said_loudly(hand_made, monkeypatch):
    folder, *_ = hand_made
    monkeypatch.chdir(folder)
    shutil.copyfile(folder / "prepared" / "train.parquet", folder / "prepared" / "validation.parquet")
    result = ok(runner.invoke(app, ["ensemble", "trials/a", "trials/b", "--on", "validation", "--name", "v"]))
    assert result.output.startswith("WARNING: choosing on VALIDATION eras")
    assert "WARNING: chosen on VALIDATION eras" in result.output  # and again in the result
    assert json.loads((folder / "ensembles" / "v" / "ensemble.json").read_text())["on"] == "validation"


# --- real runs on the synthetic set ----------------------------------------------------------------


@pytest.fixture(scope="module")
def project(synthetic_dir, tmp_path_factory):
    """A prepared synthetic set, a 2-trial `sweep --cv`, a `cv` run, and two hand-made trials on
    its training rows whose greedy mix is certain (a: less noise, b: more), fitted."""
    import numerflow
    from numerflow.stages.prepare import prepare

    root = tmp_path_factory.mktemp("ensemble")
    prepared = prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                     out_dir=root / "prepared")).out_dir
    space = root / "space.toml"
    space.write_text('lr = [0.005, 0.02]\nlayers = "8"\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n'
                     '[cv]\nfolds = 3\nembargo = 2\n')
    numerflow.sweep(space=space, data=prepared, trials=2, cv=True, pruner="none", seed=1, name="s",
                    sweeps_dir=root / "sweeps", say=None)
    numerflow.cv(data=prepared, out=root / "cv", name="c", folds=3, embargo=2, **TINY, say=None)
    train = pd.read_parquet(prepared / "train.parquet", columns=["era", "target"])
    rng = np.random.default_rng(3)
    signal = train["target"].to_numpy() - 0.5
    for name, noise, seed in (("a", 0.5, 0), ("b", 0.7, 1)):
        write_trial(root / "hand" / name, prepared, pd.Series(signal + noise * rng.standard_normal(len(train)),
                                                            index=train.index.astype(str)), {**TINY, "seed": seed})
    return root, prepared


def test_a_cv_sweep_keeps_each_trials_oof_and_the_ensemble_of_it_fits(project, monkeypatch):
    import numerflow
    from numerflow.checkpoint import load_checkpoint

    root, prepared = project
    monkeypatch.chdir(root)
    for number in (0, 1):
        settings = json.loads((root / "sweeps" / "s" / "trials" / str(number) / "settings.json").read_text())
        assert settings["settings"]["epochs"] == 1 and settings["settings"]["folds"] == 3 and "oof.parquet" in settings["files"]
    result = ok(runner.invoke(app, ["ensemble", "sweeps/s", "cv/c", "--size", "4", "--fit", "--name", "real",
                                    "--device", "cpu"]))
    record = json.loads((root / "ensembles" / "real" / "ensemble.json").read_text())
    assert [c["source"] for c in record["candidates"]] == ["sweeps/s/trials/0", "sweeps/s/trials/1", "cv/c"]
    assert record["fitted"]["on"] == "train" and "Fitted" in result.output
    train_eras = pd.read_parquet(prepared / "train.parquet", columns=["era"])["era"].nunique()
    assert record["fitted"]["eras"] == train_eras
    for member in record["members"]:
        checkpoint = load_checkpoint(root / "ensembles" / "real" / member["checkpoint"])
        # its own epochs, the last one kept, nothing scored on validation while it trained
        assert checkpoint["best_epoch"] == member["settings"]["epochs"] == len(checkpoint["metrics"])
        assert not any(k.startswith("val") for row in checkpoint["metrics"] for k in row)
        assert checkpoint["train_config"]["seed"] == member["seed"]
    report = numerflow.validate(ensemble="ensembles/real", data_dir=root, write_report=False,
                                data=prepared / "validation.parquet")
    assert report.data["source"] == "ensembles/real" and report.data["eras"] > 0


@pytest.fixture(scope="module")
def fitted(project):
    """The hand-made a/b ensemble, fitted on training and validation eras."""
    import numerflow

    root, prepared = project
    result = numerflow.ensemble(candidates=[root / "hand" / "a", root / "hand" / "b"], size=3, name="ab",
                                ensembles_dir=root / "ensembles", fit=True, fit_on="all", device="cpu", say=None)
    assert len(result.record["members"]) == 2  # a and b both weigh
    return result.folder


def test_predict_ensemble_is_the_weighted_rank_average_of_its_members(project, fitted, synthetic_dir, monkeypatch,
                                                                      tmp_path):
    root, prepared = project
    monkeypatch.chdir(tmp_path)
    record = json.loads((fitted / "ensemble.json").read_text())
    assert record["fitted"]["on"] == "all"
    data = prepared / "validation.parquet"
    ok(runner.invoke(app, ["predict", "--ensemble", str(fitted), "--data", str(data), "--out", "ens.csv"]))
    eras = pd.read_parquet(data, columns=["era"])["era"]
    expected = np.zeros(len(eras))
    for k, member in enumerate(record["members"]):
        ok(runner.invoke(app, ["predict", "--model", str(fitted / member["checkpoint"]), "--data", str(data),
                               "--out", f"m{k}.csv"]))
        raw = pd.read_csv(f"m{k}.csv", dtype={"id": str}).set_index("id")["prediction"].reindex(eras.index.astype(str))
        ranks = raw.groupby(eras.to_numpy()).transform(lambda v: (scipy.stats.rankdata(v) - 0.5) / len(v))
        expected += member["weight"] * ranks.to_numpy()
    expected = pd.Series(expected).groupby(eras.to_numpy()).transform(
        lambda v: (scipy.stats.rankdata(v) - 0.5) / len(v)).to_numpy()
    got = pd.read_csv("ens.csv", dtype={"id": str}).set_index("id")["prediction"].reindex(eras.index.astype(str))
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=0, atol=1e-12)

    # validate --ensemble scores exactly those predictions
    import numerflow

    by_ensemble = numerflow.validate(ensemble=fitted, data=data, write_report=False)
    by_file = numerflow.validate(predictions=tmp_path / "ens.csv", data=data, write_report=False)
    assert by_ensemble.data["numerai_corr"] == by_file.data["numerai_corr"]


def test_export_ensemble_is_one_pickle_that_predicts_like_predict(project, fitted, synthetic_dir, monkeypatch,
                                                                  tmp_path):
    import cloudpickle

    monkeypatch.chdir(tmp_path)
    result = ok(runner.invoke(app, ["export", "--ensemble", str(fitted)]))
    pickle_path = fitted / "ab.pkl"
    assert str(pickle_path) in result.output
    live = synthetic_dir / "live.parquet"
    ok(runner.invoke(app, ["predict", "--ensemble", str(fitted), "--data", str(live), "--out", "live.csv"]))
    predicted = pd.read_csv("live.csv", dtype={"id": str}).set_index("id")["prediction"]
    frame = pd.read_parquet(live)
    exported = cloudpickle.loads(pickle_path.read_bytes())(frame, pd.DataFrame(index=frame.index))["prediction"]
    np.testing.assert_array_equal(exported.reindex(predicted.index).to_numpy(), predicted.to_numpy())


def test_round_takes_an_ensemble_key(fitted):
    from numerflow.errors import ConfigError
    from numerflow.stages.round import model_specs

    (spec,) = model_specs({"mine": {"ensemble": str(fitted), "neutralize": 0.5}})
    assert spec.predict_models() == {"ensemble": fitted} and spec.neutralize == 0.5
    with pytest.raises(ConfigError, match="exactly one of"):
        model_specs({"mine": {"ensemble": str(fitted), "model": "a.pt"}})
    with pytest.raises(ConfigError, match="weights come with it"):
        model_specs({"mine": {"ensemble": str(fitted), "weights": [1]}})


# --- bad input ----------------------------------------------------------------------------------


def test_a_candidate_without_out_of_fold_predictions(project, monkeypatch, tmp_path):
    root, _ = project
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps" / "plain").mkdir(parents=True)
    (tmp_path / "sweeps" / "plain" / "sweep.json").write_text("{}")  # a sweep run without --cv
    one_error(runner.invoke(app, ["ensemble", "sweeps/plain"]), "run it with --cv")
    one_error(runner.invoke(app, ["ensemble", str(root / "cv" / "c"), "reports/x"]), "no out-of-fold predictions")
    assert not (tmp_path / "ensembles").exists()


def test_candidates_with_no_common_eras(project, monkeypatch, tmp_path):
    root, prepared = project
    monkeypatch.chdir(tmp_path)
    write_trial(tmp_path / "elsewhere", prepared, pd.Series([0.1, 0.2], index=["nope1", "nope2"]))
    one_error(runner.invoke(app, ["ensemble", str(root / "cv" / "c"), "elsewhere"]), "no common eras")
    assert not (tmp_path / "ensembles").exists()


def test_payout_on_out_of_fold_eras_takes_bmc_for_mmc(project, monkeypatch, tmp_path):
    # issue 26: training eras have no meta model; the payout there uses BMC in its place and says so
    root, _ = project
    monkeypatch.chdir(tmp_path)
    result = ok(runner.invoke(app, ["ensemble", str(root / "cv" / "c"), "--objective", "payout"]))
    assert result.output.count("BMC stands in for MMC") == 1, result.output


def test_a_missing_member_checkpoint_or_feature(project, fitted, monkeypatch, tmp_path):
    root, prepared = project
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(fitted, broken)
    (broken / "members" / "1.pt").unlink()
    for command in (["predict", "--ensemble", "broken", "--data", str(prepared / "validation.parquet"),
                     "--out", "p.csv"],
                    ["validate", "--ensemble", "broken", "--data", str(prepared / "validation.parquet")],
                    ["export", "--ensemble", "broken"]):
        one_error(runner.invoke(app, command), "member checkpoint missing")
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "reports").exists()
    assert not (broken / "broken.pkl").exists()
    narrow = tmp_path / "narrow.parquet"
    frame = pd.read_parquet(prepared / "validation.parquet")
    frame.drop(columns=[c for c in frame.columns if c.startswith("feature")][:3]).to_parquet(narrow)
    one_error(runner.invoke(app, ["validate", "--ensemble", str(fitted), "--data", str(narrow)]), "missing 3 of")
    one_error(runner.invoke(app, ["predict", "--ensemble", str(fitted), "--data", str(narrow), "--out", "q.csv"]),
              "missing 3 of")
    assert not (tmp_path / "q.csv").exists() and not (tmp_path / "reports").exists()


def test_an_unfitted_ensemble_is_not_a_model(hand_made, monkeypatch):
    folder, *_ = hand_made
    monkeypatch.chdir(folder)
    ok(runner.invoke(app, ["ensemble", "trials/a", "trials/b", "--name", "e"]))
    one_error(runner.invoke(app, ["predict", "--ensemble", "ensembles/e", "--out", "p.csv"]), "--fit")
    one_error(runner.invoke(app, ["ensemble", "trials/a", "--name", "e"]), "exists")


def test_round_submits_an_ensemble_model_end_to_end(fake_models, fake_numerai, tmp_path, monkeypatch):
    """[models.fake_model] ensemble = "ensembles/e" in numerflow.toml: round predicts with the
    fitted ensemble (on the fake server's v5.2 data) and submits it."""
    import numerflow

    monkeypatch.chdir(tmp_path)
    prepared = fake_models["a"].parent / "prepared_a"  # conftest's train_tiny prepared it for a.pt
    train = pd.read_parquet(prepared / "train.parquet", columns=["target"])
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_trial(tmp_path / name, prepared, pd.Series(rng.random(len(train)), index=train.index.astype(str)))
    numerflow.ensemble(candidates=[tmp_path / "a", tmp_path / "b"], size=2, name="e", fit=True, device="cpu",
                       say=None)
    (tmp_path / "numerflow.toml").write_text('[round]\ndata_dir = "data"\nversion = "v5.2"\n\n'
                                             '[models.fake_model]\nensemble = "ensembles/e"\n')
    result = ok(runner.invoke(app, ["round"]))
    assert result.output.splitlines()[-1] == "Round 600: 1 submitted, 0 already done, 0 failed"
    (submission,) = fake_numerai.submissions
    submitted = pd.read_csv(tmp_path / "predictions" / "fake_model_600.csv", dtype={"id": str}).set_index("id")
    expected = numerflow.predict(ensemble="ensembles/e", data=tmp_path / "data" / "v5.2" / "live.parquet").frame
    np.testing.assert_array_equal(submitted["prediction"].to_numpy(),
                                  expected["prediction"].reindex(submitted.index).to_numpy())
