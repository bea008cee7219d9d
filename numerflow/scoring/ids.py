"""Placing id,value files on a data file's rows: every file (predictions, meta model, example
predictions, benchmark models) goes through one hash of the data's ids (RowIds). Numerai's ids
are matched as the 60-bit integers they spell (numerai_id_keys), ids of at most 8 bytes as the
64-bit integers their bytes spell (short_id_keys), longer ids as text by Arrow's hashing kernels."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from numerflow.errors import DataError
from numerflow.schema import arrow_strings

HEX_DIGITS = np.full(256, 255, dtype=np.uint8)  # byte → its value as a lowercase hex digit, 255 if none
HEX_DIGITS[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
NUMERAI_ID_BYTES = 16  # "n" + 15 hex digits


def _string_blocks(array, rows: int):
    """(offsets, bytes) of every `rows` ids of an Arrow string ChunkedArray, chunk by chunk: the
    offsets of the block's ids into `bytes` (the chunk's data buffer), one more than the ids."""
    import pyarrow as pa

    for chunk in array.chunks:
        buffers = chunk.buffers()
        offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=offset_type)[chunk.offset:chunk.offset + len(chunk) + 1]
        chars = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
        for start in range(0, len(chunk), rows):
            yield offsets[start:start + rows + 1], chars


def _keys(ids, block_keys) -> np.ndarray | None:
    """`block_keys(offsets, bytes)` over the ids a block at a time, joined; None when the ids are not
    all text, some are missing, there are none, or any block has no keys."""
    array = arrow_strings(ids)
    if array is None or array.null_count or not len(array):
        return None
    keys, row = np.empty(len(array), dtype=np.uint64), 0
    for offsets, chars in _string_blocks(array, KEY_BLOCK_ROWS):
        block = block_keys(offsets, chars)
        if block is None:
            return None
        keys[row:row + len(block)] = block
        row += len(block)
    return keys


# Ids are turned into keys a block of rows at a time: the temporaries (a few MB) stay in cache and
# are reused from the allocator, where whole-column temporaries (32 MB each at 2M ids) are fresh
# pages every time: the cold process that `numerflow validate` is took 0.30 s for 2M ids, now 0.1 s.
KEY_BLOCK_ROWS = 1 << 16


def numerai_id_keys(ids) -> np.ndarray | None:
    """Numerai's ids ("n" + 15 lowercase hex digits) as the exact 60-bit integers they spell
    (distinct ids, distinct keys), or None when any id has another shape. Matching 2M integer keys
    is about 10x faster than matching 2M strings, and the ids never become Python objects: the
    digits are read straight from Arrow's string buffer."""
    return _keys(ids, _numerai_block_keys)


def _numerai_block_keys(offsets: np.ndarray, chars: np.ndarray) -> np.ndarray | None:
    if not np.all(np.diff(offsets) == NUMERAI_ID_BYTES):
        return None
    block = chars[offsets[0]:offsets[-1]].reshape(-1, NUMERAI_ID_BYTES)
    if not np.all(block[:, 0] == ord("n")):
        return None
    digits = HEX_DIGITS[block]
    digits[:, 0] = 0  # the leading "n" as a zero digit: 16 digits fill 8 bytes
    if np.any(digits > 15):
        return None
    return np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2]).view(">u8").ravel()


SHORT_ID_BYTES = 8  # ids of at most 8 bytes fit one 64-bit key


def short_id_keys(ids) -> np.ndarray | None:
    """Ids of at most 8 bytes without NUL bytes ("n0".."n1999999", era-like or hand-made ids) as
    the 64-bit integers their bytes spell, zero-padded on the right: exact (distinct ids, distinct
    keys, since no id holds the padding's NUL), or None when any id is longer. The same speed as
    numerai_id_keys for the ids of hand-made or older files."""
    return _keys(ids, _short_block_keys)


