"""predict: live-file defaults, per-era ranks, rank-averaged ensembles, neutralisation, output
formats, and the bad inputs (missing features, bad options) that must write nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from numerflow.cli import app
from numerflow.metrics import rank_within_eras
from numerflow import schema
from tests.helpers import cli, error_line, runner



def run_predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


def read_csv(path):
    return pd.read_csv(path, dtype={"id": str})


def test_default_predicts_the_live_round(in_tmp, synthetic_dir, synthetic_models):
    result = run_predict("--model", synthetic_models["all"], "--data-dir", synthetic_dir.parent)
    assert result.exit_code == 0, result.output
    out = in_tmp / "predictions" / "all_1.csv"
    assert f"Wrote predictions/all_1.csv" in result.output
    assert "(round 1)" in result.output
    preds = read_csv(out)
    live = pd.read_parquet(synthetic_dir / "live.parquet", columns=["era"])
    assert list(preds.columns) == ["id", "prediction"]
    assert list(preds["id"]) == list(live.index)
    n = len(live)
    # one era: ranks are exactly (1..n - 0.5) / n, all strictly inside (0, 1)
    assert np.allclose(np.sort(preds["prediction"]), (np.arange(1, n + 1) - 0.5) / n)


def test_ranks_within_each_era_on_a_multi_era_file(in_tmp, synthetic_dir, synthetic_models):
    out = in_tmp / "val.parquet"
    result = run_predict("--model", synthetic_models["all"], "--data", synthetic_dir / "validation.parquet",
                         "--out", out)
    assert result.exit_code == 0, result.output
    assert "no round marker" in result.output
    preds = pd.read_parquet(out).set_index("id")
    eras = pd.read_parquet(synthetic_dir / "validation.parquet", columns=["era"])["era"]
    joined = preds.join(eras)
    assert joined["era"].nunique() > 1
    for _, group in joined.groupby("era"):
        n = len(group)
        assert np.allclose(np.sort(group["prediction"]), (np.arange(1, n + 1) - 0.5) / n)


def test_ensemble_is_the_weighted_rank_average(in_tmp, synthetic_dir, synthetic_models):
    data = ["--data-dir", synthetic_dir.parent]
    assert run_predict("--model", synthetic_models["all"], "--out", "a.csv", *data).exit_code == 0
    assert run_predict("--model", synthetic_models["small"], "--out", "b.csv", *data).exit_code == 0
    # small batches: the file is read and scored in blocks of 7 rows, which must not change anything
    result = run_predict("--model", synthetic_models["all"], "--model", synthetic_models["small"],
                         "--weights", "3,1", "--batch-size", "7", *data)
    assert result.exit_code == 0, result.output
    ensemble = read_csv(in_tmp / "predictions" / "all+small_1.csv")
    a, b = read_csv("a.csv"), read_csv("b.csv")
    expected = rank_within_eras(0.75 * a["prediction"].to_numpy() + 0.25 * b["prediction"].to_numpy(),
                                np.zeros(len(a)))
    assert list(ensemble["id"]) == list(a["id"])
    np.testing.assert_allclose(ensemble["prediction"], expected)
    assert not np.allclose(ensemble["prediction"], a["prediction"])


def feature_exposure(preds: pd.DataFrame, live_path) -> float:
    live = pd.read_parquet(live_path)
    features = [c for c in live.columns if c.startswith("feature_")]
    values = preds.set_index("id")["prediction"].reindex(live.index)
    return max(abs(np.corrcoef(values, live[f])[0, 1]) for f in features)


def test_neutralize_lowers_feature_exposure(in_tmp, synthetic_dir, synthetic_models):
    data = ["--model", synthetic_models["all"], "--data-dir", synthetic_dir.parent]
    assert run_predict(*data, "--out", "plain.csv").exit_code == 0
    result = run_predict(*data, "--out", "neutral.csv", "--neutralize", "1.0")
    assert result.exit_code == 0, result.output
    assert "neutralised 1" in result.output
    live = synthetic_dir / "live.parquet"
    plain, neutral = feature_exposure(read_csv("plain.csv"), live), feature_exposure(read_csv("neutral.csv"), live)
    assert neutral < plain / 2, (plain, neutral)
    n = len(read_csv("neutral.csv"))
    assert np.allclose(np.sort(read_csv("neutral.csv")["prediction"]), (np.arange(1, n + 1) - 0.5) / n)


@pytest.mark.parametrize("label", ["X", None])
def test_single_era_label_or_no_era_column_ranks_the_whole_set(in_tmp, synthetic_dir, synthetic_models, label):
    live = pd.read_parquet(synthetic_dir / "live.parquet")
    live = live.assign(era=label) if label else live.drop(columns=["era"])
    live.to_parquet(in_tmp / "live.parquet")
    result = run_predict("--model", synthetic_models["all"], "--data", in_tmp / "live.parquet", "--out", "p.csv")
    assert result.exit_code == 0, result.output
    assert "in 1 era(s)" in result.output
    n = len(live)
    assert np.allclose(np.sort(read_csv("p.csv")["prediction"]), (np.arange(1, n + 1) - 0.5) / n)


def test_missing_features_are_listed_and_nothing_is_written(in_tmp, synthetic_dir, synthetic_models):
    live = pd.read_parquet(synthetic_dir / "live.parquet")
    features = [c for c in live.columns if c.startswith("feature_")]
    live.drop(columns=features[:2]).to_parquet(in_tmp / "live.parquet")
    result = run_predict("--model", synthetic_models["all"], "--data", in_tmp / "live.parquet", "--out", "p.csv")
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {in_tmp / 'live.parquet'}: missing 2 of the {len(features)} feature(s) "
                                     f"{synthetic_models['all']} needs: {features[0]}, {features[1]}")
    assert not (in_tmp / "p.csv").exists()
    assert list(in_tmp.glob(".p.csv*")) == []


def test_bad_options_fail_before_any_work(in_tmp, synthetic_dir, synthetic_models):
    model = ["--model", synthetic_models["all"], "--data-dir", synthetic_dir.parent]
    result = run_predict(*model, "--out", "p.txt")
    assert result.exit_code == 2 and "Error: Invalid value for '--out': 'p.txt' must end in .csv or .parquet" in result.output
    result = run_predict(*model, "--weights", "1,2")
    assert result.exit_code == 2 and "Error: Invalid value for '--weights': got 2 weight(s) for 1 --model(s)" in result.output
    result = run_predict(*model, "--weights", "a,b")
    assert result.exit_code == 2 and "expected comma-separated numbers" in result.output
    result = run_predict(*model, "--neutralize", "1.5")
    assert result.exit_code == 2
    assert not (in_tmp / "predictions").exists()


def test_not_a_checkpoint(in_tmp, synthetic_dir):
    (in_tmp / "junk.pt").write_bytes(b"not a checkpoint")
    result = run_predict("--model", "junk.pt", "--data-dir", synthetic_dir.parent)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: junk.pt: not a numerflow checkpoint"


def test_no_live_data(in_tmp, synthetic_models):
    result = run_predict("--model", synthetic_models["all"], "--data-dir", "nowhere")
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: nowhere: no dataset folder found")


# ---- malformed data files ----------------------------------------------------------------------

def test_text_feature_column_is_a_data_error(in_tmp, synthetic_dir, synthetic_models):
    live = pd.read_parquet(synthetic_dir / schema.LIVE_FILE)
    feature = next(c for c in live.columns if c.startswith("feature_"))
    live.astype({feature: str}).to_parquet("live.parquet")
    result = cli("predict", "--model", synthetic_models["all"], "--data", "live.parquet", "--out", "p.csv")
    assert error_line(result) == (f"Error: live.parquet: column {feature}: feature values of type object, "
                                  f"expected integers 0..4")
    assert not (in_tmp / "p.csv").exists()


def test_predict_on_a_file_without_rows(in_tmp, synthetic_dir, synthetic_models):
    pd.read_parquet(synthetic_dir / schema.LIVE_FILE).iloc[:0].to_parquet("empty.parquet")
    result = cli("predict", "--model", synthetic_models["all"], "--data", "empty.parquet", "--out", "p.csv")
    assert error_line(result) == "Error: empty.parquet: no rows"


def scribbled(source, dest):
    """A copy of a Parquet file with its data pages overwritten: the footer still reads."""
    data = bytearray(source.read_bytes())
    for i in range(len(data) // 4, len(data) // 2, 7):
        data[i] = (data[i] * 31 + 7) % 256
    dest.write_bytes(bytes(data))
    return dest


def test_parquet_broken_mid_file(in_tmp, synthetic_dir, synthetic_models):
    scribbled(synthetic_dir / schema.LIVE_FILE, in_tmp / "live.parquet")
    result = cli("predict", "--model", synthetic_models["all"], "--data", "live.parquet", "--out", "p.csv")
    assert error_line(result) == "Error: live.parquet: not a readable Parquet file (OSError)"
    assert not (in_tmp / "p.csv").exists()
