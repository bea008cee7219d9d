"""train stage: fit numerflow's MLP on prepared data, score every epoch era by era, keep the best.

Memory: the training features stay one int8 (rows, features) tensor — on the GPU when they fit —
and each step gathers a shuffled batch by index into a preallocated buffer and casts it to
float32 there. No per-row Dataset, no DataLoader workers: a batch costs one index_select.

Distributed: under `torchrun` (WORLD_SIZE > 1) the same function runs DistributedDataParallel
(gloo on CPU, nccl on CUDA). Every rank draws the same permutation per epoch and trains on its
shard of it; validation eras are split between ranks by whole eras and their per-era Spearmans are
all-reduced; only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from numerflow import __version__, metrics, schema
from numerflow.config import TrainConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.files import atomic_path, write_json

CHECKPOINT_KEYS = ("numerflow_version", "model_config", "features", "targets", "predict_with",
                   "state_dict", "train_config", "metrics", "best_epoch")
LOSSES = ("mse", "corr")
SCHEDULES = ("onecycle", "constant")
PREDICT_WITH = ("main", "mean")
# fastai's Adam defaults; beta1 follows the one-cycle momentum schedule when that schedule is on.
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-5
ONECYCLE_WARMUP = 0.25  # fraction of steps spent warming up
ONECYCLE_DIV = 25.0  # start lr = lr / 25
ONECYCLE_DIV_FINAL = 1e5  # final lr = lr / 1e5
ONECYCLE_MOMS = (0.95, 0.85, 0.95)
# Settings that may change between an interrupted run and its --resume.
RESUMABLE_CHANGES = {"resume", "device", "patience"}


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: list[dict]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from: int  # epochs already done when this call started (0: a fresh run)
    device: str
    world_size: int
    seconds: float
    config_json: Path | None = None

    @property
    def best(self) -> dict:
        return self.metrics[self.best_epoch - 1] if self.metrics else {}

    def __str__(self) -> str:
        best = self.best
        how = "stopped early" if self.stopped_early else "finished"
        lines = [f"Trained {self.epochs_run} epoch(s) on {self.device}"
                 + (f" x{self.world_size} processes" if self.world_size > 1 else "")
                 + (f" (resumed after epoch {self.resumed_from})" if self.resumed_from else "")
                 + f", {how} in {self.seconds:.1f} s",
                 f"Best epoch {self.best_epoch}: validation mean era-Spearman {best.get('val_mean', float('nan')):.4f}, "
                 f"sharpe {best.get('val_sharpe', float('nan')):.2f}",
                 f"Checkpoint: {self.checkpoint}"]
        if self.config_json:
            lines.append(f"Config and metrics: {self.config_json}")
        return "\n".join(lines)


# --- public helpers used by validate/predict ------------------------------------------------------

def set_seed(seed: int) -> None:
    """One seed for Python's random, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A numerflow checkpoint as a dict (tensors on CPU). Loaded with weights_only=True, so a file
    cannot run code; anything that is not a numerflow checkpoint is a CheckpointError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # pickle, zip and unsafe-global errors all mean the same thing here
        raise CheckpointError(f"{path}: not a numerflow checkpoint") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in CHECKPOINT_KEYS):
        raise CheckpointError(f"{path}: not a numerflow checkpoint")
    problem = _checkpoint_problem(checkpoint)
    if problem:
        raise CheckpointError(f"{path}: not a numerflow checkpoint ({problem})")
    return checkpoint


def _checkpoint_problem(checkpoint: dict) -> str | None:
    """Why the checkpoint's parts do not fit together (config, feature and target lists, weights),
    or None: caught here so that predict/validate/export fail on one line, not deep inside torch."""
    from numerflow.model import build_model

    config = checkpoint["model_config"]
    if not isinstance(config, dict):
        return "model_config is not a dict"
    for key in ("features", "targets"):
        names = checkpoint[key]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return f"'{key}' is not a list of column names"
    if not isinstance(checkpoint["state_dict"], dict):
        return "state_dict is not a dict"
    if config.get("n_features") != len(checkpoint["features"]):
        return f"{len(checkpoint['features'])} features listed but model_config n_features is {config.get('n_features')!r}"
    if config.get("n_outputs", 1) != len(checkpoint["targets"]):
        return f"{len(checkpoint['targets'])} targets listed but model_config n_outputs is {config.get('n_outputs', 1)!r}"
    try:
        build_model(config).load_state_dict(checkpoint["state_dict"])
    except Exception as exc:  # bad config values, missing/extra/misshapen tensors: all one answer here
        return f"weights do not fit model_config: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    return None


