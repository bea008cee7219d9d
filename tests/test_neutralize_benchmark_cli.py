"""--neutralize-benchmark P through the CLI on real synthetic files: predict equals numerai-tools'
neutralize era by era, P = 1 leaves no per-era rank correlation with the benchmark, the exported
pickle gives predict's ranks in a fresh process, validate --model scores what predict writes,
and every bad input is one Error line with nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from numerflow import metrics
from numerflow.cli import app
from numerflow.config import SyntheticConfig
from numerflow.workflow.postprocess import rank_per_era

numerai_scoring = pytest.importorskip("numerai_tools.scoring")
runner = CliRunner()
BENCHMARK = "v52_lgbm_ender20"  # the synthetic set's benchmark column


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


def read_predictions(path) -> pd.Series:
    return pd.read_csv(path, dtype={"id": str}).set_index("id")["prediction"]


def with_benchmark(predictions: pd.Series, folder, kind: str) -> pd.DataFrame:
    """The predictions beside the era and the benchmark of their rows."""
    side = pd.read_parquet(folder / f"{kind}_benchmark_models.parquet")
    side.index = side.index.astype(str)
    return side.join(predictions, how="inner")


def numerai_tools_neutral(predictions, benchmark, proportion) -> np.ndarray:
    frame = lambda values: pd.DataFrame({"x": np.asarray(values)})  # noqa: E731
    gaussian = lambda values: numerai_scoring.gaussian(numerai_scoring.tie_kept_rank(frame(values)))  # noqa: E731
    return numerai_scoring.neutralize(gaussian(predictions), gaussian(benchmark), proportion)["x"].to_numpy()


def test_predict_is_numerai_tools_neutralize_era_by_era(in_tmp, synthetic_dir, synthetic_models):
    validation = synthetic_dir / "validation.parquet"
    for p, out in (("0", "plain.csv"), ("0.5", "half.csv")):
        result = predict("--model", synthetic_models["all"], "--data", validation, "--out", out,
                         "--neutralize-benchmark", p)
        assert result.exit_code == 0, result.output
    assert "neutralised 0.5 to the benchmark" in result.output
    assert "0 of 1,800 rows had no benchmark value" in result.output
    rows = with_benchmark(read_predictions("plain.csv"), synthetic_dir, "validation")
    half = read_predictions("half.csv").reindex(rows.index).to_numpy()
    eras = rows["era"].to_numpy()
    expected = np.empty(len(rows))
    for era in np.unique(eras):
        at = eras == era
        expected[at] = numerai_tools_neutral(rows["prediction"][at], rows[BENCHMARK][at], 0.5)
    # before the final ranking: the residuals predict ranks are numerai-tools' at 1e-6 ...
    residuals = metrics.benchmark_residuals(rows["prediction"].to_numpy(), rows[BENCHMARK].to_numpy(), eras, 0.5)
    np.testing.assert_allclose(residuals, expected, atol=1e-6)
    # ... and what predict wrote is their rank within each era
    np.testing.assert_allclose(half, rank_per_era(expected, eras), atol=1e-6)
    assert not np.allclose(half, rows["prediction"].to_numpy())  # the option changed the predictions


@pytest.fixture(scope="module")
def large_eras(tmp_path_factory):
    """Eras of 6,000 rows, Numerai's size (about 5,000 to 7,000)."""
    from numerflow.synthetic import write_synthetic

    data_dir = tmp_path_factory.mktemp("large") / "data"
    return write_synthetic(SyntheticConfig(data_dir=data_dir, eras=12, rows_per_era=6000, features=30, seed=1))


