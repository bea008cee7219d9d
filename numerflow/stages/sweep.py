"""sweep stage: search train's options with Optuna, on this machine (`jobs` worker processes) or
on a Ray cluster (Ray Tune with Optuna as its search algorithm), and keep the best trial.

Read top to bottom: check everything (space, trials, data, the Ray address, the sweep folder)
before writing anything; open or create the stored study in sweeps/<name>/; run the trials
(numerflow/sweeps/local.py or ray_tune.py), publishing trials.csv, best.json, best.pt and plot.png
after each batch; return a SweepResult. `show` prints a finished or running sweep's table.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from numerflow import memory, schema
from numerflow.config import SweepConfig
from numerflow.errors import ConfigError, DataError, Interrupted
from numerflow.files import write_json
from numerflow.options import folder_name
from numerflow.sweeps import honest, results
from numerflow.sweeps.objective import Objective
from numerflow.sweeps.space import (DEFAULT_SPACE, Space, check_against_data, default_space_text, fit_default_space,
                                    load_default_space, load_space)


@dataclass
class SweepResult:
    out_dir: Path
    trials: int  # finished trials in the study
    pruned: int
    failed: int
    best: dict | None  # the best row of trials.csv
    seconds: float
    objective: str
    cv: bool = False  # each trial's steps were folds
    deflated: dict | None = None  # best.json's deflated_sharpe (sweeps/honest.py)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / results.BEST_PT

    @property
    def trials_csv(self) -> Path:
        return self.out_dir / results.TRIALS_CSV

    def __str__(self) -> str:
        lines = [f"Sweep {self.out_dir}: {self.trials} trial(s) ({self.pruned} pruned, {self.failed} failed) "
                 f"in {self.seconds:.1f} s"]
        if self.best:
            step = f"over {self.best['best_epoch']} folds" if self.cv else f"epoch {self.best['best_epoch']}"
            lines.append(f"Best trial {self.best['number']}: {self.objective} {self.best['score']:.4f} ({step})")
            lines.append(honest.summary_line(self.deflated))
            lines.append(f"Checkpoint: {self.checkpoint}")
        lines.append(f"Trials: {self.trials_csv}, plot: {self.out_dir / results.PLOT_PNG}")
        return "\n".join(lines)


def sweep_dir(config: SweepConfig) -> Path:
    space = space_file(config)
    name = config.name or (Path(space).stem if space else None)
    problem = folder_name(name) if name else "a sweep needs --name or --space"
    if problem:  # --name is checked as an option; a name taken from the space file's stem is checked here
        raise ConfigError(f"--name: {problem}")
    return Path(config.sweeps_dir) / name


def space_file(config: SweepConfig) -> Path | None:
    """--space, or with --cv and no --space the built-in space (numerflow/sweeps/default_space.toml)."""
    if config.space is None and config.cv:
        return DEFAULT_SPACE
    return config.space


def show_space() -> str:
    """The built-in space file (`numerflow sweep --show-space`): copy it, edit it, pass --space."""
    return default_space_text()


def sweep(config: SweepConfig, say: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or with config.resume continue) the sweep; returns its SweepResult."""
    say = say or (lambda line: None)
    started = time.perf_counter()
    space, objective, out_dir = check(config)
    if config.space is None:
        say(f"The built-in space ({', '.join(space.names)}): `numerflow sweep --show-space` prints it")
    for note in space.notes:
        say(f"Note: {note}")
    if not config.ray:  # issue 20: before any trial; each local trial process holds its own copy
        estimate = memory.check_prepared(config, "sweep", config.jobs)
        gpu_note = memory.device_note(estimate, _trial_device(config))  # --jobs trials share the one GPU
        if gpu_note:
            say(gpu_note)
    settings = settings_record(config, space)
    if config.cv and config.objective == "payout":
        say("payout on training eras, which have no meta model (Numerai publishes it for validation only): "
            "BMC stands in for MMC")
    if config.ray:
        from numerflow.sweeps import ray_tune

        cluster = ray_tune.connect(config.ray)  # unreachable: an error before anything is written
        out_dir.mkdir(parents=True, exist_ok=config.resume)
        write_json(out_dir / results.SETTINGS_JSON, settings)
        rows = ray_tune.run(config, space, objective, out_dir, cluster, say)
    else:
        rows = run_here(config, space, objective, out_dir, settings, say)
        if config.cv:
            train_best(config, space, objective, results.best_row(rows), out_dir, say)
    deflated = honest.deflated_best(out_dir, rows, results.best_row(rows), bool(config.cv))
    best = results.publish(out_dir, rows, space.names, space.distributions(), settings, deflated)
    if best is None:
        raise nothing_completed(rows, out_dir)
    counted = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED", "FAIL", "ERROR", "TERMINATED")]
    return SweepResult(out_dir, len(counted), sum(r["state"] == "PRUNED" for r in rows),
                       sum(r["state"] in ("FAIL", "ERROR") for r in rows), best,
                       time.perf_counter() - started, config.objective, config.cv, deflated)


