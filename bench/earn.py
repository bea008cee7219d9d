"""What each lever earns in Numerai's currency (issue 26): held-out CORR, BMC, correlation with the
benchmark and a payout estimate, for train's defaults, each lever alone, the default
`sweep --cv` + `ensemble --objective payout --neutralize-benchmark auto --fit`, and the "bmc flow"
(`train --bmc-weight 0.5`, then `predict --neutralize-benchmark P` with P chosen out of fold under a
CORR floor, see bmc_flow), in one run.

    .venv/bin/python bench/earn.py [--eras 180 --rows-per-era 200 --features 40 --trials 16 --jobs 2]
                                   [--only bmc_flow[,tabm,...]]

At these defaults: about 20 minutes on 2 cores shared with other jobs (docs/benchmarks.md);
`--only bmc_flow` (the defaults row and the flow) about 5.

The data: numerflow's synthetic generator (Numerai's layout: ids "n" + 15 hex, eras "0001"...,
planted signal, auxiliary targets, meta model on validation) at the given size, its benchmark
files replaced by a real LightGBM, as Numerai's benchmark files are made: the training eras in
four blocks, each block predicted by a fit on the blocks before it with a 4-era purge (the first
block only fitted on, so the training benchmark covers the later eras only), and validation and
live predicted by a fit on every training era; predictions ranked within eras. Then
`numerflow prepare` with its defaults (every auxiliary target, the benchmark column), every era.

Selection and scoring never share an era:
- selection eras: the prepared training eras, each predicted out of fold (`numerflow cv`, blocked
  folds, embargo 8). Every setup's epoch count, the sweep's trials, the ensemble's members and
  weights and its --neutralize-benchmark P are chosen there (`ensemble --fit` then fits on all
  training eras with that epoch count; no epoch is chosen on a validation era);
- held-out eras: the prepared validation eras (after prepare's embargo), scored once by
  `numerflow validate` against the LightGBM benchmark and the meta model.

Payout estimate: 0.5 x CORR + 2 x MMC per era (Numerai's weights, the meta model on validation).
Prints a markdown table and writes it with every number to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

FOLDS, CV_EMBARGO = 4, 8
PAYOUT = {"corr": 0.5, "mmc": 2.0}
SETUPS = ("neutralize_05", "bmc05", "tabm", "sweep_payout", "bmc_flow")  # --only; the defaults row always runs
CORR_FLOOR = 0.95  # bmc flow: keep at least 95 % of the out-of-fold CORR at P = 0
LGBM_PARAMS = dict(n_estimators=300, learning_rate=0.03, max_depth=5, num_leaves=31, colsample_bytree=0.3,
                   verbose=-1)


def lightgbm_benchmark(version_dir: Path, trees: int) -> dict:
    """Replace the synthetic set's benchmark files by a LightGBM fitted walk-forward (see above);
    the version folder's manifest records the new files (they were changed on purpose)."""
    import lightgbm as lgb
    import pandas as pd

    from numerflow import schema
    from numerflow.files import file_record
    from numerflow.synthetic import BENCHMARK_BLOCKS, BENCHMARK_MODEL, BENCHMARK_PURGE

    train = pd.read_parquet(version_dir / schema.TRAIN_FILE)
    features = [c for c in train.columns if c.startswith("feature_")]
    eras = sorted(train[schema.ERA].unique())
    blocks = np.array_split(np.array(eras), BENCHMARK_BLOCKS)
    params = {**LGBM_PARAMS, "n_estimators": trees}

    def fit(fit_eras) -> "lgb.LGBMRegressor":
        rows = train[schema.ERA].isin(set(fit_eras))
        return lgb.LGBMRegressor(**params).fit(train.loc[rows, features], train.loc[rows, schema.TARGET])

    def ranked(frame, model) -> pd.DataFrame:
        values = pd.Series(model.predict(frame[features]), index=frame.index)
        ranks = values.groupby(frame[schema.ERA]).rank(pct=True, method="average")
        return pd.DataFrame({schema.ERA: frame[schema.ERA], BENCHMARK_MODEL: ranks.astype(np.float32)})

    t0 = time.perf_counter()
    parts = []
    for b in range(1, len(blocks)):
        before = [e for block in blocks[:b] for e in block]
        model = fit(before[:-BENCHMARK_PURGE])
        parts.append(ranked(train[train[schema.ERA].isin(set(blocks[b]))], model))
    everything = fit(eras)
    files = {schema.TRAIN_BENCHMARK_FILE: pd.concat(parts)}
    for source, name in ((schema.VALIDATION_FILE, schema.VALIDATION_BENCHMARK_FILE),
                         (schema.LIVE_FILE, schema.LIVE_BENCHMARK_FILE)):
        frame = pd.read_parquet(version_dir / source)
        files[name] = ranked(frame, everything)
    manifest_path = version_dir / schema.VERSION_MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    for name, frame in files.items():
        frame.index.name = schema.ID
        frame.to_parquet(version_dir / name)
        manifest[schema.MANIFEST_FILES][name] = file_record(version_dir / name)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return {"trees": trees, "seconds": time.perf_counter() - t0, "train_rows": len(files[schema.TRAIN_BENCHMARK_FILE]),
            "train_eras": int(files[schema.TRAIN_BENCHMARK_FILE][schema.ERA].nunique()), "eras": len(eras)}


