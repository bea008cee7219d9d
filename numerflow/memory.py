"""Know before loading whether a stage fits in memory: train, cv, sweep, validate and predict
estimate their peak resident memory from the sizes on disk (Parquet metadata, the prepare
manifest, the checkpoint's feature list) before any heavy work, and stop with one line when it
cannot fit in what the machine has available (psutil) or, in a container, what its cgroup
memory limit leaves (cgroups.py), naming the options that would fit.

The estimate is the int8 feature bytes the stage holds plus a measured overhead: BASE_BYTES
(torch and the libraries, read buffers, allocator slack) and a few bytes per row for what a stage
keeps beside the features (targets, era codes, ids, predictions). Both were fitted to the
full-size runs of bench/full_scale.py (2.7M + 1M rows x 3,555 features; docs/benchmarks.md):
train 13.02 GiB, train --downsample 4 6.23 GiB, validate 4.14 GiB, predict 4.02 GiB peak RSS; the
estimate reproduces each within 1 % and bench/full_scale.py prints it beside every measured peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from numerflow.cgroups import CGROUP_ROOT, PROC_CGROUP, cgroup_room
from numerflow.errors import NumerflowError

GIB = 1 << 30
BASE_BYTES = int(0.68 * GIB)  # torch + pyarrow + pandas, 64 MiB read buffers, scoring batches, slack
TRAIN_ROW_BYTES = 8  # int32 era code + the trainer's per-row index arrays; targets are added per target
TRAIN_TARGET_BYTES = 2  # float16 per target and row (Numerai's targets are exact in float16)
BENCHMARK_BYTES = 4  # --bmc-weight: the float32 benchmark column beside the targets (training.data.read_benchmark)
VALIDATE_ROW_BYTES = 80  # id and era as Arrow strings, float64 predictions, ranks while scoring
VALIDATE_TARGET_BYTES = 4  # each scored target, float32
PREDICT_ROW_BYTES = 40  # id as an Arrow string, float64 predictions


class MemoryCheckError(NumerflowError):
    """The stage's estimated peak does not fit in the memory available."""


@dataclass
class Estimate:
    """What a stage will hold at its peak, in bytes, and the sizes it was computed from."""

    stage: str
    rows: int
    features: int
    per_row: int  # bytes each row costs beside its int8 features
    workers: int = 1  # sweep --jobs: processes each holding this much
    fits: list[str] = field(default_factory=list)  # options that would fit, filled by check()
    split_rows: dict[str, int] = field(default_factory=dict)  # train/cv/sweep: rows of each prepared file

    @property
    def per_worker(self) -> int:
        return self.rows * (self.features + self.per_row) + BASE_BYTES

    @property
    def total(self) -> int:
        return self.workers * self.per_worker


def train_estimate(rows: int, features: int, targets: int, workers: int = 1, stage: str = "train",
                   benchmark: bool = False) -> Estimate:
    """train (and cv's folds, sweep's trials): every prepared row's int8 features and targets, and
    with `benchmark` (--bmc-weight) the benchmark column."""
    per_row = TRAIN_ROW_BYTES + TRAIN_TARGET_BYTES * max(1, targets) + (BENCHMARK_BYTES if benchmark else 0)
    return Estimate(stage, rows, features, per_row, workers)


def validate_estimate(rows: int, features: int, targets: int) -> Estimate:
    return Estimate("validate", rows, features, VALIDATE_ROW_BYTES + VALIDATE_TARGET_BYTES * max(1, targets))


def predict_estimate(rows: int, features: int) -> Estimate:
    return Estimate("predict", rows, features, PREDICT_ROW_BYTES)


