"""Validation quality and wall time of numerflow's default training recipe against LightGBM with
Numerai's example parameters and against the blog's MLP recipe, on one synthetic data set.

    .venv/bin/python bench/quality.py [--eras 240 --rows-per-era 3000 --features 300]
    .venv/bin/python bench/quality.py --try "layers=512,256 batchnorm=1" --try "loss=corr"

The data: `numerflow download --synthetic` with the given size (≥ 500 k training rows and ≥ 300
features by default), prepared with every feature, every auxiliary target and no downsampling;
it is cached under --work so reruns skip generation. Each recipe's wall time covers reading the
prepared Parquet, training and predicting validation; scores are validation mean era-Spearman of
the main target (numerflow.metrics), with the Sharpe of the per-era scores.

Recipes:
  numerflow   `numerflow train` with TrainConfig's defaults (plus any --try variants)
  lightgbm    LGBMRegressor(n_estimators=2000, learning_rate=0.01, max_depth=5, num_leaves=31,
              colsample_bytree=0.1) on the main target, as in Numerai's example notebook
  blog        Linear(n, 256) → ReLU → Linear(256, 1), Adam (lr 1e-3), MSE, 6 epochs, batch 2048,
              float32 per-row Dataset, DataLoader(shuffle=False)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from numerflow import metrics, schema
from numerflow.config import PrepareConfig, SyntheticConfig, TrainConfig
from numerflow.stages.prepare import prepare, read_manifest
from numerflow.synthetic import write_synthetic
from numerflow.stages.train import train

LGBM_PARAMS = dict(n_estimators=2000, learning_rate=0.01, max_depth=5, num_leaves=31, colsample_bytree=0.1)


def prepared_data(work: Path, eras: int, rows_per_era: int, features: int, seed: int) -> Path:
    name = f"e{eras}_r{rows_per_era}_f{features}_s{seed}"
    out = work / name / "prepared"
    if (out / "manifest.json").is_file():
        return out
    data_dir = work / name / "data"
    t0 = time.perf_counter()
    write_synthetic(SyntheticConfig(data_dir=data_dir, eras=eras, rows_per_era=rows_per_era, features=features,
                                    seed=seed))
    prepare(PrepareConfig(data_dir=data_dir, feature_set="all", aux_targets=["all"], downsample=1, out_dir=out))
    print(f"generated and prepared {name} in {time.perf_counter() - t0:.0f} s")
    return out


def score(preds: np.ndarray, target: np.ndarray, eras: np.ndarray) -> dict:
    return metrics.summarize(metrics.per_era_spearman(preds, target, eras))


def read(prepared: Path, split: str):
    manifest = read_manifest(prepared)
    x, frame = schema.read_matrix(prepared / f"{split}.parquet", manifest["features"],
                                  [schema.ERA, manifest["target"]])
    return x, frame[manifest["target"]].to_numpy(np.float32), frame[schema.ERA].astype(str).to_numpy()


def run_numerflow(prepared: Path, work: Path, config: TrainConfig) -> dict:
    result = train(replace(config, data=prepared, out=work / "bench_model.pt"))
    best = result.best
    return {"mean": best["val_mean"], "sharpe": best["val_sharpe"], "seconds": result.seconds,
            "note": f"best epoch {result.best_epoch}/{result.epochs_run}"}


def run_lightgbm(prepared: Path, n_estimators: int) -> dict:
    import lightgbm as lgb

    start = time.perf_counter()
    x, y, _ = read(prepared, "train")
    xv, yv, ev = read(prepared, "validation")
    model = lgb.LGBMRegressor(**{**LGBM_PARAMS, "n_estimators": n_estimators}, verbose=-1)
    model.fit(x, y)
    summary = score(model.predict(xv), yv, ev)
    return {"mean": summary["mean"], "sharpe": summary["sharpe"], "seconds": time.perf_counter() - start,
            "note": f"{n_estimators} trees"}


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x.astype(np.float32), y.reshape(-1, 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def run_blog(prepared: Path, epochs: int = 6, batch_size: int = 2048) -> dict:
    start = time.perf_counter()
    x, y, _ = read(prepared, "train")
    xv, yv, ev = read(prepared, "validation")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(RowDataset(x, y), batch_size=batch_size, shuffle=False)
    for _ in range(epochs):
        for xb, yb in loader:
            loss = nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        preds = model(torch.from_numpy(xv.astype(np.float32))).squeeze(1).numpy()
    summary = score(preds, yv, ev)
    return {"mean": summary["mean"], "sharpe": summary["sharpe"], "seconds": time.perf_counter() - start,
            "note": f"{epochs} epochs, no shuffle"}


def parse_variant(text: str) -> dict:
    """'layers=512,256 batchnorm=1 lr=3e-3' → TrainConfig changes."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    changes = {}
    for item in text.split():
        key, value = item.split("=", 1)
        kind = str(types[key])
        if key in ("layers",):
            changes[key] = [int(v) for v in value.split(",")]
        elif key == "targets":
            changes[key] = value.split(",")
        elif "bool" in kind:
            changes[key] = value.lower() in ("1", "true", "yes")
        elif "int" in kind:
            changes[key] = int(value)
        elif "float" in kind:
            changes[key] = float(value)
        else:
            changes[key] = value
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eras", type=int, default=240)
    parser.add_argument("--rows-per-era", type=int, default=3000)
    parser.add_argument("--features", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/numerflow-bench-quality"))
    parser.add_argument("--n-estimators", type=int, default=LGBM_PARAMS["n_estimators"])
    parser.add_argument("--try", dest="variants", action="append", default=[],
                        help="extra numerflow recipe as key=value pairs of TrainConfig")
    parser.add_argument("--skip", action="append", default=[], help="lightgbm, blog or numerflow")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    prepared = prepared_data(args.work, args.eras, args.rows_per_era, args.features, args.seed)
    manifest = read_manifest(prepared)
    print(f"data: {manifest['rows_train']:,} train rows, {manifest['rows_validation']:,} validation rows, "
          f"{len(manifest['features'])} features, targets {', '.join(manifest['targets'])}")
    defaults = TrainConfig(device="cpu")
    rows = {}
    if "numerflow" not in args.skip:
        rows["numerflow (defaults)"] = run_numerflow(prepared, args.work, defaults)
        print(rows["numerflow (defaults)"])
    for text in args.variants:
        rows[f"numerflow {text}"] = run_numerflow(prepared, args.work, replace(defaults, **parse_variant(text)))
        print(f"{text}: {rows[f'numerflow {text}']}")
    if "lightgbm" not in args.skip:
        rows["lightgbm (Numerai example params)"] = run_lightgbm(prepared, args.n_estimators)
    if "blog" not in args.skip:
        rows["blog MLP"] = run_blog(prepared)
    lgbm = rows.get("lightgbm (Numerai example params)")
    print("\n| recipe | val mean era-Spearman | sharpe | wall s | vs LightGBM corr | vs LightGBM time | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        corr_ratio = f"{r['mean'] / lgbm['mean']:.2f}x" if lgbm else "-"
        time_ratio = f"{r['seconds'] / lgbm['seconds']:.2f}x" if lgbm else "-"
        print(f"| {name} | {r['mean']:.4f} | {r['sharpe']:.2f} | {r['seconds']:.0f} | {corr_ratio} | {time_ratio} "
              f"| {r['note']} |")


if __name__ == "__main__":
    main()
