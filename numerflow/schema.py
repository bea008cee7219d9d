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
# Numerai's benchmark models' predictions (LightGBM, one column per model, e.g. v53_lgbm_ender20),
# published with each version since the 5.x releases; the live one changes every round.
TRAIN_BENCHMARK_FILE = "train_benchmark_models.parquet"
VALIDATION_BENCHMARK_FILE = "validation_benchmark_models.parquet"
LIVE_BENCHMARK_FILE = "live_benchmark_models.parquet"
BENCHMARK_FILES = (TRAIN_BENCHMARK_FILE, VALIDATION_BENCHMARK_FILE, LIVE_BENCHMARK_FILE)
# The main target's own name: `target` is its alias (v5.2, v5.3), and a release may drop the alias.
MAIN_TARGET = "target_ender_20"

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
                          "rows_train", "rows_validation", "benchmark", MANIFEST_FILES)


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


def unreadable(path, exc: BaseException) -> DataError:
    """The one message for a Parquet file that Arrow cannot read (truncated, corrupt, not Parquet,
    vanished mid-read), naming the file and the kind of failure."""
    return DataError(f"{path}: not a readable Parquet file ({type(exc).__name__})")


def arrow_strings(values):
    """`values` (a pandas Index or Series, a numpy or Arrow array) as an Arrow ChunkedArray of
    strings, or None when they are not text. Arrow-backed pandas strings are handed over without a
    copy, and their chunks (a Parquet file's row groups) are kept: joining them copied every byte
    (0.06 s a column of 2M ids, in a process whose pages are all new)."""
    import pyarrow as pa

    try:
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(getattr(values, "array", values))
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if isinstance(array, pa.Array):
        array = pa.chunked_array([array])
    return array if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) else None


