"""An ensemble folder (ensembles/<name>/, written by `numerflow ensemble`): the one owner of its
format, the greedy selection that chooses it, and `load_ensemble`, which turns a fitted one into
checkpoints and weights for every stage that takes a model (predict, validate, export, round,
compare).

ensemble.json holds the candidates, the greedy path (the objective after each step), the members
(source, settings, seed, weight, and with --fit their checkpoint members/<k>.pt) and the weights;
it is the manifest of a files.publish_set, written last and naming every checkpoint's checksum.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow.errors import ConfigError, DataError
from numerflow.files import check_set

ENSEMBLE_JSON = "ensemble.json"
MEMBERS_DIR = "members"


@dataclass
class Step:
    chose: int  # the candidate added at this step (an index into the candidates)
    objective: float  # the ensemble's objective after adding it


def greedy_selection(ranks: np.ndarray, size: int,
                     score: Callable[[np.ndarray], float]) -> tuple[np.ndarray, list[Step], int]:
    """Forward selection with replacement (Caruana et al., "Ensemble selection from libraries of
    models", ICML 2004): start empty; at each of `size` steps add the candidate (a row of `ranks`,
    its predictions ranked within eras) whose addition gives the highest `score` of the ensemble,
    the mean of the chosen rows (a candidate chosen k times weighs k). Ties go to the first
    candidate. As in the paper, the ensemble kept is the best of the steps (the first of equals):
    steps after it added nothing. Returns each candidate's count in the kept ensemble, every step,
    and the number of steps kept."""
    total = np.zeros(ranks.shape[1], dtype=np.float64)
    chosen: list[int] = []
    steps: list[Step] = []
    for step in range(1, size + 1):
        best, best_value = 0, -np.inf
        for k in range(ranks.shape[0]):
            value = score((total + ranks[k]) / step)
            if value > best_value:
                best, best_value = k, value
        total += ranks[best]
        chosen.append(best)
        steps.append(Step(best, float(best_value)))
    kept = 1 + int(np.argmax([s.objective for s in steps]))
    counts = np.bincount(chosen[:kept], minlength=ranks.shape[0])
    return counts, steps, kept


def read_ensemble(folder: str | Path) -> dict:
    """ensemble.json of a complete ensemble folder; a missing or mixed one is a DataError."""
    from numerflow import schema

    folder = Path(folder)
    if not (folder / ENSEMBLE_JSON).is_file():
        raise DataError(f"{folder}: not an ensemble folder ({ENSEMBLE_JSON} not found; `numerflow ensemble` writes it)")
    record = schema.read_json(folder / ENSEMBLE_JSON)
    check_set(folder, ENSEMBLE_JSON, record.get("files", {}), names=[])
    return record


def load_ensemble(folder: str | Path) -> tuple[list[Path], list[float]]:
    """A fitted ensemble as (its members' checkpoints, their weights): what predict, validate,
    export, round and compare take in place of --model/--weights. An ensemble that was not fitted,
    or whose member checkpoint is missing or changed, is an error naming it."""
    folder = Path(folder)
    record = read_ensemble(folder)
    members = record.get("members", [])
    if not members or any(not m.get("checkpoint") for m in members):
        raise ConfigError(f"{folder}: the ensemble has no checkpoints; run `numerflow ensemble ... --fit` "
                          f"to train its members")
    files = record.get("files", {})
    for member in members:
        path = folder / member["checkpoint"]
        if not path.is_file():
            raise DataError(f"{path}: member checkpoint missing (the ensemble {folder} is incomplete; fit it again)")
    check_set(folder, ENSEMBLE_JSON, files, names=[m["checkpoint"] for m in members])
    return [folder / m["checkpoint"] for m in members], [float(m["weight"]) for m in members]


def stored_neutralize_benchmark(folder: str | Path) -> float:
    """The proportion `ensemble --neutralize-benchmark` chose and stored (0 when none was)."""
    return float(read_ensemble(folder).get("neutralize_benchmark", 0.0) or 0.0)


def models_and_weights(settings) -> tuple[list[Path], list[float] | None]:
    """A stage's checkpoints and weights: its --ensemble's members, else its --model/--weights."""
    if getattr(settings, "ensemble", None) is not None:
        return load_ensemble(settings.ensemble)
    return [Path(p) for p in settings.models], settings.weights
