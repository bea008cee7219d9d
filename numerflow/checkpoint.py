"""Checkpoints: the one owner of saving, loading, checking, building the model from a checkpoint and
scoring features with it. train writes checkpoints; predict, validate and export read them.

A checkpoint is a plain dict of tensors, lists and numbers (nanoGPT's layout: the model's config is
saved beside its weights, so the file alone rebuilds the model). It is loaded with
`torch.load(weights_only=True)`, so a file cannot run code.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from numerflow.errors import CheckpointError, ConfigError
from numerflow.files import atomic_path
from numerflow.options import PredictWith

KEYS = ("numerflow_version", "model_config", "features", "targets", "predict_with",
        "state_dict", "train_config", "metrics", "best_epoch")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write `checkpoint` (a dict with every key in KEYS) atomically: a crash leaves no half file."""
    missing = [key for key in KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}")  # a bug in the caller, not bad input
    return save_atomic(path, checkpoint)


def save_atomic(path: str | os.PathLike, obj) -> Path:
    """torch.save to `path` through a temporary file. Written through a file object, not the
    temporary's name: torch names the zip's inner folder after a path it is given, which would
    make two runs with the same --seed differ in bytes."""
    with atomic_path(path) as tmp:
        _torch_save(obj, tmp)
    return Path(path)


def _torch_save(obj, tmp: Path) -> None:
    """torch.save into the file `tmp`. torch's zip writer turns a failed write (a full disk, an I/O
    error) into a RuntimeError ("[enforce fail at inline_container.cc] unexpected pos ..."): that
    is given back as the OSError it was (atomic_path adds the file's name), so the CLI reports one
    line; any other RuntimeError is a bug and propagates as it is."""
    import torch

    try:
        with open(tmp, "wb") as file:
            torch.save(obj, file)
    except RuntimeError as exc:
        cause = _os_error_in_chain(exc)
        if cause is not None:
            raise cause from None
        if "inline_container" in str(exc) or "PytorchStreamWriter" in str(exc):
            raise OSError(errno.EIO, f"torch could not write the file ({exc})") from None
        raise


def _os_error_in_chain(exc: BaseException) -> OSError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


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
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in KEYS):
        raise CheckpointError(f"{path}: not a numerflow checkpoint")
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise CheckpointError(f"{path}: not a numerflow checkpoint ({problem})")
    return checkpoint


def checkpoint_problem(checkpoint: dict) -> str | None:
    """Why the checkpoint's parts do not fit together (config, feature and target lists, weights),
    or None: caught here so that predict/validate/export fail on one line, not deep inside torch."""
    from numerflow.model import build_model, import_tabm

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
    if config.get("arch") == "tabm":
        import_tabm()  # without the package: its own one-line ConfigError, not "weights do not fit"
    try:
        build_model(config).load_state_dict(checkpoint["state_dict"])
    except Exception as exc:  # bad config values, missing/extra/misshapen tensors: all one answer here
        return f"weights do not fit model_config: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    return None


def load_model(checkpoint: dict):
    """The checkpoint's network (MLP or TabM) with its best weights, in eval mode, on CPU."""
    from numerflow.model import build_model

    model = build_model(checkpoint["model_config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint weights do not fit its model config ({str(exc).splitlines()[0]})") from None
    return model.eval()


SCORE_BATCH_BYTES = 64 << 20  # float64 inputs per forward batch, here and in the exported pickle


def predict_scores(model, features_int8, device="cpu", predict_with: str = PredictWith.main,
                   batch_rows: int | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Raw scores (1-D float32) of an int8 (rows, features) array or tensor: the one way numerflow
    scores features with a model, in train's per-epoch validation, validate, predict, and (in numpy)
    the exported pickle. The network runs in float64 and each score is rounded to float32 at the
    end: two float64 evaluations (torch's and numpy's BLAS) differ by ~1e-16, far below the spacing
    of different rows' scores, and the rounding turns last-bit differences of identical rows back
    into ties, so every path gives the same ranks. (Float32 forward passes differed by a rank step
    near ties: 2 of 6,720 live rows at 3,555 features.) Batches hold at most `batch_rows` rows and
    at most SCORE_BATCH_BYTES of float64 inputs, so a wide matrix never has a large float copy
    (65,536 rows x 3,555 features would be 1.9 GB). `rows`: score only these row numbers, in
    that order, gathered batch by batch (a subset of a large matrix is never copied whole). The
    model itself is not changed."""
    import copy

    import torch

    from numerflow.model import centre_into

    try:
        predict_with = PredictWith(predict_with)
    except ValueError:
        raise ConfigError(f"predict_with must be one of {', '.join(PredictWith.names())}, got '{predict_with}'") from None
    device = torch.device(device)
    if device.type == "mps":  # Apple's GPUs have no float64: the CPU gives the same scores
        device = torch.device("cpu")
    model = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    step = max(1, SCORE_BATCH_BYTES // (8 * max(1, features_int8.shape[1])))
    step = min(step, batch_rows or step)
    n_out = len(features_int8) if rows is None else len(rows)
    out = np.empty(n_out, dtype=np.float32)
    # One float64 buffer, reused: cast and centred in one pass (no extra full-batch temporaries).
    buffer = torch.empty((min(step, n_out), features_int8.shape[1]), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, n_out, step):
            chunk = _score_batch(features_int8, start, start + step, rows)
            heads = model(centre_into(chunk.to(device, non_blocking=True), buffer[:len(chunk)]), centred=True)
            scores = heads[:, 0] if predict_with is PredictWith.main else heads.mean(dim=1)
            out[start:start + len(chunk)] = scores.cpu().numpy()  # float64 → float32, rounded to nearest
    return out


def _score_batch(features_int8, start: int, stop: int, rows: np.ndarray | None):
    """Rows start:stop of the matrix (or of its `rows` subset) as an int8 tensor. numpy batches are
    copied (one batch): callers may pass read-only arrays from pandas."""
    import torch

    if rows is not None:
        picked = rows[start:stop]
        if isinstance(features_int8, torch.Tensor):
            return features_int8.index_select(0, torch.from_numpy(picked).to(features_int8.device))
        return torch.from_numpy(features_int8[picked])
    chunk = features_int8[start:stop]
    return chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))
