"""compare's results: the printed table, and compare/<name>/{compare.csv, compare.json,
per_era.parquet, cumulative.png} written as one set that replaces the folder whole
(files.publish_folder, compare.json last): a killed run leaves the old set or the new one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow.files import publish_folder
from numerflow.reports import json_safe

COMPARE_CSV, COMPARE_JSON, PER_ERA_PARQUET, CUMULATIVE_PNG = ("compare.csv", "compare.json", "per_era.parquet",
                                                              "cumulative.png")
LOWER_IS_BETTER = {"corr_std", "max_drawdown", "feature_exposure", "benchmark_corr", "churn"}
SHOWN = ["corr_mean", "corr_sharpe", "max_drawdown", "mmc_mean", "bmc_mean", "tb200_corr_mean", "feature_exposure",
         "benchmark_corr", "payout_mean", "corr_mean_last", "bmc_mean_last", "payout_mean_last", "churn"]
DSR_THRESHOLD = 0.95  # a deflated Sharpe below it: the printout says the best's Sharpe may be luck
SERIES_NAMES = {"corr": "CORR", "mmc": "MMC", "bmc": "BMC", "tb200_corr": "TB200", "payout": "payout"}


@dataclass
class CompareResult:
    table: object  # the DataFrame of compare.csv, sorted
    per_era: object  # per_era.parquet's DataFrame: era, model and every per-era score
    summary: dict  # compare.json's content
    folder: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def frame(self):
        """compare.csv's table (every table-like result has `.frame`)."""
        return self.table

    def __str__(self) -> str:
        s = self.summary
        lines = [f"Compared {len(self.table)} model(s) on {s['rows']:,} common rows, {s['eras']} eras "
                 f"({s['first_era']}-{s['last_era']}) of {s['data_name']}; the *_last columns cover the last "
                 f"{min(s['last'], s['eras'])} eras ({s['last_eras'][0]}-{s['last_eras'][1]}; --last {s['last']})",
                 f"payout per era: clip({s['payout']['corr']:g} x CORR + {s['payout']['mmc']:g} x MMC, -0.05, 0.05)"
                 + (f"; BMC against {s['benchmark']}" if s.get("benchmark") else "")]
        shown = [c for c in SHOWN if c in self.table.columns]
        width = max(10, *(len(str(name)) + 2 for name in self.table["model"]))
        header = f"{'model':<{width}}" + "".join(f"{_short(c):>{max(9, len(_short(c)) + 1)}}" for c in shown)
        lines += [header] + [f"{row['model']:<{width}}"
                             + "".join(f"{_fmt(row[c]):>{max(9, len(_short(c)) + 1)}}" for c in shown)
                             for _, row in self.table.iterrows()]
        lines.append(_sorted_line(self.table, s["sort"]))
        lines += _honest_winner_line(s.get("deflated_sharpe"))
        lines += [f"Note: {note}" for note in s["notes"]]
        if self.files:
            lines.append(f"Results: {self.folder}/ ({', '.join(p.name for p in self.files)})")
        return "\n".join(lines)


def _sorted_line(table, sort: str) -> str:
    """What the rows are in order of: the sort column's, unless it is NaN for every model (no
    payout without MMC's meta model): then the rows keep the order the models were given in."""
    if table[sort].isna().all():
        return f"not sorted: {sort} is nan for every model (rows in the order given)"
    return f"sorted by {sort} ({'lowest' if sort in LOWER_IS_BETTER else 'highest'} first)"


def _honest_winner_line(deflated: dict | None) -> list[str]:
    """One sentence on the best's deflated Sharpe; a warning when it is below DSR_THRESHOLD."""
    if not deflated or deflated.get("probability") is None:
        return []
    value, n = deflated["probability"], deflated["n_trials"]
    best = (f"The best of {n} model(s) by {deflated['sort']}, {deflated['model']}: its per-era "
            f"{SERIES_NAMES.get(deflated['series'], deflated['series'])} Sharpe {deflated['sharpe']:.3f}")
    if value < DSR_THRESHOLD:
        return [f"{best} may be luck (deflated Sharpe {value:.2f} < {DSR_THRESHOLD}: the best of {n} unskilled "
                f"models would reach {deflated['expected_max_sharpe']:.3f})"]
    return [f"{best} holds up after picking it among {n} (deflated Sharpe {value:.2f} >= {DSR_THRESHOLD})"]


def _short(column: str) -> str:
    return (column.replace("_mean", "").replace("feature_exposure", "exposure").replace("benchmark_corr", "bench")
            .replace("max_drawdown", "max_dd").replace("corr_sharpe", "sharpe").replace("tb200_corr", "tb200"))


def _fmt(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def sort_table(table, column: str):
    return table.sort_values(column, ascending=column in LOWER_IS_BETTER, na_position="last", kind="stable") \
        .reset_index(drop=True)


def _draw(path: Path, per_era, summary: dict) -> bool:
    """Cumulative CORR, BMC and payout of every model, one panel each; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [(c, label) for c, label in (("corr", "CORR"), ("bmc", "BMC"), ("payout", "payout"))
              if per_era[c].notna().any()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), sharex=True, squeeze=False)
    try:
        for ax, (column, label) in zip(axes[:, 0], panels):
            for model, rows in per_era.groupby("model", sort=False):
                ax.plot(np.arange(len(rows)), np.nancumsum(rows[column].to_numpy(dtype=np.float64)), label=model)
            ax.set_ylabel(f"cumulative {label}")
            ax.axhline(0, color="grey", linewidth=0.6)
        axes[0, 0].legend(fontsize=7, loc="best")
        axes[0, 0].set_title(f"{summary['data_name']}: eras {summary['first_era']}-{summary['last_era']}", fontsize=9)
        axes[-1, 0].set_xlabel("era (common eras, in order)")
        fig.savefig(path, format="png", dpi=90, bbox_inches="tight")
        return True
    finally:
        plt.close(fig)


def write_results(result: CompareResult, folder: Path) -> None:
    """The four files as one set: the folder is replaced only when every one was written."""
    with publish_folder(folder, COMPARE_JSON, result.summary) as files:
        result.table.to_csv(files.path(COMPARE_CSV), index=False)
        result.per_era.to_parquet(files.path(PER_ERA_PARQUET), index=False)
        if not _draw(files.path(CUMULATIVE_PNG), result.per_era, result.summary):
            files.drop(CUMULATIVE_PNG)
            result.summary["notes"].append("matplotlib is not installed: cumulative.png not drawn")
        names = list(files.temporaries)
    result.folder = folder
    result.files = [folder / name for name in names + [COMPARE_JSON]]


def summary_json(table, **facts) -> dict:
    return json_safe({**facts, "models": table.to_dict(orient="records")})
