"""The train stage's settings checked before any time is spent, and the files a run writes beside
its checkpoint."""

from __future__ import annotations

import math
import tempfile
from dataclasses import fields
from pathlib import Path

from numerflow.config_base import seed_problem
from numerflow.config import TrainConfig
from numerflow.errors import ConfigError
from numerflow.options import Activation, Arch, Loss, PredictWith, Schedule


def check_config(config: TrainConfig) -> None:
    for option, choices, value in (("loss", Loss, config.loss), ("schedule", Schedule, config.schedule),
                                   ("predict-with", PredictWith, config.predict_with),
                                   ("activation", Activation, config.activation), ("arch", Arch, config.arch)):
        if value not in choices.names():
            raise ConfigError(f"unknown {option} '{value}' (choose {', '.join(choices.names())})")
    if config.batch_size < 2 or config.epochs < 1 or not 0 < config.lr < math.inf:
        raise ConfigError("batch size must be ≥ 2, epochs ≥ 1 and lr a finite number > 0")
    if not (0 <= config.weight_decay < math.inf and 0 <= config.l1 < math.inf):  # nan fails both
        raise ConfigError("weight decay and l1 must be finite numbers ≥ 0")
    if not 0 <= config.dropout < 1:
        raise ConfigError(f"dropout must be a number from 0 to below 1, got {config.dropout}")
    check_earn_settings(config)
    problem = seed_problem(config.seed)
    if problem:
        raise ConfigError(problem)


def check_earn_settings(config: TrainConfig) -> None:
    """--bmc-weight and --k (issue 26). The BMC term is taken per era within a batch, so it needs
    the corr loss's batches, which are drawn within eras (mse's mix every era)."""
    if not 0 <= config.bmc_weight <= 1:  # nan fails too
        raise ConfigError(f"--bmc-weight must be a number from 0 to 1, got {config.bmc_weight}")
    if config.bmc_weight > 0 and config.loss != Loss.corr.value:
        raise ConfigError("--bmc-weight needs --loss corr (its batches are drawn within eras)")
    if not isinstance(config.k, int) or isinstance(config.k, bool) or config.k < 1:
        raise ConfigError(f"--k must be a whole number of 1 or more, got {config.k!r}")
    if config.arch == Arch.tabm.value:  # without the package: one Error line before any data is read
        from numerflow.model import import_tabm

        import_tabm()


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
    """The TrainConfig as JSON-safe values (paths as strings)."""
    return {f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(config) for v in [getattr(config, f.name)]}


def resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume")


def json_sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")