def test_p1_leaves_no_rank_correlation_with_the_benchmark(in_tmp, large_eras, synthetic_models):
    """The rank correlation here is the normal-scores one (Pearson of the gaussianised ranks, as
    Numerai's CORR gaussianises), which P = 1 brings to about 0.001. Spearman's, on the raw ranks,
    keeps up to about 0.012 on these eras (0.03 on 150-row eras): numerai-tools' neutralize removes
    the projection on the gaussian scale, not on the uniform one; it is bounded at 0.02 here."""
    from scipy.special import ndtri

    for p, out in (("0", "plain.csv"), ("1", "full.csv")):
        result = predict("--model", synthetic_models["all"], "--data", large_eras / "validation.parquet",
                         "--out", out, "--neutralize-benchmark", p)
        assert result.exit_code == 0, result.output

    def per_era_rank_corr(path, method):
        rows = with_benchmark(read_predictions(path), large_eras, "validation")
        rows[BENCHMARK] = rank_per_era(rows[BENCHMARK].to_numpy(), rows["era"].to_numpy())
        if method == "normal scores":
            rows[["prediction", BENCHMARK]] = ndtri(rows[["prediction", BENCHMARK]].to_numpy())
        return rows.groupby("era").apply(lambda g: np.corrcoef(g["prediction"], g[BENCHMARK])[0, 1])

    before = per_era_rank_corr("plain.csv", "normal scores")
    after = per_era_rank_corr("full.csv", "normal scores")
    assert len(after) >= 3
    assert before.abs().min() > 0.05  # there was a correlation to remove
    assert after.abs().max() <= 0.01, after
    assert per_era_rank_corr("full.csv", "spearman").abs().max() <= 0.02


RUN_PICKLE = textwrap.dedent("""
    import sys
    sys.modules["numerflow"] = None
    import cloudpickle, pandas as pd
    with open(sys.argv[1], "rb") as f:
        predict = cloudpickle.load(f)
    live = pd.read_parquet(sys.argv[2])
    benchmark = pd.read_parquet(sys.argv[3]) if sys.argv[3] != "none" else None
    try:
        out = predict(live, benchmark)
    except ValueError as exc:
        sys.exit(f"ValueError: {exc}")
    out.to_csv(sys.argv[4])
""")


def run_pickle(tmp_path, pickle_path, data, benchmark, out):
    script = tmp_path / "run_pickle.py"
    script.write_text(RUN_PICKLE)
    return subprocess.run([sys.executable, str(script), str(pickle_path), str(data), str(benchmark), str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("kind", ["live", "validation"])
def test_exported_pickle_gives_predicts_ranks(in_tmp, synthetic_dir, synthetic_models, kind):
    models = ["--model", str(synthetic_models["all"]), "--model", str(synthetic_models["small"])]
    result = runner.invoke(app, ["export", *models, "--neutralize-benchmark", "0.7", "--out", "m.pkl"])
    assert result.exit_code == 0, result.output
    data = synthetic_dir / f"{kind}.parquet"
    result = predict(*models, "--data", data, "--neutralize-benchmark", "0.7", "--out", "numerflow.csv")
    assert result.exit_code == 0, result.output
    done = run_pickle(in_tmp, in_tmp / "m.pkl", data, synthetic_dir / f"{kind}_benchmark_models.parquet", "pkl.csv")
    assert done.returncode == 0, done.stderr
    exported = pd.read_csv("pkl.csv", dtype={"id": str}).set_index("id")["prediction"]
    predicted = read_predictions("numerflow.csv")
    np.testing.assert_array_equal(exported.reindex(predicted.index).to_numpy(), predicted.to_numpy())


def test_pickle_without_the_runners_benchmark_fails_clearly(in_tmp, synthetic_dir, synthetic_models):
    result = runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--neutralize-benchmark", "1",
                                 "--out", "m.pkl"])
    assert result.exit_code == 0, result.output
    done = run_pickle(in_tmp, in_tmp / "m.pkl", synthetic_dir / "live.parquet", "none", "pkl.csv")
    assert done.returncode != 0 and not (in_tmp / "pkl.csv").exists()
    assert "needs live_benchmark_models" in done.stderr


