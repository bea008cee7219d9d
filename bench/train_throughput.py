"""Training throughput of numerflow's loop against two baselines, in one invocation, plus the peak
memory of `numerflow train` on a large prepared set.

    .venv/bin/python bench/train_throughput.py [--rows 500000] [--features 780] [--max-steps 0]
    .venv/bin/python bench/train_throughput.py --rss-rows 1000000   # also the peak-memory check

Same data (random int8 features 0..4, one float target), same MLP (780 → 256 → 1), same batch
(2048), same optimiser (AdamW), one epoch each:
  numerflow  numerflow.training.loop.run_epoch with train's optimizer and one-cycle schedule: int8 rows
             gathered by a shuffled index into a reused buffer and cast to float32 per step (the data
             stays int8: 1 byte per value)
  blog       the blog's loop: a per-row Dataset whose __getitem__ returns float32 numpy rows,
             DataLoader(batch_size, shuffle=False), default collate
  bare       the compute limit: a pre-cast float32 tensor (4 bytes per value) sliced in order
  recipe     `numerflow train`'s default recipe (TrainConfig's defaults: BatchNorm, dropout, corr loss
             on era-wise batches; --rows-per-era rows per era) through the same run_epoch
Prints rows/s and each as a ratio of the bare loop. Targets: numerflow ≥ 0.8 × bare; the default
recipe ≥ 0.6 × bare (the same-width MSE network in a bare loop).

Peak memory: writes a prepared folder of --rss-rows × --features int8 rows (plus a small
validation file) and runs `numerflow train --epochs 1` in a subprocess; its ru_maxrss is compared
with the budget 1.5 × int8 feature bytes + 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from numerflow.config import TrainConfig
from numerflow.model import ModelConfig, build_model
from numerflow.training.loop import make_optimizer, make_scheduler, run_epoch
from numerflow.training.data import Rows, epoch_batches

GIB = 1 << 30
# Linux carries the parent's high-water RSS into a child spawned from it (exec records the old
# mm's peak), so this large process cannot read its child's peak itself: a small wrapper spawns
# `numerflow train` and prints that child's own ru_maxrss (KiB) from wait4.
MEASURE_CHILD = """
import os, sys
actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[1:]], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
if os.waitstatus_to_exitcode(status):
    sys.exit("numerflow train failed")
print(usage.ru_maxrss)
"""


def make_data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, (rows, features), dtype=np.int8)
    y = rng.choice(np.array([0, .25, .5, .75, 1], dtype=np.float32), size=(rows, 1), p=[.05, .2, .5, .2, .05])
    return x, y


def fresh_model(features: int, layers: list[int]):
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=features, layers=layers))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def time_numerflow(x: np.ndarray, y: np.ndarray, config: TrainConfig, max_steps: int,
                   rows_per_era: int = 0) -> tuple[float, int]:
    """One epoch of run_epoch with `config`'s model and loss; returns (seconds, rows trained)."""
    rows = len(x) if not max_steps else min(len(x), max_steps * config.batch_size)
    x_t, y_t = torch.from_numpy(x[:rows]), torch.from_numpy(y[:rows])
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_features=x.shape[1], layers=config.layers, dropout=config.dropout,
                                    batchnorm=config.batchnorm, **recipe_model_options(config)))
    codes = np.arange(rows, dtype=np.int64) // rows_per_era if rows_per_era else np.zeros(rows, dtype=np.int64)
    order, slices = epoch_batches(rows, codes, config.batch_size, config.loss, config.seed, 0)
    steps = len(slices)
    # The optimizer and one-cycle schedule `numerflow train` builds, stepped by its own epoch loop.
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps)
    start = time.perf_counter()
    run_epoch(model, optimizer, scheduler, Rows(x_t, y_t, codes), config, epoch=0)
    return time.perf_counter() - start, len(order)


def recipe_model_options(config: TrainConfig) -> dict:
    """ModelConfig options beyond the ones every version has."""
    return {"input_batchnorm": config.input_batchnorm}


