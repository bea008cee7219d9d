"""Era-wise folds, as `numerflow cv` and `sweep --cv` draw them, and one fold trained and
predicted: the training eras are cut into contiguous blocks; each fold trains on its training eras
(minus an embargo on both sides of its test block) and predicts its test block."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numerflow import metrics, schema
from numerflow.config import CvConfig
from numerflow.errors import DataError
from numerflow.options import Scheme
from numerflow.training.fit import train_arrays

TRAIN_SPLIT, VALIDATION_SPLIT = "train", "validation"
FOLD_COLUMN = "fold"


@dataclass
class Fold:
    number: int  # 1-based
    split: str  # TRAIN_SPLIT or VALIDATION_SPLIT: the file its test eras come from
    test_eras: list[str]
    train_eras: list[str]

    def plan(self, train_order: list[str]) -> dict:
        """The fold's eras as report.json shows them: the test block's first and last era, and
        the training eras as runs of consecutive eras of the prepared train file."""
        return {"fold": self.number, "split": self.split, "test": [self.test_eras[0], self.test_eras[-1]],
                "test_eras": len(self.test_eras), "train": era_runs(self.train_eras, train_order),
                "train_eras": len(self.train_eras)}


# --- the folds --------------------------------------------------------------------------------


def era_number(label: str, source: Path) -> int:
    number, _ = schema.era_sort_key(label)
    if number == 1 << 62:
        raise DataError(f"{source}: era label '{label}' holds no number (cannot measure the embargo)")
    return number


def era_runs(eras: list[str], order: list[str]) -> list[list[str]]:
    """[[first, last], ...]: `eras` as runs of consecutive entries of `order`."""
    position = {era: i for i, era in enumerate(order)}
    runs: list[list[str]] = []
    previous = None
    for era in eras:
        if previous is not None and position[era] == position[previous] + 1:
            runs[-1][1] = era
        else:
            runs.append([era, era])
        previous = era
    return runs


def plan_folds(train_eras: list[str], folds: int, scheme: str, embargo: int, source: Path,
               validation_eras: list[str] | None = None) -> list[Fold]:
    """The folds' test and training eras (train_eras in era order). Not enough eras for the folds,
    or a fold left with no training eras by the embargo, is a DataError naming the fold."""
    expanding = Scheme(scheme) is Scheme.expanding
    blocks_needed = folds + 1 if expanding else folds
    if len(train_eras) < blocks_needed:
        raise DataError(f"{source}: {len(train_eras)} training era(s) cannot make {folds} {scheme} folds "
                        f"(it needs at least {blocks_needed} eras: one block of eras per "
                        f"{'fold plus a first training-only block' if expanding else 'fold'})")
    numbers = [era_number(era, source) for era in train_eras]
    blocks = np.array_split(np.arange(len(train_eras)), blocks_needed)
    plan = []
    for number, block in enumerate(blocks[1:] if expanding else blocks, start=1):
        low, high = numbers[block[0]] - embargo, numbers[block[-1]] + embargo
        candidates = range(block[0]) if expanding else range(len(train_eras))
        train = [train_eras[i] for i in candidates if not low <= numbers[i] <= high]
        plan.append(Fold(number, TRAIN_SPLIT, [train_eras[i] for i in block], train))
    if validation_eras:
        first = era_number(validation_eras[0], source)
        train = [era for era, n in zip(train_eras, numbers) if n < first - embargo]
        plan.append(Fold(len(plan) + 1, VALIDATION_SPLIT, list(validation_eras), train))
    for fold in plan:
        if not fold.train_eras:
            raise DataError(f"{source}: fold {fold.number} (test eras {fold.test_eras[0]}-{fold.test_eras[-1]}) has "
                            f"no training eras left after the embargo of {embargo} eras; use fewer --folds or a "
                            f"smaller --embargo")
    return plan


@dataclass
class CvData:
    features: list[str]
    targets: list[str]  # trained on, main first as train chooses them
    main: str  # the target folds are scored on: the prepared manifest's, as validate scores
    splits: dict  # TRAIN_SPLIT / VALIDATION_SPLIT → training.data.Split with ids; columns targets (+ main)
    main_column: int


def fold_rows(split, eras: list[str]) -> np.ndarray:
    """Indices of the split's rows in `eras`."""
    wanted = set(eras)
    codes = [i for i, era in enumerate(split.eras) if era in wanted]
    return np.flatnonzero(np.isin(split.era_codes, codes))


def training_rows(split, rows: np.ndarray, n_targets: int):
    from numerflow.training.data import Split

    return Split(split.features[rows], np.ascontiguousarray(split.targets[rows, :n_targets]),
                 split.era_codes[rows], split.eras,
                 benchmark=split.benchmark[rows] if split.benchmark is not None else None)


# --- one fold ---------------------------------------------------------------------------------


def run_fold(fold: Fold, config: CvConfig, data: CvData, device, say) -> tuple[object, dict]:
    """Train on the fold's training eras, predict its test eras: (a frame of id, era, fold,
    prediction (ranked within eras into (0, 1)), target; the fold's training record)."""
    import pandas as pd

    from numerflow.checkpoint import predict_scores

    started = time.perf_counter()
    train_split = data.splits[TRAIN_SPLIT]
    train_rows = fold_rows(train_split, fold.train_eras)
    fit = train_arrays(config, training_rows(train_split, train_rows, len(data.targets)), data.features, data.targets,
                       device=device, say=say)
    test = data.splits[fold.split]
    rows = fold_rows(test, fold.test_eras)
    eras = np.asarray(test.eras, dtype=object)[test.era_codes[rows]]
    raw = predict_scores(fit.model, test.features, device=device, predict_with=config.predict_with, rows=rows)
    if not np.isfinite(raw).all():
        raise DataError(f"fold {fold.number}: the model produced non-finite predictions; try a lower --lr")
    frame = pd.DataFrame({schema.ID: test.ids[rows], schema.ERA: eras.astype(str),
                          FOLD_COLUMN: np.full(len(rows), fold.number, dtype=np.int16),
                          schema.PREDICTION: metrics.rank_within_eras(raw.astype(np.float64), eras),
                          data.main: test.targets[rows, data.main_column].astype(np.float64)})
    return frame, {"rows_train": int(len(train_rows)), "epochs": fit.metrics, "seconds": time.perf_counter() - started}
