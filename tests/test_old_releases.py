"""Pre-2019 Numerai releases (issue 12, section 4): continuous float features feature1..featureN,
targets named target_<name>, an all-in-one tournament file holding validation, test and live rows
with a data_type column. The files are built here in that shape."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from numerflow import metrics
from numerflow.cli import app
from numerflow.config import PrepareConfig, TrainConfig
from tests.helpers import runner

FEATURES = [f"feature{i}" for i in range(1, 11)]
TARGET = "target_kazutsugi"
ROWS_PER_ERA = 40


def _rows(rng, eras, data_type: str, prefix: str) -> pd.DataFrame:
    n = len(eras)
    values = rng.random((n, len(FEATURES)))
    frame = pd.DataFrame(values, columns=FEATURES)
    signal = values[:, 0] + 0.5 * rng.random(n)
    target = np.floor(pd.Series(signal).rank(pct=True).to_numpy() * 4.999) / 4  # 0, .25, .5, .75, 1
    frame.insert(0, "data_type", data_type)
    frame.insert(0, "era", eras)
    frame.insert(0, "id", [f"{prefix}{i:05d}" for i in range(n)])
    frame[TARGET] = target if data_type in ("train", "validation") else np.nan
    return frame


def write_old_release(folder: Path, seed: int = 0) -> Path:
    """<folder>/old/: train.parquet (era1..era12), validation.parquet as the old all-in-one tournament
    file (validation era17..era20, test era21, live eraX), live.parquet and a features.json."""
    rng = np.random.default_rng(seed)
    version = folder / "old"
    version.mkdir(parents=True)
    per_era = lambda labels: np.repeat(labels, ROWS_PER_ERA)  # noqa: E731
    train = _rows(rng, per_era([f"era{i}" for i in range(1, 13)]), "train", "n0")
    tournament = pd.concat([_rows(rng, per_era([f"era{i}" for i in range(17, 21)]), "validation", "v0"),
                            _rows(rng, per_era(["era21"]), "test", "t0"),
                            _rows(rng, per_era(["eraX"]), "live", "l0")], ignore_index=True)
    train.to_parquet(version / "train.parquet", index=False)
    tournament.to_parquet(version / "validation.parquet", index=False)
    tournament[tournament.data_type == "live"].to_parquet(version / "live.parquet", index=False)
    (version / "features.json").write_text(json.dumps({"feature_sets": {"all": FEATURES}, "targets": [TARGET]}))
    return version


@pytest.fixture(scope="module")
def old_release(tmp_path_factory) -> Path:
    return write_old_release(tmp_path_factory.mktemp("old_release"))


@pytest.fixture(scope="module")
def binned_model(old_release, tmp_path_factory) -> Path:
    """prepare --bin-features 5 and one epoch of a small MLP on the old release."""
    from numerflow.stages.prepare import prepare
    from numerflow.stages.train import train

    folder = tmp_path_factory.mktemp("binned_model")
    prepared = prepare(PrepareConfig(dataset=old_release, feature_set="all", target=TARGET, downsample=1, embargo=4,
                                     out_dir=folder / "prepared", bin_features=5))
    return train(TrainConfig(data=prepared.out_dir, out=folder / "old.pt", layers=[16], epochs=1, batch_size=64,
                             device="cpu", seed=0)).checkpoint


def expected_buckets(values: pd.Series) -> np.ndarray:
    """The documented rule, written independently: floor(5 * (average rank - 0.5) / rows)."""
    return np.floor(5 * (values.rank(method="average").to_numpy() - 0.5) / len(values)).astype(np.int8)


# --- prepare: continuous features ------------------------------------------------------------------

def test_prepare_refuses_continuous_features_and_names_the_opt_in(old_release, tmp_path):
    result = runner.invoke(app, ["prepare", "--dataset", str(old_release), "--feature-set", "all", "--target", TARGET,
                                 "--out-dir", str(tmp_path / "prepared")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "--bin-features 5" in lines[0] and "feature1" in lines[0]


def test_bin_features_buckets_within_each_era_and_records_it(old_release, tmp_path):
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", "--dataset", str(old_release), "--feature-set", "all", "--target", TARGET,
                                 "--downsample", "1", "--out-dir", str(out), "--bin-features", "5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["binning"] == {"method": "equal_frequency_per_era", "bins": 5}
    raw = pd.read_parquet(old_release / "train.parquet").set_index("id")
    prepared = pd.read_parquet(out / "train.parquet")
    assert all(prepared[f].dtype == np.int8 for f in FEATURES)
    assert sorted(prepared["era"].unique()) == sorted(raw["era"].unique())
    for era, rows in prepared.groupby("era"):
        source = raw.loc[rows.index]
        for name in FEATURES:
            np.testing.assert_array_equal(rows[name].to_numpy(), expected_buckets(source[name]))
            assert (np.bincount(rows[name], minlength=5) == ROWS_PER_ERA // 5).all()  # equal frequency
    validation = pd.read_parquet(out / "validation.parquet")
    assert set(validation["era"]) == {"era17", "era18", "era19", "era20"}  # test and live rows not taken


@pytest.mark.parametrize("bins", ["3", "0"])
def test_bin_features_other_than_five_is_a_bad_option(old_release, tmp_path, bins):
    result = runner.invoke(app, ["prepare", "--dataset", str(old_release), "--feature-set", "all", "--target", TARGET,
                                 "--out-dir", str(tmp_path / "p"), "--bin-features", bins])
    assert result.exit_code == 2
    assert not (tmp_path / "p").exists()


# --- predict and export bin live data as prepare did -----------------------------------------------

@pytest.mark.slow
def test_checkpoint_records_the_binning(binned_model):
    from numerflow.checkpoint import load_checkpoint

    assert load_checkpoint(binned_model)["binning"] == {"method": "equal_frequency_per_era", "bins": 5}


@pytest.mark.slow
def test_predict_bins_continuous_live_features_as_prepare_did(old_release, binned_model, tmp_path):
    live = pd.read_parquet(old_release / "live.parquet")
    by_hand = live.copy()
    for name in FEATURES:
        by_hand[name] = expected_buckets(live[name])
    by_hand.to_parquet(tmp_path / "live_int8.parquet", index=False)
    outputs = {}
    for name, path in (("float", old_release / "live.parquet"), ("int8", tmp_path / "live_int8.parquet")):
        out = tmp_path / f"{name}.csv"
        result = runner.invoke(app, ["predict", "--model", str(binned_model), "--data", str(path), "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs[name] = pd.read_csv(out, dtype={"id": str}).set_index("id")["prediction"]
    assert len(outputs["float"]) == ROWS_PER_ERA
    pd.testing.assert_series_equal(outputs["float"], outputs["int8"])


RUN_PICKLE = textwrap.dedent("""
    import sys
    sys.modules["numerflow"] = None
    import cloudpickle, pandas as pd
    with open(sys.argv[1], "rb") as f:
        predict = cloudpickle.load(f)
    live = pd.read_parquet(sys.argv[2]).set_index("id")
    predict(live).to_csv(sys.argv[3])
