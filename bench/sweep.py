"""A 24-trial `numerflow sweep` with --jobs 2 against `numerflow train`'s defaults, on one synthetic set.

    .venv/bin/python bench/sweep.py [--eras 240 --rows-per-era 3000 --features 300 --trials 24 --jobs 2]

The data: `numerflow download --synthetic` of the given size, prepared with every feature and
every auxiliary target (bench/quality.py's cache under --work, shared with it). The baseline is
one `numerflow train` with TrainConfig's defaults. The sweep searches SPACE below with the
median pruner, objective corr_mean (mean per-era Numerai CORR on validation). Printed: wall time
of each, trials complete/pruned/failed, and validation mean era-Spearman (and CORR) of the
defaults' best epoch against the sweep's best trial's best epoch, as a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPACE = """\
lr = {low = 1e-3, high = 3e-2, log = true}
layers = ["128", "256"]
dropout = {low = 0.0, high = 0.6}
loss = ["corr", "mse"]
weight_decay = {low = 1e-6, high = 1e-2, log = true}

[fixed]
epochs = 4  # the defaults train 6: a sweep spends its budget on trials (2 cores here)
device = "cpu"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, default=240)
    parser.add_argument("--rows-per-era", type=int, default=3000)
    parser.add_argument("--features", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("bench_work"))
    args = parser.parse_args()

    from numerflow.runtime import before_torch_import

    before_torch_import()
    import shutil

    import numerflow
    from numerflow.checkpoint import load_checkpoint
    from quality import prepared_data

    prepared = prepared_data(args.work, args.eras, args.rows_per_era, args.features, args.seed)

    default_best, default_seconds = train_defaults(prepared, args.work)
    print(f"defaults: {default_best['val_mean']:.4f} in {default_seconds:.0f} s", flush=True)

    space = args.work / "sweep_bench.toml"
    space.write_text(SPACE)
    sweeps = args.work / "sweeps"
    shutil.rmtree(sweeps / "bench", ignore_errors=True)
    t0 = time.perf_counter()
    result = numerflow.sweep(space=space, data=prepared, trials=args.trials, jobs=args.jobs, name="bench",
                             sweeps_dir=sweeps, seed=args.seed, say=lambda line: print(line, flush=True))
    sweep_seconds = time.perf_counter() - t0
    checkpoint = load_checkpoint(result.checkpoint)
    best = checkpoint["metrics"][checkpoint["best_epoch"] - 1]
    complete = result.trials - result.pruned - result.failed

    print()
    print(f"data: --eras {args.eras} --rows-per-era {args.rows_per_era} --features {args.features}; "
          f"{args.trials} trials, --jobs {args.jobs}")
    print("| run | wall time | trials (complete / pruned / failed) | val mean era-Spearman | val CORR mean | settings |")
    print("|---|---|---|---|---|---|")
    print(f"| `numerflow train` defaults | {default_seconds:.0f} s | 1 | {default_best['val_mean']:.4f} | | "
          f"layers 256, dropout 0.5, corr loss, lr 0.01, wd 0, 6 epochs |")
    params = ", ".join(f"{k} {_short(v)}" for k, v in result.best.items() if k in checkpoint["train_config"]
                       and k not in ("epochs",) and k in result.best and k not in ("number", "state", "score"))
    print(f"| sweep, best of {args.trials} (trial {result.best['number']}) | {sweep_seconds:.0f} s | "
          f"{complete} / {result.pruned} / {result.failed} | {best['val_mean']:.4f} | {best['corr_mean']:.4f} | {params} |")
    print(f"\nratio: sweep best / defaults val mean era-Spearman = {best['val_mean'] / default_best['val_mean']:.2f}x; "
          f"sweep wall time = {sweep_seconds / default_seconds:.1f}x one default training")


def train_defaults(prepared: Path, work: Path) -> tuple[dict, float]:
    """`numerflow train` with the defaults: its best epoch's metrics and wall time (kept in
    work/sweep_defaults.json, so a rerun of the sweep alone skips it)."""
    import json

    import numerflow

    cache = work / f"sweep_defaults_{prepared.parent.name}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return saved["best"], saved["seconds"]
    t0 = time.perf_counter()
    result = numerflow.train(data=prepared, out=work / "sweep_defaults.pt", device="cpu", say=None)
    seconds = time.perf_counter() - t0
    cache.write_text(json.dumps({"best": result.best, "seconds": seconds}))
    return result.best, seconds


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