def available_bytes() -> int:
    """Memory the machine can give without swapping (psutil's `available`: free + reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


def available_memory(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> tuple[int, str]:
    """What a stage may use, and what bounds it: the smaller of the machine's available memory and
    the room left under this process's cgroup memory limit (Docker, Kubernetes, systemd). The
    kernel kills a container at its limit however much the machine has free (exit 137)."""
    machine = available_bytes()
    room = cgroup_room(cgroup_root, proc_cgroup)
    if room is not None and room.available < machine:
        return room.available, f"under the container's memory limit ({room.describe()})"
    return machine, "on the machine"


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def parquet_rows(path: str | Path, where: tuple[str, str] | None = None) -> int:
    """Rows of a Parquet file from its footer; with `where=(column, value)` the rows whose column
    equals value (reads that one column only: a raw validation.parquet holds other rows too)."""
    import pyarrow.parquet as pq

    if where is None:
        return pq.ParquetFile(path).metadata.num_rows
    import pyarrow.compute as pc

    column = pq.read_table(path, columns=[where[0]]).column(0)
    return int(pc.sum(pc.equal(column.cast("string"), where[1])).as_py() or 0)


def check(estimate: Estimate, enabled: bool = True, available: int | None = None) -> Estimate:
    """Raise MemoryCheckError (one line: estimate, available, options that fit) when the estimate
    exceeds the available memory; `enabled=False` (--no-memory-check) skips the comparison."""
    if not enabled:
        return estimate
    bound = ""
    if available is None:
        available, where = available_memory()
        bound = f" {where}"
    if estimate.total <= available:
        return estimate
    estimate.fits = fitting_options(estimate, available)
    workers = f" ({estimate.workers} workers x {gib(estimate.per_worker)})" if estimate.workers > 1 else ""
    hint = f"; would fit: {', '.join(estimate.fits)}" if estimate.fits else ""
    raise MemoryCheckError(
        f"{estimate.stage} needs about {gib(estimate.total)} of memory at its peak{workers} "
        f"({estimate.rows:,} rows x {estimate.features:,} int8 features), but {gib(available)} is available{bound}"
        f"{hint}; --no-memory-check tries anyway")


def fitting_options(estimate: Estimate, available: int) -> list[str]:
    """The smallest changes that would bring the estimate under `available`."""
    options = []
    if estimate.workers > 1:
        workers = available // estimate.per_worker
        if workers >= 1:
            options.append(f"--jobs {workers}")
    room = available // estimate.workers - BASE_BYTES
    if room <= 0:
        return options
    if estimate.stage in ("train", "cv", "sweep"):
        # prepare --downsample K keeps every K-th training era: rows shrink about K-fold.
        factor = math.ceil(estimate.rows * (estimate.features + estimate.per_row) / room)
        if 1 < factor <= 64:
            options.append(f"prepare --downsample {factor} (about {estimate.rows // factor:,} rows)")
    max_features = room // max(1, estimate.rows) - estimate.per_row
    if 0 < max_features < estimate.features:
        options.append(f"a smaller --feature-set (at most {max_features:,} features)")
    return options



def check_prepared(config, stage: str = "train", workers: int = 1) -> Estimate | None:
    """train, cv and sweep (`workers`: sweep --jobs, each trial its own process and copy): the
    prepared folder's rows x the manifest's features, from the footers and manifest.json alone.
    None when the folder is not readable yet: the stage then reports that in its own words."""
    import json

    data = Path(config.data)
    # cv reads validation.parquet only as its --include-validation fold; train and trials read both.
    splits = ["train.parquet"] + ([] if stage == "cv" and not config.include_validation else ["validation.parquet"])
    try:
        manifest = json.loads((data / "manifest.json").read_text())
        features = len(manifest["features"])
        split_rows = {name: parquet_rows(data / name) for name in splits if (data / name).is_file()}
    except Exception:  # noqa: BLE001 - any unreadable part is the stage's own error to report
        return None
    targets = len(getattr(config, "targets", None) or manifest.get("targets") or [None])
    # train and cv read the benchmark for --bmc-weight; sweeps whenever prepare carried one (any trial may use it)
    benchmark = getattr(config, "bmc_weight", 0) > 0 or (stage == "sweep" and bool(manifest.get("benchmark")))
    estimate = train_estimate(sum(split_rows.values()), features, targets, workers, stage, benchmark)
    estimate.split_rows = split_rows
    return check(estimate, config.memory_check)


def device_note(estimate: Estimate | None, device, free_bytes: int | None = None) -> str | None:
    """On a CUDA device, one line saying before loading whether each prepared file's int8 features
    will stay on the GPU (the trainer keeps a file's features there when they take less than
    devices.GPU_RESIDENT_SHARE of the free GPU memory; sweep --jobs workers share the GPU) or in
    host memory, each batch then copied (slower), and what would keep them on it. None elsewhere."""
    if estimate is None or getattr(device, "type", None) != "cuda" or not estimate.split_rows:
        return None
    from numerflow.devices import GPU_RESIDENT_SHARE, gpu_free_bytes

    free = gpu_free_bytes(device) if free_bytes is None else free_bytes
    sizes = {name: rows * estimate.features for name, rows in estimate.split_rows.items()}
    # As the trainer places them: train first, then validation in what train left free.
    resident, left = [], free / estimate.workers
    for name, n_bytes in sizes.items():
        if n_bytes < GPU_RESIDENT_SHARE * left:
            resident.append(name)
            left -= n_bytes
    shared = f" shared by {estimate.workers} workers" if estimate.workers > 1 else ""
    if len(resident) == len(sizes):
        return (f"GPU {device}: the int8 features ({gib(sum(sizes.values()))}) stay on the GPU "
                f"({gib(free)} free{shared})")
    host = [name for name in sizes if name not in resident]
    factor = math.ceil(sum(sizes.values()) / max(GPU_RESIDENT_SHARE * free / estimate.workers, 1))
    return (f"GPU {device}: the int8 features of {', '.join(host)} ({gib(sum(sizes[n] for n in host))}) do not fit in "
            f"{GPU_RESIDENT_SHARE:.0%} of its {gib(free)} free{shared}: they stay in host memory and each batch is "
            f"copied to the GPU (slower); prepare --downsample {factor} or a smaller --feature-set would keep them "
            f"on it")
