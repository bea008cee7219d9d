"""Feature exposure, feature-neutral CORR (FNC) and neutralisation, from one Gram matrix per era."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from numerflow.metrics.least_squares import EraFeatures, exact_fit, neutralised
from numerflow.metrics.ranking import EraGroups, _EraLayout, gaussianize_within_eras, group_eras
from numerflow.metrics.scores import EraScores, _ScoredRows

# ---------------------------------------------------------------------------------------------
# Features: exposure and neutralisation, from one Gram matrix per era


def _era_rows(groups: EraGroups):
    """(era index, row indices in original order) for every era that has rows."""
    layout = _EraLayout(groups)
    rows = np.arange(len(groups)) if layout.order is None else layout.order
    for era in np.flatnonzero(layout.present):
        yield int(era), rows[layout.rows_of(era)]


def exact_fit_eras(eras, n_features: int) -> list[str]:
    """The labels of the eras exact_fit skips (for the notes that say so)."""
    groups = group_eras(eras)
    return [str(groups.labels[era]) for era, idx in _era_rows(groups) if exact_fit(len(idx), n_features)]


def neutralize(predictions, features, eras, proportion: float = 1.0) -> np.ndarray:
    """Remove `proportion` of the predictions' linear exposure to the features within each era
    (numerai_tools.scoring.neutralize applied era by era: least squares on the features plus a
    constant). predictions: (rows,) or (rows, k); features: (rows, n_features), any numeric dtype.
    Returns float64 with the predictions' shape. Rank it again (rank_within_eras) to submit it."""
    predictions = np.asarray(predictions, dtype=np.float64)
    one_d = predictions.ndim == 1
    y = predictions[:, None] if one_d else predictions
    if len(y) != len(features):
        raise ValueError(f"predictions ({len(y)}) and features ({len(features)}) differ in length")
    out = np.empty_like(y)
    for _, idx in _era_rows(group_eras(eras)):
        if exact_fit(len(idx), features.shape[1]):
            out[idx] = y[idx]  # see exact_fit: left as they are
            continue
        out[idx] = neutralised(y[idx], EraFeatures(features, idx), proportion)
    return out[:, 0] if one_d else out


@dataclass
class FeatureScores:
    """Per-era feature exposure of the predictions and their feature-neutral CORR."""

    max_exposure: EraScores  # per era: max over features of |Pearson(predictions, feature)|
    rms_exposure: EraScores  # per era: root mean square over features of that correlation
    fnc: EraScores  # per era: Numerai CORR of the predictions neutralised to all features
    exact_fit_eras: list[str] = field(default_factory=list)  # FNC unscored there: see exact_fit


def feature_scores(predictions, features, target, eras) -> FeatureScores:
    """Feature exposure and feature-neutral CORR, from one Gram matrix per era.

    FNC is numerai_tools.scoring.feature_neutral_corr era by era: gaussianised ranks neutralised
    to the features (least squares with a constant), then numerai_corr. Exposure follows Numerai's
    example scripts: per era, the Pearson correlation of the raw predictions with every feature
    (features constant in that era are left out), then the era's max |corr| and RMS over features;
    summaries average those over eras. Rows with NaN target are skipped, as everywhere."""
    predictions = np.asarray(predictions, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    groups = group_eras(eras)
    if not (len(predictions) == len(target) == len(groups) == len(features)):
        raise ValueError("predictions, features, target and eras differ in length")
    keep = np.isfinite(target)
    feature_rows = np.flatnonzero(keep)  # rows of `features`: never copy the whole matrix
    predictions, target, groups = predictions[keep], target[keep], groups.subset(keep)
    raw = _ScoredRows(predictions, target, groups)
    gauss = gaussianize_within_eras(predictions, groups)
    max_exp, rms_exp = np.full(groups.n_eras, np.nan), np.full(groups.n_eras, np.nan)
    neutral = np.full(len(predictions), np.nan)
    small: list[str] = []
    for era, idx in _era_rows(groups):
        if raw.bad_era[era]:
            continue  # a non-finite prediction: the era is reported unscorable below
        x = EraFeatures(features, feature_rows[idx])
        if exact_fit(len(idx), features.shape[1]):
            neutral[idx] = np.nan  # FNC would be rounding noise: unscored (exposure is still measured)
            small.append(str(groups.labels[era]))
        y_c = np.stack([predictions[idx], gauss[idx]], axis=1)
        y_c -= y_c.mean(axis=0)
        x_t_y = x.x.T @ y_c  # both columns in one pass over the era's features
        corr = x.exposure(y_c[:, 0], x_t_y[:, 0])
        if corr.size:
            max_exp[era], rms_exp[era] = np.abs(corr).max(), np.sqrt(np.mean(corr * corr))
        if not exact_fit(len(idx), features.shape[1]):
            neutral[idx] = y_c[:, 1] - x.fitted(y_c[:, 1], x_t_y[:, 1])
    fnc = _ScoredRows(neutral, target, groups).numerai_corr()
    # Exposure of constant predictions is undefined: NaN via max_exp; unscorable eras follow CORR's.
    unscored = np.isnan(raw.numerai_corr().values)
    return FeatureScores(
        max_exposure=EraScores(list(groups.labels), fnc.rows.copy(), np.where(unscored, np.nan, max_exp)),
        rms_exposure=EraScores(list(groups.labels), fnc.rows.copy(), np.where(unscored, np.nan, rms_exp)),
        fnc=fnc,
        exact_fit_eras=small,
    )
