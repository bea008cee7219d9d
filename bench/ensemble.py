"""`numerflow ensemble` against the best single trial and train's defaults, on held-out eras.

    .venv/bin/python bench/ensemble.py [--eras 200 --rows-per-era 2000 --features 200 --trials 24 --jobs 2]

One run, in this order, on one synthetic set (bench/quality.py's cache under --work):
1. `numerflow cv` of train's defaults and a `numerflow sweep --cv` of --trials trials (SPACE below,
   no pruner: every trial completes and keeps its out-of-fold predictions). Selection eras: the
   prepared training eras, each predicted out of fold (blocked folds with an embargo).
2. Three choices, all made on those out-of-fold training eras only:
   - defaults: train's defaults (the cv run);
   - best single trial: the trial with the highest out-of-fold CORR mean (the sweep's best);
   - ensemble: `numerflow ensemble` of every trial, greedy with replacement, --size 10, corr_mean.
   Each is fitted (`ensemble --fit`) on all training eras with its own settings and epoch count,
   no epoch chosen on any validation era.
3. Held-out eras: the prepared validation eras (after prepare's embargo), never seen by any choice.
   `numerflow validate --ensemble` scores each: CORR mean, sharpe, Spearman mean, MMC mean (and BMC
   where the data carries benchmark models), and the per-era paired difference of CORR against the
   best single trial (mean, its standard error, share of eras where the ensemble is ahead).

Printed: a markdown table of the out-of-fold and held-out numbers, and wall times. A single run (a
24-trial sweep is the budget on 2 shared cores); the spread is given per era (standard error of the
paired difference), not over repeated runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPACE = """\
lr = {low = 1e-3, high = 3e-2, log = true}
layers = ["64", "128", "256"]
dropout = {low = 0.0, high = 0.6}
loss = ["corr", "mse"]
weight_decay = {low = 1e-6, high = 1e-2, log = true}
epochs = 4          # a top-level value is fixed (as in Ray Tune's param_space)
device = "cpu"

[cv]
folds = 4
embargo = 8
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, default=200)
    parser.add_argument("--rows-per-era", type=int, default=2000)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("bench_work"))
    parser.add_argument("--reuse", action="store_true", help="Keep the cv run and the sweep of an earlier run "
                        "under --work; choose, fit and score again.")
    args = parser.parse_args()

    from numerflow.runtime import before_torch_import

    before_torch_import()
    import numerflow
    from quality import prepared_data

    say = lambda line: print(line, flush=True)  # noqa: E731
    prepared = prepared_data(args.work, args.eras, args.rows_per_era, args.features, args.seed)
    root = args.work / "ensemble_bench"
    timings = {}
    if args.reuse:
        shutil.rmtree(root / "ensembles", ignore_errors=True)
        best_number = json.loads((root / "sweeps" / "bench" / "best.json").read_text())["number"]
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / "space.toml").write_text(SPACE)
        t0 = time.perf_counter()
        numerflow.cv(data=prepared, out=root / "cv", name="defaults", folds=4, embargo=8, device="cpu", say=None)
        timings["cv of the defaults"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sweep = numerflow.sweep(space=root / "space.toml", data=prepared, trials=args.trials, jobs=args.jobs,
                                cv=True, pruner="none", name="bench", sweeps_dir=root / "sweeps", seed=args.seed,
                                say=say)
        timings[f"sweep --cv, {args.trials} trials, --jobs {args.jobs}"] = time.perf_counter() - t0
        best_number = sweep.best["number"]
    best_trial = root / "sweeps" / "bench" / "trials" / str(best_number)

    choices = {"train defaults": ([root / "cv" / "defaults"], 1),
               f"best single trial ({best_number})": ([best_trial], 1),
               f"ensemble of the {args.trials} trials (size {args.size})": ([root / "sweeps" / "bench"], args.size)}
    rows = {}
    for i, (label, (candidates, size)) in enumerate(choices.items()):
        t0 = time.perf_counter()
        chosen = numerflow.ensemble(candidates=candidates, size=size, objective="corr_mean", name=f"choice{i}",
                                    ensembles_dir=root / "ensembles", fit=True, device="cpu", say=None)
        timings[f"ensemble --fit: {label}"] = time.perf_counter() - t0
        report = numerflow.validate(ensemble=chosen.folder, data=prepared / "validation.parquet", write_report=False,
                                    exposure=False, device="cpu")
        rows[label] = (chosen.record, report.data)
        if size > 1:
            say(str(chosen))

    print_table(rows, args, prepared)
    print("\nwall times (2 cores shared with other jobs):")
    for label, seconds in timings.items():
        print(f"- {label}: {seconds:.0f} s")


def print_table(rows: dict, args, prepared: Path) -> None:
    labels = list(rows)
    first = rows[labels[0]][0]["selection"]
    held = rows[labels[0]][1]
    per_era = {label: np.array([e["numerai_corr"] for e in report["per_era"]], dtype=float)
               for label, (_, report) in rows.items()}
    print(f"\ndata: --eras {args.eras} --rows-per-era {args.rows_per_era} --features {args.features}; "
          f"selection: {first['eras']} out-of-fold training eras ({first['first_era']}-{first['last_era']}); "
          f"held out: {held['eras']} validation eras ({held['per_era'][0]['era']}-{held['per_era'][-1]['era']})")
    has_bmc = all("bmc" in report for _, report in rows.values())
    print("| model | members | out-of-fold CORR mean (selection) | held-out CORR mean | held-out CORR sharpe | "
          "held-out Spearman mean | held-out MMC mean |" + (" held-out BMC mean |" if has_bmc else "")
          + " held-out CORR - best trial's, per era |")
    print("|---|---|---|---|---|---|---|" + ("---|" if has_bmc else "") + "---|")
    reference = per_era[labels[1]]
    for label, (record, report) in rows.items():
        diff = per_era[label] - reference
        ok = np.isfinite(diff)
        paired = (f"{np.mean(diff[ok]):+.4f} ± {np.std(diff[ok], ddof=1) / math.sqrt(ok.sum()):.4f} "
                  f"(ahead in {np.mean(diff[ok] > 0):.0%} of eras)") if label != labels[1] else "-"
        mmc = report.get("mmc", {}).get("mean")
        print(f"| {label} | {len(record['members'])} | {record['ensemble_objective']:.4f} | "
              f"{report['numerai_corr']['mean']:.4f} | {report['numerai_corr']['sharpe']:.2f} | "
              f"{report['spearman']['mean']:.4f} | " + (f"{mmc:.4f} |" if mmc is not None else "- |"), end="")
        if has_bmc:
            print(f" {report['bmc']['mean']:.4f} |", end="")
        print(f" {paired} |")


if __name__ == "__main__":
    main()
