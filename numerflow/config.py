"""One dataclass per stage's settings, each default commented.

Settings come from command-line flags, then NUMERFLOW_* environment variables, then
`numerflow.toml` (one table per command, e.g. `[train]`), then these defaults. cli.py applies
that order through click's `default_map`; the dataclasses are what library code receives.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from numerflow.errors import ConfigError

CONFIG_FILE = "numerflow.toml"
DEFAULT_DATA_DIR = Path("data")  # download writes data/<version>/, prepare data/prepared/
DEFAULT_MODELS_DIR = Path("models")
DEFAULT_PREDICTIONS_DIR = Path("predictions")
DEFAULT_RECEIPTS_DIR = Path("receipts")
DEFAULT_REPORTS_DIR = Path("reports")


def load_toml(path: str | os.PathLike | None = None) -> dict:
    """The parsed numerflow.toml (from NUMERFLOW_CONFIG or the working folder), or {} if absent."""
    path = Path(path or os.environ.get("NUMERFLOW_CONFIG") or CONFIG_FILE)
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


@dataclass
class DownloadConfig:
    data_dir: Path = DEFAULT_DATA_DIR  # files land in <data_dir>/<version>/
    version: str | None = None  # None: the newest vX.Y that numerapi lists
    live_only: bool = False  # a weekly job needs only live data, live example preds, features.json
    round: int | None = None  # a past round's live data; None: the current round
    force: bool = False  # refetch files even when complete locally


@dataclass
class SyntheticConfig:
    data_dir: Path = DEFAULT_DATA_DIR  # written to <data_dir>/synthetic/
    eras: int = 120  # train + validation eras (live is one more era)
    rows_per_era: int = 500
    features: int = 120
    seed: int = 0


@dataclass
class PrepareConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    dataset: Path | None = None  # a version folder; None: the newest one under data_dir
    feature_set: str = "medium"  # any set in features.json; medium ≈ 780 features on v5.2
    target: str = "target"
    aux_targets: list[str] = field(default_factory=list)  # ["all"] keeps every auxiliary target
    downsample: int = 4  # keep every 4th era: neighbouring eras overlap in time (targets look 20 days ahead)
    embargo: int = 4  # eras dropped between the last train era and validation (weekly eras, 20-day targets)
    out_dir: Path | None = None  # None: <data_dir>/prepared


@dataclass
class TrainConfig:
    data: Path = DEFAULT_DATA_DIR / "prepared"  # folder with prepare's train/validation.parquet
    out: Path = DEFAULT_MODELS_DIR / "model.pt"  # a <name>.json with config and metrics goes beside it
    layers: list[int] = field(default_factory=lambda: [256])  # hidden layer widths
    activation: str = "relu"  # relu | silu
    dropout: float = 0.5  # after each hidden layer; chosen by bench/quality.py (0.3 and 0.5 beat 0 clearly)
    batchnorm: bool = True  # fastai's layout: BN on inputs, then Linear → act → BN per layer (+0.01 corr in bench/quality.py)
    targets: list[str] | None = None  # None: every target prepare kept, main target first
    predict_with: str = "main"  # main: the main target's head; mean: the mean of all heads
    loss: str = "corr"  # mse | corr (negative mean per-era Pearson within one-era batches); corr won bench/quality.py
    lr: float = 1e-2  # peak lr of the one-cycle schedule (fastai's tabular default; 1e-3 underfits in 6 epochs)
    weight_decay: float = 0.0  # decoupled (AdamW), not on biases and BatchNorm
    l1: float = 0.0  # L1 penalty on weights
    batch_size: int = 2048
    schedule: str = "onecycle"  # onecycle (fastai's fit_one_cycle) | constant
    epochs: int = 6
    patience: int | None = None  # early stopping on validation mean era-Spearman; None: off
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    resume: bool = False  # continue an interrupted run from its last completed epoch


@dataclass
class ValidateConfig:
    model: Path | None = DEFAULT_MODELS_DIR / "model.pt"
    predictions: Path | None = None  # score a predictions file instead of a model
    data: Path | None = None  # None: <data_dir>/prepared/validation.parquet
    data_dir: Path = DEFAULT_DATA_DIR
    report_dir: Path | None = None  # None: reports/<model or predictions file stem>/
    write_report: bool = True  # report.json, per_era.csv, per_era.png into report_dir
    target: str | None = None  # None: the prepared manifest's main target, else "target"
    exposure: bool = True  # feature exposure + feature-neutral CORR (one least-squares fit per era)
    device: str = "auto"  # model mode: where the forward passes run
    batch_size: int = 65536  # model mode: rows per forward pass (bounds memory)


@dataclass
class PredictConfig:
    models: list[Path] = field(default_factory=lambda: [DEFAULT_MODELS_DIR / "model.pt"])
    weights: list[float] | None = None  # ensemble weights; None: equal
    data: Path | None = None  # None: the current round's live file under data_dir
    data_dir: Path = DEFAULT_DATA_DIR
    out: Path | None = None  # .csv or .parquet; None: predictions/<model>_<round>.csv
    neutralize: float = 0.0  # proportion of per-era feature exposure to remove (0: none)
    batch_size: int = 65536  # rows per forward pass: bounds memory on large files
    version: str | None = None  # dataset folder under data_dir holding live.parquet; None: the newest
    device: str = "cpu"  # live is ~7k rows: the CPU is fast enough and always there


@dataclass
class SubmitConfig:
    predictions: Path | None = None  # None: predictions/<model>_<round>.csv of the current round
    model_name: str | None = None  # Numerai model name; resolved to its id through numerapi
    data_dir: Path = DEFAULT_DATA_DIR
    live: Path | None = None  # live file the ids are checked against; None: current round's
    receipts_dir: Path = DEFAULT_RECEIPTS_DIR
    dry_run: bool = False  # run every check, upload nothing
    force: bool = False  # submit again even if a receipt says this round and model are done
    version: str | None = None  # dataset folder under data_dir holding live.parquet; None: the newest


@dataclass
class RoundConfig:
    models: dict = field(default_factory=dict)  # numerflow.toml's [models.<numerai model name>] tables
    config_file: Path = Path(CONFIG_FILE)  # where `models` came from (named in errors)
    data_dir: Path = DEFAULT_DATA_DIR  # live data goes to <data_dir>/<version>/; the lock file lives here
    version: str | None = None  # dataset version; None: the newest Numerai lists
    predictions_dir: Path = DEFAULT_PREDICTIONS_DIR  # <model name>_<round>.csv per model
    receipts_dir: Path = DEFAULT_RECEIPTS_DIR  # a receipt per round and model: never submit twice
    device: str = "cpu"  # live is ~7k rows: the CPU is enough
    dry_run: bool = False  # predict and check every model, upload nothing


@dataclass
class ExportConfig:
    models: list[Path] = field(default_factory=lambda: [DEFAULT_MODELS_DIR / "model.pt"])  # several: rank-averaged
    weights: list[float] | None = None  # ensemble weights; None: equal
    neutralize: float = 0.0  # proportion of per-era feature exposure to remove (0: none)
    out: Path | None = None  # None: the first checkpoint's path with .pkl
