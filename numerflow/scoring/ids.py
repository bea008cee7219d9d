"""Placing id,value files on a data file's rows: every file (predictions, meta model, example
predictions, benchmark models) goes through one hash of the data's ids (RowIds). Numerai's ids
are matched as the 60-bit integers they spell (numerai_id_keys), other ids as text."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from numerflow.errors import DataError

HEX_DIGITS = np.full(256, 255, dtype=np.uint8)  # byte → its value as a lowercase hex digit, 255 if none
HEX_DIGITS[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
NUMERAI_ID_BYTES = 16  # "n" + 15 hex digits


def _arrow_strings(ids):
    """`ids` (a pandas Index or Series, a numpy or Arrow array) as one Arrow string array, or None
    when they are not text. Arrow-backed pandas strings are handed over without a copy."""
    import pyarrow as pa

    try:
        array = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(getattr(ids, "array", ids))
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) else None


def numerai_id_keys(ids) -> np.ndarray | None:
    """Numerai's ids ("n" + 15 lowercase hex digits) as the exact 60-bit integers they spell
    (distinct ids, distinct keys), or None when any id has another shape. Matching 2M integer keys
    is about 10x faster than matching 2M strings, and the ids never become Python objects: the
    digits are read straight from Arrow's string buffer."""
    import pyarrow as pa

    array = _arrow_strings(ids)
    if array is None or array.null_count:
        return None
    buffers = array.buffers()
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    if not len(array) or not np.all(np.diff(offsets) == NUMERAI_ID_BYTES):
        return None
    chars = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(-1, NUMERAI_ID_BYTES)
    if not np.all(chars[:, 0] == ord("n")):
        return None
    digits = HEX_DIGITS[chars]
    digits[:, 0] = 0  # the leading "n" as a zero digit: 16 digits fill 8 bytes
    if np.any(digits > 15):
        return None
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])
    return packed.view(">u8").ravel().astype(np.uint64)


def as_text(ids):
    """Ids as a pandas Index of text (how ids of any shape are compared)."""
    import pandas as pd

    return pd.Index(ids).astype(str)


class RowIds:
    """The data's row ids, hashed once (one uniqueness check, one hash table) for every file placed
    on its rows: predictions, meta model, example predictions, benchmark models. Numerai-shaped
    ids are matched as integer keys, other ids as text."""

    def __init__(self, ids, data_path: Path):
        import pandas as pd

        self.ids, self.data_path, self.size = ids, data_path, len(ids)
        keys = numerai_id_keys(ids)
        self.as_keys = keys is not None
        self.index = pd.Index(keys if self.as_keys else as_text(ids))
        if not self.index.is_unique:  # fills the hash table that get_indexer then reuses
            raise DataError(f"{data_path}: {int(self.index.duplicated().sum())} duplicate id(s)")
        self._text_index = None
        self.kept = None  # a boolean mask: place() returns these rows only

    def restricted_to(self, rows: np.ndarray) -> "RowIds":
        """The same lookup (no new hash table), placing values on the data rows `rows` only."""
        view = copy.copy(self)
        view.kept = rows if self.kept is None else np.flatnonzero(self.kept)[rows]
        return view

    def positions(self, ids) -> np.ndarray:
        """The data row of each id, -1 where the data has no such id."""
        if not self.as_keys:
            return self.index.get_indexer(as_text(ids))
        keys = numerai_id_keys(ids)
        if keys is not None:
            return self.index.get_indexer(keys)
        if self._text_index is None:  # ids of other shapes: matched as text (a second table, rarely)
            self._text_index = as_text(self.ids)
        return self._text_index.get_indexer(as_text(ids))

    def place(self, ids, values, what, strict: bool) -> np.ndarray:
        """`values` (one per id) on the data's rows, NaN where absent. With `strict` (the
        predictions being scored), repeated ids and ids the data lacks are errors; a side file's
        extra ids are ignored."""
        position = self.positions(ids)
        found = position >= 0
        if strict:
            found_twice = len(position[found]) - int(np.count_nonzero(np.bincount(position[found], minlength=self.size)))
            unknown = ~found
            repeats = found_twice + (int(as_text(ids)[unknown].duplicated().sum()) if unknown.any() else 0)
            if repeats:
                raise DataError(f"{what}: {repeats} duplicate id(s)")
            if unknown.any():
                raise DataError(f"{what}: {int(unknown.sum())} of {len(position)} id(s) are not in {self.data_path}")
        out = np.full(self.size, np.nan)
        out[position[found]] = np.asarray(values, dtype=np.float64)[found]
        return out if self.kept is None else out[self.kept]
