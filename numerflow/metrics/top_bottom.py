"""TB200: Numerai CORR measured on each era's highest and lowest predictions only, as
numerai_tools.scoring.numerai_corr(..., top_bottom=N) computes it: the whole era's predictions are
tie-kept ranked, gaussianised and raised to the power 1.5, and the whole era's target centred and
raised to 1.5; then the N lowest and N highest powered predictions (a stable sort of the rows in id
order, so ties at the cut go to the smaller id, as numerai_tools' sort_index then argsort) are kept
and Pearson-correlated with their targets."""

from __future__ import annotations

import numpy as np

from numerflow.metrics.ranking import _powered_target, _signed_power
from numerflow.metrics.scores import EraScores, _ScoredRows


def per_era_top_bottom_corr(predictions, target, eras, ids, top_bottom: int = 200) -> EraScores:
    """numerai_corr(..., top_bottom=top_bottom) per era. An era with fewer than 2 x top_bottom
    scored rows is unscored (NaN): its top and bottom would overlap. Rows with NaN target are
    skipped, as by every per-era score."""
    import pandas as pd

    id_order = np.empty(len(ids), dtype=np.float64)  # each row's place among the ids sorted as text
    id_order[np.argsort(pd.Index(ids).astype(str).to_numpy(), kind="stable")] = np.arange(len(ids))
    rows = _ScoredRows(predictions, target, eras, aligned=[id_order])
    layout = rows.layout
    powered = _signed_power(rows.gaussian_predictions())
    powered_target = _powered_target(rows.target, layout)
    values = np.full(layout.n_eras, np.nan)
    for era in np.flatnonzero(layout.counts >= 2 * top_bottom):
        span = layout.rows_of(int(era))
        by_id = np.argsort(rows.aligned[0][span], kind="stable")
        p, t = powered[span][by_id], powered_target[span][by_id]
        order = np.argsort(p, kind="stable")
        kept = np.concatenate([order[:top_bottom], order[-top_bottom:]])
        with np.errstate(invalid="ignore", divide="ignore"):
            values[era] = np.corrcoef(p[kept], t[kept])[0, 1]
    return rows.scores(values, rows.constant_predictions(), layout.constant(rows.target))
