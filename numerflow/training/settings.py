"""The train stage's settings checked before any time is spent, and the files a run writes beside
its checkpoint."""

from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path

from numerflow.config import TrainConfig
from numerflow.errors import ConfigError
from numerflow.options import Arch, Loss


def check_config(config: TrainConfig) -> None:
    """Apply the settings' own options again (choices, bounds, checks: config.py declares them, once),
    for a config changed after it was built; a config just built has passed them already. Then the
    checks that span two options or need a package."""
    config.apply_options()
    check_earn_settings(config)


def check_earn_settings(config: TrainConfig) -> None:
    """--bmc-weight with --loss, and --arch tabm's package (issue 26; the bounds of --bmc-weight and
    --k are their options'). The BMC term is taken per era within a batch, so it needs the corr loss's
    batches, which are drawn within eras (mse's mix every era)."""
    if config.bmc_weight > 0 and config.loss != Loss.corr.value:
        raise ConfigError("--bmc-weight needs --loss corr (its batches are drawn within eras)")
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
    """The TrainConfig as JSON-safe values (paths as strings). `track` (MLflow logging) is left
    out: it changes no model, so it must not refuse a resume nor reach a checkpoint's settings."""
    return {f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(config) if f.name != "track" for v in [getattr(config, f.name)]}


def changed_settings(saved: dict, now: dict, resumable: set[str], settings_class=TrainConfig) -> list[str]:
    """The settings (but `resumable` ones) that differ between a saved run and this one, as
    "name (old → new)". A setting the saved run lacks is an option added since it was written:
    that run had the option's default (so a run saved by an older numerflow still resumes)."""
    saved = {**config_dict(settings_class()), **saved}
    return [f"{k} ({saved.get(k)!r} → {now[k]!r})" for k in now if k not in resumable and saved.get(k) != now[k]]


def resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume")


def json_sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")
