"""A prepared folder (the layout `numerflow prepare` writes) of synthetic int8 rows, written straight
from numpy: train.parquet, validation.parquet (era, features, target, id), manifest.json, and a
live.parquet of fresh rows for predict. The target carries signal (the sum of the first 20 features
plus noise, in Numerai's five levels), so validation scores mean something. Used by the benches
that need whole `numerflow` commands on large data (train_throughput.py, gpu_check.py); about
10 s per million rows x 780 features on one core.

    .venv/bin/python bench/prepared_data.py FOLDER [--rows 1000000] [--valid-rows 250000] [--features 780]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 1 << 17  # rows per row group (and per generated block: bounded memory)
LEVELS = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)


def feature_names(features: int) -> list[str]:
    return [f"feature_{i:04d}" for i in range(features)]


def write_split(path: Path, rows: int, features: int, eras: int, first_era: int, rng, with_target: bool = True) -> None:
    """`rows` rows in `eras` equal eras numbered from `first_era`, row group by row group."""
    names = feature_names(features)
    fields = ([pa.field("era", pa.string())] + [pa.field(n, pa.int8()) for n in names]
              + ([pa.field("target", pa.float32())] if with_target else []) + [pa.field("id", pa.string())])
    schema = pa.schema(fields)
    per_era = -(-rows // eras)
    # Dictionary-encoded (five values: 3 bits each; plain int8 is stored as 4-byte INT32), no compression.
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, CHUNK):
            n = min(rows, start + CHUNK) - start
            columns = rng.integers(0, 5, (features, n), dtype=np.int8)  # feature-major: each column contiguous
            era = (np.arange(start, start + n) // per_era + first_era).astype(str)
            arrays = [pa.array(np.char.zfill(era, 4))] + [pa.array(column) for column in columns]
            if with_target:
                signal = columns[:20].sum(axis=0, dtype=np.int16) + rng.integers(0, 40, n, dtype=np.int16)
                cuts = np.quantile(signal, [0.05, 0.25, 0.75, 0.95])
                arrays.append(pa.array(LEVELS[np.searchsorted(cuts, signal)]))
            arrays.append(pa.array(np.char.add(f"n{path.stem[0]}", np.arange(start, start + n).astype(str))))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


def write_prepared(folder: Path, rows: int, valid_rows: int, features: int, eras: int = 100,
                   live_rows: int = 5000, seed: int = 0) -> float:
    """Write the folder; returns the seconds it took."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    valid_eras = max(1, eras // 4)
    rngs = [np.random.default_rng([seed, part]) for part in range(3)]
    # One thread per file (pyarrow encodes without the GIL): the validation file is written while
    # the training file is.
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(write_split, folder / "train.parquet", rows, features, eras, 1, rngs[0]),
                pool.submit(write_split, folder / "validation.parquet", valid_rows, features, valid_eras, eras + 5,
                            rngs[1]),
                pool.submit(write_split, folder / "live.parquet", live_rows, features, 1, eras + valid_eras + 10,
                            rngs[2], with_target=False)]
        for job in jobs:
            job.result()
    (folder / "manifest.json").write_text(json.dumps({"features": feature_names(features), "target": "target",
                                                      "targets": ["target"]}))
    return time.perf_counter() - started


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--valid-rows", type=int, default=250_000)
    parser.add_argument("--features", type=int, default=780)
    args = parser.parse_args()
    seconds = write_prepared(args.folder, args.rows, args.valid_rows, args.features)
    print(f"wrote {args.rows:,} + {args.valid_rows:,} rows x {args.features} features in {seconds:.1f} s")
