"""What a round's stages look up the same way: the current round's live file (predict and
submit) and the account's model to send to (submit and export's upload)."""

from __future__ import annotations

from pathlib import Path

from numerflow import schema
from numerflow.errors import DataError, SubmissionError


def live_file(data_dir: Path, version: str | None = None) -> tuple[Path, int | None]:
    """The current round's live file under data_dir and the round it belongs to (None if unknown)."""
    version_dir = schema.find_version_dir(data_dir, version)
    path = version_dir / schema.LIVE_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found (run `numerflow download --live-only` first)")
    return path, schema.read_live_round(version_dir)


def resolve_model_id(client, model_name: str | None) -> tuple[str, str]:
    """(name, id) of the account's model; with no name, the account's only model."""
    from numerflow import numerai

    models = numerai.model_ids(client)
    names = ", ".join(sorted(models)) or "none"
    if model_name is None:
        if len(models) == 1:
            return next(iter(models.items()))
        raise SubmissionError(f"give --model-name: this account has {len(models)} models ({names})")
    if model_name not in models:
        raise SubmissionError(f"unknown model name '{model_name}' (this account's models: {names})")
    return model_name, models[model_name]
