"""metrics.benchmark: neutralising to a benchmark against numerai-tools, era by era, and bmc_last by hand."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from numerflow import metrics
from numerflow.metrics import benchmark as benchmark_module
from numerflow.metrics.scores import EraScores

numerai_scoring = pytest.importorskip("numerai_tools.scoring")


def _benchmark_like(rows_per_era=(400, 250, 333), seed=3):
    """Predictions that share a part with a benchmark, in eras of different sizes, with ties."""
    rng = np.random.default_rng(seed)
    n = sum(rows_per_era)
    eras = np.repeat([f"{i:04d}" for i in range(1, len(rows_per_era) + 1)], rows_per_era)
    shared = rng.standard_normal(n)
    benchmark = np.round(shared + 0.7 * rng.standard_normal(n), 1)  # rounded: ties, as in ranked files
    predictions = shared + rng.standard_normal(n)
    return predictions, benchmark, eras


def _numerai_tools_neutral(predictions, benchmark, proportion):
    """numerai-tools' neutralize of the gaussianised ranks, on one era's rows."""
    frame = lambda values: pd.DataFrame({"x": values})  # noqa: E731
    gaussian = lambda values: numerai_scoring.gaussian(numerai_scoring.tie_kept_rank(frame(values)))  # noqa: E731
    return numerai_scoring.neutralize(gaussian(predictions), gaussian(benchmark), proportion)["x"].to_numpy()


@pytest.mark.parametrize("proportion", [0.0, 0.5, 1.0])
def test_residuals_equal_numerai_tools_neutralize_era_by_era(proportion):
    predictions, benchmark, eras = _benchmark_like()
    residuals = metrics.benchmark_residuals(predictions, benchmark, eras, proportion)
    for era in np.unique(eras):
        rows = eras == era
        expected = _numerai_tools_neutral(predictions[rows], benchmark[rows], proportion)
        np.testing.assert_allclose(residuals[rows], expected, atol=1e-6, rtol=0)


def test_full_neutralisation_leaves_no_rank_correlation_with_the_benchmark():
    predictions, benchmark, eras = _benchmark_like()
    neutral = metrics.neutralize_to_benchmark(predictions, benchmark, eras, 1.0)
    before = metrics.per_era_spearman(predictions, benchmark, eras).values
    after = metrics.per_era_spearman(neutral, benchmark, eras).values
    assert np.all(before > 0.5)  # the example holds a real benchmark part to remove
    assert np.all(np.abs(after) <= 0.01), after
    assert np.all((neutral > 0) & (neutral < 1))


def test_ranks_are_the_residuals_ranked_within_eras():
    predictions, benchmark, eras = _benchmark_like()
    neutral = metrics.neutralize_to_benchmark(predictions, benchmark, eras, 0.5)
    residuals = metrics.benchmark_residuals(predictions, benchmark, eras, 0.5)
    np.testing.assert_allclose(neutral, metrics.rank_within_eras(residuals, eras), atol=1e-12)


def test_rows_without_a_benchmark_stay_out_of_the_fit():
    predictions, benchmark, eras = _benchmark_like()
    holes = benchmark.copy()
    holes[::7] = np.nan
    residuals = metrics.benchmark_residuals(predictions, holes, eras, 1.0)
    first = eras == "0001"
    kept = first & np.isfinite(holes)
    gaussian = metrics.gaussianize_within_eras(predictions[first], eras[first])
    # rows without a benchmark keep their gaussianised prediction
    np.testing.assert_allclose(residuals[first & ~np.isfinite(holes)], gaussian[~np.isfinite(holes[first])])
    # on the rows with one, the fit is numerai-tools' on those rows (ranked among the era's rows)
    fitted = gaussian[np.isfinite(holes[first])] - residuals[kept]
    expected = gaussian[np.isfinite(holes[first])] - numerai_scoring.neutralize(
        pd.DataFrame({"x": gaussian[np.isfinite(holes[first])]}),
        numerai_scoring.gaussian(numerai_scoring.tie_kept_rank(pd.DataFrame({"b": holes[kept]}))), 1.0)["x"].to_numpy()
    np.testing.assert_allclose(fitted, expected, atol=1e-9)


def test_bad_lengths_and_proportions_are_value_errors():
    predictions, benchmark, eras = _benchmark_like()
    with pytest.raises(ValueError, match="differ in length"):
        metrics.benchmark_residuals(predictions[:-1], benchmark, eras, 1.0)
    with pytest.raises(ValueError, match="within 0..1"):
        metrics.neutralize_to_benchmark(predictions, benchmark, eras, 1.5)


def test_the_function_runs_by_value_where_numerflow_cannot_be_imported(tmp_path):
    """What an exported pickle needs: the function pickled by value, loaded in a Python that
    refuses to import numerflow."""
    cloudpickle = pytest.importorskip("cloudpickle")
    predictions, benchmark, eras = _benchmark_like()
    cloudpickle.register_pickle_by_value(benchmark_module)
    try:
        (tmp_path / "f.pkl").write_bytes(cloudpickle.dumps(benchmark_module.neutralize_to_benchmark))
    finally:
        cloudpickle.unregister_pickle_by_value(benchmark_module)
    np.save(tmp_path / "args.npy", np.stack([predictions, benchmark]))
    np.save(tmp_path / "eras.npy", eras)
    code = ("import sys; sys.modules['numerflow'] = None\n"
            "import pickle, numpy as np\n"
            "f = pickle.loads(open('f.pkl', 'rb').read())\n"
            "p, b = np.load('args.npy'); e = np.load('eras.npy')\n"
            "np.save('out.npy', f(p, b, e, 1.0))\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, env={"PATH": "/usr/bin:/bin"})
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"),
                                  metrics.neutralize_to_benchmark(predictions, benchmark, eras, 1.0))


def test_mean_of_last_takes_the_last_scored_eras():
    scores = EraScores(eras=["0001", "0002", "0003", "0004", "0005"], rows=np.full(5, 10),
                       values=np.array([0.5, 0.1, np.nan, 0.2, 0.3]))
    assert metrics.mean_of_last(scores, 2) == pytest.approx(0.25)
    assert metrics.mean_of_last(scores, 3) == pytest.approx(0.2)  # 0.1, 0.2, 0.3: the unscored era skipped
    assert metrics.mean_of_last(scores, 50) == pytest.approx(0.275)
    with pytest.raises(ValueError):
        metrics.mean_of_last(scores, 0)


def test_bmc_last_by_hand():
    """Two eras of four rows, worked out by hand. Era 1: predictions equal the benchmark, so nothing
    is left after orthogonalising: BMC 0. Era 2: predictions [1, 2, 3, 4] -> gaussianised ranks g = ndtri([.125, .375, .625, .875]) =
    [-1.1503, -0.3186, 0.3186, 1.1503]; benchmark [4, 1, 3, 2] -> ranks [.875, .125, .625, .375],
    gaussianised m = [1.1503, -1.1503, 0.3186, -0.3186]. g.m = -1.3232 + 0.3665 + 0.1015 - 0.3665
    = -1.2217; m.m = 2.8495; neutral = g + 0.42874 m = [-0.6571, -0.8118, 0.4552, 1.0137].
    Target [0, .25, .75, 1] x 4 = [0, 1, 3, 4], centred [-2, -1, 1, 2]; BMC = (1.3142 + 0.8118 +
    0.4552 + 2.0274) / 4 = 1.1522. bmc_last over 1 era is era 2's; over 2 eras the mean."""
    predictions = np.array([1.0, 2, 3, 4, 1, 2, 3, 4])
    benchmark = np.array([1.0, 2, 3, 4, 4, 1, 3, 2])
    target = np.array([0.0, .25, .75, 1, 0, .25, .75, 1])
    eras = np.array(["0001"] * 4 + ["0002"] * 4)
    assert metrics.bmc_last(predictions, benchmark, target, eras, last=1) == pytest.approx(1.1522, abs=2e-4)
    assert metrics.bmc_last(predictions, benchmark, target, eras, last=2) == pytest.approx(1.1522 / 2, abs=2e-4)
    assert metrics.bmc_last(predictions, benchmark, target, eras) == pytest.approx(1.1522 / 2, abs=2e-4)
