"""Issue 28 point 4, honest winners: the deflated Sharpe of the best of N compared models (compare)
and of the best of N complete trials (sweep's summary), through the CLI on tiny real files, checked
against numerflow.metrics.deflated_sharpe (itself checked by hand in test_deflated_sharpe.py) fed
with per-era scores computed here: compare's own per_era.parquet, and numerai-tools' CORR of each
trial's out-of-fold predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numerai_tools.scoring import numerai_corr

from numerflow import schema
from numerflow.cli import app
from numerflow.config import PrepareConfig, SyntheticConfig
from numerflow.metrics.deflated_sharpe import deflated_sharpe
from tests.helpers import runner

LUCK = "may be luck (deflated Sharpe"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare
    from numerflow.synthetic import write_synthetic

    data_dir = tmp_path_factory.mktemp("honest") / "data"
    write_synthetic(SyntheticConfig(data_dir=data_dir, eras=60, rows_per_era=150, features=8, seed=5))
    return prepare(PrepareConfig(data_dir=data_dir, feature_set="all", downsample=1, embargo=2)).out_dir


def prediction_files(prepared: Path, folder: Path, signal: float, noise: list[float], seed: int) -> list[Path]:
    """One id,prediction file per noise level: signal x target + noise x N(0, 1)."""
    rows = pd.read_parquet(prepared / schema.VALIDATION_FILE)
    rng = np.random.default_rng(seed)
    folder.mkdir()
    paths = []
    for i, scale in enumerate(noise):
        values = signal * rows[schema.TARGET].to_numpy() + scale * rng.standard_normal(len(rows))
        paths.append(folder / f"model{i}.csv")
        pd.DataFrame({schema.ID: rows.index.astype(str), schema.PREDICTION: values}).to_csv(paths[-1], index=False)
    return paths


def sharpe(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean() / values.std())


def run_compare(prepared: Path, files: list[Path], out: Path, *more: str):
    result = runner.invoke(app, ["compare", *map(str, files), "--data", str(prepared / schema.VALIDATION_FILE),
                                 "--compare-dir", str(out), "--name", "c", "--device", "cpu", *more])
    assert result.exit_code == 0, result.output
    return result.output, out / "c"


@pytest.mark.parametrize("case", [
    # Five models of pure noise: the best of them is luck, and compare says so.
    {"signal": 0.0, "noise": [1.0] * 5, "sort": [], "series": "payout", "luck": True},
    # Three models that follow the target: the best holds up after picking it among 3.
    {"signal": 1.0, "noise": [1.0, 1.5, 2.0], "sort": ["--sort", "corr_sharpe"], "series": "corr", "luck": False},
])
def test_compare_deflates_the_best_among_every_model_compared(case, prepared, tmp_path):
    files = prediction_files(prepared, tmp_path / "predictions", case["signal"], case["noise"], seed=11)
    output, folder = run_compare(prepared, files, tmp_path / "compare", *case["sort"])
    table = pd.read_csv(folder / "compare.csv")
    per_era = pd.read_parquet(folder / "per_era.parquet")
    summary = json.loads((folder / "compare.json").read_text())

    # The best by the table's sort key (payout_mean by default) is the first row.
    sort = summary["sort"]
    assert table[sort].iloc[0] == table[sort].max()
    best = table["model"].iloc[0]
    # deflated_sharpe from compare's own per-era scores: the best's series, and N = every model's Sharpe.
    series = {name: rows[case["series"]].to_numpy(np.float64) for name, rows in per_era.groupby("model")}
    assert len(series) == len(files)
    expected = deflated_sharpe(series[best], [sharpe(values) for values in series.values()])
    assert expected.n_trials == len(files)

    assert table["deflated_sharpe"].iloc[0] == pytest.approx(expected.probability, abs=1e-12)
    assert table["deflated_sharpe"].iloc[1:].isna().all()  # only the one picked as the best is deflated
    recorded = summary["deflated_sharpe"]
    assert (recorded["model"], recorded["series"], recorded["n_trials"]) == (best, case["series"], len(files))
    assert recorded["probability"] == pytest.approx(expected.probability, abs=1e-12)
    assert summary["models"][0]["deflated_sharpe"] == pytest.approx(expected.probability, abs=1e-12)

    assert (expected.probability < 0.95) == case["luck"]  # the data does what the case says
    sentence = f"The best of {len(files)} model(s) by {sort}, {best}: its per-era"
    assert sentence in output
    assert (f"{LUCK} {expected.probability:.2f} < 0.95" in output) == case["luck"], output
    assert (f"holds up after picking it among {len(files)}" in output) == (not case["luck"])


def test_n_is_every_model_compared_not_only_the_best_few(prepared, tmp_path):
    # The same best model among more noise models: a larger N deflates it more.
    files = prediction_files(prepared, tmp_path / "predictions", 0.3, [1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0], seed=2)
    _, few = run_compare(prepared, files[:2], tmp_path / "few", "--sort", "corr_mean")
    _, many = run_compare(prepared, files, tmp_path / "many", "--sort", "corr_mean")
    few_row, many_row = (pd.read_csv(folder / "compare.csv").iloc[0] for folder in (few, many))
    assert few_row["model"] == many_row["model"] == "model0"
    assert many_row["deflated_sharpe"] < few_row["deflated_sharpe"]


def oof_per_era_corr(trial: Path, rows: pd.DataFrame) -> np.ndarray:
    """numerai-tools' CORR of a trial's out-of-fold predictions in each era they cover."""
    oof = pd.read_parquet(trial / "oof.parquet")
    predictions = pd.Series(oof[schema.PREDICTION].to_numpy(), index=oof[schema.ID].astype(str))
    covered = rows.loc[rows.index.isin(predictions.index)]
    eras = sorted(covered[schema.ERA].unique(), key=schema.era_sort_key)
    return np.array([numerai_corr(predictions.loc[g.index].rename("p").to_frame(), g[schema.TARGET].astype(float))["p"]
                     for g in (covered[covered[schema.ERA] == era] for era in eras)])


def run_sweep(prepared: Path, tmp_path: Path, trials: int, *more: str):
    space = tmp_path / "space.toml"
    space.write_text('lr = [0.003, 0.01, 0.03]\nlayers = "8"\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n'
                     '[cv]\nfolds = 2\nembargo = 2\n')
    result = runner.invoke(app, ["sweep", "--space", str(space), "--data", str(prepared), "--trials", str(trials),
                                 "--pruner", "none", "--seed", "1", "--name", "s", "--sweeps-dir",
                                 str(tmp_path / "sweeps"), *more])
    assert result.exit_code == 0, result.output
    return result.output, tmp_path / "sweeps" / "s"


@pytest.mark.slow
def test_a_cv_sweep_summary_deflates_the_best_among_its_complete_trials(prepared, tmp_path):
    output, folder = run_sweep(prepared, tmp_path, 3, "--cv")
    trials = pd.read_csv(folder / "trials.csv")
    complete = trials.loc[trials["state"] == "COMPLETE", "number"].tolist()
    best = json.loads((folder / "best.json").read_text())
    train = pd.read_parquet(prepared / schema.TRAIN_FILE)
    train.index = train.index.astype(str)
    per_era = {n: oof_per_era_corr(folder / "trials" / str(n), train) for n in complete}
    expected = deflated_sharpe(per_era[best["number"]], [sharpe(values) for values in per_era.values()])

    recorded = best["deflated_sharpe"]
    assert (recorded["trial"], recorded["n_trials"], recorded["series"]) == (best["number"], len(complete), "corr")
    assert recorded["probability"] == pytest.approx(expected.probability, abs=1e-9)
    assert recorded["sharpe"] == pytest.approx(expected.sharpe, abs=1e-9)
    line = f"The best of {len(complete)} complete trial(s), trial {best['number']}: its per-era CORR Sharpe"
    assert line in output
    assert (f"{LUCK} {expected.probability:.2f} < 0.95" in output) == (expected.probability < 0.95), output


@pytest.mark.slow
def test_a_sweep_without_cv_says_why_it_cannot_deflate(prepared, tmp_path):
    output, folder = run_sweep(prepared, tmp_path, 2)
    recorded = json.loads((folder / "best.json").read_text())["deflated_sharpe"]
    assert recorded["probability"] is None and "run the sweep with --cv" in recorded["reason"]
    assert "Deflated Sharpe of trial" in output and "not computed: trials scored on validation" in output
