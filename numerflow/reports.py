"""validate's reports: the one owner of report.json's format. A report folder holds report.json
(the summaries, notes and a per-era table), per_era.csv (that table, for spreadsheets) and
per_era.png (per-era CORR with its cumulative line). This module builds the per-era parts from
metrics' scores, prints a report, writes a folder as one set, and reads one back (read_report),
so that commands comparing reports need not know the files' layout."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import metrics, schema
from numerflow.files import dump_json, publish_set

REPORT_FILE = "report.json"
PER_ERA_CSV = "per_era.csv"
PER_ERA_PNG = "per_era.png"


@dataclass
class Report:
    """The validation report: `data` is the JSON-able dict written to report.json."""

    data: dict
    source: str  # what was scored (model or predictions file)
    data_path: Path | DataFiles
    report_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2)

    def __str__(self) -> str:
        d = self.data
        rows = [("spearman", d["spearman"]), ("numerai_corr", d["numerai_corr"])]
        rows += [(name, d[name]) for name in ("mmc", "bmc", "corr_with_benchmark", "fnc", "corr_with_example")
                 if name in d]
        rows += [(f"corr {name}", summary) for name, summary in d.get("aux_targets", {}).items()]
        width = max(22, *(len(name) + 2 for name, _ in rows))  # long target names widen the column
        lines = [f"Validated {self.source} on {self.data_path}: {d['rows']:,} rows, {d['eras']} eras",
                 f"{'':<{width}}{'mean':>8}{'std':>8}{'sharpe':>8}{'max_dd':>8}{'hit':>7}{'eras':>6}"]
        lines += [_summary_line(name, summary, width) for name, summary in rows]
        if "benchmark" in d:
            lines.append(f"bmc and corr_with_benchmark against {d['benchmark']}")
        if "feature_exposure" in d:
            fe = d["feature_exposure"]
            lines.append(f"feature exposure (mean over eras): max {_fmt(fe['max'])}, rms {_fmt(fe['rms'])}")
        if d.get("eras_unscored"):
            shown = ", ".join(d["unscored_eras"][:10]) + (" ..." if len(d["unscored_eras"]) > 10 else "")
            lines.append(f"Unscored eras ({d['eras_unscored']}, left out of the summaries): {shown}")
        lines += [f"Note: {note}" for note in self.notes]
        if self.files:
            lines.append(f"Report: {self.report_dir}/ ({', '.join(p.name for p in self.files)})")
        return "\n".join(lines)


def _fmt(value, width: int = 0) -> str:
    text = "nan" if value is None else f"{value:.4f}"
    return text.rjust(width) if width else text


def _summary_line(name: str, s: dict, width: int) -> str:
    sharpe = "nan" if s["sharpe"] is None else f"{s['sharpe']:.2f}"
    hit = "nan" if s["hit_rate"] is None else f"{s['hit_rate']:.0%}"
    return (f"{name:<{width}}{_fmt(s['mean'], 8)}{_fmt(s['std'], 8)}{sharpe:>8}{_fmt(s['max_drawdown'], 8)}"
            f"{hit:>7}{s['eras_scored']:>6}")


def json_safe(value):
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class DataFiles(tuple):
    """Several data files scored as one set of rows: how messages and the report name them (as a
    Path names one file: str() is their paths, .name their file names, joined by " + ")."""

    def __str__(self) -> str:
        return " + ".join(map(str, self))

    @property
    def name(self) -> str:
        return " + ".join(path.name for path in self)


def summary(scores: metrics.EraScores) -> dict:
    """A score's summary as report.json holds it (NaN as null)."""
    return json_safe(metrics.summarize(scores.values))


def per_era_table(scores: dict[str, metrics.EraScores]) -> list[dict]:
    """report.json's `per_era`: one row per era (its label, rows scored, and every score)."""
    main = scores["spearman"]
    table = []
    for i, era in enumerate(main.eras):
        row = {"era": era, "rows": int(main.rows[i])}
        row.update({name: s.values[i] for name, s in scores.items()})
        table.append(json_safe(row))
    return table


def _write_per_era_csv(path: Path, per_era: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(per_era[0]))
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in per_era])


def _write_per_era_png(path: Path, per_era: list[dict], title: str) -> bool:
    """Per-era CORR bars with the cumulative CORR line; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    values = np.array([np.nan if r["numerai_corr"] is None else r["numerai_corr"] for r in per_era])
    labels = [r["era"] for r in per_era]
    x = np.arange(len(values))
    fig, bars = plt.subplots(figsize=(max(6.0, min(24.0, len(values) * 0.08)), 4))
    bars.bar(x, np.nan_to_num(values), color=np.where(values >= 0, "tab:blue", "tab:red"), width=0.9)
    bars.set_ylabel("CORR per era")
    bars.set_xlabel("era")
    step = max(1, len(labels) // 12)
    bars.set_xticks(x[::step], labels[::step], rotation=45, fontsize=7)
    line = bars.twinx()
    line.plot(x, np.nancumsum(values), color="black", linewidth=1.2)
    line.set_ylabel("cumulative CORR")
    bars.set_title(title, fontsize=9)
    save_png(fig, path)
    return True


def save_png(fig, path: Path) -> None:
    """Lay out and write a matplotlib figure as PNG, then close it (pyplot holds every open figure)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)


def write_report(report: Report) -> None:
    """report.json, per_era.csv and per_era.png as one set: all are written under temporary names
    and renamed only once every one is complete, so a full disk leaves the previous report whole."""
    out = report.report_dir
    per_era = report.data["per_era"]
    with publish_set(out) as files:
        _write_per_era_csv(files.path(PER_ERA_CSV), per_era)
        if not _write_per_era_png(files.path(PER_ERA_PNG), per_era, f"{report.source} on {report.data_path.name}"):
            files.drop(PER_ERA_PNG)
            report.notes.append("matplotlib is not installed: per_era.png not drawn (pip install matplotlib)")
        dump_json(files.path(REPORT_FILE), report.data)  # renamed last
    report.files.extend(out / name for name in (REPORT_FILE, PER_ERA_CSV, PER_ERA_PNG) if name in files.temporaries)


def read_report(folder: str | Path) -> Report:
    """The report written to `folder`, read back: `data` is report.json's dict, whose `per_era`
    is the per-era scores (per_era.csv holds the same table). `files` lists the report files
    present. DataError when report.json is missing or not JSON."""
    folder = Path(folder)
    data = schema.read_json(folder / REPORT_FILE, missing_hint=" (run `numerflow validate` to write it)")
    named = data.get("data", "")
    data_path = DataFiles(map(Path, named)) if isinstance(named, list) else Path(named)
    present = [folder / name for name in (REPORT_FILE, PER_ERA_CSV, PER_ERA_PNG) if (folder / name).is_file()]
    return Report(data=data, source=str(data.get("source", "")), data_path=data_path, report_dir=folder,
                  files=present, notes=list(data.get("notes", [])))
