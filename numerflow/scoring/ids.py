"""Placing id,value files on a data file's rows: every file (predictions, meta model, example
predictions, benchmark models) goes through one hash of the data's ids (RowIds). Numerai's ids
are matched as the 60-bit integers they spell (numerai_id_keys), ids of at most 8 bytes as the
64-bit integers their bytes spell (short_id_keys), longer ids as text by Arrow's hashing kernels."""

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


SHORT_ID_BYTES = 8  # ids of at most 8 bytes fit one 64-bit key


def short_id_keys(ids) -> np.ndarray | None:
    """Ids of at most 8 bytes without NUL bytes ("n0".."n1999999", era-like or hand-made ids) as
    the 64-bit integers their bytes spell, zero-padded on the right: exact (distinct ids, distinct
    keys, since no id holds the padding's NUL), or None when any id is longer. The same speed as
    numerai_id_keys for the ids of hand-made or older files."""
    import pyarrow as pa

    array = _arrow_strings(ids)
    if array is None or array.null_count or not len(array):
        return None
    buffers = array.buffers()
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    if lengths.max() > SHORT_ID_BYTES:
        return None
    chars = np.frombuffer(buffers[2], dtype=np.uint8)
    if not np.all(chars[offsets[0]:offsets[-1]]):  # a NUL byte: it would read as padding
        return None
    padded = np.zeros((len(array), SHORT_ID_BYTES), dtype=np.uint8)
    for length in np.unique(lengths):  # one gather per id length (a few lengths, each vectorised)
        rows = np.flatnonzero(lengths == length)
        padded[rows, :length] = chars[offsets[:-1][rows, None] + np.arange(length)]
    return padded.view(">u8").ravel().astype(np.uint64)


def as_text(ids):
    """Ids as a pandas Index of text (how ids of any shape are compared)."""
    import pandas as pd

    return pd.Index(ids).astype(str)


def text_array(ids):
    """`ids` as one Arrow large_string array without nulls: Arrow-backed text as it is, anything
    else (integers, objects, missing ids) through as_text, as ids of any shape are compared."""
    import pyarrow as pa

    array = _arrow_strings(ids)
    if array is None or array.null_count:
        array = pa.array(as_text(ids).to_numpy(dtype=object), type=pa.large_string())
    return array.cast(pa.large_string())  # one offset width, so equal ids compare equal


class RowIds:
    """The data's row ids, hashed once for every file placed on its rows: predictions, meta model,
    example predictions, benchmark models. Numerai-shaped ids and ids of at most 8 bytes are
    matched as the integers they spell (a pandas hash table of 64-bit keys), longer ids as text by
    Arrow's hashing kernels (pyarrow.compute, in C: no Python string per id). Ids given in the data's own row order, as
    most predictions files are, are recognised by one comparison and need no lookup at all."""

    def __init__(self, ids, data_path: Path):
        self.data_path, self.size = data_path, len(ids)
        self.text = text_array(ids)
        self.key_of, self.keys = numerai_id_keys, numerai_id_keys(self.text)  # one key scheme per data file
        if self.keys is None:
            self.key_of, self.keys = short_id_keys, short_id_keys(self.text)
        self.as_keys = self.keys is not None
        self._index = None
        if self._has_duplicates():
            raise DataError(f"{data_path}: {self._duplicate_count()} duplicate id(s)")
        self.kept = None  # a boolean mask: place() returns these rows only

    def _has_duplicates(self) -> bool:
        """The one uniqueness check: integer keys fill the hash table that positions() reuses;
        text ids are counted distinct by Arrow."""
        if self.as_keys:
            import pandas as pd

            self._index = pd.Index(self.keys)
            return not self._index.is_unique
        import pyarrow.compute as pc

        return len(pc.unique(self.text)) != self.size

    def _duplicate_count(self) -> int:
        return int(as_text(self.text.to_pandas()).duplicated().sum())  # an error path: Python strings are fine

    def restricted_to(self, rows: np.ndarray) -> "RowIds":
        """The same lookup (no new hash table), placing values on the data rows `rows` only."""
        view = copy.copy(self)
        view.kept = rows if self.kept is None else np.flatnonzero(self.kept)[rows]
        return view

    def positions(self, ids) -> np.ndarray:
        """The data row of each id, -1 where the data has no such id."""
        text = text_array(ids)
        if text.equals(self.text):  # the data's own ids in its row order
            return np.arange(self.size)
        if self.as_keys:
            keys = self.key_of(text)
            if keys is not None:
                return self._index.get_indexer(keys)
        import pyarrow.compute as pc

        found = pc.index_in(text, value_set=self.text)  # ids of other shapes: Arrow's hash table of the text
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    def place(self, ids, values, what, strict: bool, position: np.ndarray | None = None) -> np.ndarray:
        """`values` (one per id) on the data's rows, NaN where absent (`position`: the ids'
        positions() when the caller has them already). With `strict` (the predictions being
        scored), repeated ids and ids the data lacks are errors; a side file's extra ids are
        ignored."""
        position = self.positions(ids) if position is None else position
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