def test_validate_model_scores_what_predict_writes(in_tmp, synthetic_dir, synthetic_models):
    validation = synthetic_dir / "validation.parquet"
    assert predict("--model", synthetic_models["all"], "--data", validation, "--out", "p.csv",
                   "--neutralize-benchmark", "0.6").exit_code == 0
    reports = []
    for source in (["--model", str(synthetic_models["all"]), "--neutralize-benchmark", "0.6"], ["--predictions", "p.csv"]):
        result = runner.invoke(app, ["validate", *source, "--data", str(validation), "--no-report", "--json"])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.output))
    for key in ("numerai_corr", "bmc", "corr_with_benchmark"):
        assert reports[0][key]["mean"] == pytest.approx(reports[1][key]["mean"], abs=1e-9), key
    assert any("neutralised 0.6 to the benchmark" in note for note in reports[0]["notes"])


# --- bad input: one Error line, exit 1 (bad option values: exit 2), nothing written ---------------


def live_copy(synthetic_dir, folder, benchmark: pd.DataFrame | None):
    folder.mkdir()
    shutil.copy(synthetic_dir / "live.parquet", folder / "live.parquet")
    if benchmark is not None:
        benchmark.to_parquet(folder / "live_benchmark_models.parquet")
    return folder / "live.parquet"


@pytest.mark.parametrize("case, message", [
    ("no file", "live_benchmark_models.parquet not found in"),
    ("no column", "has no benchmark column (vNN_lgbm_ender20; it has: other)"),
    ("no rows", "has no value for any of the 150 rows"),
])
def test_bad_benchmark_is_one_error_line(in_tmp, synthetic_dir, synthetic_models, case, message):
    real = pd.read_parquet(synthetic_dir / "live_benchmark_models.parquet")
    benchmark = {"no file": None, "no column": real.rename(columns={BENCHMARK: "other"}),
                 "no rows": real.set_axis([f"x{i}" for i in range(len(real))]).rename_axis("id")}[case]
    live = live_copy(synthetic_dir, in_tmp / "live", benchmark)
    result = predict("--model", synthetic_models["all"], "--data", live, "--neutralize-benchmark", "0.5",
                     "--out", "p.csv")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --neutralize-benchmark: ") and message in lines[0], lines
    assert not (in_tmp / "p.csv").exists() and list(in_tmp.glob("*.csv")) == []


@pytest.mark.parametrize("command", ["predict", "export", "validate"])
def test_proportion_outside_0_1_is_a_bad_option(in_tmp, synthetic_models, command):
    result = runner.invoke(app, [command, "--model", str(synthetic_models["all"]), "--neutralize-benchmark", "1.5"])
    assert result.exit_code == 2
    assert "Invalid value for '--neutralize-benchmark'" in result.output
    assert list(in_tmp.iterdir()) == []


def test_validate_predictions_file_refuses_the_option(in_tmp, synthetic_dir):
    pd.DataFrame({"id": ["a"], "prediction": [0.5]}).to_csv("p.csv", index=False)
    result = runner.invoke(app, ["validate", "--predictions", "p.csv", "--data", str(synthetic_dir / "validation.parquet"),
                                 "--neutralize-benchmark", "0.5", "--no-report"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --neutralize-benchmark applies to --model or --ensemble, "
                                     "not to a --predictions file")


def test_round_model_tables_take_neutralize_benchmark():
    from numerflow.errors import ConfigError
    from numerflow.stages.round import model_specs

    specs = model_specs({"a": {"model": "a.pt", "neutralize_benchmark": 0.5}, "e": {"ensemble": "ensembles/e"}})
    assert [s.neutralize_benchmark for s in specs] == [0.5, None]  # None: the ensemble's stored value
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(ConfigError, match=r"\[models.a\]: neutralize_benchmark must be a number within \[0, 1\]"):
            model_specs({"a": {"model": "a.pt", "neutralize_benchmark": bad}})
