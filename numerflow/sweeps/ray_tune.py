"""A sweep on a Ray cluster: Ray Tune runs the trials with Optuna's TPE as the search algorithm
(OptunaSearch), per-trial resources, ASHA as the early stopping (in place of Optuna's pruner) and
failed trials retried (FailureConfig). Each worker reads the prepared data from the same path,
so that path must be one every node sees (a shared file system); a worker process keeps its copy
for the next trial it runs (actors are reused). Ray's own records go to sweeps/<name>/ray/.

Ray is an optional extra: `pip install numerflow[ray]`.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from pathlib import Path

from numerflow.errors import NumerflowError
from numerflow.sweeps.objective import Objective
from numerflow.sweeps.ray_cluster import connect  # noqa: F401  (stages/sweep.py joins through ray_tune.connect)
from numerflow.sweeps.space import Space

MAX_FAILURES = 2  # a trial whose worker died is run again up to this many times


def max_epochs(space: Space) -> int:
    """The most epochs any trial can run: ASHA's max_t."""
    if "epochs" in space.choices:
        return int(max(space.choices["epochs"]))
    if "epochs" in space.ranges:
        return int(space.ranges["epochs"]["high"])
    return space.train_settings({}).epochs


def trainable(params: dict, space: Space, data: str, seed: int, device: str, objective: Objective,
              precision: str = "auto") -> None:
    """One Ray Tune trial: train on this worker's copy of the data, report after every epoch
    (the best score so far as `score`; `finished` once the trial has run its last epoch, or a
    --patience stop), attach a checkpoint whenever the epoch is the best yet."""
    from ray import tune

    from numerflow.sweeps.trial import fit_in_memory, load_prepared

    config = space.train_settings(params, data=data, seed=seed, device=device, precision=precision)
    best = {"score": -math.inf}

    def on_epoch(epoch: int, score: float, checkpoint, final: bool) -> None:
        metrics = {"epoch": epoch, "epoch_score": score, "score": max(best["score"], score), "finished": final}
        if score > best["score"] or epoch == 1:
            best["score"] = score
            with tempfile.TemporaryDirectory() as folder:
                from numerflow.checkpoint import save_checkpoint

                save_checkpoint(Path(folder) / "model.pt", checkpoint())
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)

    try:
        fit_in_memory(config, load_prepared(data, objective.needs_meta_model), objective, on_epoch)
    except NumerflowError as exc:  # e.g. diverged: a bad trial (no retry), not a broken worker
        tune.report({"epoch": 0, "epoch_score": -math.inf, "score": -math.inf, "finished": True, "error": str(exc)})


EXPERIMENT = "ray"  # Ray Tune's run folder under sweeps/<name>/; a --resume that adds trials adds ray-2/, ...


