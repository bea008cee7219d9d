"""Training throughput of numerflow's loop against two baselines, in one invocation, plus the peak
memory of `numerflow train` on a large prepared set; with --command, `numerflow train`'s whole epoch
(per-epoch validation included) against a bare float32 loop that also scores validation each epoch.

    .venv/bin/python bench/train_throughput.py [--rows 500000] [--features 780] [--max-steps 0]
    .venv/bin/python bench/train_throughput.py --rss-rows 1000000   # also the peak-memory check
    .venv/bin/python bench/train_throughput.py --command [--rows 1000000] [--rounds 3] [--precisions fp32,bf16]

--command (the user's epoch): a prepared folder of --rows training + --valid-rows validation rows
(bench/prepared_data.py), then --rounds interleaved rounds of
  bare       a subprocess: the prepared rows read once and cast to a float32 tensor, then per epoch
             the plain network (780 → 256 → 1, MSE, AdamW) over in-order batches and one float32
             forward pass over the validation rows
  plain      `numerflow train --loss mse --no-batchnorm --dropout 0 --layers 256 --batch-size 2048`
  recipe     `numerflow train` with the default recipe
(each --epochs epochs; numerflow's from the epoch_seconds its model.json records, which include
the per-epoch validation; each recipe also in every --precisions). Targets: plain ≥ 0.85x bare,
recipe ≥ 0.65x bare, as rows of training per second of whole epoch.

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
import os
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


# --- --command: whole `numerflow train` epochs against a bare loop that validates each epoch ----------

PLAIN = ["--loss", "mse", "--no-batchnorm", "--dropout", "0", "--layers", "256", "--batch-size", "2048"]
RECIPE = ["--layers", "256", "--batch-size", "2048"]  # every other option: train's default


def bare_child(folder: Path, epochs: int) -> None:
    """The bare float32 loop with per-epoch validation (run in its own process): prints its epochs' seconds."""
    from numerflow.training.data import read_manifest, read_split

    names = read_manifest(folder)["features"]
    train, valid = (read_split(folder / f"{name}.parquet", names, ["target"]) for name in ("train", "validation"))
    x, y = torch.from_numpy(train.features.astype(np.float32)), torch.from_numpy(train.targets.astype(np.float32))
    v = torch.from_numpy(valid.features.astype(np.float32))
    model, optimizer = fresh_model(x.shape[1], [256])
    loss_fn, batch, seconds = nn.MSELoss(), 2048, []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for step in range(len(x) // batch):
            loss = loss_fn(model(x[step * batch:(step + 1) * batch]), y[step * batch:(step + 1) * batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            scores = torch.cat([model(v[i:i + 16384])[:, 0] for i in range(0, len(v), 16384)]).numpy()
        seconds.append(time.perf_counter() - start)
    assert np.isfinite(scores).all()
    print(json.dumps({"epoch_seconds": seconds, "rows": len(x)}))


def command_epoch(folder: Path, name: str, options: list[str], epochs: int) -> dict:
    """One `numerflow train` (or the bare child); mean seconds per epoch, rows/s and the best validation score."""
    if name == "bare":
        # numerflow's own OpenMP waiting (runtime.before_torch_import), so both wait for kernels alike
        from numerflow.runtime import OPENMP_WAITING

        env = {**OPENMP_WAITING, **os.environ}
        done = subprocess.run([sys.executable, __file__, "--bare-child", str(folder), "--epochs", str(epochs)],
                              check=True, capture_output=True, text=True, env=env)
        record = json.loads(done.stdout.splitlines()[-1])
        score = None
    else:
        out = folder / f"{name}.pt"
        subprocess.run([sys.executable, "-m", "numerflow", "train", "--data", str(folder), "--out", str(out),
                        "--epochs", str(epochs), "--device", "cpu", *options], check=True, capture_output=True)
        record = json.loads(out.with_suffix(".json").read_text())
        record["rows"] = record["rows_train"]
        score = record["metrics"][record["best_epoch"] - 1]["val_mean"]
    epoch = sum(record["epoch_seconds"]) / len(record["epoch_seconds"])
    return {"epoch": epoch, "rows_s": record["rows"] / epoch, "score": score}


def command_rounds(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from prepared_data import write_prepared

    runs = {"bare": [], "plain": []}
    for precision in args.precisions.split(","):
        runs[f"recipe {precision}"] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seconds = write_prepared(folder, args.rows, args.valid_rows, args.features)
        print(f"wrote {args.rows:,} training + {args.valid_rows:,} validation rows x {args.features} in {seconds:.0f} s; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of "
              f"{', '.join(runs)} ({args.epochs} epochs each)", flush=True)
        for round_number in range(args.rounds):
            for name in runs:  # interleaved: one of each per round
                options = (PLAIN + ["--precision", "fp32"] if name == "plain"
                           else RECIPE + ["--precision", name.split()[-1]] if name != "bare" else [])
                runs[name].append(command_epoch(folder, name.replace(" ", "_"), options, args.epochs))
                run = runs[name][-1]
                print(f"  round {round_number + 1} {name:<12} {run['epoch']:6.2f} s/epoch {run['rows_s']:>9,.0f} rows/s"
                      + (f"  validation {run['score']:.4f}" if run["score"] is not None else ""), flush=True)
    print("\n| run | s/epoch | rows/s | vs bare (same round) | validation era-Spearman |\n|---|---:|---:|---:|---:|")
    for name, rounds in runs.items():
        ratios = [run["rows_s"] / bare["rows_s"] for run, bare in zip(rounds, runs["bare"])]
        scores = [run["score"] for run in rounds if run["score"] is not None]
        print(f"| {name} | {spread([r['epoch'] for r in rounds], '.2f')} | {spread([r['rows_s'] for r in rounds], ',.0f')} "
              f"| {spread(ratios, '.2f')}x | {spread(scores, '.4f') if scores else ''} |")
    for name, target in (("plain", 0.85), (f"recipe {args.precisions.split(',')[0]}", 0.65)):
        ratios = [run["rows_s"] / bare["rows_s"] for run, bare in zip(runs[name], runs["bare"])]
        print(f"{name}: median {np.median(ratios):.2f}x the bare loop (target >= {target}x: "
              f"{'OK' if np.median(ratios) >= target else 'BELOW'})")


def spread(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}" if len(values) > 1 else format(values[0], fmt)


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
    parser.add_argument("--command", action="store_true", help="whole `numerflow train` epochs against a bare loop")
    parser.add_argument("--valid-rows", type=int, default=250_000, help="--command: validation rows")
    parser.add_argument("--rounds", type=int, default=3, help="--command: interleaved rounds")
    parser.add_argument("--epochs", type=int, default=2, help="--command: epochs per run")
    parser.add_argument("--precisions", default="fp32", help="--command: the recipe in each, e.g. fp32,bf16")
    parser.add_argument("--bare-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        return bare_child(args.bare_child, args.epochs)
    if args.command:
        return command_rounds(args)
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
