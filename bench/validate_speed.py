"""How fast numerflow scores eras, against the blog's pandas era_spearman in the same run.

    .venv/bin/python bench/validate_speed.py [--repeat 3] [--whole-only]

Two shapes: 2,000,000 rows in 500 eras (the size of a validation run) and 20,000 eras of 100 rows
(where per-group Python overhead dominates). Each timing is the best of --repeat runs. Prints
seconds and each time as a ratio of the blog's. The floor is one sort of the predictions within
their eras (np.lexsort on (era, prediction), and numerflow's sort of every era at once on a 2-D
grid, metrics.ranking._EraLayout.sort_within_eras): Spearman cannot be computed without it.

Whole process: the same 2,000,000 rows written as Numerai files (V.parquet: id, era, data_type,
target; P.parquet: id, prediction) in four cases: Numerai's ids ("n" + 15 hex digits) and other
text ids ("n0".."n1999999", as hand-made or older files have), each with the predictions in the
data's row order and shuffled. Then `numerflow validate --predictions P.parquet --data V.parquet
--json --no-report` and the blog's script (pandas.read_parquet both, join on id,
groupby("era").apply(spearmanr)) each run as a fresh subprocess, interpreter start and imports
included: --repeat rounds, each running every case, the blog then numerflow (interleaved, so each
pair shares the machine's load); each round's ratio is printed as a spread (min-max).
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
import pandas as pd
from scipy.stats import spearmanr

from numerflow import metrics


def make_data(n_eras: int, rows_per_era: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_eras * rows_per_era
    target = rng.choice(np.array([0, .25, .5, .75, 1], dtype=np.float32), size=n, p=[.05, .2, .5, .2, .05])
    pred = (rng.normal(size=n) * 0.2 + target * 0.01).astype(np.float32)  # a model's float32 output
    eras = np.repeat([f"{i:04d}" for i in range(1, n_eras + 1)], rows_per_era)  # files are era-ordered
    return pd.DataFrame({"era": eras, "pred": pred, "target": target})


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def blog_era_spearman(df: pd.DataFrame) -> float:
    return df.groupby("era").apply(lambda d: spearmanr(d.pred, d.target)[0]).mean()


def run(n_eras: int, rows_per_era: int, repeat: int) -> list[tuple[str, float]]:
    df = make_data(n_eras, rows_per_era)
    pred, target, era_labels = df["pred"].to_numpy(), df["target"].to_numpy(), df["era"].to_numpy()
    groups = metrics.group_eras(era_labels)
    # Same answer first: a benchmark of a wrong result is worthless.
    ours = np.nanmean(metrics.per_era_spearman(pred, target, era_labels).values)
    assert abs(ours - blog_era_spearman(df)) < 1e-9, "numerflow and the blog disagree"
    timings = [
        ("blog groupby.apply(spearmanr)", best_of(repeat, lambda: blog_era_spearman(df))),
        ("numerflow Spearman (from era labels)", best_of(repeat, lambda: metrics.per_era_spearman(pred, target, era_labels))),
        ("numerflow Spearman (eras grouped once)", best_of(repeat, lambda: metrics.per_era_spearman(pred, target, groups))),
        ("numerflow Spearman + CORR (from labels)", best_of(repeat, lambda: metrics.per_era_scores(pred, target, era_labels))),
        ("floor: np.lexsort((pred, era))", best_of(repeat, lambda: np.lexsort((pred, groups.codes)))),
        ("floor: one argsort per era (numerflow)", best_of(repeat, lambda: metrics.ranking._EraLayout(groups).sort_within_eras(pred))),
    ]
    return timings


BLOG_SCRIPT = """
import sys
import pandas as pd
from scipy.stats import spearmanr
data = pd.read_parquet(sys.argv[1])
data = data[data["data_type"] == "validation"]
df = data.join(pd.read_parquet(sys.argv[2]), how="inner")
print(df.groupby("era").apply(lambda d: spearmanr(d["prediction"], d["target"])[0]).mean())
"""


ID_SHAPES = {"Numerai ids": lambda rng, n: [f"n{i:015x}" for i in rng.choice(1 << 60, n, replace=False)],
             "other ids": lambda rng, n: [f"n{i}" for i in range(n)]}  # hand-made or older files' ids


def write_files(folder: Path, n_eras: int, rows_per_era: int) -> list[tuple[str, Path, Path]]:
    """For each id shape, V.parquet (id index, era, data_type, target) and two P.parquet (id,
    prediction): in the data's row order and shuffled. Returns (case, data, predictions)."""
    df = make_data(n_eras, rows_per_era)
    n = len(df)
    rng = np.random.default_rng(1)
    cases = []
    for shape, make_ids in ID_SHAPES.items():
        ids = pd.Index(make_ids(rng, n), name="id")
        data = pd.DataFrame({"era": df["era"].to_numpy(), "data_type": "validation",
                             "target": df["target"].to_numpy()}, index=ids)
        stem = shape.split()[0].lower()
        data.to_parquet(folder / f"V_{stem}.parquet")
        for order_name, order in (("in row order", np.arange(n)), ("shuffled", rng.permutation(n))):
            preds = pd.DataFrame({"prediction": df["pred"].to_numpy()[order]}, index=ids[order])
            path = folder / f"P_{stem}_{order_name.split()[0]}.parquet"
            preds.to_parquet(path)
            cases.append((f"{shape}, {order_name}", folder / f"V_{stem}.parquet", path))
    return cases


