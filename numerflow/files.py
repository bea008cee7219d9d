"""How numerflow writes files, so that nothing half-written or mixed is ever taken for whole.

- One file: `atomic_path` yields a temporary name in the same folder and renames it into place
  only when the block succeeds. Temporary names carry the writer's pid, so the leftovers of a
  killed run are recognised (their writer is gone) and removed by the next write of that name.
- A set of files (a stage's outputs that belong together): `publish_set` writes every member under
  a temporary name, renames them into place only when all are complete, and writes the set's
  manifest last, naming each member's size, mtime and SHA-256. A reader calls `check_set` and
  refuses a set whose files do not match their manifest: a kill between two renames leaves new
  files beside an old manifest, which this catches.
- `exclusive_lock`: a per-folder `fcntl.flock` lock. The OS releases it when its holder dies, so a
  stale or empty lock file never blocks a later run.

Checking cost: SHA-256 streams at about 2 s per GB on this project's 2-core test machine, so
readers (prepare, train, validate) trust a file whose size and mtime_ns both equal its record (a
file renamed in by another run has another mtime) and hash it only when they differ. The download
cache hashes always (`file_problem(..., full=True)`), to catch a file damaged in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from numerflow.errors import DataError, NumerflowError

CHECKSUM = "sha256"
READ_BLOCK = 1 << 20


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- temporary names and their leftovers -------------------------------------------------------

def _temp_prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}-"  # no dot after the pid: cli.os_error_line reads the final name back


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or cannot tell: keep its file
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove `.<name>.<pid>-<random>.tmp` files (and publish_folder's folders) beside `final`
    whose writer process is gone."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(\d+)-[^./]*\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(final.parent):
            m = pattern.fullmatch(entry.name)
            if m and not _writer_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    _remove(Path(entry.path))
                    removed.append(Path(entry.path))
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        os.unlink(path)


def temporary_path(final: Path) -> Path:
    """A new empty file beside `final` with the usual permissions (mkstemp's are 0600)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return Path(tmp)


def _refuse_folder(final: Path) -> None:
    """Fail before renaming anything when a final name is taken by a folder (os.replace would
    fail only then, halfway through a set)."""
    if final.is_dir() and not final.is_symlink():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    tmp_path = temporary_path(final)
    try:
        with names_file(final):
            yield tmp_path
        _refuse_folder(final)
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def names_file(path: Path) -> Iterator[None]:
    """Give an OSError raised in the block without a file name (a write() on a full disk, a
    library's writer) the name of `path`, the file being written, so its one error line says
    which file: "models/model.pt: No space left on device"."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def dump_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON to `path` (a temporary path: see write_json and publish_set)."""
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        dump_json(tmp, obj)
    return Path(path)


def read_text(path: str | os.PathLike, error: type[NumerflowError] = DataError) -> str:
    """A UTF-8 text file's content; another encoding is `error` naming the file and the first bad
    byte (never the text around it: a .env holds the secret key). An unreadable file is the
    OSError naming it."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                    f"save it as UTF-8") from None


# --- checksums and file records ----------------------------------------------------------------

def file_checksum(path: str | os.PathLike, algorithm: str = CHECKSUM) -> str:
    """Hex digest of a file, read in 1 MB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike, checksum: str | None = None) -> dict:
    """{"size", "mtime_ns", "sha256"} of a file, as manifests record it (`checksum` if known)."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, CHECKSUM: checksum or file_checksum(path)}


def file_problem(path: Path, record: dict, full: bool = False) -> str | None:
    """Why `path` does not match its manifest `record`, or None when it does. Records may hold
    only some keys (older manifests: a size, perhaps an ETag). Without `full`, a file whose size
    and mtime_ns equal the record is trusted without hashing, and an ETag is not hashed for."""
    if not path.is_file():
        return "missing" if not path.exists() else "not a file"
    stat = path.stat()
    if "size" in record and record["size"] != stat.st_size:
        return f"{stat.st_size:,} bytes, recorded {record['size']:,}"
    if not full and record.get("mtime_ns") == stat.st_mtime_ns and "size" in record:
        return None
    if CHECKSUM in record and file_checksum(path) != record[CHECKSUM]:
        return "content differs from the recorded SHA-256"
    if full and CHECKSUM not in record and plain_md5(record.get("etag")) \
            and file_checksum(path, "md5") != plain_md5(record["etag"]):
        return "content differs from the recorded ETag (MD5)"
    return None


def plain_md5(etag: str | None) -> str | None:
    """The MD5 an ETag stands for when it is one (S3 single-part uploads); None otherwise
    (multipart ETags end in -<parts> and are not a hash of the file)."""
    value = (etag or "").strip().removeprefix("W/").strip('"').lower()
    return value if re.fullmatch(r"[0-9a-f]{32}", value) else None


class IncompleteSetError(DataError):
    """A set's files do not match its manifest (a killed or failed run left a mix)."""


def check_set(folder: Path, manifest_file: str, records: dict, names=None, hint: str = "") -> None:
    """Raise IncompleteSetError naming the first of `names` (default: every recorded file) that
    does not match its record in `folder`'s manifest."""
    for name in (records if names is None else names):
        record = records.get(name)
        if not isinstance(record, dict):
            continue
        problem = file_problem(folder / name, record)
        if problem:
            raise IncompleteSetError(f"{folder / name}: does not match {folder / manifest_file} ({problem}): "
                                     f"the folder holds a mixed or incomplete set (an interrupted run?){hint}")


# --- publishing a set --------------------------------------------------------------------------

