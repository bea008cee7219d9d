"""The training data: the prepared split read as one int8 matrix, and each epoch's batches.

Memory: the features stay one int8 (rows, features) array — a tensor on the GPU when they fit —
and each step gathers a shuffled batch by index (see stages/train.py's run_epoch). No per-row
Dataset, no DataLoader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numerflow import schema
from numerflow.config import TrainConfig
from numerflow.errors import ConfigError, DataError
from numerflow.options import Loss


@dataclass
class Split:
    features: np.ndarray  # int8 (rows, features)
    targets: np.ndarray  # (rows, targets), NaN where unknown: float16 when exact (see read_eras_and_targets), else float32
    era_codes: np.ndarray  # int32 code per row
    eras: list[str]  # label of each code, in era order
    ids: np.ndarray | None = None  # each row's id (as text), when read with_ids (cv's out-of-fold rows)
    # float32 benchmark prediction gaussianised per era, NaN where Numerai has none; read for --bmc-weight
    benchmark: np.ndarray | None = None


@dataclass
class Rows:
    """The training rows as the loop reads them: int8 features and the targets as tensors on one
    device, and each row's era code (for within-era batches)."""
    features: "torch.Tensor"  # noqa: F821 (torch is imported lazily)
    targets: "torch.Tensor"  # noqa: F821
    era_codes: np.ndarray
    benchmark: "torch.Tensor | None" = None  # noqa: F821 (Split.benchmark, for the BMC term)


def read_split(path: Path, features: list[str], targets: list[str], require_main: bool = False,
               with_ids: bool = False, benchmark: bool = False) -> Split:
    """`require_main`: a split with no known main target is a DataError (nothing to train on).
    `with_ids`: keep the rows' ids (training does not need them). `benchmark`: read the prepared
    benchmark column too (read_benchmark), a DataError when the file has none.

    Memory: the int8 matrix, then the era and target columns read row group by row group straight
    into their own arrays. No DataFrame: pandas held the targets as Arrow, a consolidated block and
    the final array at once, and each era as a Python string, ~0.5 GB at 3.7M rows x 20 targets."""
    matrix, frame = schema.read_matrix(path, features, ids=with_ids)
    release_reader_memory()
    if len(matrix) == 0:
        raise DataError(f"{path}: no rows")
    era_codes, eras, values = read_eras_and_targets(path, targets, len(matrix))
    if require_main and np.isnan(values[:, 0]).all():
        raise DataError(f"{path}: main target '{targets[0]}' has no known values (all NaN)")
    return Split(matrix, values, era_codes, eras, frame.index.astype(str).to_numpy() if with_ids else None,
                 read_benchmark(path, era_codes) if benchmark else None)


BENCHMARK_COLUMN = "benchmark"  # prepare's column (stages/prepare_benchmark.COLUMN)
BMC_NEEDS_BENCHMARK = ("--bmc-weight needs benchmark predictions: run `numerflow prepare` with Numerai's "
                       "benchmark files (or --synthetic data)")


def read_benchmark(path: Path, era_codes: np.ndarray) -> np.ndarray:
    """The prepared benchmark column gaussianised per era over the rows that have one (numerai-tools'
    gaussian(tie_kept_rank), as its BMC does), float32, NaN where Numerai has none. Done once here,
    so the loss only centres it per batch (losses.era_bmc)."""
    from numerflow.metrics.ranking import gaussianize_within_eras

    if BENCHMARK_COLUMN not in schema.parquet_columns(path):
        raise DataError(f"{path}: no '{BENCHMARK_COLUMN}' column. {BMC_NEEDS_BENCHMARK}")
    raw = np.concatenate([table.column(0).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                          for table in schema.row_group_tables(path, [BENCHMARK_COLUMN])])
    return gaussianize_within_eras(raw, era_codes).astype(np.float32)