def timed_process(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, steadier on a shared machine) and stdout of a child."""
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    start, start_cpu = time.perf_counter(), cpu()
    out = subprocess.run(args, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - start, cpu() - start_cpu, out.stdout


def whole_process(n_eras: int, rows_per_era: int, rounds: int) -> None:
    """numerflow validate and the blog's script, each as a whole fresh process, on the four cases
    (two id shapes x two orders): every round runs every case, the blog then numerflow, so the
    pair shares the machine's load. Prints each round's ratio (blog / numerflow) and their spread."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = write_files(Path(tmp), n_eras, rows_per_era)
        seconds = {case: {"blog": [], "numerflow": [], "blog CPU": [], "numerflow CPU": []} for case, _, _ in cases}
        for _ in range(rounds):
            for case, v, p in cases:
                ours = [sys.executable, "-m", "numerflow", "validate", "--predictions", str(p), "--data", str(v),
                        "--json", "--no-report"]
                blog = [sys.executable, "-c", BLOG_SCRIPT, str(v), str(p)]
                means = {}
                for name, args in (("blog", blog), ("numerflow", ours)):
                    wall, cpu, out = timed_process(args)
                    seconds[case][name].append(wall)
                    seconds[case][f"{name} CPU"].append(cpu)
                    means[name] = (float(out.strip().splitlines()[-1]) if name == "blog"
                                   else json.loads(out)["spearman"]["mean"])
                assert abs(means["numerflow"] - means["blog"]) < 1e-9, f"{case}: numerflow and the blog disagree: {means}"
    print(f"| ids, predictions' order ({n_eras * rows_per_era:,} rows, {n_eras} eras) | blog script wall | "
          f"numerflow validate wall | blog / numerflow, each round | CPU: blog / numerflow, each round |")
    print("|---|---:|---:|---:|---:|")
    for case, t in seconds.items():
        ratios = [b / o for b, o in zip(t["blog"], t["numerflow"])]
        cpu_ratios = [b / o for b, o in zip(t["blog CPU"], t["numerflow CPU"])]
        print(f"| {case} | {spread(t['blog'], 's')} | {spread(t['numerflow'], 's')} | "
              f"**{spread(ratios, 'x')}** | {spread(cpu_ratios, 'x')} |", flush=True)


def spread(values: list[float], unit: str) -> str:
    """min-max of a measure over the rounds (its spread on a shared machine)."""
    low, high = min(values), max(values)
    return f"{low:.2f}-{high:.2f}{unit}" if len(values) > 1 else f"{low:.2f}{unit}"


def print_table(shape: str, timings: list[tuple[str, float]]) -> None:
    """Rows of `timings` with each one's ratio to the first (the blog's)."""
    for name, seconds in timings:
        baseline = timings[0][1]
        print(f"| {shape} | {name} | {seconds:.3f} | {baseline / seconds:.1f}x |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--whole-only", action="store_true", help="only the whole-process comparison")
    args = parser.parse_args()
    whole_process(500, 4000, args.repeat)
    if args.whole_only:
        return
    print()
    print("| shape | what | seconds | blog / this |")
    print("|---|---|---:|---:|")
    for n_eras, rows in [(500, 4000), (20000, 100)]:
        print_table(f"{n_eras} eras x {rows} rows", run(n_eras, rows, args.repeat))


if __name__ == "__main__":
    main()
