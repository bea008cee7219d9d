"""scores.png: a model's cumulative live CORR, MMC and payout by round, the rounds still resolving
drawn apart (shaded, their lines dashed): their scores still move until they resolve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numerflow.numerai.scores import PAYOUT
from numerflow.reports import save_png


def draw_scores(path: Path, rows, finals: dict, title: str) -> bool:
    """Draw one model's rounds to `path`: `finals` {label: each round's final value (a Series by
    round)}, `rows` its rounds.csv rows (for which rounds are resolved, and payouts). False when
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    resolved = rows.groupby("round")["resolved"].any().sort_index()
    rounds = resolved.index.to_numpy()
    fig, scores_axis = plt.subplots(figsize=(8, 4))
    for (label, values), colour in zip(finals.items(), ("tab:blue", "tab:orange", "tab:green", "tab:purple")):
        values = values.reindex(rounds).fillna(0.0).to_numpy()
        _split_line(scores_axis, rounds, np.cumsum(values), resolved.to_numpy(), colour, f"cumulative {label}")
    scores_axis.set_xlabel("round")
    scores_axis.set_ylabel("cumulative score")
    handles, labels = scores_axis.get_legend_handles_labels()
    payouts = rows[rows["metric"] == PAYOUT].groupby("round")["payout"].sum()
    if len(payouts):
        payout_axis = scores_axis.twinx()
        values = payouts.reindex(rounds).fillna(0.0).to_numpy()
        _split_line(payout_axis, rounds, np.cumsum(values), resolved.to_numpy(), "black", "cumulative payout")
        payout_axis.set_ylabel("cumulative payout (NMR)")
        more_handles, more_labels = payout_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if (~resolved).any():
        first = rounds[~resolved.to_numpy()].min()
        scores_axis.axvspan(first - 0.5, rounds.max() + 0.5, color="0.9", zorder=0)
        scores_axis.text(first - 0.4, scores_axis.get_ylim()[1], "resolving", va="top", fontsize=8, color="0.4")
    scores_axis.legend(handles, labels, fontsize=8, loc="upper left")
    scores_axis.set_title(f"{title}: live scores by round (dashed, shaded: still resolving)", fontsize=9)
    save_png(fig, path)
    return True


def _split_line(axis, rounds, cumulative, resolved, colour: str, label: str) -> None:
    """Solid over resolved rounds, dashed from the last resolved round over the resolving ones."""
    done = np.flatnonzero(resolved)
    last = done.max() if len(done) else -1
    if last >= 0:
        axis.plot(rounds[:last + 1], cumulative[:last + 1], color=colour, marker="o", markersize=3, label=label)
    if last + 1 < len(rounds):
        start = max(last, 0)
        axis.plot(rounds[start:], cumulative[start:], color=colour, linestyle="--", marker="o", markersize=3,
                  markerfacecolor="white", label=None if last >= 0 else label)
