"""export: the pickle works in a fresh Python process where numerflow cannot be imported, and
gives the same ranks as `numerflow predict` (one model, an ensemble with neutralisation, and a
multi-era frame as Numerai's diagnostics run uses)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from numerflow.cli import app
from tests.helpers import runner


# A fresh interpreter in which `import numerflow` fails, as on Numerai's servers.
RUN_PICKLE = textwrap.dedent("""
    import sys
    sys.modules["numerflow"] = None
    import cloudpickle, pandas as pd
    with open(sys.argv[1], "rb") as f:
        predict = cloudpickle.load(f)
    live = pd.read_parquet(sys.argv[2])
    out = predict(live, pd.DataFrame(index=live.index))
    assert list(out.columns) == ["prediction"] and out.index.equals(live.index)
    out.to_csv(sys.argv[3])
    print("torch" in sys.modules, "numerflow" in sys.modules and sys.modules["numerflow"] is not None)
""")


def run_in_fresh_process(pickle_path, data_path, out_path, tmp_path):
    script = tmp_path / "run_pickle.py"
    script.write_text(RUN_PICKLE)
    done = subprocess.run([sys.executable, str(script), str(pickle_path), str(data_path), str(out_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]  # neither torch nor numerflow was needed
    return pd.read_csv(out_path, index_col=0)["prediction"]


def assert_same_ranks(exported: pd.Series, predicted: pd.Series):
    """Exactly the same ranks: both evaluate in float64 and round raw scores to float32."""
    exported = exported.reindex(predicted.index)
    assert exported.notna().all()
    np.testing.assert_array_equal(exported.to_numpy(), predicted.to_numpy())


@pytest.mark.parametrize("options", [[], ["--weights", "2,1", "--neutralize", "0.5"]], ids=["single", "ensemble"])
def test_pickle_predicts_like_numerflow_in_a_fresh_process(tmp_path, monkeypatch, synthetic_dir, synthetic_models,
                                                           options):
    monkeypatch.chdir(tmp_path)
    models = ["--model", str(synthetic_models["all"])]
    if options:
        models += ["--model", str(synthetic_models["small"])]
    result = runner.invoke(app, ["export", *models, *options, "--out", "model.pkl"])
    assert result.exit_code == 0, result.output
    assert "Exported" in result.output and f"Python {sys.version_info.major}.{sys.version_info.minor}" in result.output
    live = synthetic_dir / "live.parquet"
    result = runner.invoke(app, ["predict", *models, *options, "--data", str(live), "--out", "numerflow.csv"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv("numerflow.csv", dtype={"id": str}).set_index("id")["prediction"]
    exported = run_in_fresh_process(tmp_path / "model.pkl", live, tmp_path / "exported.csv", tmp_path)
    assert_same_ranks(exported, predicted)


def test_pickle_ranks_within_each_era_of_a_validation_frame(tmp_path, monkeypatch, synthetic_dir, synthetic_models):
    monkeypatch.chdir(tmp_path)
    validation = synthetic_dir / "validation.parquet"
    assert runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--out", "m.pkl"]).exit_code == 0
    result = runner.invoke(app, ["predict", "--model", str(synthetic_models["all"]), "--data", str(validation),
                                 "--out", "numerflow.csv"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv("numerflow.csv", dtype={"id": str}).set_index("id")["prediction"]
    exported = run_in_fresh_process(tmp_path / "m.pkl", validation, tmp_path / "exported.csv", tmp_path)
    eras = pd.read_parquet(validation, columns=["era"])["era"]
    for era, ids in eras.groupby(eras).groups.items():
        assert_same_ranks(exported.loc[ids], predicted.loc[ids])


def test_pickle_reads_old_float_features_and_names_missing_ones(tmp_path, monkeypatch, synthetic_dir, synthetic_models):
    import cloudpickle

    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--out", "m.pkl"]).exit_code == 0
    predict = cloudpickle.loads((tmp_path / "m.pkl").read_bytes())
    live = pd.read_parquet(synthetic_dir / "live.parquet")
    features = [c for c in live.columns if c.startswith("feature_")]
    as_floats = live.astype({f: "float32" for f in features})
    as_floats[features] = as_floats[features] / 4  # the 0, .25, .5, .75, 1 encoding of older releases
    pd.testing.assert_frame_equal(predict(as_floats, None), predict(live, None))
    with pytest.raises(ValueError, match=f"live_features lacks 1 feature\\(s\\) the model needs: \\['{features[0]}'\\]"):
        predict(live.drop(columns=features[0]))


def test_export_of_a_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["export", "--model", "nope.pt", "--out", "m.pkl"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: nope.pt: file not found"
    assert not (tmp_path / "m.pkl").exists()