def parquet_columns(path: str | Path) -> list[str]:
    """Column names of a Parquet file (index columns included), or a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several kinds for truncated/corrupt files
        raise unreadable(path, exc) from None


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
        raise DataError(f"{source}: float feature values that are not 0, .25, .5, .75 or 1 (continuous features "
                        f"of a pre-2019 release? pass `numerflow prepare --bin-features 5` to bucket them within "
                        f"each era)")
    return as_int.astype(np.int8)


LIVE_ROUND_FILE = "live_round.json"  # {"round": N}: the round live.parquet belongs to
SYNTHETIC_VERSION = "synthetic"


def main_benchmark(version: str) -> str | None:
    """The version's main benchmark column, Numerai's LightGBM on the main target: 'v5.3' →
    'v53_lgbm_ender20'; None for a folder that is not a vX.Y release."""
    number = version_number(version)
    return f"v{''.join(map(str, number))}_lgbm_ender20" if number else None


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


# Bytes held per value while one int8 Parquet column chunk is decoded (its compressed pages, decode
# buffers, the Arrow result): measured about 2.3-3.2 on 3,555-column files. Read steps are sized with it.
DECODED_VALUE_BYTES = 3
# What one read step of read_matrix may decode: its memory above the matrix it returns. Steps of
# 16-256 MB read at the same speed (decoding, not per-call overhead, dominates).
READ_BYTES = 64 << 20
TRANSPOSE_ROWS = 2048  # rows per cache-sized slice when a column block is copied into the matrix


def read_matrix(path: str | Path, features: list[str], columns: list[str] = (),
                where: tuple[str, str] | None = None, read_bytes: int = READ_BYTES, ids: bool = True):
    """Read `features` of a Parquet file into one int8 (rows, features) array, plus a DataFrame of
    `columns` (e.g. era, targets) indexed by id. Missing columns are a DataError listing them.

    Memory stays at the matrix plus `read_bytes` whatever the file's width and size: the matrix is
    allocated once, then filled row group by row group and, within a row group, a block of columns
    at a time sized so that decoding it takes about `read_bytes`. Nothing else is kept: the file is
    opened without Arrow's pre-buffering, which holds every compressed byte read until it closes.

    `where=(column, value)` keeps only the rows whose `column` equals `value` (e.g. data_type ==
    "validation" in a raw validation.parquet, which also holds millions of other rows): a first
    pass over that one column counts them per row group, so the matrix holds the kept rows only,
    the others are never copied and row groups without any are never decoded.

    `ids=False` leaves the ids out (the frame gets a plain row index): they are a Python string per
    row, about 0.3 GB at 3.7M rows, which training does not use."""
    names = parquet_columns(path)
    require_columns(path, list(features) + list(columns) + ([where[0]] if where else []), names)
    extra = [c for c in dict.fromkeys(columns) if c not in features] + ([ID] if ids and ID in names and ID not in columns else [])
    import pyarrow as pa

    try:
        with pq.ParquetFile(path, pre_buffer=False) as pf:
            groups = _kept_rows(pf, where)
            matrix = np.empty((sum(kept for _, _, kept in groups), len(features)), dtype=np.int8)
            extras, start = [], 0
            for group, mask, kept in groups:
                rows = matrix[start:start + kept]
                _fill_features(pf, group, mask, features, rows, read_bytes, path)
                table = pf.read_row_group(group, columns=extra)
                extras.append(table if mask is None else table.filter(mask))
                start += kept
            schema_of_extras = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:  # a file that breaks mid-read
        raise unreadable(path, exc) from None
    return matrix, _extras_frame(extras, extra, schema_of_extras, len(matrix))


def row_group_tables(path: str | Path, columns: list[str]):
    """Each row group's `columns` as an Arrow table, in file order, one at a time: a reader that
    fills its own arrays as it goes holds one row group's worth of these columns, never the file's
    (and no pre-buffered compressed bytes). Missing columns are a DataError listing them."""
    import pyarrow as pa

    require_columns(path, columns, parquet_columns(path))
    broken = (pa.ArrowException, OSError)
    try:
        pf = pq.ParquetFile(path, pre_buffer=False)
    except broken as exc:
        raise unreadable(path, exc) from None
    with pf:
        for group in range(pf.metadata.num_row_groups):
            try:
                table = pf.read_row_group(group, columns=columns)
            except broken as exc:  # a file that breaks mid-read
                raise unreadable(path, exc) from None
            yield table


def _kept_rows(pf, where: tuple[str, str] | None) -> list[tuple[int, np.ndarray | None, int]]:
    """(row group, boolean mask of its kept rows or None for all, kept count) of every row group
    that has rows to keep."""
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    if where is None:
        return [(g, None, n) for g, n in enumerate(sizes) if n]
    groups = []
    for g, n in enumerate(sizes):
        mask = _row_mask(pf.read_row_group(g, columns=[where[0]]).column(0), where[1]).to_numpy(zero_copy_only=False)
        kept = int(np.count_nonzero(mask))
        if kept:
            groups.append((g, None if kept == n else mask, kept))
    return groups


def _fill_features(pf, group: int, mask: np.ndarray | None, features: list[str], out: np.ndarray,
                   read_bytes: int, path) -> None:
    """Decode `features` of one row group into `out` (its kept rows x features), a block of
    columns at a time."""
    step = max(1, read_bytes // max(1, pf.metadata.row_group(group).num_rows * DECODED_VALUE_BYTES))
    for first in range(0, len(features), step):
        names = features[first:first + step]
        table = pf.read_row_group(group, columns=names)
        block = np.empty((len(names), len(out)), dtype=np.int8)  # one contiguous row per column
        for j, name in enumerate(names):
            values = table.column(j).to_numpy()
            block[j] = features_to_int8(values if mask is None else values[mask], f"{path}: column {name}")
        del table  # before the copy below: Arrow's decoded columns are the larger part
        _copy_transposed(block, out[:, first:first + len(names)])


def _copy_transposed(block: np.ndarray, out: np.ndarray) -> None:
    """out[:] = block.T, a slice of rows at a time: writing one column at a time down a wide
    row-major matrix touches a cache line per value and is 2-3x slower."""
    for start in range(0, len(out), TRANSPOSE_ROWS):
        out[start:start + TRANSPOSE_ROWS] = block[:, start:start + TRANSPOSE_ROWS].T


def _extras_frame(parts: list, names: list[str], file_schema, rows: int):
    """The non-feature columns as one DataFrame, indexed by id when the file has ids. Built from
    Arrow once at the end (not per batch, then concatenated: that would hold them twice)."""
    import pandas as pd
    import pyarrow as pa

    if not names:  # Arrow tables without columns have no rows either
        return pd.DataFrame(index=pd.RangeIndex(rows))
    table = pa.concat_tables(parts) if parts else file_schema.empty_table().select(names)
    # Without the file's pandas metadata: it may describe a RangeIndex of the unfiltered file.
    frame = table.replace_schema_metadata(None).to_pandas(self_destruct=True, split_blocks=True)
    return frame.set_index(ID) if ID in frame.columns else frame


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
