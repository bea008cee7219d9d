"""numerflow ui: MLflow's own UI (`mlflow server`) on the tracking store that numerflow/tracking.py
writes, in a child process, until Ctrl+C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import Callable

from numerflow import tracking
from numerflow.config import UiConfig
from numerflow.errors import ConfigError, NumerflowError

STOP_SECONDS = 10  # how long the server may take to stop before it is killed


def ui(settings: UiConfig, *, say: Callable[[str], None] = print) -> None:
    """Serve the store until the server stops or the user presses Ctrl+C."""
    if not tracking.mlflow_installed():
        raise ConfigError(f"numerflow ui needs MLflow: {tracking.INSTALL_HINT}")
    store = settings.store or tracking.tracking_config().uri
    if store.startswith(("http://", "https://")):
        raise ConfigError(f"the tracking store is a server ({store}): open it in a browser; "
                          "numerflow ui serves a local store (--store sqlite:///mlflow.db)")
    if not tracking.URI_SCHEME.fullmatch(store):
        raise ConfigError(f"--store: '{store}' is not a URI (e.g. {tracking.DEFAULT_URI})")
    check_port_free(settings.host, settings.port)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", settings.host,
               "--port", str(settings.port), "--workers", "1"]  # one worker: a UI for one user, light on CPUs
    # its own process group: `mlflow server` runs its web server as a further child, which must stop with it
    server = subprocess.Popen(command, start_new_session=True)
    say(f"MLflow UI for {store}: open {browser_url(settings.host, settings.port)} in a browser (Ctrl+C stops it)")
    serve_until_stopped(server)


def check_port_free(host: str, port: int) -> None:
    """Bind the port for a moment: a port in use is one Error line, not MLflow's traceback."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no user
            probe.bind((host, port))
    except OSError as exc:
        raise NumerflowError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)") from None


def browser_url(host: str, port: int) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def serve_until_stopped(server: subprocess.Popen) -> None:
    """Wait for the server; Ctrl+C or SIGTERM stops it (never leave it running without us)."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        returncode = server.wait()
    except KeyboardInterrupt:
        returncode = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_group(server)
    if returncode != 0:
        raise NumerflowError(f"mlflow server stopped with exit code {returncode} (its output is above)")


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (mlflow's CLI and its web server), then SIGKILL to
    whatever of the group lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