def benchmark_note(manifest: dict, source: Path) -> str:
    """For --bmc-weight: the line saying which training rows and eras the BMC term uses, from the
    prepared manifest's `benchmark` record (stages/prepare_benchmark.record); a DataError when
    the folder was prepared without benchmark predictions or they cover no training row."""
    train = (manifest.get("benchmark") or {}).get("train") or {}
    if not train.get("rows"):
        found = "covers no training row" if manifest.get("benchmark") else "has no benchmark column"
        raise DataError(f"{source}: the prepared data {found}. {BMC_NEEDS_BENCHMARK}")
    return (f"BMC term: benchmark predictions on {train['rows']:,} of {train['rows_prepared']:,} training rows "
            f"({train['eras']} of {train['eras_prepared']} eras); rows without one count in the corr loss only")


def read_eras_and_targets(path: Path, targets: list[str], rows: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(int32 era code per row, era labels in era order, target values) of a file, in one pass over
    its row groups: each group's eras dictionary-encoded by Arrow (the few labels merged and sorted
    at the end), its targets copied into one (rows, targets) array, NaN where unknown. The array is
    float16 when every value is one exactly — Numerai's targets are steps of 0.25, so 2 bytes a
    value instead of 4 (0.14 GiB at 3.7M rows x 20 targets) with nothing rounded; float32 otherwise."""
    local_codes, local_labels = [], []
    values, start = np.empty((rows, len(targets)), dtype=np.float16), 0
    for table in schema.row_group_tables(path, [schema.ERA] + targets):
        codes, labels = _encode_eras(table.column(0), path)
        local_codes.append(codes)
        local_labels.append(labels)
        values = _copy_targets(table.columns[1:], values, start)
        start += table.num_rows
    eras = schema.sorted_eras(label for labels in local_labels for label in labels)
    code_of = {label: code for code, label in enumerate(eras)}
    era_codes, start = np.empty(rows, dtype=np.int32), 0
    for local, labels in zip(local_codes, local_labels):
        era_codes[start:start + len(local)] = np.array([code_of[label] for label in labels], dtype=np.int32)[local]
        start += len(local)
    return era_codes, eras, values


def _encode_eras(column, path: Path) -> tuple[np.ndarray, list[str]]:
    """One row group's era column as (int32 index per row, its labels)."""
    import pyarrow as pa

    if column.null_count:
        raise DataError(f"{path}: {column.null_count} row(s) without an era")
    encoded = column.combine_chunks().cast(pa.string()).dictionary_encode()
    return encoded.indices.to_numpy().astype(np.int32, copy=False), encoded.dictionary.to_pylist()


def _copy_targets(columns: list, values: np.ndarray, start: int) -> np.ndarray:
    """One row group's target columns into values[start:...]; returns `values`, widened to float32
    (what was read so far is exact either way) when a value is not a float16 exactly."""
    for j, column in enumerate(columns):
        column = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)  # nulls: NaN
        if values.dtype == np.float16 and not exact_in_float16(column):
            values = values.astype(np.float32)
        values[start:start + len(column), j] = column
    return values


def exact_in_float16(values: np.ndarray) -> bool:
    """Whether float32 `values` survive a round trip through float16 unchanged (NaN stays NaN)."""
    with np.errstate(over="ignore"):  # beyond float16's range: inf, so not equal
        return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values, equal_nan=True))


def release_reader_memory() -> None:
    """Hand Arrow's freed read buffers back to the OS: reading hundreds of columns leaves ~0.5 GB
    cached in its allocator, which training would otherwise carry as dead weight."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def read_manifest(data: Path) -> dict:
    """The prepared folder's manifest, with non-empty feature and target lists."""
    manifest = schema.read_prepared_manifest(data)
    for key in ("features", "targets"):
        if not manifest.get(key):
            raise DataError(f"{Path(data) / 'manifest.json'}: no '{key}' list")
    return manifest


