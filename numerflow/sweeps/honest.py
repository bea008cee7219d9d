"""The deflated Sharpe of a sweep's best trial (metrics.deflated_sharpe, issue 28): how likely its
Sharpe is real after it was picked as the best of the sweep's N complete trials.

The Sharpe is of per-era CORR. A `sweep --cv` trial keeps its out-of-fold predictions
(trials/<n>/oof.parquet): scored era by era against the main target of the prepared rows they
cover, they give every complete trial's per-era CORR, so N is every complete trial, not only
those a table shows. A trial scored on validation (no --cv) keeps only each epoch's objective,
no per-era scores: the result then says why it cannot be computed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from numerflow import metrics, schema
from numerflow.errors import DataError

SERIES = "corr"  # per-era Numerai CORR
THRESHOLD = 0.95  # a deflated Sharpe below it: the summary says the best's Sharpe may be luck


def deflated_best(out_dir: Path, rows: list[dict], best: dict | None, cv: bool) -> dict | None:
    """best.json's `deflated_sharpe`: the best trial's deflated Sharpe among the complete trials,
    or `probability` None and the `reason`. None when no trial completed."""
    from numerflow.metrics.deflated_sharpe import deflated_sharpe

    if best is None:
        return None
    complete = [r["number"] for r in rows if r["state"] == "COMPLETE" and math.isfinite(r["score"])]
    facts = {"trial": best["number"], "series": SERIES, "n_trials": len(complete), "probability": None}
    if not cv:
        return {**facts, "reason": "trials scored on validation keep no per-era scores, only each epoch's "
                                   "objective (run the sweep with --cv)"}
    try:
        per_era = complete_trials_per_era_corr(out_dir, complete)
        sharpes = [metrics.summarize(values)["sharpe"] for values in per_era.values()]
        if not all(math.isfinite(value) for value in sharpes):
            raise DataError("a complete trial has no CORR Sharpe (fewer than 2 scored eras, or constant)")
        result = deflated_sharpe(per_era[best["number"]], sharpes)
    except DataError as exc:
        return {**facts, "reason": str(exc)}
    return {**facts, "probability": result.probability, "sharpe": result.sharpe,
            "expected_max_sharpe": result.expected_max_sharpe, "eras": result.n_eras, "skew": result.skew,
            "kurtosis": result.kurtosis}


def complete_trials_per_era_corr(out_dir: Path, numbers: list[int]) -> dict[int, np.ndarray]:
    """Per-era CORR of each complete trial's kept out-of-fold predictions (eras in order)."""
    from numerflow.provenance import recorded_path
    from numerflow.sweeps.local import TRIAL_OOF, TRIAL_SETTINGS, kept_trials, read_kept_trial

    kept = kept_trials(out_dir)
    missing = [n for n in numbers if n not in kept]
    if missing:
        raise DataError(f"complete trial(s) {', '.join(map(str, missing))} kept no out-of-fold predictions")
    targets: dict[tuple, object] = {}  # the prepared rows, read once for every trial that shares them
    out = {}
    for number in numbers:
        record = read_kept_trial(kept[number])
        files = [schema.TRAIN_FILE] + ([schema.VALIDATION_FILE]
                                       if record.get("settings", {}).get("include_validation") else [])
        data = recorded_path(record["data"], kept[number] / TRIAL_SETTINGS)  # relative to settings.json
        key = (data, record["target"], tuple(files))
        if key not in targets:
            targets[key] = _target_rows(data, record["target"], files)
        out[number] = _per_era_corr(kept[number] / TRIAL_OOF, targets[key], record["target"])
    return out


def _target_rows(prepared: Path, target: str, files: list[str]):
    """era and the main target of the prepared files, indexed by id (text)."""
    import pandas as pd

    frames = [schema.read_matrix(prepared / name, [], [schema.ERA, target])[1] for name in files]
    frame = pd.concat(frames)
    frame.index = frame.index.astype(str)
    return frame


def _per_era_corr(oof_path: Path, rows, target: str) -> np.ndarray:
    import pandas as pd

    try:
        oof = pd.read_parquet(oof_path, columns=[schema.ID, schema.PREDICTION])
    except (OSError, ValueError) as exc:
        raise schema.unreadable(oof_path, exc) from None
    predictions = pd.Series(oof[schema.PREDICTION].to_numpy(np.float64), index=oof[schema.ID].astype(str))
    scored = rows.loc[rows.index.isin(predictions.index)]
    scored = scored[scored[target].notna()]
    values = predictions.reindex(scored.index).to_numpy(np.float64)
    return metrics.per_era_numerai_corr(values, scored[target].to_numpy(np.float64),
                                        scored[schema.ERA].astype(str).to_numpy()).values


def summary_line(deflated: dict | None) -> str:
    """The sweep summary's sentence on the best trial's deflated Sharpe."""
    if deflated is None:
        return "Deflated Sharpe: no complete trial"
    n, trial = deflated["n_trials"], deflated["trial"]
    if deflated["probability"] is None:
        return f"Deflated Sharpe of trial {trial} among {n} complete trial(s): not computed: {deflated['reason']}"
    value = deflated["probability"]
    best = f"The best of {n} complete trial(s), trial {trial}: its per-era CORR Sharpe {deflated['sharpe']:.3f}"
    if value < THRESHOLD:
        return (f"{best} may be luck (deflated Sharpe {value:.2f} < {THRESHOLD}: the best of {n} unskilled "
                f"trials would reach {deflated['expected_max_sharpe']:.3f})")
    return f"{best} holds up after picking it among {n} (deflated Sharpe {value:.2f} >= {THRESHOLD})"
