"""prepare's Parquet output: the writer thread that encodes row groups while the next ones are
read, one background ParquetWriter per output file (the encodings chosen for int8 features), and
Arrow's jemalloc pool for the run."""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa
import pyarrow.parquet as pq

from numerflow import schema
from numerflow.files import FileSet

# Values the Parquet writer encodes per call: larger than its default 1,024, which spends more time
# on per-call overhead than on encoding int8 columns.
WRITE_BATCH = 1 << 16


@contextlib.contextmanager
def pool_keeping_pages():
    """Arrow's jemalloc pool as the default for the block, where pyarrow has it. Every row group
    allocates its decoded columns and encode buffers anew (~0.3 GB at 3,555 features); mimalloc,
    pyarrow's default, hands freed pages back to the system at once, and the kernel then zeroes
    the new ones page by page (about a tenth of prepare's CPU). jemalloc reuses them. Process-wide
    while it lasts (Arrow has one default pool); buffers remember the pool they came from."""
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


class WriterThread:
    """One worker thread that encodes and writes row groups (the slowest step; pyarrow releases the
    GIL) while the caller reads and filters the next ones. Both output files go through it in turn,
    so the train file's last row group and close overlap with reading the validation file. At most
    one task is in flight, which bounds the memory it adds to one row group of int8."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-writer")
        self.in_flight = None

    def submit(self, task, *args) -> None:
        self.wait()
        self.in_flight = self.pool.submit(task, *args)

    def wait(self) -> None:
        if self.in_flight is not None:
            in_flight, self.in_flight = self.in_flight, None
            in_flight.result()  # re-raises a failed write here, in the caller's thread

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        try:
            self.wait()
        except Exception:  # noqa: BLE001
            if exc_info[0] is None:
                raise  # otherwise the error already propagating is the one to report
        finally:
            self.pool.shutdown(wait=True)


class BackgroundWriter:
    """A ParquetWriter for one output file whose writes and close run on the shared WriterThread."""

    def __init__(self, dest: tuple[FileSet, str], out_schema: pa.Schema, thread: WriterThread):
        # Features as BYTE_STREAM_SPLIT pages compressed with LZ4: the cheapest compact encoding
        # measured for 0..4 int8 values (stored as 4-byte INT32, three of whose byte streams are
        # zeros LZ4 skips quickly). Against DELTA_BINARY_PACKED, uncompressed (the previous
        # choice), it writes with ~20 % less CPU and reads back faster in schema.read_matrix, at
        # 0.65 bytes per value instead of 0.51; dictionary pages with zstd (0.35) cost twice the
        # CPU (docs/benchmarks.md). Writing is prepare's slowest step and runs on one thread.
        # Dictionaries where they pay: eras and targets have a few distinct values, ids have
        # none. Column statistics only for those: nothing reads feature min/max.
        features = [f.name for f in out_schema if pa.types.is_int8(f.type)]
        others = [f.name for f in out_schema if not pa.types.is_int8(f.type)]
        dictionary = [name for name in others if name != schema.ID]
        outputs, member = dest
        self.shown = outputs.folder / member  # in errors, as publish_set names its members
        # The file is opened here, not by the ParquetWriter, so that it is closed even when the
        # writer's own close fails (on a full disk it would stay open, a deleted file held).
        self.sink = pa.OSFile(str(outputs.path(member)), "wb")
        try:
            self.writer = pq.ParquetWriter(self.sink, out_schema,
                                           compression={name: "zstd" for name in others} | {name: "lz4" for name in features},
                                           column_encoding={name: "BYTE_STREAM_SPLIT" for name in features},
                                           use_dictionary=dictionary, write_statistics=others,
                                           write_batch_size=WRITE_BATCH)
        except OSError as exc:
            self.sink.close()
            thread.wait()  # the previous file's failure (a full disk fails this one too) is reported first
            raise self._named(exc) from None
        self.thread = thread
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.thread.submit(self._run, self.writer.write_table, table, table.num_rows)
        self.rows += table.num_rows

    def _run(self, task, *args) -> None:
        """`task` on the worker thread. When it fails the file is closed at once, and an Arrow
        OSError (no file name; a full disk, say) is raised naming this file: it may come out
        after the next file has begun."""
        try:
            task(*args)
        except OSError as exc:
            self._close_quietly()
            raise self._named(exc) from None
        except BaseException:
            self._close_quietly()
            raise

    def _named(self, exc: OSError) -> OSError:
        """Arrow's OSErrors name no file and wrap the system's message: this file and the message."""
        if exc.filename is not None:
            return exc
        return OSError(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc), str(self.shown))

    def _close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.sink.close()

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - the error that stopped the writing is the one to report
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if exc_info[0] is None:  # closed behind its last write; errors surface at the next wait
            self.thread.submit(self._run, self._close)
            return
        try:
            self.thread.wait()
        except Exception:  # noqa: BLE001 - the error already propagating is the one to report
            pass
        self._close_quietly()