def choose_targets(config: TrainConfig, manifest: dict, source: Path) -> list[str]:
    """config.targets (deduplicated, each one prepared), or every prepared target."""
    if not config.targets:
        return list(manifest["targets"])
    unknown = [t for t in config.targets if t not in manifest["targets"]]
    if unknown:
        raise ConfigError(f"{source}: target(s) not prepared: {', '.join(unknown)} "
                          f"(available: {', '.join(manifest['targets'])})")
    return list(dict.fromkeys(config.targets))


# corr batches: each era is cut into chunks of at most batch_size // CORR_ERAS_PER_BATCH rows and a
# batch packs whole chunks of several eras (the loss takes Pearson per era inside it). One era per
# batch left batches at the era's size (or its chunks' size, ~1,700 of 2,048 rows on 5,000-row
# eras), so more, smaller steps per epoch; two chunks fill a batch to ~batch_size rows.
CORR_ERAS_PER_BATCH = 2


def epoch_batches(n_rows: int, era_codes: np.ndarray, batch_size: int, loss: str, seed: int, epoch: int,
                  rank: int = 0, world: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """This rank's row order for one epoch and the (start, stop) slices of its batches.

    mse: one shuffled permutation, cut into batches of batch_size // world rows per rank (the
    last partial batch is dropped, as fastai does). corr: each era's rows shuffled and cut into
    near-equal chunks of at most batch_size // CORR_ERAS_PER_BATCH rows, chunks in random order and
    packed in that order into batches of at most batch_size rows, batches dealt to ranks in turn.
    The order depends on (seed, epoch) only, so every rank and every --resume agrees on it."""
    rng = np.random.default_rng([seed, epoch])
    if Loss(loss) is Loss.corr:
        chunk_size = max(2, batch_size // CORR_ERAS_PER_BATCH)
        chunks = []
        for rows in rows_by_era(era_codes):
            if len(rows) >= 2:
                rows = rows[rng.permutation(len(rows))]
                chunks += np.array_split(rows, math.ceil(len(rows) / chunk_size))
        batches = pack([chunks[i] for i in rng.permutation(len(chunks))], batch_size)
        per_rank = len(batches) // world if world > 1 else len(batches)
        mine = batches[rank::world][:per_rank]
        order = np.concatenate(mine) if mine else np.empty(0, dtype=np.int64)
        stops = np.cumsum([len(b) for b in mine])
        return order, list(zip(np.r_[0, stops[:-1]].tolist(), stops.tolist()))
    perm = rng.permutation(n_rows)
    per_rank_batch = max(2, batch_size // world)
    steps = max(1, n_rows // (per_rank_batch * world))  # equal on every rank, as DDP requires
    mine = perm[rank::world][:steps * per_rank_batch]
    return mine, [(s, min(s + per_rank_batch, len(mine))) for s in range(0, len(mine), per_rank_batch)]


def rows_by_era(era_codes: np.ndarray) -> list[np.ndarray]:
    """Each era's row numbers (ascending; int32 where they fit, half the bytes of numpy's int64)
    in era-code order, from one stable sort rather than a full comparison per era."""
    index_type = np.int32 if len(era_codes) < np.iinfo(np.int32).max else np.int64
    by_era = np.argsort(era_codes, kind="stable").astype(index_type)
    bounds = np.searchsorted(era_codes[by_era], np.arange(int(era_codes.max()) + 2))
    return [by_era[bounds[code]:bounds[code + 1]] for code in range(len(bounds) - 1)]


def pack(chunks: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Consecutive chunks joined into batches of at most batch_size rows (a chunk is never split)."""
    batches, current, size = [], [], 0
    for chunk in chunks:
        if current and size + len(chunk) > batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
        current.append(chunk)
        size += len(chunk)
    if current:
        batches.append(np.concatenate(current))
    return batches


def batch_segments(era_codes: np.ndarray) -> np.ndarray:
    """Each row's era as 0..k-1 within its batch: the segments the corr loss takes Pearson over."""
    return np.unique(era_codes, return_inverse=True)[1].reshape(-1)
