"""Era-wise scoring with Numerai's definitions: Spearman, Numerai CORR, MMC, feature exposure,
feature-neutral CORR, and the per-era summary (mean, std, sharpe, drawdown, hit rate).

Built, like numerai_tools.scoring, from one small function per mathematical step, each applied to
every era at once:

    rank (ties averaged) -> gaussianise -> signed power 1.5 -> Pearson

Spearman is Pearson of the ranks; CORR is Pearson of the powered gaussian ranks with the powered
target; MMC orthogonalises the gaussian ranks to the meta model's; FNC neutralises them to the
features. The one place that needs care for speed is `_average_ranks`, which every rank goes
through (values with a few levels are counted; others sorted within their eras, all eras in one
numpy call); every other step is a per-era sum (np.add.reduceat on rows laid out era by era) or an
elementwise function. Exposure and FNC share one Gram matrix per era. numpy only (ndtri
included: normal.py), no I/O.

Conventions, shared by every per-era function:
- `eras` is an array of labels ("0012", "era12", 12, ...) or an `EraGroups` from `group_eras`
  (reuse it to skip the labelling cost when scoring many prediction vectors on the same rows).
  Eras are ordered numerically (schema.era_sort_key), so summaries see them in time order.
- Rows whose target is NaN are skipped, era by era.
- An era is unscorable (NaN) when it has fewer than 2 scored rows, constant predictions, a
  constant target, or a non-finite prediction on a scored row.

The package, by concern: `ranking` (eras as codes, rows laid out era by era, the rank /
gaussianise / power / Pearson steps, rank_within_eras), `scores` (Spearman, CORR, MMC, BMC and
their per-era summary), `exposure` (feature exposure, FNC, neutralize), `benchmark` (neutralising
to a benchmark model, BMC over the last eras). The names below are the
public ones, so that `from numerflow import metrics; metrics.per_era_scores(...)` reads the same
wherever it is used.
"""

from numerflow.metrics.benchmark import benchmark_residuals, bmc_last, mean_of_last, neutralize_to_benchmark
from numerflow.metrics.exposure import FeatureScores, exact_fit, exact_fit_eras, feature_scores, neutralize
from numerflow.metrics.ranking import EraGroups, gaussianize_within_eras, group_eras, rank_within_eras
from numerflow.metrics.scores import (EraScores, per_era_bmc, per_era_mmc, per_era_numerai_corr, per_era_pearson,
                                      per_era_scores, per_era_spearman, summarize)
from numerflow.metrics.top_bottom import per_era_top_bottom_corr

__all__ = ["EraGroups", "EraScores", "FeatureScores", "benchmark_residuals", "bmc_last", "exact_fit", "exact_fit_eras",
           "feature_scores", "gaussianize_within_eras", "group_eras", "mean_of_last", "neutralize",
           "neutralize_to_benchmark", "per_era_bmc", "per_era_mmc", "per_era_numerai_corr", "per_era_pearson",
           "per_era_scores", "per_era_spearman", "per_era_top_bottom_corr", "rank_within_eras", "summarize"]
