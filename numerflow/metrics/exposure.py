"""Feature exposure, feature-neutral CORR (FNC) and neutralisation, from one Gram matrix per era."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from numerflow.metrics.ranking import EraGroups, _EraLayout, gaussianize_within_eras, group_eras
from numerflow.metrics.scores import EraScores, _ScoredRows

# ---------------------------------------------------------------------------------------------
# Features: exposure and neutralisation, from one Gram matrix per era


class _EraFeatures:
    """One era's features, centred, as float64 (int8 features are cast here, one era at a time,
    never the whole matrix), with their Gram matrix x^T x: the one large product per era, shared
    by exposure (its diagonal) and neutralisation (the normal equations)."""

    def __init__(self, features, rows):
        x = np.asarray(features[rows], dtype=np.float64)
        x -= x.mean(axis=0)
        self.x = x
        self.gram = x.T @ x  # numpy runs x.T @ x as one symmetric BLAS product (syrk)
        # Features constant in the era (a group "missing" as all 2s) are left out of every fit.
        self.varying = np.diagonal(self.gram) > 0

    def exposure(self, y_c: np.ndarray, x_t_y: np.ndarray) -> np.ndarray:
        """Pearson correlation of centred y with every varying feature."""
        v = self.varying
        with np.errstate(invalid="ignore", divide="ignore"):  # constant y: NaN, reported unscorable
            return x_t_y[v] / np.sqrt(np.diagonal(self.gram)[v] * (y_c @ y_c))

    def fitted(self, y_c: np.ndarray, x_t_y: np.ndarray) -> np.ndarray:
        """The least-squares fit of centred y on the features (centred: the intercept is implicit).

        The normal equations are solved directly, and the answer accepted when the residual is
        orthogonal to the features. A singular or ill-conditioned era falls back to a
        pseudo-inverse through the Gram matrix's eigen-decomposition, dropping null directions
        as np.linalg.lstsq's rcond does in numerai_tools."""
        v = self.varying
        if not v.any():
            return np.zeros_like(y_c)
        gram, rhs = self.gram[np.ix_(v, v)], x_t_y[v]
        coef = np.zeros((len(v),) + rhs.shape[1:])  # zero for constant features: x is not copied
        try:
            coef[v] = np.linalg.solve(gram, rhs)
            fitted = self.x @ coef
            leftover = (self.x.T @ (y_c - fitted))[v]
            if np.abs(leftover).max(initial=0.0) <= 1e-8 * max(float(np.abs(rhs).max(initial=0.0)), 1e-300):
                return fitted
        except np.linalg.LinAlgError:
            pass
        eigval, eigvec = np.linalg.eigh(gram)
        keep = eigval > 1e-12 * max(float(eigval.max(initial=0.0)), 0.0)
        basis = eigvec[:, keep]
        along_basis = basis.T @ rhs
        along_basis /= eigval[keep][:, None] if along_basis.ndim == 2 else eigval[keep]
        coef[v] = basis @ along_basis
        return self.x @ coef


def _era_rows(groups: EraGroups):
    """(era index, row indices in original order) for every era that has rows."""
    layout = _EraLayout(groups)
    rows = np.arange(len(groups)) if layout.order is None else layout.order
    for era in np.flatnonzero(layout.present):
        yield int(era), rows[layout.rows_of(era)]


def exact_fit(rows: int, n_features: int) -> bool:
    """An era with no more rows than the fit's parameters (the features plus the constant) is fitted
    exactly: what neutralising leaves is rounding noise, not a signal. FNC leaves such eras
    unscored and neutralize leaves their predictions as they are."""
    return rows <= n_features + 1


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
        era = _EraFeatures(features, idx)
        y_mean = y[idx].mean(axis=0)
        y_c = y[idx] - y_mean
        # The constant column's share is the era mean: at proportion 1 the era is also centred.
        out[idx] = y[idx] - proportion * (era.fitted(y_c, era.x.T @ y_c) + y_mean)
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
        x = _EraFeatures(features, feature_rows[idx])
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