""")


@pytest.mark.slow
@pytest.mark.parametrize("neutralize", ["0", "0.5"])
def test_exported_pickle_bins_live_features_in_numpy(old_release, binned_model, tmp_path, neutralize):
    pickle_path, predicted, exported = tmp_path / "old.pkl", tmp_path / "predicted.csv", tmp_path / "exported.csv"
    result = runner.invoke(app, ["export", "--model", str(binned_model), "--out", str(pickle_path),
                                 "--neutralize", neutralize])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "--model", str(binned_model), "--data", str(old_release / "live.parquet"),
                                 "--out", str(predicted), "--neutralize", neutralize])
    assert result.exit_code == 0, result.output
    script = tmp_path / "run.py"
    script.write_text(RUN_PICKLE)
    done = subprocess.run([sys.executable, str(script), str(pickle_path), str(old_release / "live.parquet"),
                           str(exported)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    want = pd.read_csv(predicted, dtype={"id": str}).set_index("id")["prediction"]
    got = pd.read_csv(exported, dtype={"id": str}).set_index("id")["prediction"].reindex(want.index)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


# --- validate on the old layout --------------------------------------------------------------------

def _predictions(old_release: Path, tmp_path: Path, data_types=("validation",)) -> Path:
    tournament = pd.read_parquet(old_release / "validation.parquet")
    rows = tournament[tournament.data_type.isin(data_types)]
    path = tmp_path / "preds.csv"
    pd.DataFrame({"id": rows["id"], "prediction": rows["feature1"].rank(pct=True)}).to_csv(path, index=False)
    return path


def _validate(old_release: Path, tmp_path: Path, predictions: Path, *extra: str):
    return runner.invoke(app, ["validate", "--predictions", str(predictions), "--data",
                               str(old_release / "validation.parquet"), "--report", str(tmp_path / "report"),
                               "--json", *extra])


def test_validate_finds_featureN_columns_for_exposure_and_fnc(old_release, tmp_path):
    result = _validate(old_release, tmp_path, _predictions(old_release, tmp_path), "--target", TARGET)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["feature_exposure"]["features"] == len(FEATURES)
    assert report["feature_exposure"]["max"] > 0.9  # the predictions are feature1's ranks
    assert report["fnc"]["eras_scored"] == 4


def test_validate_says_when_no_features_are_known(old_release, tmp_path):
    frame = pd.read_parquet(old_release / "validation.parquet")
    folder = tmp_path / "renamed"
    folder.mkdir()
    frame.rename(columns={f: f"x{f}" for f in FEATURES}).to_parquet(folder / "validation.parquet", index=False)
    result = _validate(folder, tmp_path, _predictions(old_release, tmp_path), "--target", TARGET)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert "fnc" not in report
    assert any("exposure and FNC left out" in note for note in report["notes"])


def test_validate_missing_target_lists_the_targets_and_the_option(old_release, tmp_path):
    result = _validate(old_release, tmp_path, _predictions(old_release, tmp_path))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert TARGET in lines[0] and "--target" in lines[0]


def test_validate_predictions_for_test_and_live_rows_of_the_tournament_file(old_release, tmp_path):
    every_row = _predictions(old_release, tmp_path, ("validation", "test", "live"))
    result = _validate(old_release, tmp_path, every_row, "--target", TARGET)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"] == 4 * ROWS_PER_ERA
    note = next(n for n in report["notes"] if "not validation rows" in n)
    assert f"{ROWS_PER_ERA} live, {ROWS_PER_ERA} test" in note
    # Only other rows of the file: one line naming what they are.
    only_live = _predictions(old_release, tmp_path, ("live",))
    result = _validate(old_release, tmp_path, only_live, "--target", TARGET)
    assert result.exit_code == 1
    assert "not in" not in result.output and "validation rows" in result.output and "live rows" in result.output
    # Ids that are in no row of the file are still refused.
    stray = tmp_path / "stray.csv"
    pd.concat([pd.read_csv(every_row), pd.DataFrame({"id": ["nowhere"], "prediction": [0.5]})]).to_csv(stray, index=False)
    result = _validate(old_release, tmp_path, stray, "--target", TARGET)
    assert result.exit_code == 1 and "1 of" in result.output and "not in" in result.output


# --- eras with no more rows than features ----------------------------------------------------------

def _small_era_data(rng, big=60, small=8, n_features=10):
    eras = np.array(["era1"] * big + ["era2"] * small)
    features = rng.integers(0, 5, size=(len(eras), n_features)).astype(np.int8)
    target = rng.integers(0, 5, size=len(eras)) / 4
    predictions = rng.random(len(eras))
    return predictions, features, target, eras


def test_fnc_skips_eras_with_no_more_rows_than_features():
    predictions, features, target, eras = _small_era_data(np.random.default_rng(3))
    scores = metrics.feature_scores(predictions, features, target, eras)
    assert np.isfinite(scores.fnc.values[0])
    assert np.isnan(scores.fnc.values[1])  # 8 rows, 10 features: the fit is exact, its FNC noise
    assert scores.exact_fit_eras == ["era2"]
    assert np.isfinite(scores.max_exposure.values[1])  # exposure is still measured


def test_neutralize_leaves_exactly_fitted_eras_as_they_are():
    predictions, features, _, eras = _small_era_data(np.random.default_rng(4))
    out = metrics.neutralize(predictions, features, eras, 1.0)
    np.testing.assert_array_equal(out[eras == "era2"], predictions[eras == "era2"])
    assert abs(out[eras == "era1"].mean()) < 1e-12  # neutralised in full: the era is centred
    assert metrics.exact_fit_eras(eras, features.shape[1]) == ["era2"]


def test_validate_notes_skipped_fnc_eras(old_release, tmp_path):
    frame = pd.read_parquet(old_release / "validation.parquet")
    keep = frame[frame.data_type == "validation"]
    small = keep[keep.era == "era20"].index[:5]
    trimmed = pd.concat([keep[keep.era != "era20"], keep.loc[small]])
    for name in FEATURES:  # v4-style int8 buckets named feature_*: only the era size is unusual here
        trimmed[name] = trimmed.groupby("era")[name].transform(expected_buckets)
    trimmed = trimmed.rename(columns={f: f"feature_{f}" for f in FEATURES})
    folder = tmp_path / "trimmed"
    folder.mkdir()
    trimmed.to_parquet(folder / "validation.parquet", index=False)
    preds = tmp_path / "p.csv"
    pd.DataFrame({"id": trimmed["id"], "prediction": trimmed["feature_feature2"].rank(pct=True)}).to_csv(preds, index=False)
    result = _validate(folder, tmp_path, preds, "--target", TARGET)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["fnc"]["eras_scored"] == 3
    assert any("FNC left out in 1 era(s)" in note and "era20" in note for note in report["notes"])


@pytest.mark.slow
def test_predict_neutralize_warns_about_exactly_fitted_eras(old_release, binned_model, tmp_path):
    live = pd.read_parquet(old_release / "live.parquet")
    small = live.head(6).copy()
    small.to_parquet(tmp_path / "small_live.parquet", index=False)
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", "--model", str(binned_model), "--data", str(tmp_path / "small_live.parquet"),
                                 "--out", str(out), "--neutralize", "1"])
    assert result.exit_code == 0, result.output
    assert "not neutralised in 1 era(s)" in result.output
