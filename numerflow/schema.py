"""The Numerai data layout: column names, dtypes, feature sets, era labels, and reading/validating
Parquet files. Every other module asks this one for column names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from numerflow.errors import DataError
from numerflow.files import check_set

ID = "id"
ERA = "era"
DATA_TYPE = "data_type"
FEATURE_PREFIX = "feature_"
TARGET = "target"
TARGET_PREFIX = "target_"
PREDICTION = "prediction"
META_MODEL = "numerai_meta_model"

TRAIN_FILE = "train.parquet"
VALIDATION_FILE = "validation.parquet"
LIVE_FILE = "live.parquet"
FEATURES_FILE = "features.json"
META_MODEL_FILE = "meta_model.parquet"
VALIDATION_EXAMPLE_FILE = "validation_example_preds.parquet"
LIVE_EXAMPLE_FILE = "live_example_preds.parquet"

# --- folder layout: every file name and manifest key numerflow's folders use, defined here once --
# A version folder (<data_dir>/<version>/, from `download` or `download --synthetic`) records its
# files in VERSION_MANIFEST_FILE: {"files": {name: {"size", "mtime_ns", "sha256", ...}}}.
VERSION_MANIFEST_FILE = ".download_manifest.json"
# `prepare` writes PREPARED_FILES and PREPARED_MANIFEST_FILE into <data_dir>/PREPARED_DIR/ as one set.
PREPARED_DIR = "prepared"
PREPARED_MANIFEST_FILE = "manifest.json"
PREPARED_FILES = (TRAIN_FILE, VALIDATION_FILE)
LOCK_FILE = ".numerflow-round.lock"  # in <data_dir>: held by `round` and by `submit` while uploading
MANIFEST_FILES = "files"  # in every manifest: {file name: record} of the set it describes
# The prepared manifest's keys: where the data came from, what was kept, and the set's files.
PREPARED_MANIFEST_KEYS = ("version", "version_dir", "sources", "feature_set", "features", "target", "targets",
                          "eras_train", "eras_validation", "last_train_era", "embargo", "downsample",
                          "rows_train", "rows_validation", MANIFEST_FILES)


def is_feature(name: str) -> bool:
    return name.startswith(FEATURE_PREFIX)


def is_target(name: str) -> bool:
    return name == TARGET or name.startswith(TARGET_PREFIX)


def era_sort_key(label: str) -> tuple[int, str]:
    """Sort era labels numerically: "era12" < "era100", "0012" < "0100"; non-numeric labels last."""
    digits = re.findall(r"\d+", str(label))
    return (int(digits[-1]), str(label)) if digits else (1 << 62, str(label))


def sorted_eras(labels) -> list[str]:
    return sorted({str(x) for x in labels}, key=era_sort_key)


def parquet_columns(path: str | Path) -> list[str]:
    """Column names of a Parquet file (index columns included), or a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several kinds for truncated/corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None


