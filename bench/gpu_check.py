"""A prepared check of numerflow on whatever CUDA device is present, in one run, as whole `numerflow`
commands (subprocesses, as users run them):

  1. synthetic prepared data, 1M training rows x 780 int8 features (+ 250k validation rows, a live
     file), written straight from numpy (bench/prepared_data.py);
  2. `numerflow train` of the default recipe, 2 epochs, in fp32 and in bf16: rows/s (per-epoch
     validation included, from the epoch_seconds train records), peak GPU memory
     (torch.cuda.max_memory_allocated in the train process), validation era-Spearman of each;
  3. `numerflow validate --model` and `numerflow predict` with the bf16 checkpoint;
  4. `numerflow sweep`, 4 trials with --jobs 2 on the one device;

and prints one table. With no CUDA device it says so in one line and exits 0.

    .venv/bin/python bench/gpu_check.py                              # the CUDA check (under 5 min)
    .venv/bin/python bench/gpu_check.py --device cpu --rows 20000    # every step on the CPU (a dry run)

The dry run reports the train processes' peak RSS where the CUDA run reports peak GPU memory.
Needs only the repository and README's install command.
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

BENCH = Path(__file__).resolve().parent
MIB = 1 << 20
# `python -m numerflow ...` with the process's peaks written to a JSON file when the command ends:
# torch.cuda.max_memory_allocated (the CUDA caching allocator's high-water mark) and ru_maxrss.
MEASURED = """
import json, resource, runpy, sys
out = sys.argv.pop(1)
code = 0
try:
    runpy.run_module("numerflow", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
finally:
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
    peaks = {"gpu": torch.cuda.max_memory_allocated() if cuda else None,
             "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    open(out, "w").write(json.dumps(peaks))
sys.exit(code)
"""
SPACE = """\
lr = [0.003, 0.01, 0.02, 0.03]

[fixed]
epochs = {epochs}
"""


def numerflow(*args, cwd: Path, measured: Path | None = None) -> tuple[float, str]:
    """Run one numerflow command; (wall seconds, stdout). A failure prints its output and stops."""
    command = [sys.executable, "-m", "numerflow", *map(str, args)]
    if measured is not None:
        command = [sys.executable, "-c", MEASURED, str(measured), *map(str, args)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"`numerflow {' '.join(map(str, args))}` failed (exit {done.returncode}):\n"
                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout


def train(folder: Path, precision: str, device: str, epochs: int, rows: int) -> dict:
    out = folder / f"{precision}.pt"
    seconds, _ = numerflow("train", "--data", folder, "--out", out, "--epochs", epochs, "--precision", precision,
                           "--device", device, cwd=folder, measured=folder / f"{precision}.peaks.json")
    record = json.loads(out.with_suffix(".json").read_text())
    peaks = json.loads((folder / f"{precision}.peaks.json").read_text())
    epoch = sum(record["epoch_seconds"]) / len(record["epoch_seconds"])
    best = record["metrics"][record["best_epoch"] - 1]
    return {"step": f"train {precision} ({record['train_config']['precision']} used), {epochs} epochs",
            "wall": seconds, "epoch": epoch, "rows_s": rows / epoch, "peak": peaks["gpu"] or peaks["rss"],
            "score": best["val_mean"], "checkpoint": out}


def validate(folder: Path, checkpoint: Path, device: str) -> dict:
    seconds, stdout = numerflow("validate", "--model", checkpoint, "--data", folder / "validation.parquet",
                                "--device", device, "--json", "--no-report", cwd=folder)
    return {"step": f"validate --model {checkpoint.name} (float64)", "wall": seconds,
            "score": json.loads(stdout)["spearman"]["mean"]}


def predict(folder: Path, checkpoint: Path, device: str) -> dict:
    out = folder / "predictions.csv"
    seconds, _ = numerflow("predict", "--model", checkpoint, "--data", folder / "live.parquet", "--out", out,
                           "--device", device, cwd=folder)
    rows = sum(1 for _ in out.open()) - 1
    return {"step": f"predict live ({rows:,} rows)", "wall": seconds}


def sweep(folder: Path, device: str, epochs: int) -> dict:
    space = folder / "space.toml"
    space.write_text(SPACE.format(epochs=epochs))
    seconds, _ = numerflow("sweep", "--space", space, "--data", folder, "--trials", 4, "--jobs", 2, "--pruner", "none",
                           "--device", device, "--sweeps-dir", folder / "sweeps", "--name", "check", cwd=folder)
    best = json.loads((folder / "sweeps" / "check" / "best.json").read_text())
    return {"step": f"sweep 4 trials x {epochs} epochs, --jobs 2 (best corr_mean)", "wall": seconds,
            "score": best["score"]}


def table(rows: list[dict], peak_name: str) -> str:
    def cell(value, fmt):
        return "" if value is None else format(value, fmt)

    lines = [f"| step | wall s | s/epoch | rows/s | {peak_name} MiB | validation score |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        peak = row.get("peak")
        lines.append(f"| {row['step']} | {row['wall']:.1f} | {cell(row.get('epoch'), '.2f')} | "
                     f"{cell(row.get('rows_s'), ',.0f')} | {cell(peak / MIB if peak else None, ',.0f')} | "
                     f"{cell(row.get('score'), '.4f')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default; needs a CUDA device) or cpu (a dry run)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows (validation: a quarter)")
    parser.add_argument("--features", type=int, default=780)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    import torch

    if args.device is None:
        if not torch.cuda.is_available():
            print(f"No CUDA device (torch {torch.__version__} sees none): bench/gpu_check.py did nothing.")
            return 0
        args.device = "cuda"
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU (dry run)"
    print(f"numerflow GPU check on {device_name}, torch {torch.__version__}: {args.rows:,} training rows x "
          f"{args.features} features", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, BENCH / "prepared_data.py", folder, "--rows", str(args.rows),
                        "--valid-rows", str(args.rows // 4), "--features", str(args.features)], check=True,
                       stdout=subprocess.DEVNULL)
        rows = [{"step": "synthetic prepared data (numpy → Parquet)", "wall": time.perf_counter() - t0}]
        for precision in ("fp32", "bf16"):
            rows.append(train(folder, precision, args.device, args.epochs, args.rows))
            print(f"  {rows[-1]['step']}: {rows[-1]['wall']:.1f} s", flush=True)
        bf16 = rows[-1]["checkpoint"]
        for step in (lambda: validate(folder, bf16, args.device), lambda: predict(folder, bf16, args.device),
                     lambda: sweep(folder, args.device, args.epochs)):
            rows.append(step())
            print(f"  {rows[-1]['step']}: {rows[-1]['wall']:.1f} s", flush=True)
    print()
    print(table(rows, "peak GPU" if args.device.startswith("cuda") else "peak RSS"))
    fp32, bf16_run = rows[1], rows[2]
    print(f"\nbf16 / fp32 rows/s: {bf16_run['rows_s'] / fp32['rows_s']:.2f}x; validation score "
          f"{bf16_run['score']:.4f} vs {fp32['score']:.4f}; all steps in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
