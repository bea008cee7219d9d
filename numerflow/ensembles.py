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
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise DataError(f"{folder / ENSEMBLE_JSON}: 'members' is damaged (not a list of members){REFIT}")
    if not members or any(not m.get("checkpoint") for m in members):
        raise ConfigError(f"{folder}: the ensemble has no checkpoints; run `numerflow ensemble ... --fit` "
                          f"to train its members")
    files = record.get("files", {})
    for k, member in enumerate(members):
        path = member_checkpoint(folder, member, k, files)
        if not path.is_file():
            raise DataError(f"{path}: member checkpoint missing (the ensemble {folder} is incomplete; fit it again)")
    check_set(folder, ENSEMBLE_JSON, files, names=[m["checkpoint"] for m in members])
    return [folder / m["checkpoint"] for m in members], [member_weight(folder, m, k) for k, m in enumerate(members)]


REFIT = ": fit it again (`numerflow ensemble ... --fit --force`)"


def member_checkpoint(folder: Path, member: dict, k: int, files) -> Path:
    """A member's checkpoint: inside the ensemble folder and recorded (with its SHA-256) in
    ensemble.json's `files`, so that an edited path or a replaced checkpoint is refused."""
    where = f"{folder / ENSEMBLE_JSON}: member {k}'s checkpoint '{member['checkpoint']}'"
    named = Path(str(member["checkpoint"]))
    if named.is_absolute() or ".." in named.parts:
        raise DataError(f"{where} points outside the ensemble folder{REFIT}")
    record = files.get(str(member["checkpoint"])) if isinstance(files, dict) else None
    if not isinstance(record, dict) or "sha256" not in record:
        raise DataError(f"{where} is not recorded in its 'files' (no SHA-256 to check it against){REFIT}")
    return folder / named


def member_weight(folder: Path, member: dict, k: int) -> float:
    """A member's weight: a finite number of at least 0."""
    weight = member.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
        raise DataError(f"{folder / ENSEMBLE_JSON}: member {k}'s weight is "
                        f"{'missing' if weight is None else repr(weight)}, not a number of at least 0{REFIT}")
    return float(weight)


def stored_neutralize_benchmark(folder: str | Path) -> float:
    """The proportion `ensemble --neutralize-benchmark` chose and stored (0 when none was)."""
    return float(read_ensemble(folder).get("neutralize_benchmark", 0.0) or 0.0)


def models_and_weights(settings) -> tuple[list[Path], list[float] | None]:
    """A stage's checkpoints and weights: its --ensemble's members, else its --model/--weights."""
    if getattr(settings, "ensemble", None) is not None:
        return load_ensemble(settings.ensemble)
    return [Path(p) for p in settings.models], settings.weights
