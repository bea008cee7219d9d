"""Objectives in Numerai's currency: bmc_last and bmc_mean by hand (numerai-tools' BMC per era),
payout with BMC in MMC's place on eras without a meta model, `sweep --cv --objective bmc_last`
scoring its out-of-fold rows against the prepared benchmark joined by id, and `ensemble
--neutralize-benchmark auto` storing the proportion it chose, which predict then applies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from numerflow.cli import app
from numerflow.config import PrepareConfig
from numerflow.files import publish_set
from numerflow.sweeps.objective import Objective

numerai_scoring = pytest.importorskip("numerai_tools.scoring")
runner = CliRunner()
TINY = {"layers": [8], "epochs": 1, "batch_size": 256, "device": "cpu", "lr": 0.01, "dropout": 0.0}


def bmc_by_hand(predictions, benchmark, target, eras) -> dict:
    """numerai-tools' correlation_contribution per era, rows without a benchmark left out."""
    out = {}
    for era in sorted(set(eras)):
        at = (eras == era) & np.isfinite(benchmark)
        if at.sum() < 2:
            continue
        frame = pd.DataFrame({"p": predictions[at]})
        out[era] = float(numerai_scoring.correlation_contribution(frame, pd.Series(benchmark[at]),
                                                                  pd.Series(target[at], name="target"))["p"])
    return out


@pytest.fixture
def fixed_example():
    """5 eras of 60 rows; the benchmark is missing in the first era (Numerai's training benchmark
    starts late) and on a few rows of the others."""
    rng = np.random.default_rng(26)
    eras = np.repeat([f"{e:04d}" for e in range(1, 6)], 60)
    target = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=len(eras))
    benchmark = (target - 0.5) + rng.standard_normal(len(eras))
    predictions = (target - 0.5) + 0.5 * benchmark + rng.standard_normal(len(eras))
    benchmark[eras == "0001"] = np.nan
    benchmark[rng.choice(len(eras), 7, replace=False)] = np.nan
    return predictions, benchmark, target, eras


def test_bmc_last_and_bmc_mean_by_hand(fixed_example):
    predictions, benchmark, target, eras = fixed_example
    per_era = bmc_by_hand(predictions, benchmark, target, eras)
    assert list(per_era) == ["0002", "0003", "0004", "0005"]  # era 0001 has no benchmark: not scored
    last_two = Objective("bmc_last", last=2).scores(predictions, target, eras, None, benchmark)
    assert last_two["objective"] == pytest.approx((per_era["0004"] + per_era["0005"]) / 2, abs=1e-9)
    assert last_two["bmc_mean"] == pytest.approx(np.mean(list(per_era.values())), abs=1e-9)
    # more eras than there are: every scored era
    assert Objective("bmc_last", last=200).scores(predictions, target, eras, None, benchmark)["objective"] == \
        pytest.approx(np.mean(list(per_era.values())), abs=1e-9)
    assert Objective("bmc_mean").scores(predictions, target, eras, None, benchmark)["objective"] == \
        pytest.approx(np.mean(list(per_era.values())), abs=1e-9)


def test_payout_without_a_meta_model_takes_bmc(fixed_example):
    predictions, benchmark, target, eras = fixed_example
    per_era_bmc = bmc_by_hand(predictions, benchmark, target, eras)
    per_era_corr = {}
    for era in sorted(set(eras)):
        at = eras == era
        per_era_corr[era] = float(numerai_scoring.numerai_corr(pd.DataFrame({"p": predictions[at]}),
                                                               pd.Series(target[at], name="target"))["p"])
    expected = np.mean([0.5 * per_era_corr[e] + 2.0 * per_era_bmc[e] for e in per_era_bmc])  # eras with both
    row = Objective("payout").scores(predictions, target, eras, None, benchmark)
    assert row["objective"] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="meta model"):
        Objective("payout").scores(predictions, target, eras, None, None)


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory):
    from numerflow.stages.prepare import prepare

    root = tmp_path_factory.mktemp("objectives")
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 out_dir=root / "prepared")).out_dir


def test_sweep_cv_bmc_last_scores_oof_against_the_prepared_benchmark(prepared, tmp_path, monkeypatch):
    import numerflow

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.toml"
    space.write_text('lr = [0.005, 0.02]\nlayers = "8"\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n'
                     '[cv]\nfolds = 3\nembargo = 2\n')
    result = numerflow.sweep(space=space, data=prepared, trials=1, cv=True, pruner="none", seed=1, name="s",
                             objective="bmc_last", last=5, say=None)
    trial = tmp_path / "sweeps" / "s" / "trials" / "0"
    oof = pd.read_parquet(trial / "oof.parquet")
    train = pd.read_parquet(prepared / "train.parquet", columns=["target", "benchmark"])
    train.index = train.index.astype(str)
    joined = oof.set_index(oof["id"].astype(str)).join(train)
    per_era = bmc_by_hand(joined["prediction"].to_numpy(), joined["benchmark"].to_numpy(np.float64),
                          joined["target"].to_numpy(np.float64), joined["era"].astype(str).to_numpy())
    assert len(per_era) > 5
    expected = np.mean([per_era[e] for e in sorted(per_era)[-5:]])
    assert result.best["score"] == pytest.approx(expected, abs=1e-6)


