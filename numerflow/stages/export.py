"""export stage: one checkpoint (or a rank-averaged ensemble) as a cloudpickled
`predict(live_features, live_benchmark_models=None) -> DataFrame` for Numerai's hosted model
uploads, and (with an UploadConfig) its upload through numerapi's `model_upload`.

Numerai runs the pickle in its own environment, where numerflow is not installed and torch may not
be either. So the pickle carries no numerflow code and no torch objects: the MLP's weights are
stored as numpy arrays (BatchNorm folded into a scale and a shift) with the feature list, and the
function evaluates the network with numpy in row batches. `live_benchmark_models` is accepted and
not used, so the frame may be absent or have any columns.

Exactly `numerflow predict`'s ranks: both evaluate the network in float64 and round each raw score
to float32 before ranking (`checkpoint.predict_scores` is predict's side). Two float64
evaluations (torch's and numpy's BLAS, any CPU) differ by about 1e-16, far below the spacing of different rows' scores, and
the rounding turns the last-bit differences of identical rows back into the ties ranking expects.
Float32 forward passes differed by a rank step near ties (2 of 6,720 live rows at 3,555 features).

Upload (`numerflow export --upload --model-name NAME`):
- Docker image: the one whose name carries the Python version that wrote the pickle ("Python
  3.11", "numerai_predict_py_3_11"); a cloudpickle holds bytecode of one Python version. None:
  an error listing the images and the Pythons to export from.
- Data version: the one the checkpoints were trained on, read from the prepare manifest the
  checkpoint's train_config names; several (an ensemble): the newest of them, as later versions
  keep earlier features. Synthetic or unknown data (a moved or missing manifest): the newest
  version Numerai offers, said in a note.
- Before anything is uploaded the pickle is loaded in a fresh Python process (numerflow made
  unimportable) and run on the live features within Numerai's runner limits: one CPU thread,
  peak RSS under 4 GB, 10 minutes. Any failure is one error line and nothing is written or uploaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import binning, schema
from numerflow.checkpoint import SCORE_BATCH_BYTES
from numerflow.config import ExportConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.files import atomic_path
from numerflow.numpy_forward import build_numpy_forward, numpy_layers
from numerflow.workflow import postprocess
from numerflow.workflow.postprocess import era_labels, feature_unit, neutralise_per_era, rank_per_era

SAMPLE_ROWS = 64  # random rows (plus all-0, all-2, all-4) scored before writing: finite-output check
RUNNER_SECONDS = 600  # Numerai's runner: 10 minutes,
RUNNER_MEMORY_BYTES = 4 * 10**9  # 4 GB,
RUNNER_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # one CPU thread


@dataclass
class UploadConfig:
    model_name: str | None = None  # the account's model; None: its only model
    live: Path | None = None  # live features for the runner check; None: the trained version's live.parquet


@dataclass
class UploadResult:
    model_name: str
    upload_id: str
    docker_image: str
    data_version: str
    live: Path
    rows: int
    seconds: float
    peak_rss: int
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Runner check: {self.rows:,} live rows of {self.live} in {self.seconds:.1f} s on one thread, "
                 f"peak memory {self.peak_rss / 2**20:.0f} MiB (limits: {RUNNER_SECONDS / 60:g} minutes, "
                 f"{RUNNER_MEMORY_BYTES / 1e9:g} GB)",
                 f"Uploaded to model '{self.model_name}' with image '{self.docker_image}' and data version "
                 f"{self.data_version}: upload id {self.upload_id}"]
        return "\n".join(lines + [f"Note: {n}" for n in self.notes])


@dataclass
class ExportResult:
    out: Path
    models: list[Path]
    features: int
    size: int
    python: str
    upload: UploadResult | None = None

    def __str__(self) -> str:
        text = (f"Exported {', '.join(str(m) for m in self.models)} ({self.features} features) to {self.out} "
                f"({self.size / 1024:.0f} KB)\n")
        if self.upload is not None:
            return text + str(self.upload)
        return text + (f"Upload it at numer.ai/models (Upload Model) and choose Python {self.python}: "
                       f"a cloudpickle only loads under the Python version that wrote it")


def build_member_scores(centre: float, scale: float, batch_bytes: int = SCORE_BATCH_BYTES):
    """`member_scores(frame, member, unit)`: one member's raw scores (float32) for a DataFrame
    holding its features, float64 throughout as `checkpoint.predict_scores`, through
    numpy_forward's one forward (MLP or TabM layers). Built inside a function so that cloudpickle
    stores it by value, with no reference to numerflow."""
    forward = build_numpy_forward()

    def member_scores(frame, member, unit):
        import numpy as np

        names = member["features"]
        rows = max(1, batch_bytes // (8 * len(names)))
        raw = np.empty(len(frame), dtype=np.float32)
        for start in range(0, len(frame), rows):  # rows first, then columns: one batch copied at a time
            values = frame.iloc[start:start + rows][names].to_numpy(dtype=np.float64) * unit
            values = np.where(np.isnan(values), 2.0, values)  # Numerai's "missing" value is the middle bucket
            heads = forward((values - centre) * scale, member["layers"])
            raw[start:start + len(values)] = heads[:, 0] if member["predict_with"] == "main" else heads.mean(axis=1)
        return raw

    return member_scores


def build_predict(members: list[dict], weights: list[float], features: list[str], neutralize: float,
                  member_scores, binner=None):
    """The self-contained predict function. Everything it uses is an argument, imported inside it, or
    a function of numerflow.workflow.postprocess (which export has cloudpickle store by value), so
    the pickle holds no reference to numerflow. `binner`: (bins,
    binning.bin_within_eras) when the checkpoints were trained on binned continuous features."""

    def predict(live_features, live_benchmark_models=None):
        # live_benchmark_models: Numerai's runner passes it when it has one; this model does not use it,
        # so its presence and columns never matter.
        import numpy as np
        import pandas as pd

        missing = [f for f in features if f not in live_features.columns]
        if missing:
            raise ValueError(f"live_features lacks {len(missing)} feature(s) the model needs: {missing[:10]}")
        if binner is not None:  # continuous features: buckets within each era, as prepare made them
            bins, bin_within_eras = binner
            era_of_rows = era_labels(live_features)
            binned = bin_within_eras(live_features[features].to_numpy(dtype=np.float64, na_value=np.nan),
                                     era_of_rows, bins)
            live_features = pd.DataFrame(binned, columns=features, index=live_features.index).assign(era=era_of_rows)
        unit = feature_unit(live_features, features)
        eras = era_labels(live_features)
        combined = np.zeros(len(live_features))
        for member, weight in zip(members, weights):
            raw = member_scores(live_features, member, unit)
            combined += weight * rank_per_era(np.asarray(raw, dtype=np.float64), eras)
        result = rank_per_era(combined, eras)
        if neutralize > 0:
            result = neutralise_per_era(result, live_features, features, eras, neutralize, unit)
        return pd.DataFrame({"prediction": result}, index=live_features.index)

    return predict


def pickled_by_value(cloudpickle, function) -> bytes:
    """The function cloudpickled with numerflow.workflow.postprocess's functions stored by value:
    the pickle runs where numerflow is not installed."""
    cloudpickle.register_pickle_by_value(postprocess)
    try:
        return cloudpickle.dumps(function)
    finally:
        cloudpickle.unregister_pickle_by_value(postprocess)


def check_finite_scores(members: list[dict], model_paths: list[Path], member_scores) -> None:
    """predict's and validate's finite-output check, before anything is written: each member scores
    a fixed sample of rows (random buckets plus all-0, all-2 and all-4 rows)."""
    import pandas as pd

    for path, member in zip(model_paths, members):
        names = member["features"]
        rng = np.random.default_rng(0)
        sample = np.vstack([rng.integers(0, 5, size=(SAMPLE_ROWS, len(names))),
                            np.full((3, len(names)), [[0], [2], [4]])]).astype(np.int8)
        raw = member_scores(pd.DataFrame(sample, columns=names), member, 1.0)
        bad = int((~np.isfinite(raw)).sum())
        if bad:
            raise CheckpointError(f"{path}: the model produced non-finite predictions ({bad} of {len(raw)} "
                                  f"sample rows); nothing written")


# --- upload: image and data version, the runner check, the upload ---------------------------------

def python_of_image(name: str) -> tuple[int, int] | None:
    """(3, 11) for "Python 3.11", "numerai_predict_py_3_11", "py3.11"; None when the name has none."""
    m = re.search(r"(?:python|py)[ _-]?(\d+)[._](\d+)", name, re.IGNORECASE)
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose_docker_image(images: dict[str, str], python: tuple[int, int]) -> str:
    """The name of the image running `python` ("Python X.Y" itself when offered, else the first
    listed); an error listing the images and the Pythons to export from when none runs it."""
    wanted = f"{python[0]}.{python[1]}"
    matching = [name for name in images if python_of_image(name) == python]
    if matching:
        return f"Python {wanted}" if f"Python {wanted}" in matching else matching[0]
    offered = sorted({p for p in map(python_of_image, images) if p})
    advice = (f"export from Python {' or '.join(f'{a}.{b}' for a, b in offered)} instead"
              if offered else "none of them names a Python version")
    raise ConfigError(f"Numerai has no model-upload image for Python {wanted}, the Python that wrote this pickle "
                      f"(images: {', '.join(images) or 'none'}); a cloudpickle loads only under the Python that "
                      f"wrote it: {advice}; nothing uploaded")


def trained_manifests(checkpoints: list[dict]) -> list[dict | None]:
    """Each checkpoint's prepare manifest (train_config's `data` folder; None where it is gone), its
    "version" the one the checkpoint records it was trained on ("trained_on") when it does: the
    folder may have been prepared anew from another version since. Older checkpoints: the folder's."""
    manifests = []
    for checkpoint in checkpoints:
        data = (checkpoint.get("train_config") or {}).get("data")
        path = Path(str(data)) / "manifest.json" if data else None
        try:
            manifest = json.loads(path.read_text()) if path and path.is_file() else None
        except (OSError, ValueError):
            manifest = None
        manifest = manifest if isinstance(manifest, dict) else None
        trained_on = checkpoint.get("trained_on")
        if isinstance(trained_on, dict) and trained_on.get("version"):
            manifest = {**(manifest or {}), "version": trained_on["version"]}
        manifests.append(manifest)
    return manifests