def read_json(path: str | Path, missing_hint: str = ""):
    """A JSON file's content, or a DataError naming the file when it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found{missing_hint}")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DataError(f"{path}: not valid JSON") from None


def looks_whole(path: Path) -> bool:
    """Whole Parquet (PAR1 at both ends) or JSON that parses: the structural check for a file
    whose length nobody announced."""
    try:
        if path.suffix == ".parquet":
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(4)
                f.seek(max(0, size - 4))
                return size >= 12 and head == b"PAR1" and f.read(4) == b"PAR1"
        if path.suffix == ".json":
            json.loads(path.read_text())
            return True
    except (OSError, ValueError):
        return False
    return False


def read_prepared_manifest(prepared_dir: str | Path) -> dict:
    """The manifest `prepare` wrote into `prepared_dir`, after checking that the prepared files are
    the ones it describes (a DataError naming the file otherwise)."""
    folder = Path(prepared_dir)
    path = folder / PREPARED_MANIFEST_FILE
    manifest = read_json(path, missing_hint=" (run `numerflow prepare` first)")
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a prepare manifest (expected a JSON object)")
    for key in ("features", "targets"):
        if key in manifest and not (isinstance(manifest[key], list) and all(isinstance(x, str) for x in manifest[key])):
            raise DataError(f"{path}: '{key}' is not a list of column names")
    records = manifest.get(MANIFEST_FILES)
    if isinstance(records, dict):  # manifests older than the set records have none: trusted as before
        check_set(folder, PREPARED_MANIFEST_FILE, records, hint="; run `numerflow prepare` again")
    return manifest


def check_version_files(version_dir: str | Path, names) -> None:
    """Refuse version-folder files that do not match the folder's manifest (a killed
    `download --synthetic` leaves new files beside old records; a file damaged in place).
    Files the manifest does not record (fetched by other means) are not checked here."""
    folder = Path(version_dir)
    try:
        records = json.loads((folder / VERSION_MANIFEST_FILE).read_text())[MANIFEST_FILES]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if isinstance(records, dict):
        check_set(folder, VERSION_MANIFEST_FILE, records, names,
                  hint=f"; run `numerflow download` again, or if you changed the file on purpose, delete "
                       f"{VERSION_MANIFEST_FILE}")


def read_feature_sets(path: str | Path) -> dict:
    """features.json as a dict with `feature_sets` and `targets`."""
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("feature_sets"), dict):
        raise DataError(f"{path}: no 'feature_sets' object")
    return meta


def feature_set(meta: dict, name: str, source: str | Path = "features.json") -> list[str]:
    sets = meta["feature_sets"]
    if name not in sets:
        raise DataError(f"{source}: unknown feature set '{name}' (available: {', '.join(sorted(sets))})")
    features = sets[name]
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise DataError(f"{source}: feature set '{name}' is not a list of column names")
    return list(features)


def features_to_int8(values: np.ndarray, source: str = "data") -> np.ndarray:
    """Numerai features as int8 0..4. Older releases store floats 0, .25, .5, .75, 1: map them
    exactly; anything else (text, other floats, values outside 0..4) is a DataError."""
    if values.dtype.kind not in "iuf":
        raise DataError(f"{source}: feature values of type {values.dtype}, expected integers 0..4")
    if values.dtype.kind in "iu":
        if values.size and (values.min() < 0 or values.max() > 4):
            raise DataError(f"{source}: feature values outside 0..4")
        return values.astype(np.int8, copy=False)
    scaled = values * 4
    as_int = np.rint(scaled)
    if np.isnan(values).any():
        raise DataError(f"{source}: missing (NaN) feature values")
    if not np.array_equal(as_int, scaled) or as_int.min(initial=0) < 0 or as_int.max(initial=0) > 4:
        raise DataError(f"{source}: float feature values that are not 0, .25, .5, .75 or 1")
    return as_int.astype(np.int8)


LIVE_ROUND_FILE = "live_round.json"  # {"round": N}: the round live.parquet belongs to
SYNTHETIC_VERSION = "synthetic"


def version_number(name: str) -> tuple[int, ...] | None:
    """'v5.2' → (5, 2); anything else → None."""
    m = re.fullmatch(r"v(\d+)(?:\.(\d+))?", name)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def find_version_dir(data_dir: str | Path, version: str | None = None) -> Path:
    """The data folder of `version`, or of the newest vX.Y under data_dir (synthetic if it is the
    only one)."""
    data_dir = Path(data_dir)
    if version:
        path = data_dir / version
        if not path.is_dir():
            raise DataError(f"{path}: no such dataset folder (run `numerflow download` first)")
        return path
    candidates = [p for p in data_dir.iterdir() if p.is_dir()] if data_dir.is_dir() else []
    versioned = sorted((p for p in candidates if version_number(p.name)), key=lambda p: version_number(p.name))
    if versioned:
        return versioned[-1]
    if (data_dir / SYNTHETIC_VERSION).is_dir():
        return data_dir / SYNTHETIC_VERSION
    raise DataError(f"{data_dir}: no dataset folder found (run `numerflow download` or "
                    f"`numerflow download --synthetic` first)")


def read_live_round(version_dir: str | Path) -> int | None:
    path = Path(version_dir) / LIVE_ROUND_FILE
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["round"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{path}: not a valid live round marker") from None


def require_columns(path, needed: list[str], present, needed_by=None, error=DataError) -> None:
    """Raise `error` naming (up to ten of) the `needed` columns absent from `present`:
    '<path>: missing 2 column(s): a, b', or with `needed_by` (a checkpoint)
    '<path>: missing 2 of the 30 feature(s) <needed_by> needs: a, b'."""
    have = set(present)
    missing = [name for name in needed if name not in have]
    if not missing:
        return
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    what = (f"{len(missing)} column(s)" if needed_by is None
            else f"{len(missing)} of the {len(needed)} feature(s) {needed_by} needs")
    raise error(f"{path}: missing {what}: {shown}")


def read_matrix(path: str | Path, features: list[str], columns: list[str] = (),
                batch_rows: int = 65536, where: tuple[str, str] | None = None):
    """Read `features` of a Parquet file into one int8 (rows, features) array, batch by batch,
    never building a float copy of the whole matrix, plus a DataFrame of `columns` (e.g. era,
    targets) indexed by id. Missing columns are a DataError listing them.

    `where=(column, value)` keeps only the rows whose `column` equals `value` (e.g. data_type ==
    "validation" in a raw validation.parquet, which also holds millions of other rows): a first
    pass over that one column counts them, then each batch is filtered as it is read, so the
    matrix holds the kept rows only and the others are never copied."""
    import pandas as pd
    import pyarrow as pa

    names = parquet_columns(path)
    require_columns(path, list(features) + list(columns) + ([where[0]] if where else []), names)
    wanted = list(features) + [c for c in columns if c not in features]
    if ID in names:
        wanted.append(ID)
    try:
        pf = pq.ParquetFile(path)
        n_rows = pf.metadata.num_rows
        if where:
            n_rows = sum(int(_row_mask(batch.column(0), where[1]).true_count)
                         for batch in pf.iter_batches(batch_size=1 << 20, columns=[where[0]]))
            read = wanted + ([where[0]] if where[0] not in wanted else [])
        else:
            read = wanted
        matrix = np.empty((n_rows, len(features)), dtype=np.int8)
        extras, start = [], 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=read):
            if where:
                batch = batch.filter(_row_mask(batch.column(where[0]), where[1])).select(wanted)
            stop = start + batch.num_rows
            for j, name in enumerate(features):
                values = batch.column(name).to_numpy(zero_copy_only=False)
                matrix[start:stop, j] = features_to_int8(values, f"{path}: column {name}")
            extras.append(batch.select([c for c in wanted if c not in features]).to_pandas())
            start = stop
    except (pa.ArrowException, OSError) as exc:  # a file that breaks mid-read
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    # Batches carry pandas metadata, so `id` may come back as the index already.
    extras = [part.set_index(ID) if ID in part.columns else part for part in extras]
    frame = pd.concat(extras, ignore_index=ID not in names) if extras else pd.DataFrame(columns=wanted[len(features):])
    return matrix, frame


def _row_mask(values, equals: str):
    """Arrow boolean mask of `values == equals` (as strings; nulls count as not equal)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(values.cast(pa.string()), equals), False)


def read_id_frame(path: Path, error=DataError, missing_hint: str = ""):
    """The one reader of predictions files: a .csv or .parquet file of per-id values as a
    DataFrame with `id` as a string column (CSV ids stay text: "0012" must not become 12). A
    missing or unreadable file is `error` naming it; callers check the columns they need."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found{missing_hint}")
    try:
        if path.suffix != ".parquet":
            return pd.read_csv(path, dtype={ID: str})
        frame = pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many kinds for unreadable files
        raise error(f"{path}: not a readable predictions file ({type(exc).__name__})") from None
    if ID not in frame.columns and frame.index.name == ID:
        frame = frame.reset_index()
    return frame
