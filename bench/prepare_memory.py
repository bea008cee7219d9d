"""Peak memory of `numerflow prepare` against a plain `pandas.read_parquet` of the same columns.

Writes a Numerai-shaped data set (default 1,000,000 train + validation rows x 780 int8 features)
into a temporary folder, with numerflow's own synthetic generator (`--generator synthetic`, the
default: the exact Numerai layout, including unresolved validation rows) or a plain random writer
(`--generator plain`: 5/20/50/20/5 % buckets, row groups of `--row-group-rows`), then runs, each in
its own child process:
  prepare   `python -m numerflow prepare --feature-set all --downsample 1 --embargo 0` (every row
            goes through, the worst case for memory)
  pandas    `pandas.read_parquet(columns=...)` of train and validation (what a naive prepare holds)
  read_table  `pyarrow.parquet.read_table(columns=...)` of both: the wall-time baseline (issue 10:
            prepare at most 2x)
and prints each one's peak RSS (ru_maxrss of the child), the int8 feature bytes, the bound the issue
sets (1.5 x int8 feature bytes + 1 GiB) and the ratios.

    .venv/bin/python bench/prepare_memory.py [--rows 1000000] [--features 780]
                                             [--generator synthetic|plain] [--row-group-rows N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GIB = 1 << 30
TARGETS = ["target", "target_ender_20", "target_jasper_60"]


def write_dataset(folder: Path, rows: int, features: int, rows_per_era: int, row_group_rows: int) -> list[str]:
    """A version folder in the Numerai layout, written era block by era block (bounded memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"feature_bench_{i:04d}" for i in range(features)]
    rng = np.random.default_rng(0)
    eras = rows // rows_per_era
    split = {"train": range(1, eras // 2 + 1), "validation": range(eras // 2 + 1, eras + 1)}
    for data_type, era_numbers in split.items():
        path = folder / f"{data_type}.parquet"
        writer, start, buffered = None, 0, []

        def flush():
            nonlocal writer, buffered
            table = pa.concat_tables(buffered)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=row_group_rows)
            buffered = []

        for era in era_numbers:
            n = rows_per_era
            ids = pa.array([f"n{start + i:015x}" for i in range(n)])
            cols = {"id": ids, "era": pa.array([f"{era:04d}"] * n), "data_type": pa.array([data_type] * n)}
            # Numerai's bucket proportions (about 5/20/50/20/5 %): compresses like real features.
            block = rng.choice(np.arange(5, dtype=np.int8), size=(features, n), p=[.05, .2, .5, .2, .05])
            cols.update({name: pa.array(block[j]) for j, name in enumerate(names)})
            cols.update({t: pa.array(rng.integers(0, 5, n) / 4) for t in TARGETS})
            buffered.append(pa.table(cols))
            start += n
            if sum(t.num_rows for t in buffered) >= row_group_rows:
                flush()
        if buffered:
            flush()
        writer.close()
    (folder / "features.json").write_text(json.dumps({"feature_sets": {"all": names}, "targets": TARGETS}))
    return names


def write_synthetic_dataset(data_dir: Path, rows: int, features: int, rows_per_era: int) -> tuple[Path, list[str]]:
    """numerflow's synthetic set: `rows` train + validation rows (live is one more era)."""
    from numerflow.config import SyntheticConfig
    from numerflow.synthetic import write_synthetic

    folder = write_synthetic(SyntheticConfig(data_dir=data_dir, eras=rows // rows_per_era,
                                             rows_per_era=rows_per_era, features=features, seed=0))
    meta = json.loads((folder / "features.json").read_text())
    return folder, list(meta["feature_sets"]["all"])


class CommandFailed(Exception):
    """A measured command exited non-zero (or was killed, e.g. by the kernel's OOM killer)."""


def peak_rss(command: list[str], exit_on_failure: bool = True) -> tuple[int, float, float]:
    """Peak RSS in bytes, wall seconds and CPU seconds (user + system, less sensitive than wall time
    to other jobs on the machine) of `command` run alone in a fresh child (via --measure). A failing
    command ends this script, or raises CommandFailed with `exit_on_failure=False`."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--measure", "--", *command],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        message = f"command failed (exit {out.returncode}): {' '.join(command)}\n{out.stdout}\n{out.stderr}"
        if exit_on_failure:
            sys.exit(message)
        raise CommandFailed(message)
    rss, cpu = out.stdout.strip().splitlines()[-1].split()
    return int(rss), seconds, float(cpu)


def measure(command: list[str]) -> None:
    """Run `command`; print its peak RSS in bytes (Linux ru_maxrss is in KiB) and CPU seconds."""
    out = subprocess.run(command, capture_output=True, text=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:  # negative: killed by that signal (-9: most likely the OOM killer)
        sys.stderr.write(out.stdout + out.stderr + f"\nexit status {out.returncode}, "
                         f"peak RSS {usage.ru_maxrss / (1 << 20):.2f} GiB\n")
        sys.exit(1)
    print(usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)


def main() -> None:
    if "--measure" in sys.argv:
        measure(sys.argv[sys.argv.index("--") + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="train + validation rows")
    parser.add_argument("--features", type=int, default=780)
    parser.add_argument("--rows-per-era", type=int, default=5000)
    parser.add_argument("--generator", choices=["synthetic", "plain"], default="synthetic")
    parser.add_argument("--row-group-rows", type=int, default=100_000, help="plain: rows per input row group")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nf-bench-") as tmp:
        start = time.perf_counter()
        if args.generator == "synthetic":
            version_dir, names = write_synthetic_dataset(Path(tmp) / "data", args.rows, args.features,
                                                         args.rows_per_era)
        else:
            version_dir = Path(tmp) / "data" / "v5.2"
            names = write_dataset(version_dir, args.rows, args.features, args.rows_per_era, args.row_group_rows)
        files = [pq.ParquetFile(version_dir / f).metadata for f in ("train.parquet", "validation.parquet")]
        rows = sum(m.num_rows for m in files)
        biggest_group = max(m.row_group(i).num_rows for m in files for i in range(m.num_row_groups))
        size = sum(p.stat().st_size for p in version_dir.iterdir())
        print(f"data ({args.generator}): {rows:,} rows x {len(names)} features, {size / GIB:.2f} GiB on disk, "
              f"written in {time.perf_counter() - start:.0f} s, row groups up to {biggest_group:,} rows")

        prepare_cmd = [sys.executable, "-m", "numerflow", "prepare", "--dataset", str(version_dir),
                       "--feature-set", "all", "--aux-targets", "all", "--downsample", "1", "--embargo", "0",
                       "--out-dir", str(Path(tmp) / "prepared")]
        columns = ["era", "data_type"] + names
        targets = json.loads((version_dir / "features.json").read_text())["targets"]
        pandas_code = ("import sys, pandas as pd\n"
                       f"cols = {columns + targets!r}\n"
                       "frames = [pd.read_parquet(p, columns=cols) for p in sys.argv[1:]]\n"
                       "print(sum(len(f) for f in frames))\n")
        pandas_cmd = [sys.executable, "-c", pandas_code, str(version_dir / "train.parquet"),
                      str(version_dir / "validation.parquet")]

        arrow_code = pandas_code.replace("import sys, pandas as pd", "import sys, pyarrow.parquet as pq").replace(
            "pd.read_parquet(p, columns=cols)", "pq.read_table(p, columns=cols)").replace("len(f)", "f.num_rows")
        arrow_cmd = [sys.executable, "-c", arrow_code, *pandas_cmd[3:]]

        prepare_rss, prepare_s, prepare_cpu = peak_rss(prepare_cmd)
        pandas_rss, pandas_s, pandas_cpu = peak_rss(pandas_cmd)
        arrow_rss, arrow_s, arrow_cpu = peak_rss(arrow_cmd)
        manifest = json.loads((Path(tmp) / "prepared" / "manifest.json").read_text())
        prepared_rows = manifest["rows_train"] + manifest["rows_validation"]
        print(f"prepared: {prepared_rows:,} of {rows:,} rows (rows with a NaN main target dropped)")

    feature_bytes = rows * len(names)
    bound = 1.5 * feature_bytes + GIB
    print(f"int8 feature bytes            {feature_bytes / GIB:7.2f} GiB")
    print(f"bound (1.5 x int8 + 1 GiB)    {bound / GIB:7.2f} GiB")
    print(f"numerflow prepare  peak RSS   {prepare_rss / GIB:7.2f} GiB  {prepare_s:6.1f} s ({prepare_cpu:.1f} s CPU)  "
          f"= {prepare_rss / bound:.2f} x bound, {prepare_rss / feature_bytes:.2f} x int8 bytes")
    print(f"pandas.read_parquet peak RSS  {pandas_rss / GIB:7.2f} GiB  {pandas_s:6.1f} s ({pandas_cpu:.1f} s CPU)  "
          f"= {pandas_rss / bound:.2f} x bound, {pandas_rss / feature_bytes:.2f} x int8 bytes")
    print(f"prepare / pandas: memory {prepare_rss / pandas_rss:.2f}x, wall time {prepare_s / pandas_s:.2f}x, "
          f"CPU time {prepare_cpu / pandas_cpu:.2f}x")
    print(f"pyarrow read_table peak RSS   {arrow_rss / GIB:7.2f} GiB  {arrow_s:6.1f} s ({arrow_cpu:.1f} s CPU)")
    print(f"prepare / read_table: wall time {prepare_s / arrow_s:.2f}x (issue 10: at most 2x), "
          f"CPU time {prepare_cpu / arrow_cpu:.2f}x; prepare peak {prepare_rss / GIB:.2f} GiB (issue 10: at most 1.5)")
    print("PASS" if prepare_rss < bound else "FAIL: prepare above the bound")


if __name__ == "__main__":
    main()