def choose_data_version(offered: list[str], trained: list[str | None]) -> tuple[str, list[str]]:
    """(data version name, notes): the newest real version the models were trained on; synthetic or
    unknown: the newest offered. A trained version Numerai does not offer is an error."""
    if not offered:
        raise ConfigError("Numerai offers no data versions for model uploads; nothing uploaded")
    known = sorted({v for v in trained if v and schema.version_number(v)}, key=schema.version_number)
    newest = max(offered, key=lambda v: schema.version_number(v) or ())
    if not known:
        what = ", ".join(sorted({v for v in trained if v})) or "data whose prepare manifest is gone"
        return newest, [f"trained on {what}, not a Numerai version: uploading for the newest data version, {newest}"]
    if known[-1] not in offered:
        raise ConfigError(f"the model was trained on {known[-1]} but Numerai's model uploads offer data versions "
                          f"{', '.join(offered)}; train on one of them; nothing uploaded")
    return known[-1], []


def default_live(manifests: list[dict | None]) -> Path:
    """live.parquet of the (newest) version folder the models were trained on."""
    folders = [Path(m["version_dir"]) for m in manifests if m and m.get("version_dir")]
    for folder in sorted(folders, key=lambda f: schema.version_number(f.name) or (), reverse=True):
        if (folder / schema.LIVE_FILE).is_file():
            return folder / schema.LIVE_FILE
    raise DataError("no live features to test the pickle on before uploading: give --live LIVE.parquet "
                    "(or run `numerflow download --live-only` for the version the model was trained on)")


