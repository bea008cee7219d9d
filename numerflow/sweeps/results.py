"""A sweep's results in sweeps/<name>/: trials.csv (one row per trial), best.json, best.pt (the best
trial's checkpoint, moved there from trials/<number>.pt), and plot.png (score of each trial against
time, and Optuna's parameter importances). Both the local and the Ray runs hand their trials here
as the same rows."""

from __future__ import annotations

import math
import os
from pathlib import Path

from numerflow.files import atomic_path, write_json

COLUMNS = ["number", "state", "score", "epochs", "best_epoch", "seconds", "finished_s"]
ERROR = "error"  # a failed trial's one-line reason; the last column, after the searched options
# With --cv a trial's steps are folds, and its score covers every fold run: the columns say so.
CV_NAMES = {"epochs": "folds", "best_epoch": "scored_folds"}
TRIALS_CSV, BEST_JSON, BEST_PT, PLOT_PNG, SETTINGS_JSON = "trials.csv", "best.json", "best.pt", "plot.png", "sweep.json"


def rows_from_study(study, params: list[str]) -> list[dict]:
    """One row per trial of an Optuna study: its parameters, score, epochs, seconds, state.
    finished_s: seconds from the sweep's first trial to this trial's end."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    start = min((t.datetime_start for t in trials), default=None)
    rows = []
    for t in trials:
        score = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                     if t.intermediate_values else math.nan)
        rows.append({"number": t.number, "state": t.state.name, "score": score,
                     "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
                     "best_epoch": t.user_attrs.get("best_epoch", 0), "seconds": t.user_attrs.get("seconds", math.nan),
                     "finished_s": (t.datetime_complete - start).total_seconds() if t.datetime_complete else math.nan,
                     **{name: t.params.get(name) for name in params}, ERROR: t.user_attrs.get(ERROR)})
    return rows


def best_row(rows: list[dict]) -> dict | None:
    complete = [r for r in rows if r["state"] == "COMPLETE" and math.isfinite(r["score"])]
    return max(complete, key=lambda r: (r["score"], -r["number"])) if complete else None


def write_table(out_dir: Path, rows: list[dict], params: list[str], cv: bool = False) -> Path:
    import pandas as pd

    path = out_dir / TRIALS_CSV
    table = pd.DataFrame(rows, columns=COLUMNS + params + [ERROR])
    with atomic_path(path) as tmp:
        (table.rename(columns=CV_NAMES) if cv else table).to_csv(tmp, index=False)
    return path


def keep_best_checkpoint(out_dir: Path, best: dict | None) -> None:
    """Move the best trial's checkpoint to best.pt (if it is new) and drop the other trials' files."""
    trials = out_dir / "trials"
    if best is not None and (trials / f"{best['number']}.pt").is_file():
        os.replace(trials / f"{best['number']}.pt", out_dir / BEST_PT)
    for leftover in trials.glob("*.pt") if trials.is_dir() else []:
        leftover.unlink()


def write_best(out_dir: Path, best: dict | None, params: list[str], settings: dict,
               deflated: dict | None = None) -> None:
    """best.json; `deflated`: the best's deflated Sharpe (sweeps/honest.py), once the sweep ends."""
    if best is None:
        return
    best_step = CV_NAMES["best_epoch"] if settings.get("cv") else "best_epoch"
    write_json(out_dir / BEST_JSON, {"number": best["number"], "score": best["score"],
                                     "objective": settings.get("objective"), best_step: best["best_epoch"],
                                     "params": {name: best[name] for name in params},
                                     "checkpoint": str(out_dir / BEST_PT), "settings": settings,
                                     **({"deflated_sharpe": deflated} if deflated is not None else {})})


def publish(out_dir: Path, rows: list[dict], params: list[str], distributions: dict, settings: dict,
            deflated: dict | None = None) -> dict | None:
    """Write every result file from `rows`; returns the best row."""
    best = best_row(rows)
    keep_best_checkpoint(out_dir, best)
    write_table(out_dir, rows, params, cv=bool(settings.get("cv")))
    write_best(out_dir, best, params, settings, deflated)
    if best is not None:  # nothing to draw before a trial completes (an empty plot says nothing)
        write_plot(out_dir / PLOT_PNG, rows, distributions, settings.get("objective", "score"))
    return best


def importances(rows: list[dict], distributions: dict) -> dict[str, float]:
    """optuna.importance over the complete trials (rebuilt as an in-memory study, so Ray's trials
    get the same treatment); {} when fewer than two trials are complete."""
    import optuna

    complete = [r for r in rows if r["state"] == "COMPLETE" and math.isfinite(r["score"])]
    if len(complete) < 2 or not distributions:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(params={k: r[k] for k in distributions}, distributions=distributions,
                                                value=r["score"]) for r in complete])
    try:
        return optuna.importance.get_param_importances(study, evaluator=_evaluator())
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial scored the same
        return {}


def _evaluator():
    """fANOVA needs scikit-learn; PED-ANOVA (Optuna >= 3.6) does not."""
    import importlib.util

    import optuna

    if importlib.util.find_spec("sklearn") is None and hasattr(optuna.importance, "PedAnovaImportanceEvaluator"):
        return optuna.importance.PedAnovaImportanceEvaluator()
    return None


def write_plot(path: Path, rows: list[dict], distributions: dict, objective: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for state, colour in (("COMPLETE", "tab:blue"), ("PRUNED", "tab:orange"), ("FAIL", "tab:red")):
        points = [(r["finished_s"], r["score"]) for r in rows if r["state"] == state and math.isfinite(r["score"])]
        if points:
            left.scatter(*zip(*points), label=state.lower(), color=colour, s=18)
    left.set_xlabel("seconds since the sweep started")
    left.set_ylabel(f"{objective} (pruned: last epoch's)")
    left.set_title("trials")
    left.legend(loc="best", fontsize=8)
    ranked = sorted(importances(rows, distributions).items(), key=lambda kv: kv[1])
    if ranked:
        right.barh([k for k, _ in ranked], [v for _, v in ranked], color="tab:green")
        right.set_title("parameter importance (optuna.importance)")
    else:
        right.text(0.5, 0.5, "importance needs two complete trials", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def show(out_dir: Path) -> str:
    """trials.csv as an aligned table, best first."""
    import pandas as pd

    from numerflow.errors import ConfigError

    path = out_dir / TRIALS_CSV
    if not path.is_file():
        raise ConfigError(f"{out_dir}: no sweep there ({TRIALS_CSV} not found)")
    table = pd.read_csv(path).sort_values(["score", "number"], ascending=[False, True], na_position="last")
    lines = [table.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    if (out_dir / BEST_PT).is_file():
        lines.append(f"Best checkpoint: {out_dir / BEST_PT}")
    return "\n".join(lines)