def make_data(work: Path, args) -> tuple[Path, dict]:
    from numerflow.config import PrepareConfig, SyntheticConfig
    from numerflow.stages.prepare import prepare
    from numerflow.synthetic import write_synthetic

    name = f"e{args.eras}_r{args.rows_per_era}_f{args.features}_s{args.seed}_t{args.lgbm_trees}"
    out = work / name / "prepared"
    info_path = work / name / "benchmark.json"
    if (out / "manifest.json").is_file() and info_path.is_file():
        return out, json.loads(info_path.read_text())
    data_dir = work / name / "data"
    version = write_synthetic(SyntheticConfig(data_dir=data_dir, eras=args.eras, rows_per_era=args.rows_per_era,
                                              features=args.features, seed=args.seed))
    info = lightgbm_benchmark(version, args.lgbm_trees)
    prepare(PrepareConfig(data_dir=data_dir, dataset=version, feature_set="all", downsample=1, out_dir=out))
    info_path.write_text(json.dumps(info))
    return out, info


def held_out(report) -> dict:
    """validate's held-out numbers, with the payout estimate per era."""
    data = report.data
    per_era = data["per_era"]
    payout = [PAYOUT["corr"] * e["numerai_corr"] + PAYOUT["mmc"] * e["mmc"] for e in per_era
              if e.get("mmc") is not None and np.isfinite(e["mmc"])]
    return {"corr": data["numerai_corr"]["mean"], "corr_sharpe": data["numerai_corr"]["sharpe"],
            "bmc": data["bmc"]["mean"], "corr_with_benchmark": data["corr_with_benchmark"]["mean"],
            "mmc": data["mmc"]["mean"], "payout": float(np.mean(payout)) if payout else float("nan"),
            "eras": data["eras"], "corr_per_era": [e["numerai_corr"] for e in per_era],
            "bmc_per_era": [e["bmc"] for e in per_era]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, default=180, help="train + validation eras (70 %% train)")
    parser.add_argument("--rows-per-era", type=int, default=200)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lgbm-trees", type=int, default=200)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/numerflow-bench-earn"))
    parser.add_argument("--json", type=Path, default=None, help="default: WORK/earn.json")
    parser.add_argument("--only", type=only_setups, default=SETUPS, metavar="NAME[,NAME]",
                        help=f"run these setups (of {', '.join(SETUPS)}) beside the defaults row; default: all")
    args = parser.parse_args()

    from numerflow.runtime import before_torch_import

    before_torch_import()
    import shutil

    import numerflow

    say = lambda line: print(line, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    prepared, bench_info = make_data(args.work, args)
    data_seconds = time.perf_counter() - t0
    manifest = json.loads((prepared / "manifest.json").read_text())
    root = args.work / "earn_run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    validation = prepared / "validation.parquet"
    common = dict(data=prepared, device="cpu")
    rows = {}

    def validate(label: str, folder: Path, seconds: float, selection: str, **options) -> None:
        report = numerflow.validate(ensemble=folder, data=validation, write_report=False, exposure=False,
                                    device="cpu", **options)
        rows[label] = {**held_out(report), "fit_seconds": seconds, "selected_on": selection}
        say(f"{label}: " + str({k: v for k, v in rows[label].items() if not k.endswith("_per_era")}))

    def cv_and_fit(label: str, name: str, **train_options) -> Path:
        """One setup: cv on the training eras (its epoch count chosen out of fold), then fitted on
        every training era (ensemble --fit of that one run)."""
        start = time.perf_counter()
        numerflow.cv(**common, out=root / "cv", name=name, folds=FOLDS, embargo=CV_EMBARGO, say=None,
                     **train_options)
        fitted = numerflow.ensemble(candidates=[root / "cv" / name], size=1, objective="corr_mean", name=name,
                                    ensembles_dir=root / "ensembles", fit=True, device="cpu", say=None)
        validate(label, fitted.folder, time.perf_counter() - start, "epochs: out-of-fold training eras")
        return fitted.folder

    defaults = cv_and_fit("train defaults", "defaults")
    if "neutralize_05" in args.only:
        start = time.perf_counter()
        validate("defaults + predict --neutralize-benchmark 0.5", defaults, time.perf_counter() - start,
                 "none (P fixed)", neutralize_benchmark=0.5)
    if "bmc05" in args.only or "bmc_flow" in args.only:
        start = time.perf_counter()
        bmc05 = cv_and_fit("--bmc-weight 0.5", "bmc05", bmc_weight=0.5)
        bmc05_seconds = time.perf_counter() - start
    if "bmc_flow" in args.only:
        bmc_flow(root, bmc05, bmc05_seconds, validate, rows)
    if "tabm" in args.only:
        cv_and_fit("--arch tabm", "tabm", arch="tabm")
    if "sweep_payout" in args.only:
        sweep_and_payout_ensemble(args, prepared, root, validate, rows, say)

    size = (f"{args.eras} eras ({len(manifest['eras_train'])} training, {len(manifest['eras_validation'])} held-out "
            f"validation after a {manifest['embargo']}-era embargo) x {args.rows_per_era} rows, {args.features} "
            f"features, {len(manifest['targets'])} targets; benchmark: LightGBM ({bench_info['trees']} trees) "
            f"walk-forward on {bench_info['train_eras']} of {bench_info['eras']} training eras; "
            f"data made in {data_seconds:.0f} s")
    print_table(rows, size)
    out = args.json or args.work / "earn.json"
    out.write_text(json.dumps({"size": size, "args": {k: str(v) for k, v in vars(args).items()},
                               "benchmark": bench_info, "rows": rows}, indent=1))
    print(f"\nJSON: {out}")


def sweep_and_payout_ensemble(args, prepared: Path, root: Path, validate, rows: dict, say) -> None:
    """The issue's default flow: `sweep --cv` (built-in space) + `ensemble --objective payout
    --neutralize-benchmark auto --fit`."""
    import numerflow

    start = time.perf_counter()
    sweep = numerflow.sweep(data=prepared, cv=True, trials=args.trials, jobs=args.jobs, pruner="none",
                            name="default", sweeps_dir=root / "sweeps", seed=args.seed, device="cpu", say=say)
    sweep_seconds = time.perf_counter() - start
    start = time.perf_counter()
    chosen = numerflow.ensemble(candidates=[sweep.out_dir], objective="payout", neutralize_benchmark="auto",
                                fit=True, name="sweep_payout", ensembles_dir=root / "ensembles", device="cpu",
                                say=None)
    say(str(chosen))
    validate(f"sweep --cv ({args.trials} trials, built-in space) + ensemble --objective payout "
             f"--neutralize-benchmark auto --fit", chosen.folder, sweep_seconds + time.perf_counter() - start,
             "trials, members, weights, P: out-of-fold training eras")
    rows[list(rows)[-1]]["neutralize_benchmark"] = chosen.record.get("neutralize_benchmark")
    rows[list(rows)[-1]]["members"] = len(chosen.record["members"])


def only_setups(text: str) -> tuple[str, ...]:
    """--only NAME[,NAME]: names from SETUPS (an unknown one is argparse's usage error, exit 2)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SETUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown setup(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(SETUPS)}")
    return names


def floor_rule(corr_by_p: dict[float, float]) -> float:
    """The largest P whose out-of-fold CORR is at least CORR_FLOOR x the CORR at P = 0 (P = 0 when
    none is, or when CORR at P = 0 is not positive)."""
    floor = CORR_FLOOR * corr_by_p[0.0]
    if corr_by_p[0.0] <= 0:
        return 0.0
    return max(p for p, corr in corr_by_p.items() if corr >= floor)


def bmc_flow(root: Path, bmc05: Path, fit_seconds: float, validate, rows: dict) -> None:
    """`train --bmc-weight 0.5` (epochs chosen out of fold, fitted on every training era) with a
    benchmark-neutralising P chosen on the out-of-fold training eras only: the cv run's oof.parquet
    neutralised at each P of ensemble's grid (0, .25, .5, .75, 1; `ensemble --neutralize-benchmark
    auto` applies it as predict does) and scored there; P by floor_rule; then
    `predict --neutralize-benchmark P` on the held-out eras."""
    import numerflow

    start = time.perf_counter()
    oof = {}
    for objective in ("corr_mean", "bmc_mean"):  # bmc_mean: reported beside, not used by the rule
        grid = numerflow.ensemble(candidates=[root / "cv" / "bmc05"], size=1, objective=objective,
                                  neutralize_benchmark="auto", name=f"bmc05_oof_{objective}",
                                  ensembles_dir=root / "ensembles", fit=False, device="cpu", say=None)
        oof[objective] = {float(p): v for p, v in grid.record["neutralize_benchmark_scores"].items()}
    chosen = floor_rule(oof["corr_mean"])
    label = (f"bmc flow: --bmc-weight 0.5 + predict --neutralize-benchmark P (largest P with out-of-fold CORR "
             f">= {CORR_FLOOR:g} x P = 0's)")
    validate(label, bmc05, fit_seconds + time.perf_counter() - start,
             "epochs and P: out-of-fold training eras", neutralize_benchmark=chosen)
    rows[label].update(neutralize_benchmark=chosen, oof_corr_by_p=oof["corr_mean"], oof_bmc_by_p=oof["bmc_mean"])


def print_table(rows: dict, size: str) -> None:
    print(f"\n{size}\n")
    print("| setup | chosen on | held-out CORR | held-out BMC | corr. with benchmark | payout estimate | "
          "fit time |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        extra = f" (P = {r['neutralize_benchmark']}, {r['members']} members)" if "members" in r else \
            f" (chose P = {r['neutralize_benchmark']})" if "neutralize_benchmark" in r else ""
        print(f"| {label}{extra} | {r['selected_on']} | {r['corr']:.4f} | {r['bmc']:.4f} | "
              f"{r['corr_with_benchmark']:.2f} | {r['payout']:.4f} | {r['fit_seconds']:.0f} s |")
    print("\nAgainst train defaults on the same held-out eras (paired per era: mean difference +- its "
          "standard error):\n")
    baseline = rows["train defaults"]
    for label, r in list(rows.items())[1:]:
        print(f"- {label}: CORR {paired(r, baseline, 'corr_per_era')}, BMC {paired(r, baseline, 'bmc_per_era')}")
    for label, r in rows.items():
        if "oof_corr_by_p" in r:
            print(f"\n{label}, out of fold (training eras) by P:\n\n| P | CORR | BMC |\n|---|---|---|")
            for p, corr in r["oof_corr_by_p"].items():
                print(f"| {p:g} | {corr:.4f} | {r['oof_bmc_by_p'][p]:.4f} |")


def paired(row: dict, baseline: dict, key: str) -> str:
    """Mean per-era difference and its standard error: the eras are shared, so their common noise
    cancels (an unpaired comparison of two means over 50 eras carries about 0.011 for CORR)."""
    difference = np.asarray(row[key], dtype=float) - np.asarray(baseline[key], dtype=float)
    return f"{difference.mean():+.4f} +- {difference.std(ddof=1) / np.sqrt(len(difference)):.4f}"


if __name__ == "__main__":
    main()