# Run in a fresh interpreter, as Numerai's runner does: numerflow unimportable, one thread.
RUNNER_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    sys.modules["numerflow"] = None
    import cloudpickle, numpy as np, pandas as pd
    pickle_path, live_path, benchmark_path = sys.argv[1:4]
    with open(pickle_path, "rb") as f:
        predict = cloudpickle.load(f)
    live = pd.read_parquet(live_path)
    benchmark = pd.read_parquet(benchmark_path) if benchmark_path else None
    started = time.perf_counter()
    out = predict(live, benchmark)
    seconds = time.perf_counter() - started
    if not isinstance(out, pd.DataFrame) or "prediction" not in out.columns:
        sys.exit("it returned no DataFrame with a 'prediction' column")
    if len(out) != len(live) or not out.index.equals(live.index):
        sys.exit(f"it returned {len(out)} rows not indexed like the {len(live)} live rows")
    values = out["prediction"].to_numpy(dtype=float)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        sys.exit("it returned predictions that are NaN or outside [0, 1]")
    try:  # Linux: this process's own peak; ru_maxrss would include the parent's size before exec
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(json.dumps({"rows": len(out), "seconds": seconds, "peak_rss": peak}))
""")


def runner_check(pickle_path: Path, live: Path) -> dict:
    """Run the pickle on `live` in a fresh process within Numerai's limits: {rows, seconds, peak_rss}."""
    from numerflow.numerai import CREDENTIAL_VARS

    benchmark = live.with_name("live_benchmark_models.parquet")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}  # the runner has no keys
    env.update({name: "1" for name in RUNNER_THREADS})
    try:
        done = subprocess.run([sys.executable, "-c", RUNNER_SCRIPT, str(pickle_path), str(live),
                               str(benchmark) if benchmark.is_file() else ""],
                              capture_output=True, text=True, env=env, timeout=RUNNER_SECONDS)
    except subprocess.TimeoutExpired:
        raise CheckpointError(f"the pickle did not finish on {live} within {RUNNER_SECONDS / 60:g} minutes on one "
                              f"thread (Numerai's limit); nothing uploaded") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
        raise CheckpointError(f"the pickle failed on {live} in a fresh process ({reason}); nothing uploaded")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["peak_rss"] > RUNNER_MEMORY_BYTES:
        raise CheckpointError(f"the pickle needed {report['peak_rss'] / 1e9:.1f} GB on {live}, over Numerai's "
                              f"{RUNNER_MEMORY_BYTES / 1e9:g} GB; nothing uploaded")
    return report


