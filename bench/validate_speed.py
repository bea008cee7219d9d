"""How fast numerflow scores eras, against the blog's pandas era_spearman in the same run.

    .venv/bin/python bench/validate_speed.py [--repeat 3]

Two shapes: 2,000,000 rows in 500 eras (the size of a validation run) and 20,000 eras of 100 rows
(where per-group Python overhead dominates). Each timing is the best of --repeat runs. Prints
seconds and each time as a ratio of the blog's. The floor is one sort of the predictions within
their eras (np.lexsort on (era, prediction), and numerflow's sort of every era at once on a 2-D
grid, metrics._EraLayout.sort_within_eras): Spearman cannot be computed without it.
"""

from __future__ import annotations

import argparse
import time

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
        ("floor: one argsort per era (numerflow)", best_of(repeat, lambda: metrics._EraLayout(groups).sort_within_eras(pred))),
    ]
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| shape | what | seconds | blog / this |")
    print("|---|---|---:|---:|")
    for n_eras, rows in [(500, 4000), (20000, 100)]:
        timings = run(n_eras, rows, args.repeat)
        blog = timings[0][1]
        for name, seconds in timings:
            print(f"| {n_eras} eras x {rows} rows | {name} | {seconds:.3f} | {blog / seconds:.1f}x |")


if __name__ == "__main__":
    main()
