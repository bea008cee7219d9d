"""scores stage: each model's live round scores from Numerai, written as scores/<model>/rounds.csv
(one row per round, metric and scoring day, as Numerai reported it) and scores.png, summarised,
and held against what its validation report promised.

The comparison: the live CORR mean over the resolved rounds against the range in which a mean over
as many validation eras falls, from a moving-block bootstrap over the report's per-era CORR
(blocks of BLOCK_ERAS consecutive eras, DRAWS draws, the central LEVEL of the means). Blocks,
because neighbouring eras, like neighbouring live rounds, share most of their 20-day target
window: their scores move together, so a mean over n of them varies more than one over n
independent eras, and drawing eras one by one would make the range too narrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import metrics
from numerflow.config_base import load_settings
from numerflow.config import ScoresConfig
from numerflow.errors import ConfigError
from numerflow.files import publish_set
from numerflow.reports import REPORT_FILE, read_report
from numerflow.stages.scores_plot import draw_scores

ROUNDS_CSV = "rounds.csv"
SCORES_PNG = "scores.png"
CORR_NAMES = ("v2_corr20", "corr20v2", "canon_corr", "corr20", "corr")  # Numerai's names for CORR, newest first
MMC, BMC = "mmc", "bmc"
BLOCK_ERAS = 4  # a 20-day target spans 4 weekly eras
DRAWS = 10_000
LEVEL = 0.90
SEED = 0  # the same report and rounds give the same range


@dataclass
class Verdict:
    live_mean: float
    rounds: int  # resolved rounds in the live mean
    validation_mean: float
    low: float
    high: float
    word: str  # in line, below, above
    report: Path

    def __str__(self) -> str:
        return (f"live against validation: {self.word} (live CORR mean {self.live_mean:.4f} over {self.rounds} "
                f"resolved rounds; validation {self.report}: per-era mean {self.validation_mean:.4f}, a mean over "
                f"{self.rounds} of its eras falls in [{self.low:.4f}, {self.high:.4f}] in {LEVEL:.0%} of "
                f"block-bootstrap draws)")


@dataclass
class ModelScores:
    name: str
    rows: object  # DataFrame: Numerai's rows for this model
    summary: dict = field(default_factory=dict)
    verdict: Verdict | None = None
    note: str | None = None  # why there is no verdict, or no rounds
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        if not len(self.rows):
            return f"{self.name}: no rounds scored yet"
        s = self.summary
        lines = [f"{self.name}: {s['rounds']} rounds ({s['resolved']} resolved, {s['resolving']} resolving)"]
        for label in ("CORR", "MMC", "BMC"):
            if label in s:
                lines.append(f"  {label:<5} mean {_fmt(s[label]['mean'])}  sharpe {_fmt(s[label]['sharpe'], 2)}  "
                             f"(resolved rounds)")
        if "payout" in s:
            lines.append(f"  payout {s['payout']['settled']:.4f} settled, {s['payout']['pending']:.4f} pending")
        lines.append(f"  {self.verdict}" if self.verdict else f"  {self.note}")
        if self.files:
            lines.append(f"  Written: {', '.join(map(str, self.files))}")
        return "\n".join(lines)


@dataclass
class ScoresResult:
    models: list[ModelScores]

    def __str__(self) -> str:
        return "\n".join(map(str, self.models))

    @property
    def frame(self):
        import pandas as pd

        frames = [m.rows for m in self.models if len(m.rows)]
        return pd.concat(frames, ignore_index=True) if frames else empty_rows()


def _fmt(value, digits: int = 4) -> str:
    return "nan" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def empty_rows():
    import pandas as pd
    from numerflow.numerai.scores import COLUMNS

    return pd.DataFrame(columns=["model", *COLUMNS])


# --- the comparison -----------------------------------------------------------------------------

def bootstrap_range(values, n: int, draws: int = DRAWS, block: int = BLOCK_ERAS, level: float = LEVEL,
                    seed: int = SEED) -> tuple[float, float]:
    """The central `level` of means over `n` eras drawn from `values` (in era order) in blocks of
    `block` consecutive eras (a moving-block bootstrap)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values) or n < 1:
        raise ValueError("no values to draw from")
    block = max(1, min(block, len(values)))
    rng = np.random.default_rng(seed)
    blocks = -(-n // block)
    starts = rng.integers(0, len(values) - block + 1, size=(draws, blocks))
    picks = (starts[:, :, None] + np.arange(block)).reshape(draws, -1)[:, :n]
    means = values[picks].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def verdict(live_values, report_dir: Path) -> Verdict:
    per_era = read_report(report_dir).data.get("per_era") or []
    validation = np.array([row.get("numerai_corr") for row in per_era], dtype=np.float64)
    if not np.isfinite(validation).any():
        raise ConfigError(f"{report_dir}: the report holds no per-era CORR")
    live = np.asarray(live_values, dtype=np.float64)
    low, high = bootstrap_range(validation, len(live))
    mean = float(live.mean())
    word = "below" if mean < low else "above" if mean > high else "in line"
    return Verdict(mean, len(live), float(np.nanmean(validation)), low, high, word, report_dir)


# --- per model ----------------------------------------------------------------------------------

def final_values(rows, metric: str):
    """Each round's last reported value of `metric` (its latest scoring day): a Series by round."""
    picked = rows[rows["metric"] == metric].sort_values(["round", "day"], na_position="first")
    return picked.groupby("round")["value"].last().dropna()


def metric_finals(rows) -> dict:
    """{"CORR": ..., "MMC": ..., "BMC": ...}: each round's final value, for the metrics reported."""
    corr = next((name for name in CORR_NAMES if (rows["metric"] == name).any()), None)
    return {label: final_values(rows, name) for label, name in (("CORR", corr), ("MMC", MMC), ("BMC", BMC))
            if name is not None and (rows["metric"] == name).any()}


def summarize_model(rows) -> tuple[dict, object]:
    """The summary dict and the resolved rounds' CORR values (for the verdict)."""
    resolved = rows.groupby("round")["resolved"].any()
    summary = {"rounds": int(len(resolved)), "resolved": int(resolved.sum()),
               "resolving": int((~resolved).sum())}
    resolved_rounds = set(resolved[resolved].index)
    live_corr = np.array([])
    for label, values in metric_finals(rows).items():
        values = values[values.index.isin(resolved_rounds)]
        summary[label] = {k: v for k, v in metrics.summarize(values.to_numpy()).items()
                          if k in ("mean", "std", "sharpe")}
        if label == "CORR":
            live_corr = values.to_numpy()
    payouts = rows.dropna(subset=["payout"])
    if len(payouts):
        summary["payout"] = {"settled": float(payouts.loc[payouts["resolved"], "payout"].sum()),
                             "pending": float(payouts.loc[~payouts["resolved"].astype(bool), "payout"].sum())}
    return summary, live_corr


def known_report(name: str, config: ScoresConfig, models_table: dict) -> Path | None:
    """--report, else reports/<checkpoint name>/ of the one checkpoint numerflow.toml names."""
    if config.report is not None:
        return Path(config.report)
    spec = models_table.get(name) if isinstance(models_table, dict) else None
    checkpoint = spec.get("model") if isinstance(spec, dict) else None
    if isinstance(checkpoint, str):
        folder = Path(config.reports_dir) / Path(checkpoint).stem
        return folder if (folder / REPORT_FILE).is_file() else None
    return None


def model_scores(name: str, rows, config: ScoresConfig, models_table: dict) -> ModelScores:
    """One model's summary and verdict (its report read); nothing written yet."""
    result = ModelScores(name, rows)
    if not len(rows):
        return result
    result.summary, live_corr = summarize_model(rows)
    report = known_report(name, config, models_table)
    if report is None:
        result.note = "no validation report known (validate its checkpoint, or pass --report reports/<name>)"
    elif not len(live_corr):
        result.note = "no resolved round yet to hold against validation"
    else:
        result.verdict = verdict(live_corr, report)
    return result


def write_model_files(result: ModelScores, config: ScoresConfig) -> None:
    """rounds.csv and scores.png of one model with rows, as one file set."""
    if not len(result.rows):
        return
    out = Path(config.scores_dir) / result.name
    with publish_set(out) as files:
        result.rows.to_csv(files.path(ROUNDS_CSV), index=False)
        if not draw_scores(files.path(SCORES_PNG), result.rows, metric_finals(result.rows), result.name):
            files.drop(SCORES_PNG)
    result.files = [out / n for n in (ROUNDS_CSV, SCORES_PNG) if n in files.temporaries]


# --- the stage ----------------------------------------------------------------------------------

def model_names(config: ScoresConfig) -> tuple[list[str], dict]:
    table = load_settings(config.config_file).models
    names = list(config.model_names or (table if isinstance(table, dict) else []))
    if not names:
        raise ConfigError(f"no models to fetch: pass --model-name or add [models.<name>] tables to "
                          f"{config.config_file}")
    if config.report is not None and len(names) > 1:
        raise ConfigError("--report: give one --model-name with it (the report is that model's)")
    if config.report is not None and not (Path(config.report) / REPORT_FILE).is_file():
        raise ConfigError(f"--report {config.report}: no {REPORT_FILE} there (run `numerflow validate` first)")
    return names, table if isinstance(table, dict) else {}


def scores(config: ScoresConfig) -> ScoresResult:
    import pandas as pd

    from numerflow import numerai
    from numerflow.numerai.scores import COLUMNS, round_scores

    names, table = model_names(config)
    api = numerai.client()
    ids = numerai.model_ids(api)
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise ConfigError(f"unknown model name(s): {', '.join(unknown)} (this account's models: "
                          f"{', '.join(sorted(ids)) or 'none'})")
    fetched = {}
    for name in names:  # every model fetched before anything is written: a failure leaves no half set
        rows = pd.DataFrame(round_scores(api, ids[name], config.rounds), columns=COLUMNS)
        rows.insert(0, "model", name)
        fetched[name] = rows
    # every report read before anything is written: a corrupt second report leaves the first's files as they were
    results = [model_scores(name, rows, config, table) for name, rows in fetched.items()]
    for result in results:
        write_model_files(result, config)
    return ScoresResult(results)
