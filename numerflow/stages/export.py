"""export stage: one checkpoint (or a rank-averaged ensemble) as a cloudpickled
`predict(live_features, live_benchmark_models=None) -> DataFrame` for Numerai's hosted model
uploads, and (with an UploadConfig) its upload through numerapi's `model_upload`.

Numerai runs the pickle in its own environment, where numerflow is not installed and torch may not
be either. So the pickle carries no numerflow code and no torch objects: the MLP's weights are
stored as numpy arrays (BatchNorm folded into a scale and a shift) with the feature list, and the
function evaluates the network with numpy in row batches. `live_benchmark_models` is used only
with --neutralize-benchmark P > 0 (then it is required); otherwise it may be absent or have any columns.

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

The hosted check (`--check`, on by default with `--upload`): before the pickle is moved to its
name it runs on the live features in a fresh Python process (numerflow made unimportable) under
Numerai's runner limits, by numerflow.hosted_check (the one owner of those limits); its wall time
and peak memory are printed, with the package versions that differ from numerai-predict's image.
A pickle that does not fit is one error line, and nothing is written or uploaded.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numerflow import binning, hosted_check, schema
from numerflow.checkpoint import SCORE_BATCH_BYTES
from numerflow.config import ExportConfig
from numerflow.errors import CheckpointError, ConfigError, DataError
from numerflow.files import atomic_path
from numerflow.metrics import benchmark as benchmark_maths
from numerflow.metrics.benchmark import neutralize_to_benchmark
from numerflow.numpy_forward import build_numpy_forward, numpy_layers
from numerflow.workflow import benchmark_rows, postprocess
from numerflow.workflow.postprocess import benchmark_on_index, era_labels, feature_unit, neutralise_per_era, rank_per_era

SAMPLE_ROWS = 64  # random rows (plus all-0, all-2, all-4) scored before writing: finite-output check


@dataclass
class UploadConfig:
    model_name: str | None = None  # the account's model; None: its only model


@dataclass
class UploadResult:
    model_name: str
    upload_id: str
    docker_image: str
    data_version: str
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Uploaded to model '{self.model_name}' with image '{self.docker_image}' and data version "
                 f"{self.data_version}: upload id {self.upload_id}"]
        return "\n".join(lines + [f"Note: {n}" for n in self.notes])


@dataclass
class CheckReport:
    """The hosted check as export prints it: which live file, how many rows, and the result."""

    live: Path
    rows: int
    result: hosted_check.HostedResult

    def __str__(self) -> str:
        r = self.result
        lines = [f"Hosted check: {self.rows:,} live rows of {self.live} in {r.wall_s:.1f} s, peak memory "
                 f"{r.peak_mb:.0f} MB (limits: {r.limits})"]
        return "\n".join(lines + [f"Note: {n}" for n in r.version_notes])


@dataclass
class ExportResult:
    out: Path
    models: list[Path]
    features: int
    size: int
    python: str
    upload: UploadResult | None = None
    check: CheckReport | None = None

    def __str__(self) -> str:
        text = (f"Exported {', '.join(str(m) for m in self.models)} ({self.features} features) to {self.out} "
                f"({self.size / 1024:.0f} KB)\n")
        if self.check is not None:
            text += f"{self.check}\n"
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
                  member_scores, binner=None, to_benchmark: float = 0.0, benchmark_column: str | None = None):
    """The self-contained predict function. Everything it uses is an argument, imported inside it, or
    a function of numerflow.workflow.postprocess (which export has cloudpickle store by value), so
    the pickle holds no reference to numerflow. `binner`: (bins,
    binning.bin_within_eras) when the checkpoints were trained on binned continuous features.
    `to_benchmark` > 0: last, neutralise to the runner's live_benchmark_models as predict does
    (metrics.benchmark.neutralize_to_benchmark, also stored by value)."""

    def predict(live_features, live_benchmark_models=None):
        # live_benchmark_models: Numerai's runner passes it when it has one; used only when
        # to_benchmark > 0, otherwise its presence and columns never matter.
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
        if to_benchmark > 0:
            benchmark = benchmark_on_index(live_benchmark_models, live_features.index, benchmark_column)
            result = neutralize_to_benchmark(result, benchmark, eras, to_benchmark)
        return pd.DataFrame({"prediction": result}, index=live_features.index)

    return predict


def pickled_by_value(cloudpickle, function) -> bytes:
    """The function cloudpickled with numerflow.workflow.postprocess's and metrics.benchmark's
    functions stored by value: the pickle runs where numerflow is not installed."""
    for module in (postprocess, benchmark_maths):
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(function)
    finally:
        for module in (postprocess, benchmark_maths):
            cloudpickle.unregister_pickle_by_value(module)


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


def main_benchmark_of(checkpoints: list[dict]) -> str | None:
    """The main benchmark column of the newest version the models were trained on (None: unknown,
    the pickle then takes the runner's newest vNN_lgbm_ender20)."""
    versions = [m["version"] for m in trained_manifests(checkpoints) if m and m.get("version")]
    known = sorted((v for v in versions if schema.version_number(v)), key=schema.version_number)
    return schema.main_benchmark(known[-1]) if known else None


def default_live(manifests: list[dict | None]) -> Path:
    """live.parquet of the (newest) version folder the models were trained on."""
    folders = [Path(m["version_dir"]) for m in manifests if m and m.get("version_dir")]
    for folder in sorted(folders, key=lambda f: schema.version_number(f.name) or (), reverse=True):
        if (folder / schema.LIVE_FILE).is_file():
            return folder / schema.LIVE_FILE
    raise DataError("no live features to run the hosted check on: give --live LIVE.parquet (or run "
                    "`numerflow download --live-only` for the version the model was trained on, or skip it "
                    "with --no-check)")


def hosted_run(pickle_path: Path, live: Path, python: Path | None, uploading: bool) -> CheckReport:
    """The hosted check on the pickle not yet under its name: its report, or one error (nothing is
    then written or uploaded). `python`: the pinned environment's (--image-env); its versions are
    the pins, so only this environment's differences are noted."""
    import pyarrow.parquet as pq

    result = hosted_check.check_pickle(pickle_path, live, python=python)
    result.version_notes = [] if python is not None else hosted_check.version_differences()
    if not result.fits:
        raise CheckpointError(f"the pickle does not fit Numerai's hosted runner on {live} ({result.limits}): "
                              f"{result.reason}; nothing written{' or uploaded' if uploading else ''}")
    return CheckReport(live=live, rows=pq.ParquetFile(live).metadata.num_rows, result=result)


@dataclass
class _UploadPlan:
    client: object
    model_name: str
    model_id: str
    docker_image: tuple[str, str]  # (name, id)
    data_version: tuple[str, str]
    notes: list[str]


def plan_upload(upload: UploadConfig, checkpoints: list[dict], client=None) -> _UploadPlan:
    """Everything the upload needs, asked before the pickle is written or checked, so that a wrong
    model name or a missing image fails in seconds."""
    from numerflow import numerai
    from numerflow.workflow.round_inputs import resolve_model_id

    manifests = trained_manifests(checkpoints)
    client = client if client is not None else numerai.client()
    model_name, model_id = resolve_model_id(client, upload.model_name)
    images, versions = numerai.model_upload_options(client)
    image = choose_docker_image(images, sys.version_info[:2])
    version, notes = choose_data_version(list(versions), [m.get("version") if m else None for m in manifests])
    return _UploadPlan(client, model_name, model_id, (image, images[image]), (version, versions[version]), notes)


def checked_live(config: ExportConfig, checkpoints: list[dict], uploading: bool) -> Path | None:
    """The live file the hosted check runs on, or None when there is no check: --check, else on
    with --upload, --image-env or --live."""
    checking = config.check if config.check is not None else \
        uploading or config.image_env or config.live is not None
    if not checking:
        return None
    live = Path(config.live) if config.live is not None else default_live(trained_manifests(checkpoints))
    if not live.is_file():
        raise DataError(f"{live}: file not found")
    return live


def publish(pickled: bytes, out: Path, plan: _UploadPlan | None, live: Path | None,
            python: Path | None = None) -> tuple[UploadResult | None, CheckReport | None]:
    """Write the pickle; with a live file, run the hosted check on it first (a pickle that does
    not fit is never written); with a plan, upload it once it is in place."""
    from numerflow import numerai

    with atomic_path(out) as tmp:
        tmp.write_bytes(pickled)
        checked = hosted_run(tmp, live, python, uploading=plan is not None) if live is not None else None
    if plan is None:
        return None, checked
    upload_id = numerai.upload_model(plan.client, out, plan.model_id, plan.data_version[1], plan.docker_image[1])
    return UploadResult(model_name=plan.model_name, upload_id=upload_id, docker_image=plan.docker_image[0],
                        data_version=plan.data_version[0], notes=plan.notes), checked


def export(config: ExportConfig, upload: UploadConfig | None = None, client=None) -> ExportResult:
    """Write the pickle (after the finite-output check and, with --check or `upload`, the hosted
    check); with `upload`, also upload it. `client`: a numerflow.numerai client to reuse."""
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
    to_benchmark = benchmark_rows.proportion(config)
    checkpoints = [load_checkpoint(path) for path in model_paths]
    members = [{"features": list(c["features"]), "layers": numpy_layers(load_model(c)),
                "predict_with": c.get("predict_with", "main")} for c in checkpoints]
    member_scores = build_member_scores(FEATURE_CENTRE, FEATURE_SCALE)
    check_finite_scores(members, model_paths, member_scores)
    features = union_of_features([m["features"] for m in members])
    live = checked_live(config, checkpoints, uploading=upload is not None)
    plan = plan_upload(upload, checkpoints, client) if upload is not None else None
    python = hosted_check.image_env() if live is not None and config.image_env else None
    bins = binning.checkpoints_bins(checkpoints, model_paths)
    function = build_predict(members, [float(w) for w in weights], features, float(config.neutralize), member_scores,
                             binner=None if bins is None else (bins, binning.make_binner()),
                             to_benchmark=to_benchmark, benchmark_column=main_benchmark_of(checkpoints))
    uploaded, checked = publish(pickled_by_value(cloudpickle, function), out, plan, live, python)
    return ExportResult(out=out, models=model_paths, features=len(features), size=out.stat().st_size,
                        python=f"{sys.version_info.major}.{sys.version_info.minor}", upload=uploaded, check=checked)
