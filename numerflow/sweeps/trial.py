"""One trial as a function call on in-memory data: the prepared folder is read once per process
(`load_prepared`, cached), and `fit_in_memory` trains one TrainConfig on it with train's own
pieces (model, optimizer, one-cycle schedule, run_epoch from stages/train.py), scoring the
objective after every epoch and handing that score to `on_epoch` — where Optuna's pruner or Ray
Tune's scheduler decide whether the trial goes on. Nothing here rereads Parquet per trial."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import schema
from numerflow.config import TrainConfig
from numerflow.errors import DataError
from numerflow.sweeps.objective import Objective

_LOADED: dict[Path, "PreparedData"] = {}


@dataclass
class PreparedData:
    """A prepared folder in memory: what every trial in this process shares (read-only)."""
    path: Path
    manifest: dict
    features: list[str]
    targets: list[str]  # every prepared target, main first
    train: "Split"  # noqa: F821 (numerflow.training.data.Split)
    validation: "Split"  # noqa: F821
    meta_model: np.ndarray | None  # the validation rows' meta model (for MMC), None when not found
    benchmark: np.ndarray | None = None  # the validation rows' prepared `benchmark` column (BMC), None: none


def load_prepared(path: str | Path, need_meta_model: bool = False, with_ids: bool = False) -> PreparedData:
    """The prepared folder at `path`, read once per process and kept (`with_ids`: the training
    rows' ids too, which cross-validation's out-of-fold rows carry)."""
    path = Path(path).resolve()
    if path not in _LOADED or (with_ids and _LOADED[path].train.ids is None):
        _LOADED[path] = _read_prepared(path, with_ids)
    data = _LOADED[path]
    if need_meta_model and data.meta_model is None:
        raise DataError(f"{path}: no meta model found for the validation rows ({schema.META_MODEL_FILE} "
                        "in the source data folder): MMC and payout cannot be scored")
    return data


def meta_model_problem(path: Path) -> str | None:
    """Why MMC cannot be scored on the prepared folder's validation rows, or None (checked before
    a sweep starts; reads only the ids and the meta model)."""
    if _meta_model(Path(path) / schema.VALIDATION_FILE) is None:
        return f"no meta model found for {Path(path) / schema.VALIDATION_FILE} ({schema.META_MODEL_FILE} in its source data folder)"
    return None


def _read_prepared(path: Path, with_ids: bool = False) -> PreparedData:
    from numerflow.training.data import read_manifest, read_split

    manifest = read_manifest(path)
    features, targets = list(manifest["features"]), list(manifest["targets"])
    # The benchmark column whenever prepare carried one: any trial (or ensemble member) may set --bmc-weight
    has_benchmark = bool(((manifest.get("benchmark") or {}).get("train") or {}).get("rows"))
    train = read_split(path / schema.TRAIN_FILE, features, targets, require_main=True, with_ids=with_ids,
                       benchmark=has_benchmark)
    validation = read_split(path / schema.VALIDATION_FILE, features, targets)
    return PreparedData(path, manifest, features, targets, train, validation, _meta_model(path / schema.VALIDATION_FILE),
                        prepared_benchmark(path / schema.VALIDATION_FILE))


BENCHMARK_COLUMN = "benchmark"  # prepare's column beside the targets (stages/prepare_benchmark.COLUMN)


def prepared_benchmark(path: Path, ids=None) -> np.ndarray | None:
    """The prepared file's `benchmark` column in the file's row order (read_split's), or placed on
    the rows `ids` (out-of-fold rows: joined by id); None when prepare wrote none or no row has one."""
    from numerflow.scoring.ids import RowIds
    from numerflow.scoring.side_files import read_id_column

    if BENCHMARK_COLUMN not in schema.parquet_columns(path):
        return None
    file_ids, values = read_id_column(path, BENCHMARK_COLUMN)
    if ids is not None:
        values = RowIds(ids, path).place(file_ids, values, path, strict=False)
    return values if np.isfinite(values).any() else None


def benchmark_problem(path: Path, split_file: str = schema.VALIDATION_FILE) -> str | None:
    """Why BMC cannot be scored on a prepared folder's validation (or training) rows, or None."""
    if prepared_benchmark(Path(path) / split_file) is None:
        return (f"no benchmark values in {Path(path) / split_file} (prepare carries them as the "
                f"'{BENCHMARK_COLUMN}' column when the version folder has the benchmark models files)")
    return None


def _meta_model(validation: Path) -> np.ndarray | None:
    """The meta model aligned to the validation rows, read the way `numerflow validate` reads it."""
    from numerflow.scoring.side_files import meta_model_on_rows

    _, frame = schema.read_matrix(validation, [], [schema.ERA])
    return meta_model_on_rows(validation, frame.index)


@dataclass
class TrialResult:
    scores: list[float]  # the objective after each epoch run
    best_epoch: int
    seconds: float
    checkpoint: dict | None  # a numerflow checkpoint of the best epoch (checkpoint.save_checkpoint's dict)
    oof: object = None  # --cv: the out-of-fold predictions (cv's oof.parquet columns), kept for `numerflow ensemble`

    @property
    def score(self) -> float:
        return self.scores[self.best_epoch - 1] if self.scores else math.nan


def fit_in_memory(config: TrainConfig, data: PreparedData, objective: Objective,
                  on_epoch: Callable[[int, float, Callable[[], dict], bool], None] | None = None) -> TrialResult:
    """Train `config` on `data`, scoring `objective` on validation after each epoch; the best epoch
    (by the objective) is the result. `on_epoch(epoch, score, checkpoint, final)` is called after
    each epoch (`checkpoint()` builds the best epoch's checkpoint so far; `final`: the trial ends
    with this epoch, its last or a --patience stop); before the final epoch it may raise to stop
    the trial (optuna.TrialPruned)."""
    from numerflow.devices import resolve_device
    from numerflow.training.loop import build_training, check_finite, rows_on, run_epoch
    from numerflow.training.precision import used_precision
    from numerflow.training.validation import epoch_scores, resident
    from numerflow.training.state import cpu_copy
    from numerflow.training.data import choose_targets
    from numerflow.training.distributed import Distributed

    started = time.perf_counter()
    device = resolve_device(config.device)
    precision = used_precision(config.precision, device)
    targets = choose_targets(config, data.manifest, data.path / "manifest.json")
    rows = rows_on(train_split_with(data, targets), device)
    validation = resident(data.validation.features, device)  # scored each epoch as train scores it
    model_config, model, optimizer, scheduler = build_training(config, len(data.features), len(targets), rows, device,
                                                               Distributed())
    scores, metrics, best = [], [], {"epoch": 0, "state": None}

    def checkpoint() -> dict:
        return trial_checkpoint(config, model_config, data, targets, best["state"], metrics, best["epoch"], precision)

    for epoch in range(config.epochs):
        train_loss = run_epoch(model, optimizer, scheduler, rows, config, epoch, device=device)
        check_finite(model, train_loss, epoch + 1)
        predictions = epoch_scores(model, validation, device, config.precision, config.predict_with)
        summary = objective.summary(predictions, data)
        scores.append(summary["objective"])
        metrics.append({"epoch": epoch + 1, "train_loss": train_loss, **summary})
        if best["state"] is None or scores[-1] > scores[best["epoch"] - 1]:
            best = {"epoch": epoch + 1, "state": cpu_copy(model)}
        final = epoch + 1 == config.epochs or (config.patience is not None
                                               and epoch + 1 - best["epoch"] >= config.patience)
        if on_epoch:
            on_epoch(epoch + 1, scores[-1], checkpoint, final)
        if final:
            break
    return TrialResult(scores, best["epoch"], time.perf_counter() - started, checkpoint())


def trial_checkpoint(config: TrainConfig, model_config, data: PreparedData, targets: list[str], state: dict,
                     metrics: list[dict], best_epoch: int, precision: str | None = None) -> dict:
    """A normal numerflow checkpoint (what `numerflow train` writes, binning record included):
    predict and validate take it."""
    from numerflow.training.fit import checkpoint_dict

    return checkpoint_dict(config, model_config.to_dict(), data.features, targets, state, list(metrics), best_epoch,
                           data.manifest, precision)


def train_split_with(data: PreparedData, targets: list[str]):
    """The in-memory training split with only `targets`' columns, in that order."""
    from numerflow.training.data import Split

    train = data.train
    columns = [data.targets.index(t) for t in targets]
    return Split(train.features, np.ascontiguousarray(train.targets[:, columns]), train.era_codes, train.eras, train.ids,
                 train.benchmark)


def fit_by_cv(cv_config, data: PreparedData, objective: Objective,
              on_fold: Callable[[int, float, None, bool], None] | None = None) -> TrialResult:
    """Score `cv_config` (a config.CvConfig) by era-wise cross-validation on `data`'s training
    eras with `numerflow cv`'s own folds and fold runner: after each fold, the objective of the
    out-of-fold predictions so far goes to `on_fold(fold, score, None, final)` (pruning); the trial's
    score is the objective over all folds. No checkpoint: the folds' models are not the result; the
    out-of-fold predictions are (`oof`, for `numerflow ensemble`)."""
    import pandas as pd

    from numerflow.devices import resolve_device
    from numerflow.training.folds import FOLD_COLUMN, TRAIN_SPLIT, CvData, plan_folds, run_fold
    from numerflow.training.data import choose_targets

    started = time.perf_counter()
    targets = choose_targets(cv_config, data.manifest, data.path / "manifest.json")
    main = data.manifest.get("target") or data.targets[0]
    columns = targets if main in targets else targets + [main]
    cv_data = CvData(data.features, targets, main, {TRAIN_SPLIT: train_split_with(data, columns)}, columns.index(main))
    folds = plan_folds(data.train.eras, cv_config.folds, cv_config.scheme, cv_config.embargo, data.path / schema.TRAIN_FILE)
    device = resolve_device(cv_config.device)
    frames, scores = [], []
    # the benchmark joined to the out-of-fold rows by id: BMC objectives, and payout's stand-in for MMC
    train_benchmark = None
    if (objective.needs_benchmark or objective.name == "payout") and data.train.ids is not None:
        values = prepared_benchmark(data.path / schema.TRAIN_FILE, data.train.ids)
        train_benchmark = pd.Series(values, index=data.train.ids) if values is not None else None
    for fold in folds:
        frames.append(run_fold(fold, cv_config, cv_data, device, None)[0])
        oof = pd.concat(frames, ignore_index=True)
        benchmark = None if train_benchmark is None else \
            train_benchmark.reindex(oof[schema.ID].astype(str)).to_numpy(np.float64)
        scores.append(objective.scores(oof[schema.PREDICTION].to_numpy(np.float64), oof[main].to_numpy(np.float64),
                                       oof[schema.ERA].to_numpy(), None, benchmark)["objective"])
        if on_fold:
            on_fold(fold.number, scores[-1], None, fold is folds[-1])
    kept = oof[[schema.ID, schema.ERA, FOLD_COLUMN, schema.PREDICTION]] if frames else None
    return TrialResult(scores, len(scores), time.perf_counter() - started, None, kept)
