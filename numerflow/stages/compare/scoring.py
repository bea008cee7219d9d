"""Every model scored per era on the common rows, with validate's definitions (numerflow.metrics):
CORR, MMC (meta model), BMC and the correlation with the benchmark (scoring.side_files), TB200,
feature exposure, and the payout estimate; then compare.csv's table, the pairwise correlations
and the churn; and the deflated Sharpe of the best model (honest_winner)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numerflow import metrics, schema
from numerflow.errors import DataError

PAYOUT_CLIP = 0.05  # Numerai clips each round's payout score to +-5 %
TOP_BOTTOM = 200
COLUMNS = ["model", "source", "eras", "corr_mean", "corr_std", "corr_sharpe", "max_drawdown", "mmc_mean", "bmc_mean",
           "tb200_corr_mean", "feature_exposure", "benchmark_corr", "payout_mean", "corr_mean_last", "bmc_mean_last",
           "payout_mean_last", "payout_cumulative", "rows"]
PER_ERA = ["corr", "mmc", "bmc", "tb200_corr", "benchmark_corr", "feature_exposure", "payout"]
# The per-era series a sort key summarises: the best by it is deflated on that series' Sharpe.
# Keys that are no mean of a per-era score (std, drawdown, exposure, churn) deflate CORR's.
SORT_SERIES = {"corr_mean": "corr", "corr_sharpe": "corr", "corr_mean_last": "corr", "mmc_mean": "mmc",
               "bmc_mean": "bmc", "bmc_mean_last": "bmc", "tb200_corr_mean": "tb200_corr", "payout_mean": "payout",
               "payout_mean_last": "payout", "payout_cumulative": "payout"}


@dataclass
class SideModels:
    """The meta model and the benchmark on the common rows (None when absent, with a note)."""
    meta: np.ndarray | None
    benchmark: np.ndarray | None
    benchmark_name: str | None


def common_rows(predictions: dict[str, np.ndarray], eras: np.ndarray, notes: list[str]) -> np.ndarray:
    """Rows every model predicts; a note per model that loses rows (how many, in how many eras).
    No common row is a DataError naming each model's eras."""
    covered = {name: np.isfinite(values) for name, values in predictions.items()}
    common = np.logical_and.reduce(list(covered.values()))
    if not common.any():
        spans = "; ".join(f"{name}: {_span(eras[rows])}" for name, rows in covered.items())
        raise DataError(f"the models share no rows, so no common eras ({spans})")
    common_eras = set(eras[common])
    for name, rows in covered.items():
        dropped = rows & ~common
        if dropped.any():
            lost = sorted(set(eras[dropped]) - common_eras, key=schema.era_sort_key)
            notes.append(f"{name}: {int(dropped.sum()):,} of its rows are not predicted by every model: dropped"
                         + (f" ({len(lost)} era(s) entirely: {_span(np.array(lost))})" if lost else ""))
    return common


def _span(eras: np.ndarray) -> str:
    labels = sorted(set(eras.tolist()), key=schema.era_sort_key)
    return "no rows" if not labels else f"{len(labels)} era(s) {labels[0]}-{labels[-1]}"


def side_models(rows, common: np.ndarray, notes: list[str]) -> SideModels:
    """meta_model.parquet and the benchmark column from the data's version folder, as validate
    reads them (scoring.side_files), placed on the common rows."""
    from numerflow.scoring.side_files import read_benchmark, read_side_file

    data = rows.data
    if data.source_dir is None:
        if rows.validate_config.benchmark is not None:
            raise DataError(f"--benchmark {rows.validate_config.benchmark}: no source data folder known for "
                            f"{data.path}, so no {schema.VALIDATION_BENCHMARK_FILE} to read")
        notes.append("no source data folder known: MMC, BMC, benchmark_corr and payout left out")
        return SideModels(None, None, None)
    row_ids = rows.row_ids.restricted_to(common)
    meta = read_side_file(data.source_dir / schema.META_MODEL_FILE, schema.META_MODEL, row_ids, data.path, notes)
    benchmark = read_benchmark(data.source_dir, rows.validate_config.benchmark, row_ids, data.path, notes)
    if meta is None:
        notes.append("no meta model: MMC and payout left out")
    return SideModels(meta, benchmark[1] if benchmark else None, benchmark[0] if benchmark else None)


