"""The whole pipeline at Numerai's full size: peak memory and wall time of every stage.

Generates, with numerflow's own synthetic generator (streamed era by era to Parquet), a
v5.3-shaped set: by default 2,700,000 train + 1,000,000 validation rows x 3,555 int8 features and
20 targets. Then runs each stage in its own child process and measures its peak RSS (ru_maxrss of
that child alone) and wall time:

  generate         the synthetic set (bench/full_scale.py --write-data, in a child too)
  read_table       pyarrow.parquet.read_table of train + validation, the columns prepare reads:
                   the wall-time baseline for prepare (--no-read-table skips it: ~1.7x the int8 bytes)
  read_row_groups  the same decoding, one row group at a time (bounded memory): a second baseline
  prepare ds4/ds1  `numerflow prepare --feature-set all --aux-targets all --downsample 4` and `1`
  train ds4/ds1    `numerflow train --epochs 1 --device cpu` on each prepared folder
  validate         `numerflow validate --model` on the raw validation.parquet (--no-exposure unless
                   --exposure: exposure's own speed is bench/validate_speed.py's matter)
  predict          `numerflow predict --model` on the raw validation.parquet
  export           `numerflow export --model`

and prints a markdown table: stage, rows x features, int8 bytes of the features the stage holds,
wall, peak RSS, peak / int8, and the bound issue 10 sets (train, validate, predict: int8 + 1 GiB;
prepare: 1.5 GiB whatever the size; prepare's wall at most 2x read_table's).

    .venv/bin/python bench/full_scale.py                      # most of an hour, ~20 GiB RAM
    .venv/bin/python bench/full_scale.py --train-rows 200000 --validation-rows 80000   # minutes

A stage that fails (e.g. killed for memory) is reported with its peak RSS and the run goes on;
each row is also printed to stderr as its stage ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_memory import CommandFailed, peak_rss  # noqa: E402 - one child-measuring helper for the benches

from numerflow import memory  # noqa: E402 - the estimate each stage makes before loading

GIB = 1 << 30
# v5.3's target names beyond the generator's own (target, target_ender_20 and six auxiliaries).
EXTRA_TARGETS = ("agnes", "claudia", "rowan", "bravo", "caroline", "ralph")


def shape_generator(train_rows: int, validation_rows: int, rows_per_era: int) -> int:
    """Point numerflow's generator at the v5.3 shape: 20 targets, the asked train/validation split.
    Returns the number of train + validation eras to generate."""
    from numerflow import synthetic

    base = synthetic.AUX_TARGETS
    extra = tuple(synthetic.AuxTarget(f"target_{name}_{horizon}", *params)
                  for name in EXTRA_TARGETS for horizon, params in
                  (("20", (base[1].other_signal, 1.0, 0.5, "20")), ("60", (base[2].other_signal, 1.25, 0.4, "60"))))
    synthetic.AUX_TARGETS = base + extra
    synthetic.TARGET_NAMES = [synthetic.schema.TARGET, synthetic.TARGET_ALIAS] + [t.name for t in synthetic.AUX_TARGETS]
    train_eras = max(1, round(train_rows / rows_per_era))
    eras = train_eras + max(1, round(validation_rows / rows_per_era))
    synthetic.TRAIN_SHARE = train_eras / eras
    return eras


def write_data(data_dir: Path, train_rows: int, validation_rows: int, features: int, rows_per_era: int) -> None:
    from numerflow.config import SyntheticConfig
    from numerflow.synthetic import write_synthetic

    eras = shape_generator(train_rows, validation_rows, rows_per_era)
    write_synthetic(SyntheticConfig(data_dir=data_dir, eras=eras, rows_per_era=rows_per_era, features=features, seed=0))


def numerflow(*args: str, source: Path | None = None) -> list[str]:
    """The command running numerflow with `args`: the installed package, or the one under `source`."""
    if source is None:
        return [sys.executable, "-m", "numerflow", *args]
    code = (f"import runpy, sys; sys.path.insert(0, {str(source.resolve())!r}); "
            "runpy.run_module('numerflow', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code, *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=2_700_000)
    parser.add_argument("--validation-rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=3555)
    parser.add_argument("--rows-per-era", type=int, default=5000)
    parser.add_argument("--exposure", action="store_true", help="validate with exposure and FNC")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one); "
                        "data generated there by an earlier run with the same sizes is reused")
    parser.add_argument("--no-read-table", action="store_true", help="skip the whole-file read_table baseline "
                        "(at full size it holds ~1.7x the int8 bytes; read_row_groups is still measured)")
    parser.add_argument("--only-prepare", action="store_true", help="stop after read_table and prepare (e.g. to "
                        "measure a change to prepare again on the data of an earlier --keep run)")
    parser.add_argument("--compare-with", type=Path, metavar="SOURCE_DIR", help="also run each prepare stage, "
                        "just before this tree's, with the numerflow package of another source tree (e.g. "
                        "`git archive COMMIT | tar -x -C SOURCE_DIR`): a before/after in one invocation")
    parser.add_argument("--write-data", type=Path, help=argparse.SUPPRESS)  # the generate child
    args = parser.parse_args()
    if args.write_data:
        write_data(args.write_data, args.train_rows, args.validation_rows, args.features, args.rows_per_era)
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="nf-full-") as tmp:
            run(args, Path(tmp))


def run(args, work: Path) -> None:
    rows: list[dict] = []
    failed: list[str] = []

    def stage(name: str, command: list[str], shape: tuple[int, int] | None, bound: float | None,
              estimate=None) -> float | None:
        """Run and measure one stage; None when it failed (recorded, and the run goes on)."""
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rss, wall, cpu = peak_rss(command, exit_on_failure=False)
        except CommandFailed as failure:
            print(failure, file=sys.stderr, flush=True)
            failed.append(name)
            return None
        int8 = shape[0] * shape[1] if shape else 0
        rows.append(dict(stage=name, shape=shape, int8=int8, wall=wall, cpu=cpu, rss=rss, bound=bound,
                         estimate=estimate.total if estimate is not None else None))
        print(table_row(rows[-1]), file=sys.stderr, flush=True)  # a long run's rows so far, if it stops
        return wall

    data_dir = work / "data"
    version = data_dir / "synthetic"
    if not (version / "features.json").is_file():  # --keep: a folder from an earlier run is reused
        stage("generate", [sys.executable, __file__, "--write-data", str(data_dir), "--train-rows", str(args.train_rows),
                           "--validation-rows", str(args.validation_rows), "--features", str(args.features),
                           "--rows-per-era", str(args.rows_per_era)], None, None)
    meta = json.loads((version / "features.json").read_text())
    features, targets = meta["feature_sets"]["all"], meta["targets"]
    files = [version / "train.parquet", version / "validation.parquet"]
    raw_rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    width = len(features)

    columns = ["id", "era", "data_type"] + features + targets
    # Two baselines for prepare's wall time, both pyarrow decoding the same columns with its threads:
    # read_table of each whole file (the issue's; at full size its table and pre-buffered bytes
    # take ~1.7x the int8 bytes, so --no-read-table skips it there) and read_row_group of every
    # row group in turn (the same decoding, dropping each group's table: bounded memory).
    read_code = ("import sys, pyarrow.parquet as pq\n"
                 f"cols = {columns!r}\n"
                 "print(sum(pq.read_table(p, columns=cols).num_rows for p in sys.argv[1:]))\n")
    groups_code = ("import sys, pyarrow.parquet as pq\n"
                   f"cols = {columns!r}\n"
                   "files = [pq.ParquetFile(p) for p in sys.argv[1:]]\n"
                   "print(sum(f.read_row_group(g, columns=cols).num_rows for f in files "
                   "for g in range(f.metadata.num_row_groups)))\n")
    baselines = {}
    for name, code in (("read_table", read_code), ("read_row_groups", groups_code)):
        if name == "read_table" and args.no_read_table:
            continue
        wall = stage(name, [sys.executable, "-c", code, *map(str, files)], (sum(raw_rows), width), None)
        if wall is not None:
            baselines[name] = wall
    prepared = {}
    sources = ([(f" ({args.compare_with.name})", args.compare_with)] if args.compare_with else []) + [("", None)]
    for k in (4, 1):
        out = work / f"prepared_ds{k}"
        for label, source in sources:
            wall = stage(f"prepare ds{k}{label}", numerflow("prepare", "--dataset", str(version), "--feature-set", "all",
                                                            "--aux-targets", "all", "--downsample", str(k),
                                                            "--out-dir", str(out), source=source),
                         (sum(raw_rows), width), 1.5 * GIB)
            if wall is not None:
                rows[-1]["vs"] = {name: wall / seconds for name, seconds in baselines.items()}
                prepared[k] = out
    if args.only_prepare:
        prepared = {}
    models = {}
    for k, out in prepared.items():
        manifest = json.loads((out / "manifest.json").read_text())
        held = manifest["rows_train"] + manifest["rows_validation"]
        model = work / f"model_ds{k}.pt"
        if stage(f"train ds{k}", numerflow("train", "--data", str(out), "--out", str(model), "--epochs", "1",
                                           "--device", "cpu"), (held, width), held * width + GIB,
                 memory.train_estimate(held, width, len(manifest["targets"]))) is not None:
            models[k] = model
    if models:  # scored with the model trained on the most rows
        model, valid = str(models[min(models)]), str(files[1])
        valid_int8 = raw_rows[1] * width
        stage("validate", numerflow("validate", "--model", model, "--data", valid, "--device", "cpu", "--no-report",
                                    "--exposure" if args.exposure else "--no-exposure"),
              (raw_rows[1], width), valid_int8 + GIB, memory.validate_estimate(raw_rows[1], width, len(targets)))
        stage("predict", numerflow("predict", "--model", model, "--data", valid, "--device", "cpu",
                                   "--out", str(work / "predictions.parquet")), (raw_rows[1], width), valid_int8 + GIB,
              memory.predict_estimate(raw_rows[1], width))
        stage("export", numerflow("export", "--model", model, "--out", str(work / "model.pkl")), None, None)
    print_table(rows, args)
    if failed:
        print(f"\nfailed (see the log above for why): {', '.join(failed)}")


def table_row(r: dict) -> str:
    shape = f"{r['shape'][0]:,} x {r['shape'][1]:,}" if r["shape"] else "-"
    int8 = f"{r['int8'] / GIB:.2f} GiB" if r["int8"] else "-"
    ratio = f"{r['rss'] / r['int8']:.2f}" if r["int8"] else "-"
    bound = f"{r['bound'] / GIB:.2f} GiB" if r["bound"] else "-"
    within = ("yes" if r["rss"] <= r["bound"] else "NO") if r["bound"] else "-"
    estimate = (f"{r['estimate'] / GIB:.2f} GiB | {r['rss'] / r['estimate']:.3f}" if r.get("estimate")
                else "- | -")  # numerflow/memory.py's estimate, made before loading (issue 20)
    return (f"| {r['stage']} | {shape} | {int8} | {r['wall']:.1f} s | {r['cpu']:.1f} s | {r['rss'] / GIB:.2f} GiB "
            f"| {ratio} | {bound} | {within} | {estimate} |")


def print_table(rows: list[dict], args) -> None:
    print(f"\nbench/full_scale.py: {args.train_rows:,} train + {args.validation_rows:,} validation rows x "
          f"{args.features:,} features (numerflow's synthetic generator, v5.3-shaped, 20 targets)\n")
    print("| stage | rows x features | int8 bytes | wall | CPU | peak RSS | peak / int8 | bound | within "
          "| memory.py estimate | peak / estimate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(table_row(r))
    print()
    for r in rows:
        for name, ratio in r.get("vs", {}).items():
            print(f"{r['stage']}: wall {ratio:.2f}x pyarrow's {name} of the same columns in this run "
                  f"(issue 10: at most 2x)")


if __name__ == "__main__":
    main()