class BlogDataset(torch.utils.data.Dataset):
    """The blog's per-row dataset: a float32 numpy copy, one row per __getitem__."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x.astype(np.float32), y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def time_blog(x: np.ndarray, y: np.ndarray, batch_size: int, layers: list[int], max_steps: int) -> tuple[float, int]:
    loader = torch.utils.data.DataLoader(BlogDataset(x, y), batch_size=batch_size, shuffle=False)
    model, optimizer = fresh_model(x.shape[1], layers)
    loss_fn, seen = nn.MSELoss(), 0
    start = time.perf_counter()
    for step, (xb, yb) in enumerate(loader):
        if max_steps and step >= max_steps:
            break
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(xb)
    return time.perf_counter() - start, seen


def time_bare(x: np.ndarray, y: np.ndarray, batch_size: int, layers: list[int], max_steps: int) -> tuple[float, int]:
    x_f, y_f = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    model, optimizer = fresh_model(x.shape[1], layers)
    loss_fn, seen = nn.MSELoss(), 0
    steps = len(x) // batch_size if not max_steps else min(max_steps, len(x) // batch_size)
    start = time.perf_counter()
    for step in range(steps):
        xb, yb = x_f[step * batch_size:(step + 1) * batch_size], y_f[step * batch_size:(step + 1) * batch_size]
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(xb)
    return time.perf_counter() - start, seen


def write_prepared(folder: Path, rows: int, valid_rows: int, features: int, eras: int = 100) -> None:
    """A prepared folder in the layout prepare writes, streamed in chunks (bounded memory here)."""
    names = [f"feature_{i:04d}" for i in range(features)]
    fields = [pa.field("era", pa.string())] + [pa.field(n, pa.int8()) for n in names] + [pa.field("target", pa.float32())]
    rng = np.random.default_rng(0)
    for name, n, first_era in (("train.parquet", rows, 1), ("validation.parquet", valid_rows, eras + 5)):
        per_era = max(1, n // eras)
        with pq.ParquetWriter(folder / name, pa.schema(fields)) as writer:
            for start in range(0, n, 65536):
                stop = min(n, start + 65536)
                era = np.minimum(np.arange(start, stop) // per_era, eras - 1) + first_era
                x = rng.integers(0, 5, (stop - start, features), dtype=np.int8)
                y = ((x[:, 0] + rng.integers(0, 5, stop - start)) / 8).astype(np.float32)
                cols = [pa.array([f"{e:04d}" for e in era])] + [pa.array(x[:, j]) for j in range(features)] + [pa.array(y)]
                writer.write_table(pa.table(cols, schema=pa.schema(fields)))
    (folder / "manifest.json").write_text(json.dumps({"features": names, "target": "target", "targets": ["target"]}))


def peak_rss(rows: int, features: int, valid_rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        write_prepared(folder, rows, valid_rows, features)
        print(f"\nwrote {rows:,} x {features} prepared rows in {time.perf_counter() - t0:.0f} s")
        command = [sys.executable, "-c", MEASURE_CHILD, "-m", "numerflow", "train", "--data", str(folder),
                   "--out", str(folder / "m.pt"), "--epochs", "1", "--device", "cpu"]
        t0 = time.perf_counter()
        peak = int(subprocess.run(command, check=True, capture_output=True, text=True).stdout) * 1024  # KiB
        seconds = time.perf_counter() - t0
    int8_bytes = (rows + valid_rows) * features
    budget = 1.5 * int8_bytes + GIB
    print(f"peak RSS of `numerflow train --epochs 1` on {rows:,} train + {valid_rows:,} validation rows x "
          f"{features} features ({seconds:.0f} s):")
    print(f"  int8 feature bytes {int8_bytes / GIB:.2f} GiB; float32 would be {4 * int8_bytes / GIB:.2f} GiB")
    print(f"  peak RSS {peak / GIB:.2f} GiB; budget 1.5 x int8 + 1 GiB = {budget / GIB:.2f} GiB -> "
          f"{'OK' if peak <= budget else 'OVER'} ({peak / budget:.2f} x budget)")


def describe(config: TrainConfig) -> str:
    return (f"batchnorm={config.batchnorm}, dropout {config.dropout}, loss {config.loss}, "
            + ", ".join(f"{k}={v}" for k, v in recipe_model_options(config).items())).rstrip(", ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=780)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--layers", default="256")
    parser.add_argument("--max-steps", type=int, default=0, help="cap on steps per loop (0: a full epoch)")
    parser.add_argument("--rows-per-era", type=int, default=5000, help="era size for the default recipe's corr batches")
    parser.add_argument("--rss-rows", type=int, default=0, help="also measure peak RSS of train on this many rows")
    parser.add_argument("--rss-valid-rows", type=int, default=100_000)
    args = parser.parse_args()
    layers = [int(w) for w in args.layers.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rows:,} rows x {args.features} "
          f"features, batch {args.batch_size}, layers {layers}")
    x, y = make_data(args.rows, args.features)
    config = TrainConfig(layers=layers, batch_size=args.batch_size, epochs=1, lr=1e-3, loss="mse",
                         batchnorm=False, dropout=0.0)  # the same plain network, shuffled batches
    recipe = TrainConfig(layers=layers, batch_size=args.batch_size, epochs=1)  # every other option: the default
    results = {}
    # Bare first and last: the machine is shared, so the baseline brackets the others.
    for name, fn in (("bare", lambda: time_bare(x, y, args.batch_size, layers, args.max_steps)),
                     ("numerflow", lambda: time_numerflow(x, y, config, args.max_steps)),
                     ("recipe", lambda: time_numerflow(x, y, recipe, args.max_steps, args.rows_per_era)),
                     ("blog", lambda: time_blog(x, y, args.batch_size, layers, args.max_steps)),
                     ("bare ", lambda: time_bare(x, y, args.batch_size, layers, args.max_steps))):
        seconds, rows = fn()
        results[name] = rows / seconds
        print(f"  {name.strip():<10} {rows:>9,} rows in {seconds:6.1f} s")
    bare = max(results["bare"], results["bare "])
    print(f"\n| loop | storage | rows/s | vs bare float32 |\n|---|---|---:|---:|")
    storage = {"numerflow": "int8, shuffled gather", "blog": "float32 numpy, per-row Dataset",
               "bare": "float32 tensor, in order", "recipe": "int8, era-wise batches"}
    for name in ("numerflow", "recipe", "blog", "bare"):
        rate = bare if name == "bare" else results[name]
        print(f"| {name} | {storage[name]} | {rate:,.0f} | {rate / bare:.2f}x |")
    print(f"\ndefault recipe ({describe(recipe)}) vs the same-width MSE network in a bare loop: "
          f"{results['recipe']:,.0f} / {bare:,.0f} rows/s = {results['recipe'] / bare:.2f}x "
          f"(target >= 0.60x: {'OK' if results['recipe'] >= 0.6 * bare else 'BELOW'})")
    if args.rss_rows:
        del x, y
        peak_rss(args.rss_rows, args.features, args.rss_valid_rows)


if __name__ == "__main__":
    main()