def load_model(checkpoint: dict):
    """The checkpoint's MLP with its best weights, in eval mode, on CPU."""
    from numerflow.model import build_model

    model = build_model(checkpoint["model_config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint weights do not fit its model config ({str(exc).splitlines()[0]})") from None
    return model.eval()


SCORE_BUFFER_BYTES = 128 << 20  # predict_scores' float32 batch buffer


def predict_scores(model, features_int8, batch_size: int = 65536, device="cpu",
                   predict_with: str = "main") -> np.ndarray:
    """Raw scores (1-D float32) for an int8 (rows, features) array or tensor, cast batch by batch
    so that no float copy of the whole matrix exists. `predict_with`: main head or mean of heads."""
    import torch

    if predict_with not in PREDICT_WITH:
        raise ConfigError(f"predict_with must be one of {', '.join(PREDICT_WITH)}, got '{predict_with}'")
    device = torch.device(device)
    from numerflow.model import centre_into

    features = features_int8
    # Rows per step bounded by the float32 buffer's bytes too: 65,536 rows x 3,555 features would be 0.9 GB.
    batch_size = max(1, min(batch_size, SCORE_BUFFER_BYTES // (4 * max(1, features.shape[1]))))
    was_training = model.training
    model.eval()
    out = np.empty(len(features), dtype=np.float32)
    # One float32 buffer, reused: cast and centred in one pass (no extra full-batch temporaries).
    buffer = torch.empty((min(batch_size, len(features)), features.shape[1]), dtype=torch.float32, device=device)
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            chunk = features[start:start + batch_size]
            # numpy chunks are copied (one batch): callers may pass read-only arrays from pandas.
            chunk = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))
            batch = centre_into(chunk.to(device, non_blocking=True), buffer[:len(chunk)])
            heads = model(batch, centred=True)
            scores = heads[:, 0] if predict_with == "main" else heads.mean(dim=1)
            out[start:start + len(batch)] = scores.float().cpu().numpy()
    model.train(was_training)
    return out


def resolve_device(name: str):
    """'auto' → CUDA, then MPS, then CPU; an explicit device that is not available is a ConfigError."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (choose auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not available in this torch build/machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device '{name}' requested but MPS is not available on this machine")
    elif device.type != "cpu":
        raise ConfigError(f"unknown device '{name}' (choose auto, cpu, cuda, cuda:N or mps)")
    return device


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


# --- schedules and losses -----------------------------------------------------------------------

def _cos_between(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos: cosine from `start` (pos 0) to `end` (pos 1)."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def onecycle(step: int, total_steps: int, peak: float, start: float, end: float) -> float:
    """fastai's combined_cos(0.25, start, peak, end) at step `step` of `total_steps`
    (position = step / total_steps, as fit_one_cycle evaluates it before each batch)."""
    pos = step / max(total_steps, 1)
    if pos < ONECYCLE_WARMUP:
        return _cos_between(start, peak, pos / ONECYCLE_WARMUP)
    return _cos_between(peak, end, (pos - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP))


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> tuple[float, float]:
    """(lr, beta1) for one step: one-cycle as fit_one_cycle, or constant."""
    if config.schedule == "constant":
        return config.lr, ADAM_BETAS[0]
    lr = onecycle(step, total_steps, config.lr, config.lr / ONECYCLE_DIV, config.lr / ONECYCLE_DIV_FINAL)
    high, low, back = ONECYCLE_MOMS
    return lr, onecycle(step, total_steps, low, high, back)


def masked_mse(pred, target, mask):
    """Mean squared error over known targets only (NaN auxiliary targets are skipped)."""
    weight = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def masked_negative_pearson(pred, target, mask):
    """Negative mean Pearson correlation over heads, each over its known targets. Batches for this
    loss are drawn from within one era, so this is the per-era correlation Numerai scores."""
    import torch

    weight = mask.to(pred.dtype)
    n = weight.sum(dim=0)
    pm = (pred * weight).sum(dim=0) / n.clamp(min=1.0)
    tm = (target * weight).sum(dim=0) / n.clamp(min=1.0)
    pc, tc = (pred - pm) * weight, (target - tm) * weight
    corr = (pc * tc).sum(dim=0) / torch.sqrt((pc * pc).sum(dim=0) * (tc * tc).sum(dim=0) + 1e-12)
    usable = n >= 2
    if not bool(usable.any()):
        return pred.sum() * 0.0
    return -corr[usable].mean()


# --- data -----------------------------------------------------------------------------------------

@dataclass
class _Split:
    features: np.ndarray  # int8 (rows, features)
    targets: np.ndarray  # float32 (rows, targets), NaN where unknown
    era_codes: np.ndarray  # int64 code per row
    eras: list[str]  # label of each code, in era order


def _read_split(path: Path, features: list[str], targets: list[str], require_main: bool = False) -> _Split:
    """`require_main`: a split with no known main target is a DataError (nothing to train on)."""
    matrix, frame = schema.read_matrix(path, features, [schema.ERA] + targets)
    _release_reader_memory()
    if len(matrix) == 0:
        raise DataError(f"{path}: no rows")
    groups = metrics.group_eras(frame[schema.ERA].astype(str).to_numpy())
    values = frame[targets].to_numpy(dtype=np.float32, na_value=np.nan)
    if require_main and np.isnan(values[:, 0]).all():
        raise DataError(f"{path}: main target '{targets[0]}' has no known values (all NaN)")
    # Writable and C-ordered for torch (pandas may hand back a read-only view); copied only if not.
    return _Split(matrix, np.require(values, np.float32, ["C", "W"]), groups.codes.astype(np.int64), groups.labels)


def _release_reader_memory() -> None:
    """Hand Arrow's freed read buffers back to the OS: reading hundreds of columns leaves ~0.5 GB
    cached in its allocator, which training would otherwise carry as dead weight."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _manifest(data: Path) -> dict:
    from numerflow.stages.prepare import read_manifest

    manifest = read_manifest(data)
    for key in ("features", "targets"):
        if not manifest.get(key):
            raise DataError(f"{Path(data) / 'manifest.json'}: no '{key}' list")
    return manifest


def _choose_targets(config: TrainConfig, manifest: dict, source: Path) -> list[str]:
    if not config.targets:
        return list(manifest["targets"])
    unknown = [t for t in config.targets if t not in manifest["targets"]]
    if unknown:
        raise ConfigError(f"{source}: target(s) not prepared: {', '.join(unknown)} "
                          f"(available: {', '.join(manifest['targets'])})")
    return list(dict.fromkeys(config.targets))


def _check_config(config: TrainConfig) -> None:
    if config.loss not in LOSSES:
        raise ConfigError(f"unknown loss '{config.loss}' (choose {', '.join(LOSSES)})")
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{config.schedule}' (choose {', '.join(SCHEDULES)})")
    if config.predict_with not in PREDICT_WITH:
        raise ConfigError(f"unknown predict-with '{config.predict_with}' (choose {', '.join(PREDICT_WITH)})")
    if config.batch_size < 2 or config.epochs < 1 or config.lr <= 0:
        raise ConfigError("batch size must be ≥ 2, epochs ≥ 1 and lr > 0")
    if config.weight_decay < 0 or config.l1 < 0:
        raise ConfigError("weight decay and l1 must be ≥ 0")


def _check_out(config: TrainConfig) -> None:
    """Refuse an --out that would overwrite an input (the checkpoint, its .json or .resume file
    landing on the prepared data) or that is a folder, before any training time is spent."""
    data, out = Path(config.data), Path(config.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a checkpoint file path such as {out / 'model.pt'}")
    inputs = {(data / name).resolve() for name in ("train.parquet", "validation.parquet", "manifest.json")}
    for written in (out, _json_path(out), _resume_path(out)):
        if written.resolve() in inputs:
            raise ConfigError(f"--out {out} would overwrite the training input {written}; choose another path")


def config_dict(config: TrainConfig) -> dict:
    """The TrainConfig as JSON-safe values (paths as strings)."""
    return {f.name: (str(v) if isinstance(v, Path) else v)
            for f in fields(config) for v in [getattr(config, f.name)]}


# --- batching ------------------------------------------------------------------------------------

def epoch_batches(n_rows: int, era_codes: np.ndarray, batch_size: int, loss: str, seed: int, epoch: int,
                  rank: int = 0, world: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """This rank's row order for one epoch and the (start, stop) slices of its batches.

    mse: one shuffled permutation, cut into batches of batch_size // world rows per rank (the
    last partial batch is dropped, as fastai does). corr: each era's rows shuffled and cut into
    near-equal chunks of at most batch_size, chunks in random order, dealt to ranks in turn.
    The order depends on (seed, epoch) only, so every rank and every --resume agrees on it."""
    rng = np.random.default_rng([seed, epoch])
    if loss == "corr":
        chunks = []
        for code in range(int(era_codes.max()) + 1):
            rows = np.flatnonzero(era_codes == code)
            if len(rows) >= 2:
                rows = rows[rng.permutation(len(rows))]
                chunks += np.array_split(rows, math.ceil(len(rows) / batch_size))
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        per_rank = len(chunks) // world if world > 1 else len(chunks)
        mine = chunks[rank::world][:per_rank]
        order = np.concatenate(mine) if mine else np.empty(0, dtype=np.int64)
        stops = np.cumsum([len(c) for c in mine])
        return order, list(zip(np.r_[0, stops[:-1]].tolist(), stops.tolist()))
    perm = rng.permutation(n_rows)
    per_rank_batch = max(2, batch_size // world)
    steps = max(1, n_rows // (per_rank_batch * world))  # equal on every rank, as DDP requires
    mine = perm[rank::world][:steps * per_rank_batch]
    return mine, [(s, min(s + per_rank_batch, len(mine))) for s in range(0, len(mine), per_rank_batch)]


# --- distributed ----------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return _Dist(rank=int(os.environ.get("RANK", "0")), world=world,
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _all_reduce_sum(tensor, dist_info: _Dist):
    import torch.distributed as tdist

    if dist_info.active:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


# --- validation -----------------------------------------------------------------------------------

class _Validator:
    """Scores the validation split by whole eras: this rank's eras only, then all-reduced."""

    def __init__(self, split: _Split, device, dist_info: _Dist):
        import torch

        self.dist = dist_info
        self.device = device
        self.n_eras = len(split.eras)
        mine = np.flatnonzero(split.era_codes % dist_info.world == dist_info.rank)
        main = split.targets[mine, 0]
        known = ~np.isnan(main)
        rows = mine[known]
        self.target = main[known]
        # All labels kept, so per-era values line up across ranks (by era index).
        self.groups = metrics.EraGroups(split.eras, split.era_codes[rows].astype(np.int32))
        # All rows in order (one process, every target known): share the array instead of copying it.
        whole = len(rows) == len(split.features)
        self.features = torch.from_numpy(split.features if whole else split.features[rows])
        if device.type == "cuda" and _fits_on_gpu(self.features.numel(), device):
            self.features = self.features.to(device)

    def score(self, model, predict_with: str) -> tuple[dict, np.ndarray]:
        import torch

        values = np.full(self.n_eras, np.nan)
        if len(self.target):
            preds = predict_scores(model, self.features, device=self.device, predict_with=predict_with)
            values = np.asarray(metrics.per_era_spearman(preds, self.target, self.groups).values, dtype=np.float64)
        scored = np.isfinite(values)
        totals = torch.from_numpy(np.where(scored, values, 0.0))
        counts = torch.from_numpy(scored.astype(np.float64))
        reduce_device = self.device if self.dist.active and self.device.type == "cuda" else "cpu"
        totals = _all_reduce_sum(totals.to(reduce_device), self.dist).cpu().numpy()
        counts = _all_reduce_sum(counts.to(reduce_device), self.dist).cpu().numpy()
        per_era = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        return metrics.summarize(per_era), per_era


def _fits_on_gpu(n_bytes: int, device) -> bool:
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return n_bytes < 0.6 * free


# --- the loop ------------------------------------------------------------------------------------

def _resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume")


def _json_path(out: Path) -> Path:
    return out.with_suffix(".json")


def _rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_on_cpu(module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _load_resume(config: TrainConfig, path: Path, features: list[str], targets: list[str]) -> dict | None:
    """The state of an interrupted run, or None when there is none to resume."""
    import torch

    if not config.resume or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise CheckpointError(f"{path}: not a numerflow resume file") from None
    if state.get("features") != features or state.get("targets") != targets:
        raise ConfigError(f"{path}: cannot resume: the prepared data's features or targets changed since it was written")
    saved, now = state.get("train_config", {}), config_dict(config)
    changed = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k} ({saved.get(k)!r} → {now[k]!r})" for k in changed)
        raise ConfigError(f"{path}: cannot resume with different settings: {diffs}")
    return state


def train(config: TrainConfig, say: Callable[[str], None] | None = None) -> TrainResult:
    """Train the MLP on <config.data>/train.parquet, score each epoch on validation.parquet, write
    the best epoch's checkpoint to config.out (plus <name>.json). `say` receives one line per epoch."""
    import torch

    started = time.perf_counter()
    _check_config(config)
    _check_out(config)
    dist_info = _dist_from_env()
    device = resolve_device(config.device)
    if dist_info.active:
        device = _init_distributed(device, dist_info)
    try:
        return _train(config, say, device, dist_info, started)
    finally:
        if dist_info.active:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _init_distributed(device, dist_info: _Dist):
    import torch
    import torch.distributed as tdist

    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"distributed training runs on cpu or cuda, not {device.type}")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return device


def _train(config: TrainConfig, say, device, dist_info: _Dist, started: float) -> TrainResult:
    import torch
    from torch import nn

    from numerflow.model import ModelConfig, build_model, parameter_groups

    data, out = Path(config.data), Path(config.out)
    manifest = _manifest(data)
    features = list(manifest["features"])
    targets = _choose_targets(config, manifest, data / "manifest.json")
    resume_file = _resume_path(out)
    resumed = _load_resume(config, resume_file, features, targets)

    train_split = _read_split(data / "train.parquet", features, targets, require_main=True)
    valid_split = _read_split(data / "validation.parquet", features, targets)

    set_seed(config.seed)
    model_config = ModelConfig(n_features=len(features), layers=list(config.layers), activation=config.activation,
                               dropout=config.dropout, batchnorm=config.batchnorm, n_outputs=len(targets))
    model = build_model(model_config).to(device)
    decayed, exempt = parameter_groups(model)
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": config.weight_decay},
                                   {"params": exempt, "weight_decay": 0.0}],
                                  lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    net = model
    if dist_info.active:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    x_all = torch.from_numpy(train_split.features)
    if device.type == "cuda" and _fits_on_gpu(x_all.numel(), device):
        x_all = x_all.to(device)
    y_all = torch.from_numpy(train_split.targets).to(x_all.device)
    validator = _Validator(valid_split, device, dist_info)
    loss_fn = masked_negative_pearson if config.loss == "corr" else masked_mse

    history: list[dict] = []
    epoch_seconds: list[float] = []
    best_epoch, best_score, best_state, stale = 0, -math.inf, None, 0
    start_epoch = 0
    if resumed:
        model.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        _set_rng_state(resumed["rng_state"])
        history, epoch_seconds = list(resumed["metrics"]), list(resumed["epoch_seconds"])
        best_epoch, best_score, stale = resumed["best_epoch"], resumed["best_score"], resumed["stale"]
        best_state = resumed["best_state"]
        start_epoch = len(history)

    steps_per_epoch = len(epoch_batches(len(x_all), train_split.era_codes, config.batch_size, config.loss,
                                        config.seed, 0, dist_info.rank, dist_info.world)[1])
    total_steps = steps_per_epoch * config.epochs
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if config.patience is not None and stale >= config.patience:
            stopped_early = True
            break
        t0 = time.perf_counter()
        train_loss = _run_epoch(net, optimizer, x_all, y_all, train_split.era_codes, config, loss_fn, epoch,
                                total_steps, steps_per_epoch, decayed, dist_info, device)
        _check_finite(model, train_loss, epoch + 1)
        summary, _per_era = validator.score(model, config.predict_with)
        score = summary["mean"] if np.isfinite(summary["mean"]) else -math.inf
        row = {"epoch": epoch + 1, "train_loss": train_loss,
               **{f"val_{k}": _plain(v) for k, v in summary.items()}}
        history.append(row)
        epoch_seconds.append(time.perf_counter() - t0)
        if score > best_score or best_state is None:
            best_epoch, best_score, best_state, stale = epoch + 1, score, _state_on_cpu(model), 0
        else:
            stale += 1
        if dist_info.writes:
            _save_resume(resume_file, config, model, optimizer, history, epoch_seconds, best_epoch, best_score,
                         best_state, stale, features, targets)
            if say:
                say(f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.5f}, validation era-Spearman "
                    f"mean {row['val_mean']:.4f} sharpe {row['val_sharpe']:.2f} ({epoch_seconds[-1]:.1f} s)")
        if config.patience is not None and stale >= config.patience:
            break
    if config.patience is not None and len(history) < config.epochs:
        stopped_early = True

    checkpoint = {"numerflow_version": __version__, "model_config": model_config.to_dict(),
                  "features": features, "targets": targets, "predict_with": config.predict_with,
                  "state_dict": best_state, "train_config": config_dict(config), "metrics": history,
                  "best_epoch": best_epoch}
    json_path = _json_path(out)
    if dist_info.writes:
        with atomic_path(out) as tmp:
            torch.save(checkpoint, tmp)
        write_json(json_path, {"numerflow_version": __version__, "train_config": config_dict(config),
                               "model_config": model_config.to_dict(), "features": len(features),
                               "targets": targets, "best_epoch": best_epoch, "metrics": history,
                               "epoch_seconds": epoch_seconds, "device": str(device),
                               "world_size": dist_info.world, "rows_train": len(train_split.features),
                               "rows_validation": len(valid_split.features)})
        resume_file.unlink(missing_ok=True)
    return TrainResult(checkpoint=out, metrics=history, best_epoch=best_epoch, epochs_run=len(history),
                       stopped_early=stopped_early, resumed_from=start_epoch, device=str(device),
                       world_size=dist_info.world, seconds=time.perf_counter() - started,
                       config_json=json_path if dist_info.writes else None)


def _check_finite(model, train_loss: float, epoch: int) -> None:
    """Stop on a diverged run instead of scoring and saving NaN weights. The loss is all-reduced
    and DDP keeps weights equal, so every rank takes the same branch."""
    import torch

    if not math.isfinite(train_loss) or not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ConfigError(f"training diverged at epoch {epoch} (loss {train_loss:g}); try a lower --lr")


def _plain(value):
    return float(value) if isinstance(value, (float, np.floating)) else int(value) if isinstance(value, (np.integer,)) else value


def _run_epoch(net, optimizer, x_all, y_all, era_codes, config: TrainConfig, loss_fn, epoch: int,
               total_steps: int, steps_per_epoch: int, decayed, dist_info: _Dist, device) -> float:
    """One pass over this rank's batches; returns the mean training loss (over all ranks)."""
    import torch
    from tqdm.auto import tqdm

    from numerflow.model import centre_into

    order, slices = epoch_batches(len(x_all), era_codes, config.batch_size, config.loss, config.seed, epoch,
                                  dist_info.rank, dist_info.world)
    order = torch.from_numpy(order).to(x_all.device)
    widest = max(stop - start for start, stop in slices)
    # Two buffers reused by every step: the int8 rows gathered by index, and their float32 cast.
    raw = torch.empty((widest, x_all.shape[1]), dtype=torch.int8, device=x_all.device)
    cast = torch.empty((widest, x_all.shape[1]), dtype=torch.float32, device=device)
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    bar = tqdm(slices, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
               disable=not (dist_info.writes and sys.stderr.isatty()))
    for i, (start, stop) in enumerate(bar):
        lr, beta1 = learning_rate(config, epoch * steps_per_epoch + i, total_steps)
        for group in optimizer.param_groups:
            group["lr"], group["betas"] = lr, (beta1, ADAM_BETAS[1])
        idx = order[start:stop]
        rows = raw[:stop - start]
        torch.index_select(x_all, 0, idx, out=rows)
        if rows.device != device:  # int8 rows kept on the CPU: move the int8 batch, not floats
            rows = rows.to(device, non_blocking=True)
        x = centre_into(rows, cast[:stop - start])
        y = y_all[idx].to(device, non_blocking=True)
        mask = ~torch.isnan(y)
        loss = loss_fn(net(x, centred=True), torch.nan_to_num(y), mask)
        total = loss + config.l1 * sum(w.abs().sum() for w in decayed) if config.l1 else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        loss_sum += loss.detach()
    bar.close()
    loss_sum = _all_reduce_sum(loss_sum, dist_info)
    return float(loss_sum) / (len(slices) * dist_info.world)


def _save_resume(path: Path, config: TrainConfig, model, optimizer, history, epoch_seconds, best_epoch,
                 best_score, best_state, stale, features, targets) -> None:
    import torch

    state = {"numerflow_version": __version__, "train_config": config_dict(config), "features": features,
             "targets": targets,
             "model_state": _state_on_cpu(model), "optimizer_state": optimizer.state_dict(),
             "rng_state": _rng_state(), "metrics": history, "epoch_seconds": epoch_seconds,
             "best_epoch": best_epoch, "best_score": best_score, "best_state": best_state, "stale": stale}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