class FileSet:
    """Members of a set being written: `path(name)` is the temporary path to write `name` to."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.temporaries: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self.temporaries:
            self.temporaries[name] = temporary_path(self.folder / name)
        return self.temporaries[name]

    def drop(self, name: str) -> None:
        """Leave `name` out of the set after all (nothing was written for it)."""
        self.temporaries.pop(name).unlink(missing_ok=True)

    def discard(self) -> None:
        for tmp in self.temporaries.values():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def publish_set(folder: str | os.PathLike, manifest_file: str | None = None,
                manifest: dict | None = None) -> Iterator[FileSet]:
    """Write a set of files into `folder` as one: the block writes each member to `files.path(name)`;
    when it succeeds, every member is renamed into place (in the order first asked for), then
    `manifest` plus "files": {name: size, mtime_ns, sha256} is written last under `manifest_file`
    (when given). When the block fails nothing is renamed and the temporary files are removed, so
    the previous set stays whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    members = FileSet(folder)
    try:
        try:
            yield members
        except OSError as exc:  # e.g. a full disk inside a library's writer: name the member being written
            if exc.filename is None and members.temporaries:
                exc.filename = str(folder / next(reversed(members.temporaries)))
            raise
        for name in members.temporaries:
            _refuse_folder(folder / name)
        records = {name: file_record(tmp) for name, tmp in members.temporaries.items()} if manifest_file else {}
        for name, tmp in members.temporaries.items():
            os.replace(tmp, folder / name)  # a rename keeps mtime_ns: the records stay true
        if manifest_file:
            write_json(folder / manifest_file, {**(manifest or {}), "files": records})
    finally:
        members.discard()


# --- publishing a whole folder ----------------------------------------------------------------

def _old_copy(final: Path, pid: int) -> Path:
    return final.with_name(f".{final.name}.old-{pid}")


def recover_folder(final: str | os.PathLike) -> None:
    """Undo what a publish_folder killed mid-swap left: when `final` is missing beside a dead
    writer's old copy (killed between its two renames), the old copy becomes `final` again; other
    old copies and temporary folders of dead writers are removed."""
    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.old-(\d+)")
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(final.parent), key=lambda e: e.name):
            m = pattern.fullmatch(entry.name)
            if not m or _writer_alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                if not os.path.lexists(final):
                    os.rename(entry.path, final)
                else:
                    _remove(Path(entry.path))
    remove_stale_temporaries(final)


@contextlib.contextmanager
def publish_folder(final: str | os.PathLike, manifest_file: str | None = None,
                   manifest: dict | None = None) -> Iterator[FileSet]:
    """publish_set for a folder that is replaced whole: the block writes the members (as for
    publish_set) into a temporary sibling folder, which then takes `final`'s place; files of the
    previous set that this one lacks go with it. When the block fails, `final` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(final)
    refuse_foreign_files(final, manifest_file)  # the swap replaces the whole folder: never a user's file
    staging = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        with publish_set(staging, manifest_file, manifest) as members:
            yield members
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def refuse_foreign_files(final: Path, manifest_file: str | None) -> None:
    """A folder that holds anything but the set its manifest lists (an earlier run's) is not ours
    to replace: a DataError naming what is there, before any work."""
    if not final.is_dir():
        return
    present = sorted(p.name for p in final.iterdir())
    ours: set[str] = set()
    if manifest_file is not None and (final / manifest_file).is_file():
        try:
            ours = {manifest_file, *json.loads((final / manifest_file).read_text()).get("files", {})}
        except (ValueError, AttributeError, OSError):
            ours = set()
    foreign = [name for name in present if name not in ours]
    if foreign:
        raise DataError(f"{final}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                        f"this command did not write; it replaces the whole folder: choose another --name "
                        f"or move them")


def _swap_in(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`, moving a previous `final` aside first and removing it after."""
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if not final.is_dir():  # a file under the folder's name is the user's: never moved aside
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(final))
    old = _old_copy(final, os.getpid())
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except OSError:
        os.rename(old, final)  # the previous set stays
        raise
    with contextlib.suppress(OSError):
        _remove(old)


# --- the lock ----------------------------------------------------------------------------------

class LockedError(NumerflowError):
    """Another numerflow process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, remove: bool = False) -> Iterator[Path]:
    """Hold an exclusive `fcntl.flock` on `path` for the block, or raise LockedError naming the
    holder's pid. The lock dies with its holder, so a stale or empty lock file is simply taken.
    The file is left in place, unless `remove`: then its holder deletes it before letting go, and
    a process that locked a file deleted meanwhile (it opened the name just before) locks the new
    one instead, so two processes never hold two different files of one name.
    Not re-entrant: a second acquisition, even by the same process, is refused."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise LockedError(f"{path}: another {what} is running (pid {holder}); exiting") from None
            if not _still_named(fd, path):
                continue  # its holder removed it as we opened it: take the name's new file
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield path
            finally:
                if remove:
                    path.unlink(missing_ok=True)  # while still held: see above
                else:
                    os.ftruncate(fd, 0)
            return
        finally:
            os.close(fd)  # releases the flock


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def round_lock(path: Path):
    """The data folder's lock (<data_dir>/schema.LOCK_FILE), held by `numerflow round` for the
    whole job and by `numerflow submit` while it uploads: an fcntl.flock, released by the OS when
    its holder dies, so a lock file left by a killed job (even an empty one) never blocks the next
    run. Its one owner, so that round and submit both import it from below."""
    return exclusive_lock(path, "`numerflow round` or `numerflow submit`")


def output_lock(out: str | os.PathLike, command: str):
    """`out`'s lock (`<out>.lock`), held for a whole run that writes `out` (train's checkpoint, its
    .json and .resume file): a second run on the same path stops at once with one line naming the
    first's pid, instead of both writing, and sharing, one resume file. The file goes with the run."""
    out = Path(out)
    return exclusive_lock(out.with_name(out.name + ".lock"), f"`numerflow {command}` writing {out}", remove=True)
