"""Will an exported pickle run on Numerai's hosted runner? Run it on the live file in a fresh
process under the runner's limits (1 CPU, 4 GB, 10 minutes: numerai-predict's images), measure
its wall time and peak memory, and name the versions that differ from numerai-predict's pins;
optionally run it in a cached virtual environment holding those pins (`image_env`).

How the limits are applied, and why:
- CPU: `os.sched_setaffinity` to one CPU, and one thread for the BLAS/OpenMP pools. An affinity
  mask is what a one-CPU container looks like to numpy and torch (os.cpu_count-style sizing aside)
  and needs no privileges.
- Memory: as root, where the cgroup v1 memory hierarchy is writable, a child cgroup limited to
  the runner's memory: the kernel counts resident memory and kills at the limit exactly as the
  runner's container does. Elsewhere the child's peak RSS is compared with the limit after it
  ends, with RLIMIT_AS as a backstop against a runaway: not RLIMIT_AS at the limit itself, since
  numpy, pandas and pyarrow reserve address space they never touch (measured: 1.6 GB of address
  space at 124 MB resident), so it would refuse models that fit.
- Time: the parent waits at most the limit, then kills the child.
The child starts from a small launcher that applies the limits and then execs the runner script,
so the child's peak RSS (os.wait4's ru_maxrss) is its own, not a forked copy of this process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HOSTED_CPUS = 1
HOSTED_MEMORY_BYTES = 4 * 10**9  # 4 GB
HOSTED_SECONDS = 600  # 10 minutes
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
ADDRESS_SPACE_SLACK = 2 << 30  # RLIMIT_AS backstop above the limit: the untouched reservations (see above)
ENV_CACHE = Path.home() / ".cache" / "numerflow"

# numerai-predict's pins (github.com/numerai/numerai-predict, py3.X/requirements.txt: 3.10 and 3.12
# at commit 10e2fecc, 3.11 at 3565cbd1, 3.13 at 03624a6e), for the packages an exported pickle
# needs: numpy and pandas to run, cloudpickle to load, pyarrow to read the live Parquet file.
PREDICT_PINS = {
    (3, 10): {"numpy": "1.26.4", "pandas": "2.2.1", "cloudpickle": "2.2.1", "pyarrow": "14.0.1"},
    (3, 11): {"numpy": "2.1.3", "pandas": "2.3.1", "cloudpickle": "3.1.1", "pyarrow": "21.0.0"},
    (3, 12): {"numpy": "2.1.3", "pandas": "2.3.1", "cloudpickle": "3.1.1", "pyarrow": "18.1.0"},
    (3, 13): {"numpy": "2.2.6", "pandas": "2.3.3", "cloudpickle": "3.1.2", "pyarrow": "18.1.0"},
}
COMPARED = ("numpy", "pandas", "cloudpickle")  # what the issue names; pyarrow only reads the file


@dataclass
class HostedResult:
    """The check's answer: whether the pickle ran within the limits, its wall time and peak
    resident memory, and (when it did not fit) one line saying why."""

    fits: bool
    wall_s: float
    peak_mb: float
    reason: str = ""
    limits: str = ""  # how the limits were applied, e.g. "1 CPU, memory cgroup 4.0 GB, 600 s"
    version_notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "fits" if self.fits else f"does not fit: {self.reason}"
        return f"hosted check ({self.limits}): {verdict}; {self.wall_s:.1f} s, peak {self.peak_mb:.0f} MB"


# --- versions ---------------------------------------------------------------------------------

def version_differences(python: tuple[int, int] | None = None, installed: dict[str, str] | None = None) -> list[str]:
    """One line per difference between this environment and numerai-predict's image for its
    Python: a Python without an image, or numpy/pandas/cloudpickle at other versions."""
    python = python or sys.version_info[:2]
    pins = PREDICT_PINS.get(python)
    if pins is None:
        images = ", ".join(f"{major}.{minor}" for major, minor in PREDICT_PINS)
        return [f"Python {python[0]}.{python[1]} has no numerai-predict image (images: {images})"]
    installed = installed if installed is not None else {name: _installed(name) for name in COMPARED}
    return [f"{name} {installed.get(name) or 'not installed'} here, {pins[name]} in numerai-predict's "
            f"Python {python[0]}.{python[1]} image" for name in COMPARED if installed.get(name) != pins[name]]


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def image_env(pins: dict[str, str] | None = None, cache: Path = ENV_CACHE) -> Path:
    """The Python of a virtual environment holding numerai-predict's pins for this Python (built
    once with `python -m venv` and pip, cached under `cache`), for check_pickle(python=...). Built
    in a temporary folder and renamed when complete: a failed build leaves nothing half made."""
    from numerflow.errors import ConfigError

    python = sys.version_info[:2]
    pins = pins if pins is not None else PREDICT_PINS.get(python)
    if pins is None:
        raise ConfigError(version_differences(python)[0])
    requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
    digest = hashlib.sha256(" ".join(requirements).encode()).hexdigest()[:12]
    folder = cache / f"predict-env-py{python[0]}.{python[1]}-{digest}"
    if (folder / "bin" / "python").is_file():
        return folder / "bin" / "python"
    building = cache / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True)
        pip = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            why = (pip.stderr.strip().splitlines() or [f"exit status {pip.returncode}"])[-1]
            raise ConfigError(f"could not build numerai-predict's environment ({' '.join(requirements)}): {why}")
        # venv writes absolute paths into its scripts: rename before anything is run from it.
        building.rename(folder)
    except subprocess.CalledProcessError as exc:
        raise ConfigError(f"could not create a virtual environment in {cache}: {exc}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder / "bin" / "python"


# --- the run ----------------------------------------------------------------------------------

# Applies the limits to itself, then becomes the runner script (exec keeps the pid and the cgroup).
LAUNCHER = textwrap.dedent("""
    import json, os, resource, sys
    limits = json.loads(sys.argv[1])
    if limits["cgroup"]:
        with open(os.path.join(limits["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    else:
        backstop = limits["memory"] + limits["slack"]
        resource.setrlimit(resource.RLIMIT_AS, (backstop, backstop))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:limits["cpus"]])
    os.execv(sys.executable, [sys.executable, "-c", limits["script"], *sys.argv[2:]])
""")

# As numerai-predict runs a model: numerflow unimportable, the pickle loaded, called on the live
# features (and benchmark models when present), its answer checked.
RUNNER = textwrap.dedent("""
    import sys
    sys.modules["numerflow"] = None
    import cloudpickle, numpy as np, pandas as pd
    pickle_path, live_path, benchmark_path = sys.argv[1:4]
    with open(pickle_path, "rb") as f:
        predict = cloudpickle.load(f)
    live = pd.read_parquet(live_path)
    benchmark = pd.read_parquet(benchmark_path) if benchmark_path else None
    out = predict(live, benchmark)
    if not isinstance(out, pd.DataFrame) or "prediction" not in out.columns:
        sys.exit("it returned no DataFrame with a 'prediction' column")
    if len(out) != len(live) or not out.index.equals(live.index):
        sys.exit(f"it returned {len(out)} rows not indexed like the {len(live)} live rows")
    values = out["prediction"].to_numpy(dtype=float)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        sys.exit("it returned predictions that are NaN or outside [0, 1]")
""")


def check_pickle(pickle_path: Path, live: Path, cpus: int = HOSTED_CPUS, memory_bytes: int = HOSTED_MEMORY_BYTES,
                 seconds: float = HOSTED_SECONDS, python: str | Path | None = None,
                 isolation: str = "auto") -> HostedResult:
    """Run the pickle on `live` in a fresh process under the limits. `isolation`: "cgroup" (a
    child memory cgroup; needs root), "rlimit" (peak RSS measured, RLIMIT_AS backstop) or "auto"
    (cgroup where possible)."""
    cgroup = _make_cgroup(memory_bytes) if isolation in ("auto", "cgroup") else None
    if isolation == "cgroup" and cgroup is None:
        from numerflow.errors import ConfigError

        raise ConfigError("a memory cgroup needs root and a writable /sys/fs/cgroup/memory")
    limits = f"{cpus} CPU, {'memory cgroup' if cgroup else 'peak RSS'} {memory_bytes / 1e9:.1f} GB, {seconds:g} s"
    benchmark = Path(live).with_name("live_benchmark_models.parquet")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY")}
    env.update({name: str(cpus) for name in THREAD_VARS})
    settings = json.dumps({"cgroup": str(cgroup) if cgroup else "", "memory": memory_bytes, "cpus": cpus,
                           "slack": ADDRESS_SPACE_SLACK,
                           "script": RUNNER})
    # stderr to a file, not a pipe: a chatty child would fill a pipe nobody reads while it runs.
    with tempfile.TemporaryFile() as stderr_file:
        try:
            started = time.monotonic()
            child = subprocess.Popen([str(python or sys.executable), "-c", LAUNCHER, settings, str(pickle_path),
                                      str(live), str(benchmark) if benchmark.is_file() else ""],
                                     stdout=subprocess.DEVNULL, stderr=stderr_file, env=env)
            status, peak_kb, timed_out = _wait(child, seconds)
            wall = time.monotonic() - started
            oom = cgroup is not None and _oom_killed(cgroup)
        finally:
            if cgroup is not None:
                _remove_cgroup(cgroup)
        stderr_file.seek(0)
        stderr = stderr_file.read().decode(errors="replace")
    result = HostedResult(True, wall, peak_kb * 1024 / 1e6, limits=limits)  # MB (10**6 bytes), as the limit
    over = peak_kb * 1024 > memory_bytes
    result.reason = _why_not(status, timed_out, oom or over, stderr, memory_bytes, seconds)
    result.fits = not result.reason
    return result


def _wait(child: subprocess.Popen, seconds: float) -> tuple[int, int, bool]:
    """(exit status, peak RSS in KiB, timed out): os.wait4 gives the child's own rusage."""
    deadline, timed_out = time.monotonic() + seconds, False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline and not timed_out:
            child.kill()
            timed_out = True
        time.sleep(0.02)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss, timed_out


def _why_not(status: int, timed_out: bool, oom: bool, stderr: str, memory_bytes: int, seconds: float) -> str:
    if timed_out:
        return f"it did not finish within {seconds:g} s"
    if oom or "MemoryError" in stderr or status == -9:  # -9 and not timed out: the kernel's OOM killer
        return f"it needed more than {memory_bytes / 1e9:g} GB of memory"
    if status != 0:
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        return f"it failed: {lines[-1] if lines else f'exit status {status}'}"
    return ""


def _make_cgroup(memory_bytes: int) -> Path | None:
    """A fresh child of this process's v1 memory cgroup limited to memory_bytes, or None where
    that cannot be made (not root, no writable v1 hierarchy)."""
    if os.geteuid() != 0 or not os.access(CGROUP_V1_MEMORY, os.W_OK):
        return None
    try:
        path = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if "memory" in line.split(":", 2)[1].split(","))
        parent = CGROUP_V1_MEMORY / path.strip("/")
        folder = parent / f"numerflow-hosted-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
    except (OSError, StopIteration, IndexError):
        return None
    try:
        (folder / "memory.limit_in_bytes").write_text(str(memory_bytes))
        swap = folder / "memory.memsw.limit_in_bytes"  # no swap either: the runner has none
        if swap.exists():
            swap.write_text(str(memory_bytes))
    except OSError:
        _remove_cgroup(folder)
        return None
    return folder


def _oom_killed(cgroup: Path) -> bool:
    try:
        control = dict(line.split() for line in (cgroup / "memory.oom_control").read_text().splitlines())
        return int(control.get("oom_kill", 0)) > 0  # failcnt also counts page cache reclaimed at the limit
    except (OSError, ValueError):
        return False


def _remove_cgroup(folder: Path) -> None:
    for _ in range(50):  # rmdir succeeds once the killed child has left it
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
