"""How close numerflow's feature exposure + FNC come to the Gram-matrix arithmetic they need.

    .venv/bin/python bench/exposure_speed.py [--eras 200] [--rows 5000] [--features 780] [--chunk 20]

int8 features 0..4 (as Numerai ships them), era-ordered rows. Times, in the same run:
- numerflow: metrics.feature_scores (max/RMS exposure and FNC per era);
- the arithmetic floor: per era, the int8 block cast to float64, its Gram matrix x^T x, x^T y for
  the two vectors (raw predictions for exposure, gaussianised ranks for FNC), one solve of the
  normal equations and the fitted values x b, with numpy, nothing else;
- the Gram matrices alone (x^T x per era, cast included), the one product that dominates.
Prints seconds, per-era milliseconds and numerflow's time as a ratio of each (target: <= 2x the
floor).
"""

from __future__ import annotations

import argparse
import numpy as np

from numerflow import metrics
from validate_speed import best_of  # bench/ is on the path when run as a script


def make_data(n_eras: int, rows: int, n_features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_eras * rows
    features = rng.integers(0, 5, size=(n, n_features), dtype=np.int8)
    signal = features[:, :20].astype(np.float32).sum(axis=1)
    prediction = (signal + rng.normal(scale=5.0, size=n)).astype(np.float32)
    target = np.clip(np.round((signal - signal.mean()) / 16 + 2 + rng.normal(size=n)) / 4, 0, 1)
    eras = np.repeat(np.arange(1, n_eras + 1), rows)
    return features, prediction, target, eras


def gram_floor(features, prediction, eras, rows: int, solve: bool) -> None:
    """The per-era products feature_scores needs (or only the Grams), nothing else."""
    gauss = metrics.gaussianize_within_eras(prediction, eras) if solve else None
    for start in range(0, len(eras), rows):
        x = features[start:start + rows].astype(np.float64)
        gram = x.T @ x
        if solve:
            y = np.stack([prediction[start:start + rows], gauss[start:start + rows]], axis=1)
            x_t_y = x.T @ y
            x @ np.linalg.solve(gram, x_t_y[:, 1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eras", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--features", type=int, default=780)
    parser.add_argument("--chunk", type=int, default=20, help="eras timed at a time, the three in turn")
    args = parser.parse_args()
    features, prediction, target, eras = make_data(args.eras, args.rows, args.features)
    names = ["numerflow feature_scores (exposure + FNC)", "floor: cast + Gram + x^T y + solve + x b",
             "Grams alone: cast + x^T x"]
    seconds = [0.0, 0.0, 0.0]
    # The three take turns on each chunk of eras, so a machine whose load drifts slows all alike.
    for start in range(0, len(eras), args.chunk * args.rows):
        part = slice(start, start + args.chunk * args.rows)
        f, p, t, e = features[part], prediction[part], target[part], eras[part]
        runs = [lambda: metrics.feature_scores(p, f, t, e),
                lambda: gram_floor(f, p, e, args.rows, solve=True),
                lambda: gram_floor(f, p, e, args.rows, solve=False)]
        for i, run in enumerate(runs):
            seconds[i] += best_of(1, run)
    shape = f"{args.eras} eras x {args.rows} rows x {args.features} int8 features"
    print("| shape | what | seconds | ms per era | numerflow / this |")
    print("|---|---|---:|---:|---:|")
    for name, total in zip(names, seconds):
        print(f"| {shape} | {name} | {total:.2f} | {1000 * total / args.eras:.1f} | {seconds[0] / total:.2f}x |")


if __name__ == "__main__":
    main()
