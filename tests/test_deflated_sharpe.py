"""The deflated Sharpe ratio (Bailey and Lopez de Prado, 2014) on a fixed example worked by hand."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from numerflow.errors import DataError
from numerflow.metrics.deflated_sharpe import deflated_sharpe, expected_max_sharpe

BEST_ERA_SCORES = [0.03, -0.01, 0.02, 0.04, 0.00, 0.02]  # T = 6 eras
TRIAL_SHARPES = [0.2, 0.5, 0.9805806756909202, 0.1]  # N = 4 trials, the best's Sharpe among them


def test_the_worked_example_step_by_step():
    # Step 1: the best's Sharpe, skew and kurtosis (population moments).
    # mean = 0.10 / 6 = 0.0166667; deviations 0.013333, -0.026667, 0.003333, 0.023333, -0.016667, 0.003333
    # m2 = (1.7778e-4 + 7.1111e-4 + 1.1111e-5 + 5.4444e-4 + 2.7778e-4 + 1.1111e-5) / 6 = 2.8889e-4, std 0.0169967
    sharpe = 0.0166667 / 0.0169967  # = 0.98058
    # m3 = -1.40741e-6 -> skew = m3 / m2^1.5 = -0.286631; m4 = 1.51852e-7 -> kurtosis = m4 / m2^2 = 1.819527
    skew, kurtosis = -0.286631, 1.819527
    # Step 2: the trials' Sharpe variance (ddof 1): mean 0.445145, V = 0.156307, sqrt(V) = 0.395357
    # Phi^-1(1 - 1/4) = 0.674490, Phi^-1(1 - 1/(4e)) = 1.328722
    # SR0 = 0.395357 x ((1 - 0.577216) x 0.674490 + 0.577216 x 1.328722) = 0.395357 x 1.052126 = 0.415966
    normal = NormalDist()
    assert normal.inv_cdf(1 - 1 / 4) == pytest.approx(0.674490, abs=1e-6)
    assert normal.inv_cdf(1 - 1 / (4 * math.e)) == pytest.approx(1.328722, abs=1e-6)
    expected_max = 0.395357 * ((1 - 0.577216) * 0.674490 + 0.577216 * 1.328722)
    assert expected_max == pytest.approx(0.415964, abs=1e-5)
    # Step 3: 1 - skew x SR + (kurtosis - 1) / 4 x SR^2 = 1 + 0.281067 + 0.204819 x 0.961538 = 1.478067
    non_normality = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe ** 2
    assert non_normality == pytest.approx(1.478067, abs=1e-5)
    # z = (0.980581 - 0.415964) x sqrt(5) / sqrt(1.478067) = 0.564617 x 2.236068 / 1.215758 = 1.038464
    z = (sharpe - expected_max) * math.sqrt(5) / math.sqrt(non_normality)
    assert z == pytest.approx(1.038464, abs=1e-4)
    # DSR = Phi(1.038464) = 0.850473: 85% that the best's Sharpe is real after picking it among 4

    result = deflated_sharpe(BEST_ERA_SCORES, TRIAL_SHARPES)
    assert result.sharpe == pytest.approx(sharpe, abs=1e-5)
    assert result.skew == pytest.approx(skew, abs=1e-6)
    assert result.kurtosis == pytest.approx(kurtosis, abs=1e-6)
    assert result.expected_max_sharpe == pytest.approx(expected_max, abs=1e-5)
    assert result.probability == pytest.approx(0.850473, abs=1e-5)
    assert result.probability == pytest.approx(normal.cdf(z), abs=1e-5)
    assert (result.n_trials, result.n_eras) == (4, 6)


def test_more_trials_of_the_same_spread_deflate_more():
    # The same spread of Sharpe ratios over 40 trials instead of 4: luck alone reaches further.
    many = np.repeat(TRIAL_SHARPES, 10)
    assert expected_max_sharpe(many) > expected_max_sharpe(TRIAL_SHARPES)
    assert deflated_sharpe(BEST_ERA_SCORES, many).probability < deflated_sharpe(BEST_ERA_SCORES,
                                                                               TRIAL_SHARPES).probability


def test_one_trial_is_not_deflated():
    # N = 1: SR0 = 0, so DSR is the probabilistic Sharpe ratio against zero.
    assert expected_max_sharpe([0.98]) == 0.0
    result = deflated_sharpe(BEST_ERA_SCORES, [0.98])
    assert result.expected_max_sharpe == 0.0
    assert result.probability == pytest.approx(NormalDist().cdf(0.980581 * math.sqrt(5) / math.sqrt(1.478067)),
                                               abs=1e-5)


def test_nan_eras_are_left_out():
    with_gaps = BEST_ERA_SCORES[:3] + [float("nan")] + BEST_ERA_SCORES[3:]
    assert deflated_sharpe(with_gaps, TRIAL_SHARPES) == deflated_sharpe(BEST_ERA_SCORES, TRIAL_SHARPES)


@pytest.mark.parametrize("scores,sharpes,message", [
    ([0.01], [0.1, 0.2], "2 or more eras"),
    ([0.01, 0.01, 0.01], [0.1, 0.2], "all equal"),
    ([0.01, 0.02, float("inf")], [0.1, 0.2], "NaN or infinite"),
    ([0.01, 0.02, 0.03], [], "empty"),
    ([0.01, 0.02, 0.03], [0.1, float("nan")], "NaN or infinite"),
])
def test_bad_input_is_a_data_error(scores, sharpes, message):
    with pytest.raises(DataError, match=message):
        deflated_sharpe(scores, sharpes)
