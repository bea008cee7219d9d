"""numerflow compare on real files: a synthetic data set with eras of 420 rows (TB200 needs 400),
a checkpoint and its validate report, a cv run, a sweep, and id,prediction files. Every column of
compare.csv and every per-era score is checked against numerai-tools / scipy / numpy computed
here era by era, at 1e-9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numerai_tools.scoring import correlation_contribution, numerai_corr
from scipy.stats import spearmanr

import numerflow
from numerflow import schema
from numerflow.cli import app
from numerflow.config import PrepareConfig, SyntheticConfig
from numerflow.synthetic import BENCHMARK_MODEL
from tests.conftest import train_tiny
from tests.helpers import error_line, runner

pytestmark = pytest.mark.slow  # the models compared are trained for real: left out of the quick loop

TOL = 1e-9


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The data set, a prepared folder, a checkpoint, its report, two prediction files."""
    from numerflow.stages.prepare import prepare
    from numerflow.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("compare")
    data_dir = root / "data"
    source = write_synthetic(SyntheticConfig(data_dir=data_dir, eras=24, rows_per_era=420, features=16, seed=3))
    prepared = prepare(PrepareConfig(data_dir=data_dir, feature_set="all", downsample=1, embargo=2)).out_dir
    checkpoint = train_tiny(data_dir, "all", root / "models" / "m.pt")
    report_dir = root / "reports" / "m"
    numerflow.validate(model=checkpoint, data=prepared / schema.VALIDATION_FILE, report_dir=report_dir, device="cpu")
    rows = pd.read_parquet(prepared / schema.VALIDATION_FILE)
    rows.index = rows.index.astype(str)
    rng = np.random.default_rng(7)
    signal = rows[schema.TARGET].to_numpy() + 2.5 * rng.standard_normal(len(rows))
    noisy = root / "noisy.csv"
    pd.DataFrame({schema.ID: rows.index, schema.PREDICTION: signal}).to_csv(noisy, index=False)
    churn = root / "last_round.parquet"
    pd.DataFrame({schema.PREDICTION: signal + rng.standard_normal(len(rows))},
                 index=pd.Index(rows.index, name=schema.ID)).to_parquet(churn)
    return {"root": root, "data_dir": data_dir, "source": source, "prepared": prepared, "checkpoint": checkpoint,
            "report": report_dir, "noisy": noisy, "churn": churn, "rows": rows,
            "example": source / schema.VALIDATION_EXAMPLE_FILE}


def side_column(path: Path, column: str) -> pd.Series:
    frame = pd.read_parquet(path)
    frame.index = frame.index.astype(str)
    return frame[column].astype(np.float64)


def model_predictions(checkpoint: Path, rows: pd.DataFrame) -> pd.Series:
    from numerflow.checkpoint import load_checkpoint, load_model, predict_scores

    saved = load_checkpoint(checkpoint)
    matrix = rows[list(saved["features"])].to_numpy(np.int8)
    raw = predict_scores(load_model(saved), matrix, device="cpu", predict_with=saved.get("predict_with", "main"))
    return pd.Series(raw.astype(np.float64), index=rows.index)


def reference_per_era(p: pd.Series, rows: pd.DataFrame, meta: pd.Series, bench: pd.Series,
                      features: list[str]) -> pd.DataFrame:
    """Each era's scores with numerai-tools (CORR, MMC, BMC, TB200), scipy (Spearman with the
    benchmark) and numpy (max |Pearson| with a feature), and the clipped payout."""
    out = []
    for era, g in rows.groupby(schema.ERA, sort=True):
        pred = p.loc[g.index].rename("p").to_frame()
        target = g[schema.TARGET].astype(np.float64)
        corr = numerai_corr(pred, target)["p"]
        mmc = correlation_contribution(pred, meta.loc[g.index], target)["p"]
        exposures = [abs(np.corrcoef(pred["p"], g[f].astype(float))[0, 1]) for f in features if g[f].nunique() > 1]
        out.append({"era": era, "corr": corr, "mmc": mmc,
                    "bmc": correlation_contribution(pred, bench.loc[g.index], target)["p"],
                    "tb200_corr": numerai_corr(pred, target, top_bottom=200)["p"],
                    "benchmark_corr": spearmanr(pred["p"], bench.loc[g.index]).statistic,
                    "feature_exposure": max(exposures), "payout": float(np.clip(0.5 * corr + 2.0 * mmc, -0.05, 0.05))})
    return pd.DataFrame(out)