def run(config, space: Space, objective: Objective, out_dir: Path, ray, say) -> list[dict]:
    """Run the sweep through Ray Tune; returns results.rows-style rows, the best trial's
    checkpoint copied to out_dir/trials/<number>.pt.

    With --resume, every earlier Ray Tune run of the sweep is restored (Tuner.restore: trials a
    killed driver left unfinished, or errored, are run to the end; a finished run returns at
    once). If those hold fewer than --trials trials, one more run draws the rest, its Optuna
    search told the earlier trials' parameters and scores (OptunaSearch's evaluated_rewards)."""
    from ray import tune

    function = tune.with_parameters(trainable, space=space, data=str(Path(config.data).resolve()), seed=config.seed,
                                    device=config.device, objective=objective, precision=config.precision)
    function = tune.with_resources(function, {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
    done, grids = [], []
    for name in earlier_runs(out_dir) if config.resume else []:
        say(f"Resuming the Ray Tune run in {out_dir.resolve() / name}")
        grids.append(tune.Tuner.restore(str(out_dir.resolve() / name), function, resume_errored=True).fit())
        done.append(name)
    rows = rows_from_grids(grids, space)
    if config.trials > len(rows):
        name = next(n for n in run_names() if n not in done)
        grids.append(new_tuner(config, space, function, out_dir, name, config.trials - len(rows), rows).fit())
        rows = rows_from_grids(grids, space)
    _copy_best_checkpoint(grids, rows, out_dir)
    for row in rows:
        say(f"trial {row['number']}: {row['state'].lower()} after {row['epochs']} epoch(s), score {row['score']:.4f}")
    return rows


def run_names():
    """ray, ray-2, ray-3, ...: the sweep's Ray Tune runs in the order they are made."""
    yield EXPERIMENT
    number = 2
    while True:
        yield f"{EXPERIMENT}-{number}"
        number += 1


def earlier_runs(out_dir: Path) -> list[str]:
    """The sweep's Ray Tune runs that can be restored, in order (a driver killed before Tune saved
    its first state leaves none)."""
    from ray import tune

    names = []
    for name in run_names():
        if not (out_dir / name).is_dir():
            return names
        if tune.Tuner.can_restore(str((out_dir / name).resolve())):
            names.append(name)


def new_tuner(config, space: Space, function, out_dir: Path, name: str, trials: int, earlier: list[dict]):
    """A Ray Tune run of `trials` trials: OptunaSearch (TPE, seeded; told the `earlier` trials'
    scores), ASHA early stopping on epochs, failed trials retried."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from numerflow.sweeps.local import sampler_for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = [row for row in earlier if row["state"] in ("COMPLETE", "PRUNED") and math.isfinite(row["score"])]
    # A continuation draws from another seed: the first run's would repeat its random first trials.
    sampler = sampler_for(config.seed, len(earlier)) if earlier else optuna.samplers.TPESampler(seed=config.seed)
    search = OptunaSearch(space=space.distributions(), metric="score", mode="max", sampler=sampler,
                          points_to_evaluate=[{n: row[n] for n in space.names} for row in scored] or None,
                          evaluated_rewards=[row["score"] for row in scored] or None)
    return tune.Tuner(
        function,
        tune_config=tune.TuneConfig(metric="score", mode="max", search_alg=search, num_samples=trials,
                                    scheduler=ASHAScheduler(time_attr="epoch", max_t=max_epochs(space), grace_period=1,
                                                            reduction_factor=3),
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(out_dir.resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def _ordered(grids) -> list:
    """Every run's results, runs in order and each run's trials in the order Tune created them:
    a trial's folder is <trainable>_<trial_id>_<counter>_<params> (the ids are random)."""
    def created(result) -> int:
        trial_id = re.escape(str((result.metrics or {}).get("trial_id", "")))
        found = re.match(rf".*?_{trial_id}_(\d+)_", Path(str(result.path)).name)
        return int(found.group(1)) if found else 1 << 62

    return [result for grid in grids for result in sorted((grid[i] for i in range(len(grid))), key=created)]


def rows_from_grids(grids, space: Space) -> list[dict]:
    rows = []
    ordered = _ordered(grids)
    starts = [m["timestamp"] - m.get("time_total_s", 0) for m in (r.metrics or {} for r in ordered) if "timestamp" in m]
    start = min(starts, default=0)
    for number, result in enumerate(ordered):
        m = result.metrics or {}
        run = int(m.get("epoch", 0))
        # A trial that reported its final epoch is complete even if ASHA stopped it there (records
        # from before `finished` was reported: complete when it ran all its epochs).
        finished = m.get("finished", run >= space.train_settings(_params(m, space)).epochs)
        state = "FAIL" if result.error or m.get("error") else "COMPLETE" if finished else "PRUNED"
        rows.append({"number": number, "state": state, "score": float(m.get("score", math.nan)), "epochs": run,
                     "best_epoch": run, "seconds": float(m.get("time_total_s", math.nan)),
                     "finished_s": float(m["timestamp"] - start) if "timestamp" in m else math.nan,
                     **_params(m, space), "error": _error_line(m.get("error") or result.error)})
    return rows


def _error_line(error) -> str | None:
    """A failed Ray trial's reason as one line (a worker's exception can span several)."""
    lines = str(error).strip().splitlines() if error else []
    return lines[-1] if lines else None


def _params(metrics: dict, space: Space) -> dict:
    config = metrics.get("config", {})
    return {name: config.get(name) for name in space.names}


def _copy_best_checkpoint(grids, rows: list[dict], out_dir: Path) -> None:
    from numerflow.files import atomic_path
    from numerflow.sweeps.results import best_row

    best = best_row(rows)
    if best is None:
        return
    result = _ordered(grids)[best["number"]]
    if result.checkpoint is None:
        return
    (out_dir / "trials").mkdir(exist_ok=True)
    with result.checkpoint.as_directory() as folder, atomic_path(out_dir / "trials" / f"{best['number']}.pt") as tmp:
        shutil.copyfile(Path(folder) / "model.pt", tmp)