def nothing_completed(rows: list[dict], out_dir: Path) -> DataError:
    """A sweep with no complete, scored trial has no result: one line with the first failure's
    reason (each trial's is in trials.csv's `error` column)."""
    failed = [r for r in rows if r["state"] in ("FAIL", "ERROR")]
    unscored = sum(r["state"] == "COMPLETE" for r in rows)  # complete, yet no finite score
    reason = next((r for r in failed if r.get("error")), None)
    return DataError(f"{out_dir}: no trial completed with a score ({len(failed)} of {len(rows)} failed"
                     + (f", {unscored} scored no era (constant predictions?)" if unscored else "")
                     + (f"; trial {reason['number']}: {reason['error']}" if reason else "")
                     + f"): see {out_dir / results.TRIALS_CSV}")


def check(config: SweepConfig) -> tuple[Space, Objective, Path]:
    """Every problem found before any file is written."""
    from numerflow.sweeps.trial import benchmark_problem, meta_model_problem
    from numerflow.training.data import benchmark_note, read_manifest

    if space_file(config) is None:
        raise ConfigError("give --space FILE (the search space), --cv to search the built-in space "
                          "(numerflow sweep --show-space prints it), or --show NAME")
    # (--trials, --jobs and the Ray reservations carry their bounds: SweepConfig applies them)
    if config.cv and config.objective == "mmc_mean":
        raise ConfigError("--cv scores CORR, BMC or payout (with BMC for MMC), not mmc_mean: the meta model "
                          "covers the validation eras, not the training eras the folds test")
    if config.cv and config.ray:
        raise ConfigError("--cv runs on this machine only (--jobs); leave out --ray")
    space = load_space(config.space) if config.space is not None else load_default_space()
    objective = Objective(config.objective, space.payout, config.last)
    out_dir = sweep_dir(config)
    manifest = read_manifest(Path(config.data))
    if config.space is None:
        fit_default_space(space, manifest)
    check_against_data(space, manifest, Path(config.data) / "manifest.json", cv=config.cv)
    if space.may_set("bmc_weight"):  # --bmc-weight in the space: refused now, not in every trial
        benchmark_note(manifest, Path(config.data))
    # --cv scores training eras, where Numerai publishes no meta model: payout takes BMC in MMC's place
    payout_by_bmc = config.cv and config.objective == "payout"
    if objective.needs_meta_model and not payout_by_bmc:
        problem = meta_model_problem(Path(config.data))
        if problem:
            raise ConfigError(f"--objective {config.objective}: {problem}")
    if objective.needs_benchmark or payout_by_bmc:
        problem = benchmark_problem(Path(config.data), schema.TRAIN_FILE if config.cv else schema.VALIDATION_FILE)
        if problem:
            raise ConfigError(f"--objective {config.objective}: {problem}")
    if config.resume:
        if not (out_dir / results.SETTINGS_JSON).is_file():
            raise ConfigError(f"{out_dir}: no sweep to resume (run without --resume to start it)")
        stored = results_settings(out_dir)
        now = settings_record(config, space)
        if same_folder(stored.get("data"), now["data"], out_dir / results.SETTINGS_JSON):
            stored["data"] = now["data"]  # recorded before paths were relative, or written from another folder
        # --trials may grow; --jobs may change (the trials already run are kept as they are).
        changed = [k for k in now if k not in ("trials", "jobs") and stored.get(k) != now[k]]
        if changed:
            raise ConfigError(f"{out_dir}: cannot resume with different settings: {', '.join(changed)}")
    elif out_dir.exists():
        raise ConfigError(f"{out_dir} exists: add --resume to continue that sweep, or choose another --name")
    return space, objective, out_dir


def results_settings(out_dir: Path) -> dict:
    import json

    return json.loads((out_dir / results.SETTINGS_JSON).read_text())


