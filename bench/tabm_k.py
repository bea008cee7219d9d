"""TabM's k against time: the MLP and TabM with each k, trained alike on one small synthetic set,
scored on its held-out validation eras. For issue 26's choice of the default k (the paper's is 32;
TabM's hidden layers cost k times the MLP's: each member has its own activations).

    .venv/bin/python bench/tabm_k.py [--ks 8,16,32 --epochs 4 --eras 80 --rows-per-era 300 --features 60]

The data: `numerflow download --synthetic` of the given size and `prepare` (every feature, every
target, no downsampling), in --work (a temporary folder by default). Each model is built by
model.build_model (arch, k) and trained by numerflow's own loop parts (training.loop: seed,
AdamW, one-cycle schedule, run_epoch with the corr loss over every target) with TrainConfig's
defaults except --layers, --epochs and --batch-size; train's --arch does not exist yet, so
training.loop.build_training (MLP only) is replaced by its three lines here. Scores: validation
mean per-era Spearman of the main target (training.validation.Validator, as train prints) after
the last epoch (no epoch chosen on validation) and at the best epoch; fit time is the training
epochs' wall time, validation scoring excluded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from numerflow.config import PrepareConfig, SyntheticConfig, TrainConfig
from numerflow.model import ModelConfig, build_model
from numerflow.runtime import before_torch_import
from numerflow.stages.prepare import prepare, read_manifest
from numerflow.synthetic import write_synthetic
from numerflow.training.data import read_split
from numerflow.training.distributed import Distributed
from numerflow.training.loop import make_optimizer, make_scheduler, rows_on, run_epoch, set_seed, steps_per_epoch
from numerflow.training.validation import Validator


def prepared_data(work: Path, eras: int, rows_per_era: int, features: int) -> Path:
    data_dir = work / "data"
    write_synthetic(SyntheticConfig(data_dir=data_dir, eras=eras, rows_per_era=rows_per_era, features=features, seed=0))
    return prepare(PrepareConfig(data_dir=data_dir, feature_set="all", downsample=1, out_dir=work / "prepared")).out_dir


def fit(arch: str, k: int, config: TrainConfig, train_split, validator, n_features: int, n_targets: int) -> dict:
    device, dist = torch.device("cpu"), Distributed()
    rows = rows_on(train_split, device)
    set_seed(config.seed)
    model = build_model(ModelConfig(n_features=n_features, layers=list(config.layers), activation=config.activation,
                                    dropout=config.dropout, batchnorm=config.batchnorm,
                                    input_batchnorm=config.input_batchnorm, n_outputs=n_targets, arch=arch, k=k))
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch(rows, config, dist) * config.epochs)
    seconds, scores = 0.0, []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        run_epoch(model, optimizer, scheduler, rows, config, epoch, dist=dist, device=device)
        seconds += time.perf_counter() - start
        scores.append(validator.score(model, config.predict_with)[0]["mean"])
    return {"last": scores[-1], "best": max(scores), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="8,16,32")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--layers", default="128")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--eras", type=int, default=80)
    parser.add_argument("--rows-per-era", type=int, default=300)
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--work", type=Path, default=None, help="Data folder (default: a temporary one).")
    args = parser.parse_args()
    before_torch_import()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        prepared = prepared_data(work, args.eras, args.rows_per_era, args.features)
        manifest = read_manifest(prepared)
        features, targets = list(manifest["features"]), list(manifest["targets"])
        train_split = read_split(prepared / "train.parquet", features, targets, require_main=True)
        valid_split = read_split(prepared / "validation.parquet", features, targets)
        print(f"data: {len(train_split.features):,} train rows ({len(train_split.eras)} eras), "
              f"{len(valid_split.features):,} validation rows ({len(valid_split.eras)} eras), "
              f"{len(features)} features, {len(targets)} targets")
        config = TrainConfig(layers=[int(w) for w in args.layers.split(",")], epochs=args.epochs,
                             batch_size=args.batch_size, device="cpu")
        validator = Validator(valid_split, torch.device("cpu"), Distributed(), config.precision)
        runs = [("mlp", 1)] + [("tabm", int(k)) for k in args.ks.split(",")]
        print(f"{'model':<10} {'val CORR last':>13} {'val CORR best':>13} {'fit s':>7}")
        for arch, k in runs:
            result = fit(arch, k, config, train_split, validator, len(features), len(targets))
            name = "mlp" if arch == "mlp" else f"tabm k={k}"
            print(f"{name:<10} {result['last']:>13.4f} {result['best']:>13.4f} {result['seconds']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
