"""Least squares of predictions on one era's features: the neutralising step shared by validate's
FNC (metrics/exposure.py), predict and the exported pickle (workflow/postprocess.py). numpy only and
no numerflow import: `numerflow export` stores this module in the pickle by value (cloudpickle), so
the pickle runs this very code where numerflow is not installed."""

from __future__ import annotations

import numpy as np


class EraFeatures:
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


def exact_fit(rows: int, n_features: int) -> bool:
    """An era with no more rows than the fit's parameters (the features plus the constant) is fitted
    exactly: what neutralising leaves is rounding noise, not a signal. FNC leaves such eras
    unscored and neutralising leaves their predictions as they are."""
    return rows <= n_features + 1


def neutralised(y: np.ndarray, era: EraFeatures, proportion: float) -> np.ndarray:
    """y (one era's rows; (rows,) or (rows, k)) less `proportion` of its least-squares fit on the
    era's features plus a constant (numerai_tools.scoring.neutralize): at proportion 1 the era is
    also centred, as the constant's share is the era mean."""
    y_mean = y.mean(axis=0)
    y_c = y - y_mean
    return y - proportion * (era.fitted(y_c, era.x.T @ y_c) + y_mean)
