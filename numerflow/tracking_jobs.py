"""The logging process (issue 28): a command hands its recorded runs (tracking.RecordedRun specs,
plain JSON on the process's stdin) to `python -m numerflow.tracking_jobs`, detached, and returns at
once; that process imports MLflow, opens the store and replays the runs (tracking.replay).

    submit(runs, config)   # in the command: preflight checks, then start the process

Cheap checks stay in the command (tracking.preflight), so a URI that is not a URI or a server that
does not answer is still one warning line on the command's stderr. What fails later goes to
.numerflow/tracking.log in the working folder, and the next tracked command says so in one warning
line. With `[tracking] wait = true` / NUMERFLOW_TRACK_WAIT=1 the command waits for the process and
its warnings are the command's. Runs into one SQLite store are logged one process at a time (a
file lock beside the store), so two commands finishing together do not race MLflow's schema setup.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

from numerflow import tracking
from numerflow.tracking import TrackingConfig

LOG_FOLDER = Path(".numerflow")  # in the working folder, as mlflow.db is
LOG_FILE = LOG_FOLDER / "tracking.log"
FAILED_MARK = LOG_FOLDER / "tracking.failed"  # left by a logging process that failed, until the next command says so
STORE_LOCK_SECONDS = 900  # a logging process waits this long for another one logging into the same store
WORKER = [sys.executable, "-m", "numerflow.tracking_jobs"]


def submit(runs: list[dict], config: TrackingConfig) -> None:
    """Hand `runs` to a logging process; wait for it only when config.wait."""
    _say_earlier_failure()
    reason = tracking.preflight(config.uri)
    if reason is not None:
        tracking.warn(f"MLflow tracking off for this run: {reason}")
        return
    job = json.dumps({"uri": config.uri, "wait": config.wait, "runs": runs}).encode()
    if config.wait:
        done = subprocess.run(WORKER, input=job, capture_output=True)
        if done.stderr:  # its warning lines are this command's
            sys.stderr.write(done.stderr.decode(errors="replace"))
            sys.stderr.flush()
        return
    LOG_FOLDER.mkdir(exist_ok=True)
    with open(LOG_FILE, "ab") as log:  # a crash's traceback lands there too
        process = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True)  # Ctrl+C in the terminal does not stop the logging
    process.stdin.write(job)
    process.stdin.close()
    _started.append(process)  # kept, so Python does not warn that it is still running


_started: list[subprocess.Popen] = []


def store_lock(uri: str):
    """The file lock that serialises logging processes on one SQLite store (a no-op elsewhere:
    a tracking server serialises its own writes)."""
    import filelock

    store = tracking.sqlite_path(uri)
    if store is None:
        return contextlib.nullcontext()
    return filelock.FileLock(f"{store}.lock", timeout=STORE_LOCK_SECONDS)


def _say_earlier_failure() -> None:
    if FAILED_MARK.is_file():
        tracking.warn(f"an earlier command's MLflow logging failed: see {LOG_FILE}")
        FAILED_MARK.unlink(missing_ok=True)


def main() -> int:
    job = json.load(sys.stdin)  # first: the command is writing it and then moves on
    warnings.simplefilter("ignore")  # MLflow's own deprecation notes are not the user's business
    config = TrackingConfig(uri=job["uri"])
    logged = False
    try:
        with store_lock(job["uri"]):
            logged = all([tracking.replay(spec, config) for spec in job["runs"]])
    except Exception as exc:  # the lock's timeout, a spec this version cannot read
        tracking.warn(f"MLflow tracking failed: {exc}")
    if not logged and not job["wait"]:
        names = ", ".join(f"{spec['kind']} '{value}'" for spec in job["runs"]  # a name holding a secret is left out
                          for _, value in tracking.safe_items({"name": spec["name"]}))
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} not logged to MLflow: {names} (the warning above says why)",
              file=sys.stderr, flush=True)
        LOG_FOLDER.mkdir(exist_ok=True)
        FAILED_MARK.touch()
    return 0 if logged else 1


if __name__ == "__main__":
    sys.exit(main())