def per_era_scores(predictions: np.ndarray, target: np.ndarray, groups, ids, matrix, side: SideModels,
                   payout: dict) -> dict[str, np.ndarray]:
    """One model's per-era scores on the common rows (eras in `groups`' order; NaN: unscored)."""
    nan = np.full(groups.n_eras, np.nan)
    corr = metrics.per_era_numerai_corr(predictions, target, groups).values
    out = {"corr": corr, "mmc": nan, "bmc": nan, "benchmark_corr": nan, "payout": nan}
    if side.meta is not None:
        out["mmc"] = metrics.per_era_mmc(predictions, side.meta, target, groups).values
        out["payout"] = np.clip(payout["corr"] * corr + payout["mmc"] * out["mmc"], -PAYOUT_CLIP, PAYOUT_CLIP)
    if side.benchmark is not None:
        out["bmc"] = metrics.per_era_bmc(predictions, side.benchmark, target, groups).values
        out["benchmark_corr"] = metrics.per_era_spearman(predictions, side.benchmark, groups).values
    out["tb200_corr"] = metrics.per_era_top_bottom_corr(predictions, target, groups, ids, TOP_BOTTOM).values
    out["feature_exposure"] = (metrics.feature_scores(predictions, matrix, target, groups).max_exposure.values
                               if matrix is not None and matrix.shape[1] else nan)
    return out


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def table_row(name: str, source: str, scores: dict[str, np.ndarray], rows: int, last: int) -> dict:
    """compare.csv's row of one model: summaries as validate's (metrics.summarize), means over
    scored eras, the last `last` eras' means, and the payout's cumulative sum."""
    corr = metrics.summarize(scores["corr"])
    recent = slice(max(len(scores["corr"]) - last, 0), None)
    return {"model": name, "source": source, "eras": corr["eras_scored"], "corr_mean": corr["mean"],
            "corr_std": corr["std"], "corr_sharpe": corr["sharpe"], "max_drawdown": corr["max_drawdown"],
            "mmc_mean": _mean(scores["mmc"]), "bmc_mean": _mean(scores["bmc"]),
            "tb200_corr_mean": _mean(scores["tb200_corr"]), "feature_exposure": _mean(scores["feature_exposure"]),
            "benchmark_corr": _mean(scores["benchmark_corr"]), "payout_mean": _mean(scores["payout"]),
            "corr_mean_last": _mean(scores["corr"][recent]), "bmc_mean_last": _mean(scores["bmc"][recent]),
            "payout_mean_last": _mean(scores["payout"][recent]),
            "payout_cumulative": float(np.nansum(scores["payout"])) if np.isfinite(scores["payout"]).any()
            else float("nan"), "rows": int(rows)}


def pairwise(predictions: dict[str, np.ndarray], groups) -> dict[str, dict[str, float]]:
    """Per-era Spearman between every two models' predictions, mean over eras."""
    names = list(predictions)
    out = {name: {} for name in names}
    for i, a in enumerate(names):
        out[a][a] = 1.0
        for b in names[i + 1:]:
            value = _mean(metrics.per_era_spearman(predictions[a], predictions[b], groups).values)
            out[a][b] = out[b][a] = value
    return out


def churn(predictions: dict[str, np.ndarray], other: np.ndarray, groups, what: str) -> dict[str, float]:
    """1 - per-era Spearman with `other` (NaN where it has no value), mean over eras."""
    if not np.isfinite(other).any():
        raise DataError(f"--churn-against {what}: shares no ids with the scored rows")
    return {name: 1.0 - _mean(metrics.per_era_spearman(values, other, groups).values)
            for name, values in predictions.items()}


def honest_winner(table, per_era, sort: str, notes: list[str]) -> dict:
    """The deflated Sharpe (metrics.deflated_sharpe) of the best model by `sort` (the sorted
    table's first row), on its per-era series of the sort key (CORR where the key has none, or
    where the best has fewer than 2 scored eras of it), against the Sharpe ratios of every model
    compared on that series: N is every model in the table. Written into the table's
    `deflated_sharpe` column on the best's row only (NaN for the others: the correction is for the
    one picked as the best, so a runner-up's value would answer a question nobody asked)."""
    from numerflow.metrics.deflated_sharpe import deflated_sharpe

    table["deflated_sharpe"] = np.nan
    best = str(table["model"].iloc[0])
    if not np.isfinite(table[sort].iloc[0]):
        notes.append(f"no model has a {sort}: no best to compute the deflated Sharpe of")
        return {"model": None, "sort": sort, "probability": None, "n_trials": int(len(table))}
    series = SORT_SERIES.get(sort, "corr")
    if np.isfinite(per_era.loc[per_era["model"] == best, series].to_numpy(np.float64)).sum() < 2:
        series = "corr"
    by_model = {name: rows[series].to_numpy(np.float64) for name, rows in per_era.groupby("model", sort=False)}
    sharpes = {name: metrics.summarize(values)["sharpe"] for name, values in by_model.items()}
    finite = [value for value in sharpes.values() if np.isfinite(value)]
    if len(finite) < len(sharpes):
        notes.append(f"deflated Sharpe: {len(sharpes) - len(finite)} model(s) have no {series} Sharpe "
                     f"(fewer than 2 scored eras, or constant): left out of N")
    facts = {"model": best, "sort": sort, "series": series, "n_trials": len(finite), "probability": None}
    try:
        result = deflated_sharpe(by_model[best], finite)
    except DataError as exc:
        notes.append(f"{exc}: not computed")
        return facts
    table.loc[0, "deflated_sharpe"] = result.probability
    return {**facts, "probability": result.probability, "sharpe": result.sharpe,
            "expected_max_sharpe": result.expected_max_sharpe, "eras": result.n_eras, "skew": result.skew,
            "kurtosis": result.kurtosis}
