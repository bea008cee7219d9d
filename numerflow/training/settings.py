"""The train stage's settings checked before any time is spent, and the files a run writes beside
its checkpoint."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from numerflow.config import TrainConfig
from numerflow.errors import ConfigError
from numerflow.options import Activation, Loss, PredictWith, Schedule


def check_config(config: TrainConfig) -> None:
    for option, choices, value in (("loss", Loss, config.loss), ("schedule", Schedule, config.schedule),
                                   ("predict-with", PredictWith, config.predict_with),
                                   ("activation", Activation, config.activation)):
        if value not in choices.names():
            raise ConfigError(f"unknown {option} '{value}' (choose {', '.join(choices.names())})")
    if config.batch_size < 2 or config.epochs < 1 or config.lr <= 0:
        raise ConfigError("batch size must be ≥ 2, epochs ≥ 1 and lr > 0")
    if config.weight_decay < 0 or config.l1 < 0:
        raise ConfigError("weight decay and l1 must be ≥ 0")


def check_out(config: TrainConfig) -> None:
    """Refuse an --out that would overwrite an input (the checkpoint, its .json or .resume file
    landing on the prepared data) or that is a folder, before any training time is spent."""
    data, out = Path(config.data), Path(config.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a checkpoint file path such as {out / 'model.pt'}")
    inputs = {(data / name).resolve() for name in ("train.parquet", "validation.parquet", "manifest.json")}
    for written in (out, json_sidecar_path(out), resume_path(out)):
        if written.resolve() in inputs:
            raise ConfigError(f"--out {out} would overwrite the training input {written}; choose another path")


def config_dict(config: TrainConfig) -> dict:
    """The TrainConfig as JSON-safe values (paths as strings)."""
    return {f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(config) for v in [getattr(config, f.name)]}


def resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume")


def json_sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")
