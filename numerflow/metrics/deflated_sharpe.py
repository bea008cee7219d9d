"""The deflated Sharpe ratio (Bailey and Lopez de Prado, 2014, "The Deflated Sharpe Ratio:
Correcting for Selection Bias, Backtest Overfitting and Non-Normality"): the probability that the
best of N trials has a real Sharpe above zero, after allowing for its having been picked as the
best of N.

Steps, for the best's per-era scores r_1..r_T and the N trials' Sharpe ratios SR_1..SR_N:
1. SR* = mean(r) / std(r), per era (std with ddof 0, as metrics.scores.summarize's sharpe);
   skew g3 and (non-excess) kurtosis g4 of r, population moments (a normal series: 0 and 3).
2. The Sharpe the best of N trials reaches by luck alone, from the trials' own spread:
   SR0 = sqrt(V) x ((1 - e) x Phi^-1(1 - 1/N) + e x Phi^-1(1 - 1/(N x E))),
   V the trials' Sharpe variance (ddof 1), e the Euler-Mascheroni constant, E Euler's number.
3. DSR = Phi((SR* - SR0) x sqrt(T - 1) / sqrt(1 - g3 x SR* + (g4 - 1) / 4 x SR*^2)).
N is every trial compared, not only those shown: leaving trials out inflates the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from numerflow.errors import DataError

EULER_MASCHERONI = 0.5772156649015329


@dataclass(frozen=True)
class DeflatedSharpe:
    probability: float  # DSR: P(the best's true Sharpe > 0) after selection among n_trials
    sharpe: float  # the best's per-era Sharpe, SR*
    expected_max_sharpe: float  # SR0: what the best of n_trials reaches with no skill
    n_trials: int
    n_eras: int
    skew: float
    kurtosis: float  # non-excess: 3 for a normal series


def expected_max_sharpe(trial_sharpes) -> float:
    """SR0: the expected maximum Sharpe of N unskilled trials whose Sharpe ratios spread as these
    do (step 2). One trial: nothing was selected, so 0."""
    sharpes = _finite_array(trial_sharpes, "the trials' Sharpe ratios")
    n_trials = sharpes.size
    if n_trials == 1:
        return 0.0
    spread = math.sqrt(float(np.var(sharpes, ddof=1)))
    by_chance = ((1 - EULER_MASCHERONI) * stats.norm.ppf(1 - 1 / n_trials)
                 + EULER_MASCHERONI * stats.norm.ppf(1 - 1 / (n_trials * math.e)))
    return spread * float(by_chance)


def deflated_sharpe(best_era_scores, trial_sharpes) -> DeflatedSharpe:
    """The deflated Sharpe of the best trial, from its per-era scores (NaN eras left out) and the
    Sharpe ratios of all N trials compared (the best's among them)."""
    scores = np.asarray(best_era_scores, dtype=np.float64)
    scores = scores[~np.isnan(scores)]
    if scores.size < 2:
        raise DataError(f"deflated Sharpe needs the best's scores on 2 or more eras, got {scores.size}")
    scores = _finite_array(scores, "the best's per-era scores")
    std = float(scores.std())
    if std == 0:
        raise DataError("deflated Sharpe: the best's per-era scores are all equal (no Sharpe ratio)")
    sharpe = float(scores.mean()) / std
    skew = float(stats.skew(scores, bias=True))
    kurtosis = float(stats.kurtosis(scores, fisher=False, bias=True))
    threshold = expected_max_sharpe(trial_sharpes)
    non_normality = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe ** 2
    if non_normality <= 0:
        raise DataError("deflated Sharpe: the per-era scores' skew and kurtosis leave no valid estimate")
    z = (sharpe - threshold) * math.sqrt(scores.size - 1) / math.sqrt(non_normality)
    return DeflatedSharpe(probability=float(stats.norm.cdf(z)), sharpe=sharpe, expected_max_sharpe=threshold,
                          n_trials=int(np.size(trial_sharpes)), n_eras=int(scores.size), skew=skew,
                          kurtosis=kurtosis)


def _finite_array(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise DataError(f"deflated Sharpe: {what} are empty")
    if not np.isfinite(array).all():
        raise DataError(f"deflated Sharpe: {what} hold a NaN or infinite value")
    return array