def test_sweep_bmc_objective_without_a_benchmark_is_one_error(synthetic_dir, tmp_path, monkeypatch):
    import shutil

    from numerflow.stages.prepare import prepare

    monkeypatch.chdir(tmp_path)
    source = tmp_path / "data" / "synthetic"
    shutil.copytree(synthetic_dir, source)
    for path in source.glob("*_benchmark_models.parquet"):
        path.unlink()
    bare = prepare(PrepareConfig(data_dir=tmp_path / "data", feature_set="all", downsample=1, embargo=4,
                                 out_dir=tmp_path / "bare")).out_dir
    space = tmp_path / "space.toml"
    space.write_text('lr = [0.005, 0.02]\nlayers = "8"\nepochs = 1\n')
    for objective in ("bmc_mean", "bmc_last"):
        result = runner.invoke(app, ["sweep", "--space", str(space), "--data", str(bare), "--objective", objective])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"Error: --objective {objective}: no benchmark values in"), result.output
    assert not (tmp_path / "sweeps").exists()


def write_trial(folder, data, predictions: pd.Series, seed: int):
    """A `sweep --cv` trial's files, as numerflow.sweeps.local.keep_trial_oof writes them."""
    from numerflow.config import CvConfig
    from numerflow.training.settings import config_dict

    record = {"number": 0, "params": {}, "data": str(data), "target": "target",
              "settings": config_dict(CvConfig(data=data, **TINY, seed=seed))}
    frame = pd.DataFrame({"id": predictions.index, "era": "x", "fold": 1, "prediction": predictions.to_numpy()})
    with publish_set(folder, "settings.json", record) as files:
        frame.to_parquet(files.path("oof.parquet"), index=False)


def test_ensemble_auto_stores_the_proportion_and_predict_applies_it(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = pd.read_parquet(prepared / "train.parquet", columns=["target", "benchmark"])
    rng = np.random.default_rng(5)
    # candidates that lean on the benchmark: neutralising them raises BMC
    bench = train["benchmark"].fillna(0.5).to_numpy()
    for name, seed in (("a", 0), ("b", 1)):
        values = (train["target"].to_numpy() - 0.5) + 2.0 * (bench - 0.5) + 0.5 * rng.standard_normal(len(train))
        write_trial(tmp_path / "trials" / name, prepared, pd.Series(values, index=train.index.astype(str)), seed)
    result = runner.invoke(app, ["ensemble", "trials/a", "trials/b", "--objective", "bmc_mean",
                                 "--neutralize-benchmark", "auto", "--size", "2", "--fit", "--name", "e"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "ensembles" / "e" / "ensemble.json").read_text())
    scores = record["neutralize_benchmark_scores"]
    assert set(scores) == {"0", "0.25", "0.5", "0.75", "1"}
    assert record["neutralize_benchmark"] > 0
    assert scores[f"{record['neutralize_benchmark']:g}"] == max(scores.values())
    assert scores["0"] == pytest.approx(record["ensemble_objective"], abs=1e-12)  # P = 0: the ensemble as chosen
    assert f"Neutralised to the benchmark: {record['neutralize_benchmark']:g}" in result.output

    validation = prepared / "validation.parquet"
    members = [str(tmp_path / "ensembles" / "e" / m["checkpoint"]) for m in record["members"]]
    weights = ",".join(str(m["weight"]) for m in record["members"])
    stored = runner.invoke(app, ["predict", "--ensemble", "ensembles/e", "--data", str(validation), "--out", "e.csv"])
    assert stored.exit_code == 0, stored.output
    assert f"neutralised {record['neutralize_benchmark']:g} to the benchmark" in stored.output
    explicit = ["predict", "--data", str(validation), "--weights", weights, "--out", "m.csv",
                "--neutralize-benchmark", str(record["neutralize_benchmark"])]
    for member in members:
        explicit += ["--model", member]
    assert runner.invoke(app, explicit).exit_code == 0
    plain = runner.invoke(app, ["predict", "--ensemble", "ensembles/e", "--data", str(validation), "--out", "p.csv",
                                "--neutralize-benchmark", "0"])
    assert plain.exit_code == 0
    read = lambda name: pd.read_csv(name, dtype={"id": str}).set_index("id")["prediction"]  # noqa: E731
    np.testing.assert_allclose(read("e.csv").to_numpy(), read("m.csv").reindex(read("e.csv").index).to_numpy(),
                               atol=1e-12)
    assert not np.allclose(read("e.csv").to_numpy(), read("p.csv").reindex(read("e.csv").index).to_numpy())