def _short_block_keys(offsets: np.ndarray, chars: np.ndarray) -> np.ndarray | None:
    lengths = np.diff(offsets)
    if lengths.max() > SHORT_ID_BYTES or not np.all(chars[offsets[0]:offsets[-1]]):  # NUL: it reads as padding
        return None
    padded = np.zeros((len(lengths), SHORT_ID_BYTES), dtype=np.uint8)
    for length in np.unique(lengths):  # one gather per id length (a few lengths, each vectorised)
        rows = np.flatnonzero(lengths == length)
        padded[rows, :length] = chars[offsets[:-1][rows, None] + np.arange(length)]
    return padded.view(">u8").ravel()


def as_text(ids):
    """Ids as a pandas Index of text (how ids of any shape are compared)."""
    import pandas as pd

    return pd.Index(ids).astype(str)


def text_array(ids):
    """`ids` as an Arrow large_string ChunkedArray without nulls: Arrow-backed text as it is,
    anything else (integers, objects, missing ids) through as_text, as ids of any shape are
    compared."""
    import pyarrow as pa

    array = arrow_strings(ids)
    if array is None or array.null_count:
        array = pa.chunked_array([pa.array(as_text(ids).to_numpy(dtype=object), type=pa.large_string())])
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
        self._in_order = None  # _row_order()'s array, made on first use
        if self._has_duplicates():
            raise DataError(f"{data_path}: {self._duplicate_count()} duplicate id(s)")
        self.kept = None  # a boolean mask: place() returns these rows only

    def _has_duplicates(self) -> bool:
        """The one uniqueness check: integer keys are sorted (numpy's SIMD sort, 0.015 s for 2M
        keys, where filling pandas' hash table to ask is_unique took 0.14 s) and neighbours
        compared; text ids are counted distinct by Arrow."""
        if self.as_keys:
            ordered = np.sort(self.keys)
            return bool(np.any(ordered[1:] == ordered[:-1]))
        import pyarrow.compute as pc

        return len(pc.unique(self.text)) != self.size

    def _key_index(self):
        """A pandas hash table of the data's keys, built on the first lookup of ids that are not
        the data's own in its row order (predictions in that order, the usual case, need none)."""
        if self._index is None:
            import pandas as pd

            self._index = pd.Index(self.keys)
        return self._index

    def _duplicate_count(self) -> int:
        return int(as_text(self.text.to_pandas()).duplicated().sum())  # an error path: Python strings are fine

    def _row_order(self) -> np.ndarray:
        """The positions of ids given in the data's row order (0..n-1), one array that place()
        recognises as this order without looking at it."""
        if self._in_order is None:
            self._in_order = np.arange(self.size)
        return self._in_order

    def restricted_to(self, rows: np.ndarray) -> "RowIds":
        """The same lookup (no new hash table), placing values on the data rows `rows` only."""
        view = copy.copy(self)
        view.kept = rows if self.kept is None else np.flatnonzero(self.kept)[rows]
        return view

    def positions(self, ids) -> np.ndarray:
        """The data row of each id, -1 where the data has no such id."""
        text = text_array(ids)
        if text.equals(self.text):  # the data's own ids in its row order
            return self._row_order()
        if self.as_keys:
            keys = self.key_of(text)
            if keys is not None:
                return self._key_index().get_indexer(keys)
        import pyarrow.compute as pc

        found = pc.index_in(text, value_set=self.text)  # ids of other shapes: Arrow's hash table of the text
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    def place(self, ids, values, what, strict: bool, position: np.ndarray | None = None) -> np.ndarray:
        """`values` (one per id) on the data's rows, NaN where absent (`position`: the ids'
        positions() when the caller has them already). With `strict` (the predictions being
        scored), repeated ids and ids the data lacks are errors; a side file's extra ids are
        ignored."""
        position = self.positions(ids) if position is None else position
        if position is self._in_order and self.kept is None:
            return np.array(values, dtype=np.float64)  # the data's own ids in its row order: nothing moves (a copy, as below)
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

