"""The memory check sees container limits (issue 27): the room under a cgroup's memory limit is
read from v1 and v2 trees (real files in tmp_path laid out as each), and `numerflow train` run in
a real child cgroup whose limit is below its estimate stops with one `Error:` line naming the
container's limit, exit 1 (as root where the v1 memory hierarchy is writable; skipped otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from numerflow import memory
from numerflow.cgroups import cgroup_room
from numerflow.config import PrepareConfig

MIB = 1 << 20
V1_UNLIMITED = "9223372036854771712"


def write_files(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n")


def proc_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc_self_cgroup"
    path.write_text(text)
    return path


def v1_tree(tmp_path: Path) -> Path:
    """/sys/fs/cgroup as a v1 host lays it out: the root unlimited, /docker limited to 2 GiB with
    1 GiB in use (of which 256 MiB inactive page cache), /docker/abc unlimited itself."""
    root = tmp_path / "v1"
    (root / "cpu").mkdir(parents=True)
    write_files(root / "memory", {"memory.limit_in_bytes": V1_UNLIMITED, "memory.usage_in_bytes": str(8000 * MIB)})
    write_files(root / "memory" / "docker", {"memory.limit_in_bytes": str(2048 * MIB),
                                             "memory.usage_in_bytes": str(1024 * MIB),
                                             "memory.stat": f"cache 300\ntotal_inactive_file {256 * MIB}\n"})
    write_files(root / "memory" / "docker" / "abc", {"memory.limit_in_bytes": V1_UNLIMITED,
                                                     "memory.usage_in_bytes": str(900 * MIB)})
    return root


def test_v1_the_tightest_level_binds_and_inactive_cache_is_not_counted(tmp_path):
    proc = proc_file(tmp_path, "9:name=systemd:/\n4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n")
    room = cgroup_room(v1_tree(tmp_path), proc)
    assert (room.version, room.path, room.limit, room.used) == (1, "/docker", 2048 * MIB, 768 * MIB)
    assert room.available == 1280 * MIB
    assert room.describe() == "cgroup v1 /docker: limit 2.00 GiB, 0.75 GiB in use"


def test_v1_a_path_not_mounted_here_reads_the_mounts_own_root(tmp_path):
    """In a container with its own cgroup namespace the mount's root is the container's cgroup."""
    root = tmp_path / "v1ns"
    write_files(root / "memory", {"memory.limit_in_bytes": str(512 * MIB), "memory.usage_in_bytes": str(100 * MIB)})
    room = cgroup_room(root, proc_file(tmp_path, "4:memory:/kubepods/pod1/xyz\n"))
    assert (room.path, room.available) == ("/", 412 * MIB)


def test_v2_limit_and_unlimited(tmp_path):
    root = tmp_path / "v2"
    write_files(root, {"cgroup.controllers": "cpu memory"})
    write_files(root / "system.slice", {"memory.max": "max", "memory.current": str(50 * MIB)})
    write_files(root / "system.slice" / "job.service", {"memory.max": str(1024 * MIB),
                                                        "memory.current": str(300 * MIB),
                                                        "memory.stat": f"anon 1\ninactive_file {100 * MIB}\n"})
    room = cgroup_room(root, proc_file(tmp_path, "0::/system.slice/job.service\n"))
    assert (room.version, room.path, room.limit, room.used) == (2, "/system.slice/job.service", 1024 * MIB, 200 * MIB)
    (root / "system.slice" / "job.service" / "memory.max").write_text("max\n")
    assert cgroup_room(root, proc_file(tmp_path, "0::/system.slice/job.service\n")) is None


def test_no_cgroup_filesystem_or_no_limit_is_none(tmp_path):
    assert cgroup_room(tmp_path / "missing", proc_file(tmp_path, "4:memory:/x\n")) is None
    assert cgroup_room(tmp_path, tmp_path / "no_proc_file") is None
    root = tmp_path / "flat"
    write_files(root / "memory", {"memory.limit_in_bytes": V1_UNLIMITED, "memory.usage_in_bytes": "1"})
    assert cgroup_room(root, proc_file(tmp_path, "4:memory:/\n")) is None


def test_the_check_takes_the_container_limit_when_it_is_smaller(tmp_path, monkeypatch):
    """available_memory: the smaller of the machine (psutil) and the cgroup, and which one bound it."""
    import psutil

    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=64 << 30))
    root, proc = v1_tree(tmp_path), proc_file(tmp_path, "4:memory:/docker/abc\n")
    assert memory.available_memory(root, proc) == (1280 * MIB, "under the container's memory limit "
                                                               "(cgroup v1 /docker: limit 2.00 GiB, 0.75 GiB in use)")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=1000 * MIB))
    assert memory.available_memory(root, proc) == (1000 * MIB, "on the machine")


# --- a real cgroup --------------------------------------------------------------------------------

V1_MEMORY = Path("/sys/fs/cgroup/memory")


def real_v1_parent() -> Path | None:
    """The v1 memory cgroup this process is in, where a child can be made (root, writable)."""
    if os.geteuid() != 0 or not os.access(V1_MEMORY, os.W_OK):
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = V1_MEMORY / path.strip("/")
            return folder if folder.is_dir() and os.access(folder, os.W_OK) else None
    return None


@pytest.fixture
def limited_cgroup():
    """A child memory cgroup limited to 400 MiB (below any train estimate: BASE_BYTES alone is
    0.68 GiB), removed afterwards."""
    parent = real_v1_parent()
    if parent is None:
        pytest.skip("needs root and a writable cgroup v1 memory hierarchy (/sys/fs/cgroup/memory)")
    folder = parent / f"numerflow-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        (folder / "memory.limit_in_bytes").write_text(str(400 * MIB))
        yield folder
    finally:
        for _ in range(50):  # rmdir succeeds once the last process has left it
            try:
                folder.rmdir()
                break
            except OSError:
                import time

                time.sleep(0.1)


@pytest.mark.slow
def test_train_in_a_container_below_its_estimate_stops_naming_the_limit(limited_cgroup, synthetic_dir, tmp_path):
    from numerflow.stages.prepare import prepare

    prepared = prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="small", downsample=1, embargo=4,
                                     out_dir=tmp_path / "prepared")).out_dir
    out = tmp_path / "model.pt"
    command = (f'echo $$ > {limited_cgroup}/cgroup.procs && exec "{sys.executable}" -m numerflow train '
               f'--data "{prepared}" --out "{out}" --epochs 1 --device cpu')
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: train needs about "), lines[0]
    assert f"is available under the container's memory limit (cgroup v1 /{limited_cgroup.relative_to(V1_MEMORY)}: " \
           f"limit 0.39 GiB," in lines[0]
    assert "--no-memory-check" in lines[0]
    assert not out.exists()
