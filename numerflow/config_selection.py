"""The settings of the commands that score models side by side and choose among them: compare
(stages/compare/) and ensemble (stages/ensemble.py). Declared as config.py's are: every option once,
with its bounds and checks (config_base.StageSettings applies them)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from numerflow.config_base import (StageSettings, cpus_per_task_option, data_dir_option, device_option,
                                   ensemble_proportion_problem, gpus_per_task_option, last_option, name_option,
                                   ray_option, track_option)
from numerflow.errors import ConfigError, OptionError
from numerflow.options import Choice, EnsembleObjective, FitOn, SelectOn, option, split_list, suffix_in

# --- compare: models side by side on the same rows and eras (stages/compare/) -------------------

DEFAULT_COMPARE_DIR = Path("compare")


class CompareSort(Choice):
    """compare.csv's numeric columns, by which the printed table may be sorted."""
    corr_mean = "corr_mean"
    corr_std = "corr_std"
    corr_sharpe = "corr_sharpe"
    max_drawdown = "max_drawdown"
    mmc_mean = "mmc_mean"
    bmc_mean = "bmc_mean"
    tb200_corr_mean = "tb200_corr_mean"
    feature_exposure = "feature_exposure"
    benchmark_corr = "benchmark_corr"
    payout_mean = "payout_mean"
    corr_mean_last = "corr_mean_last"
    bmc_mean_last = "bmc_mean_last"
    payout_mean_last = "payout_mean_last"
    churn = "churn"


def payout_weights(text: str) -> dict:
    """'corr=0.5,mmc=2' → {'corr': 0.5, 'mmc': 2.0}; a weight left out keeps sweep's default."""
    weights = {}
    for item in split_list(text) or []:
        key, _, value = item.partition("=")
        if key.strip() not in ("corr", "mmc") or not value:
            raise ConfigError(f"expected corr=A,mmc=B, got '{text}'")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"expected corr=A,mmc=B with numbers, got '{text}'") from None
        if not math.isfinite(weights[key.strip()]):
            raise ConfigError(f"payout weights must be finite numbers, got '{text}'")
    return weights


@dataclass
class CompareConfig(StageSettings):
    models: list[Path] = option(factory=list, on_command_line=False,
                                help="The models to compare (the command's arguments): report folders, cv runs, "
                                     "sweeps, fitted ensembles, checkpoints or id,prediction files.")
    name: str = name_option("compare", help="Results go to COMPARE_DIR/NAME/.")
    compare_dir: Path = option(DEFAULT_COMPARE_DIR, help="Folder holding every comparison's folder.")
    last: int = option(200, min=1, help="The most recent eras that corr_mean_last, bmc_mean_last and "
                                        "payout_mean_last cover.")
    sort: str = option("payout_mean", choices=CompareSort,
                       help="Column the printed table is sorted by (best first: lowest for corr_std, max_drawdown, "
                            "feature_exposure, benchmark_corr and churn).")
    trials: bool = option(False, help="With a sweep: every complete trial, on its out-of-fold predictions "
                          "after sweep --cv, else on the checkpoints the sweep kept.")
    benchmark: str | None = option(None, help="Benchmark model column for bmc_mean and benchmark_corr (default: "
                                   "the data version's main one, as validate chooses it).")
    payout: dict | None = option(None, parse=payout_weights,
                                 help="Payout weights corr=A,mmc=B: per era clip(A x CORR + B x MMC, -0.05, 0.05) "
                                      "(default: sweep's payout objective's, corr=0.5,mmc=2.0).")
    churn_against: Path | None = option(None, check=suffix_in(".csv", ".parquet"),
                                        help="An id,prediction file of the same rows: churn = 1 - its per-era "
                                             "Spearman with each model, mean over eras.")
    data: list[Path] | None = option(None, help="Data files to score every model on (default: the files the "
                                     "inputs were scored on, else DATA_DIR/prepared/validation.parquet).")
    data_dir: Path = data_dir_option()
    device: str = device_option("auto")  # checkpoints' forward passes
    track: bool = track_option()

    def __post_init__(self):
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [self.data]
        if isinstance(self.models, (str, os.PathLike)):
            self.models = [self.models]
        super().__post_init__()
        if self.payout is not None:  # Python may hand a dict: the same keys and numbers as the command line
            if not isinstance(self.payout, dict):
                raise OptionError("--payout", "expected corr=A,mmc=B")
            payout_weights(",".join(f"{key}={value}" for key, value in self.payout.items()))


# --- numerflow ensemble ---------------------------------------------------------------------------
DEFAULT_ENSEMBLES_DIR = Path("ensembles")


@dataclass
class EnsembleConfig(StageSettings):
    """Greedy ensemble selection over cv runs and `sweep --cv` trials (numerflow/stages/ensemble.py)."""

    candidates: list[Path] = option(factory=list, on_command_line=False,
                                    help="cv run folders (cv/NAME) and sweep folders run with --cv (sweeps/NAME: "
                                         "every complete trial), or one trial (sweeps/NAME/trials/N).")
    objective: str = option("corr_mean", choices=EnsembleObjective,
                            help="What each greedy step maximises, per era as validate scores it.")
    size: int = option(10, help="Greedy steps (with replacement); the best of them is kept, and a member "
                       "chosen k times in its S steps weighs k/S.", min=1)
    name: str = name_option("ensemble", help="The ensemble's folder: ENSEMBLES_DIR/NAME/.")
    ensembles_dir: Path = option(DEFAULT_ENSEMBLES_DIR, help="Folder holding every ensemble's folder.")
    on: str = option("oof", choices=SelectOn, help="Choose on the candidates' out-of-fold training eras, or "
                     "(explicitly) on validation eras, which then no longer measure the ensemble.")
    benchmark: str | None = option(None, help="bmc_mean: benchmark column of train/validation_benchmark_models"
                                   ".parquet (default: the version's main one).")
    last: int = last_option()
    neutralize_benchmark: str | None = option(None, check=ensemble_proportion_problem,
                                              help="auto: choose the proportion (0, .25, .5, .75, 1) neutralised "
                                                   "to the benchmark by the objective on the selection eras; or a "
                                                   "number within 0..1. Stored in ensemble.json; predict, validate, "
                                                   "export and round apply it.")
    fit: bool = option(False, help="Train each member once with its own settings and epochs; store the "
                       "checkpoints in the ensemble's folder.")
    fit_on: str = option("train", choices=FitOn, help="--fit on the training eras, or on training and validation "
                         "eras (all: for live use).")
    device: str = device_option("auto")  # --fit: where the members train
    ray: str | None = ray_option()  # --fit: each member a Ray task, reading the prepared data every node sees
    cpus_per_task: float = cpus_per_task_option()
    gpus_per_task: float = gpus_per_task_option()
    force: bool = option(False, help="Replace an existing ensemble of this name.")
    track: bool = track_option()