def reference_row(per_era: pd.DataFrame, last: int) -> dict:
    corr = per_era["corr"].to_numpy()
    cumulative = np.cumsum(corr)
    recent = per_era.iloc[-last:]
    return {"eras": len(corr), "corr_mean": corr.mean(), "corr_std": corr.std(), "corr_sharpe": corr.mean() / corr.std(),
            "max_drawdown": (np.maximum.accumulate(cumulative) - cumulative).max(),
            "mmc_mean": per_era["mmc"].mean(), "bmc_mean": per_era["bmc"].mean(),
            "tb200_corr_mean": per_era["tb200_corr"].mean(), "feature_exposure": per_era["feature_exposure"].mean(),
            "benchmark_corr": per_era["benchmark_corr"].mean(), "payout_mean": per_era["payout"].mean(),
            "corr_mean_last": recent["corr"].mean(), "bmc_mean_last": recent["bmc"].mean(),
            "payout_mean_last": recent["payout"].mean(), "payout_cumulative": per_era["payout"].sum()}


def test_every_column_matches_numerai_tools_and_scipy_per_era(world, tmp_path):
    rows, source = world["rows"], world["source"]
    result = runner.invoke(app, ["compare", str(world["report"]), str(world["noisy"]), str(world["example"]),
                                 "--last", "3", "--churn-against", str(world["churn"]), "--name", "t",
                                 "--compare-dir", str(tmp_path), "--device", "cpu", "--sort", "corr_mean"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "t"
    assert sorted(p.name for p in folder.iterdir()) == ["compare.csv", "compare.json", "cumulative.png",
                                                        "per_era.parquet"]
    table = pd.read_csv(folder / "compare.csv").set_index("model")
    per_era = pd.read_parquet(folder / "per_era.parquet")
    summary = json.loads((folder / "compare.json").read_text())
    assert list(table.index) == list(table.sort_values("corr_mean", ascending=False).index)  # --sort
    assert summary["benchmark"] == BENCHMARK_MODEL and summary["rows"] == len(rows)
    meta = side_column(source / schema.META_MODEL_FILE, schema.META_MODEL)
    bench = side_column(source / schema.VALIDATION_BENCHMARK_FILE, BENCHMARK_MODEL)
    features = [c for c in rows.columns if c.startswith("feature_")]
    predictions = {"m": model_predictions(world["checkpoint"], rows),
                   "noisy": pd.read_csv(world["noisy"], dtype={schema.ID: str}).set_index(schema.ID)[schema.PREDICTION],
                   "validation_example_preds": side_column(world["example"], schema.PREDICTION)}
    churn_file = side_column(world["churn"], schema.PREDICTION)
    assert set(table.index) == set(predictions)
    for name, p in predictions.items():
        expected = reference_per_era(p, rows, meta, bench, features)
        mine = per_era[per_era["model"] == name].reset_index(drop=True)
        assert list(mine["era"]) == list(expected["era"])
        for column in expected.columns.drop("era"):
            np.testing.assert_allclose(mine[column], expected[column], rtol=0, atol=TOL, err_msg=f"{name} {column}")
        for column, value in reference_row(expected, last=3).items():
            assert abs(table.loc[name, column] - value) <= TOL, (name, column, table.loc[name, column], value)
        churn = np.mean([spearmanr(p.loc[g.index], churn_file.loc[g.index]).statistic
                         for _, g in rows.groupby(schema.ERA)])
        assert abs(table.loc[name, "churn"] - (1 - churn)) <= TOL
    pair = np.mean([spearmanr(predictions["m"].loc[g.index], predictions["noisy"].loc[g.index]).statistic
                    for _, g in rows.groupby(schema.ERA)])
    assert abs(summary["pairwise"]["m"]["noisy"] - pair) <= TOL
    assert table.loc["m", "source"] == f"report {world['report']}"
    assert "not rows of validation.parquet" in result.output  # the example covers eras prepare left out


def test_payout_weights_and_python_api_return_the_table(world, tmp_path):
    validation = world["prepared"] / schema.VALIDATION_FILE
    result = numerflow.compare(models=[world["noisy"], world["example"]], data=validation,
                               payout={"corr": 1.0, "mmc": 0.0}, compare_dir=tmp_path, name="p")
    assert isinstance(result.frame, pd.DataFrame) and len(result.frame) == 2
    per_era = pd.read_parquet(tmp_path / "p" / "per_era.parquet")
    np.testing.assert_allclose(per_era["payout"], np.clip(per_era["corr"], -0.05, 0.05), rtol=0, atol=TOL)
    assert result.summary["payout"] == {"corr": 1.0, "mmc": 0.0}


def test_a_cv_run_is_scored_on_its_out_of_fold_rows_that_every_model_shares(world, tmp_path):
    cv = numerflow.cv(data=world["prepared"], folds=2, epochs=1, layers=[8], batch_size=256, include_validation=True,
                      embargo=2, out=tmp_path / "cv", name="c", device="cpu", say=None)
    compared = numerflow.compare(models=[cv.folder, world["noisy"]], compare_dir=tmp_path, name="cv_and_noisy")
    table = compared.frame
    oof = pd.read_parquet(cv.oof).set_index(schema.ID)[schema.PREDICTION]
    rows = world["rows"]
    expected = [numerai_corr(oof.loc[g.index].rename("p").to_frame(), g[schema.TARGET].astype(float))["p"]
                for _, g in rows.groupby(schema.ERA)]
    row = table.set_index("model").loc["c"]
    assert row["source"] == f"cv {cv.folder}" and row["eras"] == len(expected)
    assert abs(row["corr_mean"] - np.mean(expected)) <= TOL
    notes = compared.summary["notes"]
    assert any(note.startswith("c: ") and "dropped" in note for note in notes)  # its training-era rows
    # A checkpoint beside it is scored on validation rows only, never on the train.parquet it learnt from.
    prepared = world["prepared"]
    both = numerflow.compare(models=[cv.folder, world["report"]], compare_dir=tmp_path, name="cv2", device="cpu",
                             data=[prepared / schema.TRAIN_FILE, prepared / schema.VALIDATION_FILE])
    assert set(both.frame["eras"]) == {rows[schema.ERA].nunique()} and set(both.frame["rows"]) == {len(rows)}
    assert any("scored on validation rows only" in note for note in both.summary["notes"])


def test_a_sweep_is_its_best_checkpoint_and_trials_without_checkpoints_are_named(world, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('layers = ["8", "16"]\n[fixed]\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n')
    swept = numerflow.sweep(space=space, data=world["prepared"], trials=2, pruner="none", name="s",
                            sweeps_dir=tmp_path / "sweeps", say=None)
    best = json.loads((tmp_path / "sweeps" / "s" / "best.json").read_text())
    compared = numerflow.compare(models=[tmp_path / "sweeps" / "s", world["noisy"]], trials=True, compare_dir=tmp_path,
                                 name="s", device="cpu")
    table = compared.frame
    row = table.set_index("model").loc["s:best"]
    p = model_predictions(tmp_path / "sweeps" / "s" / "best.pt", world["rows"])
    expected = [numerai_corr(p.loc[g.index].rename("p").to_frame(), g[schema.TARGET].astype(float))["p"]
                for _, g in world["rows"].groupby(schema.ERA)]
    assert abs(row["corr_mean"] - np.mean(expected)) <= TOL
    assert f"trial {best['number']}" in row["source"]
    assert swept is not None
    assert any("keeps only its best trial's checkpoint" in note for note in compared.summary["notes"])


def per_era_corr(predictions: pd.Series, rows: pd.DataFrame) -> list[float]:
    """numerai-tools' CORR of `predictions` in each era of `rows` that it covers."""
    covered = rows.loc[rows.index.intersection(predictions.index)]
    return [numerai_corr(predictions.loc[g.index].rename("p").to_frame(), g[schema.TARGET].astype(float))["p"]
            for _, g in covered.groupby(schema.ERA)]


@pytest.fixture(scope="module")
def cv_sweep(world, tmp_path_factory):
    """A 3-trial `sweep --cv` (every trial keeps its oof.parquet) and a fitted ensemble of it."""
    root = tmp_path_factory.mktemp("cv_sweep")
    space = root / "space.toml"
    space.write_text('lr = [0.005, 0.01, 0.02]\nlayers = "8"\nepochs = 1\nbatch_size = 256\ndevice = "cpu"\n'
                     '[cv]\nfolds = 2\nembargo = 2\n')
    numerflow.sweep(space=space, data=world["prepared"], trials=3, cv=True, pruner="none", seed=1, name="s",
                    sweeps_dir=root / "sweeps", say=None)
    numerflow.ensemble(candidates=[root / "sweeps" / "s"], size=3, name="e", fit=True, device="cpu",
                       ensembles_dir=root / "ensembles", say=None)
    return root / "sweeps" / "s", root / "ensembles" / "e"


def test_trials_of_a_cv_sweep_are_scored_on_their_out_of_fold_predictions(world, cv_sweep, tmp_path):
    sweep, _ = cv_sweep
    train = pd.read_parquet(world["prepared"] / schema.TRAIN_FILE)
    train.index = train.index.astype(str)
    compared = numerflow.compare(models=[sweep], trials=True, compare_dir=tmp_path, name="t", device="cpu")
    table = compared.frame
    best = json.loads((sweep / "best.json").read_text())["number"]
    assert sorted(table["model"]) == ["s:0", "s:1", "s:2"]
    for number in range(3):
        oof = pd.read_parquet(sweep / "trials" / str(number) / "oof.parquet").set_index(schema.ID)[schema.PREDICTION]
        expected = per_era_corr(oof.rename(index=str), train)
        row = table.set_index("model").loc[f"s:{number}"]
        assert row["eras"] == len(expected) and abs(row["corr_mean"] - np.mean(expected)) <= TOL
        assert ("(the best)" in row["source"]) == (number == best)
    assert any("scored on their out-of-fold predictions" in note for note in compared.summary["notes"])


def test_a_fitted_ensemble_is_scored_as_validate_ensemble_scores_it(world, cv_sweep, tmp_path):
    _, ensemble = cv_sweep
    table = numerflow.compare(models=[ensemble, world["noisy"]], compare_dir=tmp_path, name="e", device="cpu").frame
    row = table.set_index("model").loc["e"]
    assert row["source"] == f"ensemble {ensemble}"
    predicted = numerflow.predict(ensemble=ensemble, data=world["prepared"] / schema.VALIDATION_FILE,
                                  device="cpu").frame
    predicted.index = predicted.index.astype(str)
    expected = per_era_corr(predicted[schema.PREDICTION], world["rows"])
    assert row["eras"] == len(expected) and abs(row["corr_mean"] - np.mean(expected)) <= TOL
    report = numerflow.validate(ensemble=ensemble, data=world["prepared"] / schema.VALIDATION_FILE, device="cpu",
                                write_report=False).data
    assert abs(row["corr_mean"] - report["numerai_corr"]["mean"]) <= TOL


def test_an_unfitted_ensemble_is_one_error(world, cv_sweep, tmp_path):
    sweep, _ = cv_sweep
    numerflow.ensemble(candidates=[sweep], size=2, name="raw", ensembles_dir=tmp_path / "ensembles", say=None)
    line = error_line(runner.invoke(app, ["compare", str(tmp_path / "ensembles" / "raw"), str(world["noisy"]),
                                          "--compare-dir", str(tmp_path / "out")]))
    assert "the ensemble has no checkpoints" in line
    assert not (tmp_path / "out").exists()


def test_models_with_no_common_eras_are_one_error_and_nothing_is_written(world, tmp_path):
    rows = world["rows"]
    eras = sorted(rows[schema.ERA].unique())
    early, late = tmp_path / "early.csv", tmp_path / "late.csv"
    for path, chosen in ((early, eras[:2]), (late, eras[2:])):
        part = rows[rows[schema.ERA].isin(chosen)]
        pd.DataFrame({schema.ID: part.index, schema.PREDICTION: np.arange(len(part), dtype=float)}).to_csv(path,
                                                                                                           index=False)
    line = error_line(runner.invoke(app, ["compare", str(early), str(late), "--data",
                                          str(world["prepared"] / schema.VALIDATION_FILE),
                                          "--compare-dir", str(tmp_path / "out")]))
    assert "no common eras" in line
    assert not (tmp_path / "out" / "compare" / "compare.csv").exists()


def test_models_scored_on_different_data_versions_are_refused(world, tmp_path):
    other = tmp_path / "v5.3"
    other.mkdir()
    (other / schema.VALIDATION_FILE).write_bytes((world["source"] / schema.VALIDATION_FILE).read_bytes())
    numerflow.validate(predictions=world["noisy"], data=other / schema.VALIDATION_FILE, report_dir=tmp_path / "r53",
                       exposure=False)
    line = error_line(runner.invoke(app, ["compare", str(world["report"]), str(tmp_path / "r53"),
                                          "--compare-dir", str(tmp_path / "out")]))
    assert "different data versions" in line and "v5.3" in line and "synthetic" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing", "unreadable", "unknown kind"])
def test_a_missing_or_unreadable_input_is_one_error_line(case, world, tmp_path):
    path = {"missing": tmp_path / "nope.csv", "unreadable": tmp_path / "bad.parquet",
            "unknown kind": tmp_path / "notes.txt"}[case]
    if case != "missing":
        path.write_text("not a parquet file")
    line = error_line(runner.invoke(app, ["compare", str(world["noisy"]), str(path),
                                          "--compare-dir", str(tmp_path / "out")]))
    assert str(path) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,expected", [
    (["--payout", "corr=0.5,mmx=2"], "expected corr=A,mmc=B"),
    (["--payout", "corr=a"], "with numbers"),
    (["--sort", "sharpe"], "'sharpe' is not one of"),
    (["--last", "0"], "--last"),
])
def test_bad_option_values_exit_2_and_write_nothing(args, expected, world, tmp_path):
    result = runner.invoke(app, ["compare", str(world["noisy"]), *args, "--compare-dir", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "out").exists()


def test_sorting_by_churn_needs_a_churn_file(world, tmp_path):
    line = error_line(runner.invoke(app, ["compare", str(world["noisy"]), "--sort", "churn",
                                          "--compare-dir", str(tmp_path / "out")]))
    assert "--churn-against" in line
    assert not (tmp_path / "out").exists()