def same_folder(stored, now: str, recording_file: Path) -> bool:
    from numerflow.provenance import recorded_path

    return bool(stored) and recorded_path(stored, recording_file).resolve() == recorded_path(now, recording_file).resolve()


def settings_record(config: SweepConfig, space: Space) -> dict:
    """What a resumed sweep must share with the one it continues (sweep.json); the data relative
    to sweep.json, so that a moved project still works."""
    from numerflow.provenance import record_path

    data = record_path(config.data, sweep_dir(config) / results.SETTINGS_JSON)
    return {"space": space.to_dict(), "objective": config.objective, "data": data,
            "seed": config.seed, "pruner": config.pruner, "device": config.device, "backend": "ray" if config.ray else "local",
            "jobs": config.jobs, "trials": config.trials,
            **({"cv": True} if config.cv else {}),
            **({"last": config.last} if config.objective == "bmc_last" else {}),  # (sweeps from before --cv was recorded resume as they are)
            **({"precision": config.precision} if config.precision != "auto" else {})}  # (likewise --precision)


def run_here(config: SweepConfig, space: Space, objective: Objective, out_dir: Path, settings: dict, say) -> list[dict]:
    """The local backend: Optuna study in study.db, trials in `jobs` processes."""
    from numerflow.sweeps import local

    out_dir.mkdir(parents=True, exist_ok=config.resume)
    (out_dir / "trials").mkdir(exist_ok=True)
    study = local.open_study(out_dir / "study.db", create=not config.resume)
    if config.resume:
        again = local.requeue_interrupted(study)
        say(f"Resuming {out_dir}: {len(local.finished(study))} trial(s) done"
            + (f", {again} interrupted trial(s) to run again" if again else ""))
    write_json(out_dir / results.SETTINGS_JSON, settings)

    def on_batch(outcomes) -> None:
        rows = results.rows_from_study(study, space.names)
        best = results.publish(out_dir, rows, space.names, space.distributions(), settings)
        done = len(local.finished(study)) - len(outcomes)
        for count, outcome in enumerate(outcomes, start=done + 1):
            row = next(r for r in rows if r["number"] == outcome.number)
            say(progress_line(row, count, config.trials, best, space.names, "fold(s)" if config.cv else "epoch(s)"))

    try:
        local.run_local(study, space, config, objective, out_dir, on_batch)
    except KeyboardInterrupt:  # the study keeps the finished trials; --resume reruns the running ones
        raise Interrupted(f"Interrupted after trial {len(local.finished(study))} of {config.trials}: "
                          "rerun with --resume") from None
    return results.rows_from_study(study, space.names)


def train_best(config: SweepConfig, space: Space, objective: Objective, best: dict | None, out_dir: Path,
               say) -> None:
    """With --cv the trials leave no model: train the best trial's settings once as `train` would
    (best epoch on validation) for best.pt."""
    from numerflow.checkpoint import save_checkpoint
    from numerflow.sweeps.trial import fit_in_memory, load_prepared

    if best is None:
        return
    say(f"Training the best trial ({best['number']}) on all training eras for {out_dir / results.BEST_PT}")
    params = {name: best[name] for name in space.names}
    trial_config = space.train_settings(params, data=config.data, seed=config.seed, device=config.device,
                                        precision=config.precision)
    fitted = fit_in_memory(trial_config, load_prepared(config.data, objective.needs_meta_model), objective)
    save_checkpoint(out_dir / results.BEST_PT, fitted.checkpoint)


def progress_line(row: dict, done: int, total: int, best: dict | None, params: list[str], unit: str) -> str:
    score = f"{row['score']:.4f}" if row["score"] is not None and math.isfinite(row["score"]) else "-"
    shown = ", ".join(f"{k}={_short(row[k])}" for k in params)
    line = (f"trial {row['number']} ({done}/{total}): {row['state'].lower()} after {row['epochs']} {unit}, "
            f"score {score}, {row['seconds']:.1f} s [{shown}]")
    line += f"; best: trial {best['number']} {best['score']:.4f}" if best else ""
    return line + (f": {row['error']}" if row.get("error") else "")


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def show(config: SweepConfig) -> str:
    return results.show(sweep_dir(config))


def _trial_device(config: SweepConfig):
    """The device the trials will ask for (--device; auto: CUDA when present), for the memory note."""
    from numerflow.devices import resolve_device

    try:
        return resolve_device(config.device)
    except ConfigError:  # the trials report an unavailable device in their own words
        return None
