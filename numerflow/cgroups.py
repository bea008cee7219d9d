"""The memory a process may still use under its cgroup's limit (Docker, Kubernetes, systemd), for
cgroup v2 (`memory.max`, `memory.current`) and v1 (`memory/<path>/memory.limit_in_bytes`,
`memory.usage_in_bytes`; hybrid hosts keep the memory controller on v1). The roots are parameters
so the parsing is tested on real files laid out as each tree.

Every level from the process's cgroup up to the mount's root is read: a parent's limit binds its
children too, and the tightest level's room is what the process has."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 1 << 60  # v1 writes "no limit" as the largest page-aligned 64-bit number (9223372036854771712)

V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
V2_FILES = ("memory.max", "memory.current", "inactive_file")


@dataclass
class CgroupRoom:
    """The binding level: its limit, what is charged to it, and the room left (bytes)."""

    version: int
    path: str  # the cgroup's path inside the hierarchy, e.g. /docker/abc
    limit: int
    used: int

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)

    def describe(self) -> str:
        gib = 1 << 30
        return (f"cgroup v{self.version} {self.path}: limit {self.limit / gib:.2f} GiB, "
                f"{self.used / gib:.2f} GiB in use")


def cgroup_room(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> CgroupRoom | None:
    """The tightest memory limit over this process's cgroup and its parents, or None where there
    is none (no cgroup filesystem, no limit set, files unreadable)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:  # "hierarchy-id:controllers:path"; v2's line is "0::path"
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths.update({controller: parts[2] for controller in parts[1].split(",")})
    if "memory" in paths and (root / "memory").is_dir():
        return _tightest(root / "memory", paths["memory"], 1, V1_FILES)
    if "" in paths and (root / "cgroup.controllers").is_file():
        return _tightest(root, paths[""], 2, V2_FILES)
    return None


def _tightest(mount: Path, path: str, version: int, files: tuple[str, str, str]) -> CgroupRoom | None:
    # In a container with its own cgroup namespace the path may name the host's hierarchy, which
    # is not mounted here: the mount's root is then the container's own cgroup.
    relative = path.strip("/")
    if relative and not (mount / relative).is_dir():
        relative = ""
    levels = [relative]
    while relative:
        relative = relative.rpartition("/")[0]
        levels.append(relative)
    tightest = None
    for level in levels:
        room = _level_room(mount / level if level else mount, "/" + level, version, files)
        if room is not None and (tightest is None or room.available < tightest.available):
            tightest = room
    return tightest


def _level_room(folder: Path, path: str, version: int, files: tuple[str, str, str]) -> CgroupRoom | None:
    limit_file, usage_file, inactive_key = files
    limit = _read_number(folder / limit_file)
    usage = _read_number(folder / usage_file)
    if limit is None or usage is None or limit >= UNLIMITED:
        return None
    # The usage counts page cache the kernel drops before it kills anything; inactive file pages
    # are what `docker stats` leaves out too.
    used = max(0, usage - _stat(folder / "memory.stat", inactive_key))
    return CgroupRoom(version, path, limit, used)


def _read_number(file: Path) -> int | None:
    """A cgroup number file: an integer, or v2's "max" (no limit)."""
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    return int(text) if text.isdigit() else None


def _stat(file: Path, key: str) -> int:
    try:
        for line in file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0
