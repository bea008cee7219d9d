"""What MLflow tracking (issue 28) costs: `numerflow train --help` and `numerflow validate`
start-up with and without mlflow importable, and the time tracking adds to a 6-epoch train.

Every number is a fresh process (median of ROUNDS interleaved rounds, so a busy machine hurts each
variant alike). "mlflow not importable" runs the CLI with sys.modules["mlflow"] = None, as a
machine without the extra; the tracked runs log to a SQLite store in the bench folder that one
warm-up run created first (a user's store exists after their first run).

    .venv/bin/python bench/tracking_overhead.py [--eras 60 --rows-per-era 500 --features 40 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_MLFLOW = "import sys; sys.modules['mlflow'] = None; from numerflow.cli import main; sys.argv[0] = 'numerflow'; main()"
WITH_MLFLOW = "import sys; from numerflow.cli import main; sys.argv[0] = 'numerflow'; main()"


def timed(prelude: str, args: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", prelude, *args], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def interleaved(variants: dict, rounds: int) -> dict:
    """{name: (prelude, args, env)} → {name: median seconds}, the variants alternating each round."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (prelude, args, cwd, env) in variants.items():
            times[name].append(timed(prelude, args, cwd, env))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eras", type=int, default=60)
    parser.add_argument("--rows-per-era", type=int, default=500)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NUMERFLOW_TRACK": "1",
               "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        off = {**env, "NUMERFLOW_TRACK": "0"}
        run = lambda *args, environ=off: subprocess.run([sys.executable, "-c", WITH_MLFLOW, *args], cwd=folder,
                                                         env=environ, check=True, capture_output=True)
        run("download", "--synthetic", "--eras", str(options.eras), "--rows-per-era", str(options.rows_per_era),
            "--features", str(options.features))
        run("prepare", "--dataset", "data/synthetic", "--feature-set", "all", "--downsample", "1")
        train = ["train", "--epochs", "6", "--layers", "64", "--device", "cpu"]
        run(*train)  # the checkpoint validate scores
        validate = ["validate", "--no-report", "--device", "cpu"]
        run(*validate, environ=env)  # creates the store (MLflow's schema migrations), as a user's first run does

        help_times = interleaved({"without mlflow": (WITHOUT_MLFLOW, ["train", "--help"], folder, env),
                                  "with mlflow": (WITH_MLFLOW, ["train", "--help"], folder, env)}, options.rounds)
        validate_times = interleaved({"without mlflow": (WITHOUT_MLFLOW, validate, folder, env),
                                      "with mlflow, --no-track": (WITH_MLFLOW, [*validate, "--no-track"], folder, env),
                                      "with mlflow, tracked": (WITH_MLFLOW, validate, folder, env)}, options.rounds)
        train_times = interleaved({"--no-track": (WITH_MLFLOW, [*train, "--no-track"], folder, env),
                                   "tracked": (WITH_MLFLOW, train, folder, env)}, options.rounds)

    print(f"synthetic data: {options.eras} eras x {options.rows_per_era} rows, {options.features} features; "
          f"median of {options.rounds} interleaved rounds, each a fresh process")
    print(f"{'measure':<44}{'seconds':>9}{'ratio':>8}")
    for title, times, baseline in (("train --help", help_times, "without mlflow"),
                                   ("validate", validate_times, "without mlflow"),
                                   ("6-epoch train", train_times, "--no-track")):
        for name, seconds in times.items():
            print(f"{title + ': ' + name:<44}{seconds:>9.2f}{seconds / times[baseline]:>8.3f}")
    added = train_times["tracked"] - train_times["--no-track"]
    print(f"tracking adds {added:.2f} s to a 6-epoch train: {100 * added / train_times['--no-track']:.1f} % "
          f"(target: under 3 %)")


if __name__ == "__main__":
    main()
