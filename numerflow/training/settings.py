"""The train stage's settings checked before any time is spent, and the files a run writes beside
its checkpoint."""

from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path

from numerflow.config import TrainConfig
from numerflow.errors import ConfigError


def check_config(config: TrainConfig) -> None:
    """Apply the settings' own options again (choices, bounds, checks: config.py declares them, once),
    for a config changed after it was built; a config just built has passed them already."""
    config.apply_options()


def check_out(config: TrainConfig) -> None:
    """Refuse an --out that would overwrite an input (the checkpoint, its .json or .resume file
    landing on the prepared data), that is a folder, or whose folder cannot be written, before
    any training time is spent."""
    data, out = Path(config.data), Path(config.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a checkpoint file path such as {out / 'model.pt'}")
    inputs = {(data / name).resolve() for name in ("train.parquet", "validation.parquet", "manifest.json")}
    for written in (out, json_sidecar_path(out), resume_path(out)):
        if written.resolve() in inputs:
            raise ConfigError(f"--out {out} would overwrite the training input {written}; choose another path")
    check_writable(out.parent, "--out")


def check_writable(folder: Path, option: str) -> None:
    """Make `folder` and create (then remove) a file in it: the one test that is true for every
    user and file system (os.access says yes to root on a read-only mount)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{option}: cannot make the folder {folder}: a file is in the way") from None
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write in {folder} ({exc.strerror or exc})") from None


def config_dict(config: TrainConfig) -> dict:
    """The TrainConfig as JSON-safe values (paths as strings). `track` (MLflow logging) is left
    out: it changes no model, so it must not refuse a resume nor reach a checkpoint's settings."""
    return {f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(config) if f.name != "track" for v in [getattr(config, f.name)]}


def resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume")


def json_sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")
