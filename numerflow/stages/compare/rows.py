"""The rows compare scores every model on: which data files (the inputs' own, or --data), read
once as validate reads them (numerflow.workflow.validation_rows: prepared or raw files, several
files as one set, id matching through scoring.ids.RowIds), and the checkpoints' predictions on
them. Models scored on different data versions are refused here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.config import ValidateConfig
from numerflow.config_selection import CompareConfig
from numerflow.errors import CheckpointError, DataError
from numerflow.workflow.model_scores import ensemble_ranks
from numerflow.workflow.validation_rows import data_paths, describe_files, read_rows, row_ids

BATCH_ROWS = 65536  # validate's default rows per forward pass


def data_version(path: Path) -> str | None:
    """The data version a file belongs to: a prepared folder's manifest names it, a raw file's
    folder is it (data/v5.2/validation.parquet → v5.2)."""
    if (path.parent / schema.PREPARED_MANIFEST_FILE).is_file():
        try:
            return schema.read_prepared_manifest(path.parent).get("version")
        except DataError:
            return None
    return path.parent.name or None


def choose_data(config: CompareConfig, candidates) -> list[Path]:
    """--data, else the data files every input that names its data shares, else validate's default
    (DATA_DIR/prepared/validation.parquet). Inputs of different data versions are a DataError."""
    named = [(c, [Path(p) for p in c.data]) for c in candidates if c.data]
    versions = {c.name: {data_version(p) for p in paths} - {None} for c, paths in named}
    if config.data:
        chosen = [Path(p) for p in config.data]
        versions["--data"] = {data_version(p) for p in chosen} - {None}
    all_versions = set().union(*versions.values()) if versions else set()
    if len(all_versions) > 1:
        shown = ", ".join(f"{name} ({'/'.join(sorted(v))})" for name, v in versions.items() if v)
        raise DataError(f"the models were scored on different data versions: {shown}; compare scores every model "
                        f"on the same rows of one version")
    if config.data:
        return chosen
    if not named:
        return [data_paths(ValidateConfig(data=None, data_dir=config.data_dir))[0]]
    first = named[0][1]
    common = [p for p in first if all(p.resolve() in {q.resolve() for q in paths} for _, paths in named[1:])]
    if not common:
        shown = "; ".join(f"{c.name}: {', '.join(map(str, paths))}" for c, paths in named)
        raise DataError(f"the models were scored on different data files, none in common ({shown}): no common "
                        f"eras; pass --data to score them all on one file")
    return common


class ScoringRows:
    """The data's rows (era, target, features for exposure), read once, and what the models need
    to place their predictions on them."""

    def __init__(self, paths: list[Path], config: CompareConfig):
        self.validate_config = ValidateConfig(data=list(paths), data_dir=config.data_dir, benchmark=config.benchmark,
                                              device=config.device, write_report=False)
        self.paths = list(paths)
        self.data = describe_files(self.paths, self.validate_config)
        self.rows = read_rows(self.data, self.data.features)
        self.matrix, self.frame = self.rows.matrix, self.rows.frame
        self.row_ids = row_ids(self.rows, self.data)
        self.training_rows = self._training_rows()
        self.data_name = self.data.path.name
        self.notes: list[str] = []
        self._device = None

    @property
    def target(self) -> np.ndarray:
        return self.frame[self.data.target].to_numpy(dtype=np.float64, na_value=np.nan)

    @property
    def eras(self) -> np.ndarray:
        return self.frame[schema.ERA].astype(str).to_numpy()

    def _training_rows(self) -> np.ndarray:
        """Rows of a prepared train.parquet among the data (a cv run's out-of-fold eras): checkpoints
        were trained on them, so they are not scored there."""
        marks = [np.full(count, part.path.name == schema.TRAIN_FILE
                         and schema.DATA_TYPE not in schema.parquet_columns(part.path))
                 for part, count in zip(self.data.files, self.rows.rows_per_file)]
        return np.concatenate(marks) if marks else np.zeros(0, dtype=bool)

    def _without_training_rows(self, predictions: np.ndarray, what) -> np.ndarray:
        """NaN on a prepared train.parquet's rows: a model is never scored on the eras it was
        trained on."""
        if self.training_rows.any():
            predictions[self.training_rows] = np.nan
            self.notes.append(f"{what}: scored on validation rows only, not on the {int(self.training_rows.sum()):,} "
                              f"rows of {schema.TRAIN_FILE} (its training data)")
        return predictions

    def predict_ensemble(self, folder: Path, config: CompareConfig) -> np.ndarray:
        """A fitted ensemble's predictions on the validation rows, as validate --ensemble makes them."""
        ranks, _, _ = ensemble_ranks(folder, self.data, self.validate_config)  # its device, batch size
        return self._without_training_rows(ranks, folder)

    def predict_checkpoint(self, path: Path, checkpoint: dict, config: CompareConfig) -> np.ndarray:
        """A checkpoint's predictions on the validation rows, as validate --model makes them (NaN on
        a prepared train.parquet's rows: a model is never scored on the eras it was trained on)."""
        from numerflow.checkpoint import load_model, predict_scores
        from numerflow.devices import resolve_device

        features = list(checkpoint["features"])
        column = {name: i for i, name in enumerate(self.data.features)}
        if all(name in column for name in features):
            matrix = self.matrix[:, [column[name] for name in features]]
        else:  # features the exposure columns lack: read them as validate --model does
            matrix = read_rows(self.data, features, needed_by=path).matrix
        if self._device is None:
            self._device = resolve_device(config.device)
        raw = predict_scores(load_model(checkpoint), matrix, device=self._device,
                             predict_with=checkpoint.get("predict_with", "main"), batch_rows=BATCH_ROWS)
        bad = int((~np.isfinite(raw)).sum())
        if bad:
            raise CheckpointError(f"{path}: the model produced {bad} non-finite prediction(s)")
        return self._without_training_rows(raw.astype(np.float64), path)