@dataclass
class _UploadPlan:
    client: object
    model_name: str
    model_id: str
    docker_image: tuple[str, str]  # (name, id)
    data_version: tuple[str, str]
    live: Path
    notes: list[str]


def plan_upload(upload: UploadConfig, checkpoints: list[dict], client=None) -> _UploadPlan:
    """Everything the upload needs, asked before the pickle is written or checked, so that a wrong
    model name or a missing image fails in seconds."""
    from numerflow import numerai
    from numerflow.workflow.round_inputs import resolve_model_id

    manifests = trained_manifests(checkpoints)
    live = Path(upload.live) if upload.live is not None else default_live(manifests)
    if not live.is_file():
        raise DataError(f"{live}: file not found")
    client = client if client is not None else numerai.client()
    model_name, model_id = resolve_model_id(client, upload.model_name)
    images, versions = numerai.model_upload_options(client)
    image = choose_docker_image(images, sys.version_info[:2])
    version, notes = choose_data_version(list(versions), [m.get("version") if m else None for m in manifests])
    return _UploadPlan(client, model_name, model_id, (image, images[image]), (version, versions[version]), live, notes)


def publish(pickled: bytes, out: Path, plan: _UploadPlan | None) -> UploadResult | None:
    """Write the pickle; with a plan, run the runner check on it first (a failing pickle is never
    written) and upload it once it is in place."""
    from numerflow import numerai

    with atomic_path(out) as tmp:
        tmp.write_bytes(pickled)
        report = runner_check(tmp, plan.live) if plan is not None else None
    if plan is None:
        return None
    upload_id = numerai.upload_model(plan.client, out, plan.model_id, plan.data_version[1], plan.docker_image[1])
    return UploadResult(model_name=plan.model_name, upload_id=upload_id, docker_image=plan.docker_image[0],
                        data_version=plan.data_version[0], live=plan.live, rows=report["rows"],
                        seconds=report["seconds"], peak_rss=report["peak_rss"], notes=plan.notes)


def export(config: ExportConfig, upload: UploadConfig | None = None, client=None) -> ExportResult:
    """Write the pickle (after the finite-output check); with `upload`, also check it as Numerai's
    runner would and upload it. `client`: a numerflow.numerai client to reuse."""
    import cloudpickle

    from numerflow.model import FEATURE_CENTRE, FEATURE_SCALE
    from numerflow.workflow.model_scores import ensemble_weights, refuse_overwriting_inputs, union_of_features
    from numerflow.checkpoint import load_checkpoint, load_model

    from numerflow.ensembles import models_and_weights

    model_paths, given_weights = models_and_weights(config)  # --ensemble: its members and weights
    weights = ensemble_weights(given_weights, len(model_paths))
    default_out = Path(config.ensemble) / f"{Path(config.ensemble).name}.pkl" if config.ensemble else \
        model_paths[0].with_suffix(".pkl")
    out = Path(config.out) if config.out is not None else default_out
    refuse_overwriting_inputs(out, model_paths)
    if upload is not None and out.suffix != ".pkl":
        raise ConfigError(f"{out}: Numerai's model uploads take a .pkl file; choose --out NAME.pkl")
    checkpoints = [load_checkpoint(path) for path in model_paths]
    members = [{"features": list(c["features"]), "layers": numpy_layers(load_model(c)),
                "predict_with": c.get("predict_with", "main")} for c in checkpoints]
    member_scores = build_member_scores(FEATURE_CENTRE, FEATURE_SCALE)
    check_finite_scores(members, model_paths, member_scores)
    features = union_of_features([m["features"] for m in members])
    plan = plan_upload(upload, checkpoints, client) if upload is not None else None
    bins = binning.checkpoints_bins(checkpoints, model_paths)
    function = build_predict(members, [float(w) for w in weights], features, float(config.neutralize), member_scores,
                             binner=None if bins is None else (bins, binning.make_binner()))
    uploaded = publish(pickled_by_value(cloudpickle, function), out, plan)
    return ExportResult(out=out, models=model_paths, features=len(features), size=out.stat().st_size,
                        python=f"{sys.version_info.major}.{sys.version_info.minor}", upload=uploaded)
