"""What a sweep maximises, scored on the validation eras with the validator's own per-era
definitions (numerflow.metrics): Numerai CORR's mean or sharpe, MMC's mean against the meta
model, BMC's mean against a benchmark model or over the last `last` eras (bmc_last, 200 by
default: what Numerai's research tooling ranks models by first), or the payout: CORR x a + MMC x b
per era (Numerai's weights, from the space file). On eras without a meta model (every training
era: Numerai publishes it for validation only) the payout takes BMC in MMC's place."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from numerflow import metrics
from numerflow.options import SweepObjective as ObjectiveName


@dataclass
class Objective:
    name: str = ObjectiveName.corr_mean.value
    payout: dict = field(default_factory=lambda: {"corr": 0.5, "mmc": 2.0})
    last: int = 200  # bmc_last: the number of last eras

    @property
    def needs_meta_model(self) -> bool:
        return self.name in (ObjectiveName.mmc_mean, ObjectiveName.payout)

    @property
    def needs_benchmark(self) -> bool:
        return self.name in (ObjectiveName.bmc_mean, ObjectiveName.bmc_last)

    def summary(self, predictions: np.ndarray, data) -> dict:
        """The objective and the usual validation summary of one epoch's predictions on
        `data.validation` (a trial.PreparedData): see `scores`."""
        split = data.validation
        groups = metrics.EraGroups(split.eras, split.era_codes.astype(np.int32))
        return self.scores(predictions, split.targets[:, 0].astype(np.float64), groups, data.meta_model,
                           getattr(data, "benchmark", None))

    def scores(self, predictions: np.ndarray, target: np.ndarray, eras, meta_model: np.ndarray | None = None,
               benchmark: np.ndarray | None = None) -> dict:
        """The objective and a summary (mean/sharpe of era-Spearman as train's val_mean/val_sharpe,
        CORR mean and sharpe; MMC mean when there is a meta model, BMC mean and bmc_last when there
        is a benchmark model) of predictions of rows in `eras` (labels or metrics.EraGroups). The
        payout without a meta model (training eras) takes BMC in MMC's place."""
        per_era = metrics.per_era_scores(predictions, target, eras)
        spearman, corr = metrics.summarize(per_era["spearman"]), metrics.summarize(per_era["numerai_corr"])
        row = {"val_mean": spearman["mean"], "val_sharpe": spearman["sharpe"], "corr_mean": corr["mean"],
               "corr_sharpe": corr["sharpe"]}
        mmc = None
        if meta_model is not None:
            mmc = np.asarray(metrics.per_era_mmc(predictions, meta_model, target, eras).values)
            row["mmc_mean"] = metrics.summarize(mmc)["mean"]
        bmc = None
        if benchmark is not None:
            bmc = metrics.per_era_bmc(predictions, benchmark, target, eras)
            row["bmc_mean"] = metrics.summarize(bmc)["mean"]
            row["bmc_last"] = metrics.mean_of_last(bmc, self.last)
        if self.name == ObjectiveName.payout:
            contribution = mmc if mmc is not None else (np.asarray(bmc.values) if bmc is not None else None)
            if contribution is None:
                raise ValueError("payout needs the meta model or, on eras without one, the benchmark model")
            per_era_payout = self.payout["corr"] * np.asarray(per_era["numerai_corr"].values) + self.payout["mmc"] * contribution
            row["payout"] = metrics.summarize(per_era_payout)["mean"]
        value = row.get(self.name)
        # A NaN score (constant predictions, no scored eras) ranks below every real one.
        row["objective"] = float(value) if value is not None and math.isfinite(value) else -math.inf
        return {k: float(v) for k, v in row.items()}
