"""A set of checkpoints scored as one prediction: each model's raw scores ranked within eras and
averaged with the ensemble's weights. predict, validate and compare score models this way, and
export checks and weighs its members with the same helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numerflow import metrics, schema
from numerflow.config import ValidateConfig
from numerflow.config_base import weights_problem
from numerflow.errors import CheckpointError, ConfigError
from numerflow.workflow.validation_rows import ValidationData, read_rows


def ensemble_weights(weights: list[float] | None, n_models: int) -> np.ndarray:
    """Weights normalised to sum 1; None means equal weights."""
    problem = weights_problem(weights, n_models)
    if problem:
        raise ConfigError(f"--weights: {problem}")
    if weights is None:
        return np.full(n_models, 1.0 / n_models)
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def refuse_overwriting_inputs(out: Path, inputs: list[Path]) -> None:
    """An output path that names one of the inputs would replace a checkpoint or the live data."""
    for path in inputs:
        if Path(out).resolve() == Path(path).resolve():
            raise ConfigError(f"{out}: is one of the inputs; choose another output path")


def union_of_features(feature_lists: list[list[str]]) -> list[str]:
    """Every feature any model needs, first-seen order (the first model's order is kept as is)."""
    return list(dict.fromkeys(f for features in feature_lists for f in features))


def score_models(checkpoints, model_paths, matrix, features, eras, weights, config) -> np.ndarray:
    """Weighted mean of each model's within-era ranks (rank averaging keeps models on one scale).
    Raw scores come from checkpoint.predict_scores, which the exported pickle mirrors, so that
    `numerflow export` gives exactly these ranks."""
    from numerflow.checkpoint import load_model, predict_scores
    from numerflow.devices import resolve_device
    from numerflow.metrics import rank_within_eras

    position = {name: j for j, name in enumerate(features)}
    device = resolve_device(config.device)
    combined = np.zeros(matrix.shape[0], dtype=np.float64)
    for path, checkpoint, weight in zip(model_paths, checkpoints, weights):
        columns = [position[name] for name in checkpoint["features"]]
        model = load_model(checkpoint)
        predict_with = checkpoint.get("predict_with", "main")
        if columns == list(range(matrix.shape[1])):
            # The first model's features lead the union, so a single model reads the matrix as is.
            raw = predict_scores(model, matrix, device=device, predict_with=predict_with, batch_rows=config.batch_size)
        else:
            # Another model's columns are gathered block by block: no second copy of the matrix.
            raw = np.concatenate([
                predict_scores(model, matrix[start:start + config.batch_size, columns], device=device,
                               predict_with=predict_with)
                for start in range(0, matrix.shape[0], config.batch_size)])
        if not np.all(np.isfinite(raw)):
            raise CheckpointError(f"{path}: the model produced non-finite predictions")
        combined += weight * rank_within_eras(np.asarray(raw, dtype=np.float64), eras)
    return combined


def ensemble_ranks(folder, data: ValidationData, settings: ValidateConfig):
    """A fitted ensemble's predictions of every row of `data` (validate's and compare's): its
    members' within-era ranks, weighted and averaged exactly as `predict --ensemble` averages them
    (`settings`: the device and batch size). Returns them with the rows read and the features' names."""
    from numerflow.checkpoint import load_checkpoint
    from numerflow.ensembles import load_ensemble

    paths, weights = load_ensemble(folder)
    checkpoints = [load_checkpoint(path) for path in paths]
    features = union_of_features([c["features"] for c in checkpoints])
    rows = read_rows(data, features, needed_by=folder)
    eras = rows.frame[schema.ERA].astype(str).to_numpy()
    values = score_models(checkpoints, paths, rows.matrix, features, eras, ensemble_weights(weights, len(paths)),
                          settings)
    return metrics.rank_within_eras(values, eras), rows, features
