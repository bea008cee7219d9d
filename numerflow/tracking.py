"""MLflow tracking for the stages: one run per command (a child per sweep trial or cv fold) with
the settings as params, metric histories, final scores, artifacts and tags.

MLflow is optional (`pip install "numerflow[mlflow]"`) and imported only when a run starts with
tracking enabled, so `import numerflow` and every command's start-up stay as they were. Tracking
never fails a command: the first MLflow failure (server down, bad URI, disk full) is one warning
line on stderr and turns tracking off for the rest of the run.

    with tracked_run("train", "mlp256", settings, tags={DATA_VERSION_TAG: "v5.2"}) as run:
        run.log_metrics(epoch, {"train_loss": 0.21, "validation_corr": 0.02})
        run.log_final({"corr_mean": 0.021})
        run.log_artifacts([report_dir])
        with run.child("trial 3", trial_settings) as trial: ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import numbers
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from numerflow import config_base
from numerflow.errors import ConfigError
from numerflow.version import __version__

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow's own convention: a SQLite store in the working folder
EXPERIMENT = "numerflow"
KIND_TAG, VERSION_TAG = "numerflow.kind", "numerflow.version"
DATA_VERSION_TAG, FINGERPRINT_TAG = "numerflow.data_version", "numerflow.data_fingerprint"
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # the tag MLflow's UI shows as the run's source version
PARENT_TAG = "mlflow.parentRunId"  # how MLflow's UI nests a child run under its parent
INSTALL_HINT = 'pip install "numerflow[mlflow]"'
SECRET_NAME = re.compile(r"secret|token|password", re.IGNORECASE)
SECRET_ENV = ("NUMERAI_SECRET_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")
URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*|databricks")
MAX_PARAM_CHARS = 6000  # MLflow refuses longer param values
SERVER_PROBE_SECONDS = 3.0  # MLflow's own HTTP retries would wait minutes for a server that is down


def mlflow_installed() -> bool:
    return importlib.util.find_spec("mlflow") is not None


@dataclass(frozen=True)
class TrackingConfig:
    uri: str
    enabled: bool = True


def tracking_config(settings_file: config_base.SettingsFile | None = None, enabled: bool = True) -> TrackingConfig:
    """Where runs go: MLFLOW_TRACKING_URI when set, else numerflow.toml's `[tracking] uri`, else
    sqlite:///mlflow.db in the working folder. `[tracking] enabled = false` (or `enabled=False`,
    a command's --no-track) turns tracking off."""
    settings_file = settings_file if settings_file is not None else config_base.load_settings()
    table = settings_file.tables.get("tracking", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{settings_file.path}: 'tracking' must be a table: [tracking] with uri = ... lines")
    unknown = sorted(set(table) - {"uri", "enabled"})
    if unknown:
        raise ConfigError(f"{settings_file.path}: [tracking]: unknown key(s) {', '.join(unknown)} (allowed: enabled, uri)")
    if not isinstance(table.get("enabled", True), bool) or not isinstance(table.get("uri", ""), str):
        raise ConfigError(f"{settings_file.path}: [tracking]: enabled must be true or false, uri a string")
    uri = os.environ.get(TRACKING_URI_ENV) or table.get("uri") or DEFAULT_URI
    return TrackingConfig(uri=uri, enabled=enabled and table.get("enabled", True))


def warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr, flush=True)


class _Session:
    """What a run and its children share: the MLflow client, and whether tracking is still on.
    The first failure says so once and switches tracking off."""

    def __init__(self):
        self.client = None
        self.active = False

    def start(self, uri: str) -> None:
        if not URI_SCHEME.fullmatch(uri):
            warn(f"tracking off: tracking URI '{uri}' is not a URI (e.g. {DEFAULT_URI} or http://host:5000)")
            return
        with self.guard():
            _probe_server(uri)
            import mlflow

            for name in ("mlflow", "alembic"):  # a new SQLite store's schema migration logs a dozen INFO lines
                logging.getLogger(name).setLevel(logging.WARNING)
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            self.active = True

    @contextlib.contextmanager
    def guard(self):
        try:
            yield
        except Exception as exc:  # any MLflow failure: tracking must never fail the command
            if self.active or self.client is None:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                warn(f"MLflow tracking off for the rest of this run: {reason}")
            self.active = False

    def call(self, method: str, *args, **kwargs):
        if not self.active:
            return None
        with self.guard():
            return getattr(self.client, method)(*args, **kwargs)
        return None


def _probe_server(uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=SERVER_PROBE_SECONDS).close()
    except OSError as exc:
        raise ConnectionError(f"no tracking server answers at {parsed.scheme}://{parsed.hostname}:{port} "
                              f"({exc.strerror or exc})") from None


class TrackedRun:
    """One MLflow run; every method does nothing once tracking is off (or was never on)."""

    def __init__(self, session: _Session, run_id: str | None):
        self._session, self.run_id = session, run_id

    @property
    def active(self) -> bool:
        return self._session.active and self.run_id is not None

    def log_metrics(self, step: int, metrics: dict) -> None:
        """One step of metric histories (an epoch's training and validation scores)."""
        if self.active:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(key, float(value), now, int(step)) for key, value in metrics.items() if _number(value)]
            self._session.call("log_batch", self.run_id, metrics=batch)

    def log_final(self, metrics: dict) -> None:
        """The final scores (CORR, BMC, MMC, sharpe, drawdown, payout), logged at step 0."""
        self.log_metrics(0, metrics)

    def log_params(self, params: dict) -> None:
        if self.active:
            from mlflow.entities import Param

            batch = [Param(key, value) for key, value in safe_items(params)]
            self._session.call("log_batch", self.run_id, params=batch)

    def set_tags(self, tags: dict) -> None:
        if self.active:
            from mlflow.entities import RunTag

            self._session.call("log_batch", self.run_id, tags=[RunTag(k, v) for k, v in safe_items(tags)])

    def log_artifacts(self, paths, artifact_path: str | None = None) -> None:
        """Files and folders (report files, PNGs, compare.csv, model.json); a file holding a secret
        key's value is left out."""
        for path in map(Path, paths):
            if not self.active:
                return
            if path.is_dir():
                if not any(_holds_secret(f) for f in path.rglob("*") if f.is_file()):
                    self._session.call("log_artifacts", self.run_id, str(path), artifact_path)
            elif path.is_file() and not _holds_secret(path):
                self._session.call("log_artifact", self.run_id, str(path), artifact_path)

    @contextlib.contextmanager
    def child(self, name: str, settings=None, tags: dict | None = None):
        """A nested run (a sweep's trial, a cv fold) under this one."""
        kind = tags.get(KIND_TAG) if tags else None
        with _run(self._session, kind, name, settings, tags, parent=self) as run:
            yield run


@contextlib.contextmanager
def tracked_run(kind: str, name: str, settings=None, tags: dict | None = None, parent: TrackedRun | None = None,
                config: TrackingConfig | None = None):
    """A tracked run around a stage's work: `kind` is the command (train, cv, sweep, ...), `name`
    the run's name, `settings` a settings dataclass or dict (every field a param). With tracking
    off, mlflow missing or failing, the block runs the same and the run's methods do nothing."""
    if parent is not None:
        with parent.child(name, settings, {KIND_TAG: kind, **(tags or {})}) as run:
            yield run
        return
    session = _Session()
    config = config if config is not None else tracking_config()
    if config.enabled and mlflow_installed():
        session.start(config.uri)
    with _run(session, kind, name, settings, tags, parent=None) as run:
        yield run


@contextlib.contextmanager
def _run(session: _Session, kind: str | None, name: str, settings, tags: dict | None, parent: TrackedRun | None):
    run_id = None
    if session.active and (parent is None or parent.run_id is not None):
        all_tags = {**standard_tags(kind), **(tags or {})}
        if parent is not None:
            all_tags[PARENT_TAG] = parent.run_id
        experiment_id = _experiment_id(session)
        name = name if safe_items({"run_name": name}) else (kind or "run")  # a name holding a secret is left out too
        created = session.call("create_run", experiment_id, run_name=name, tags=dict(safe_items(all_tags))) \
            if experiment_id is not None else None
        run_id = created.info.run_id if created is not None else None
    run = TrackedRun(session, run_id)
    run.log_params(settings_params(settings))
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if run.active:
            session.call("set_terminated", run_id, status)


def _experiment_id(session: _Session) -> str | None:
    experiment = session.call("get_experiment_by_name", EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    if not session.active:
        return None
    try:  # another process may create it between the two calls
        return session.client.create_experiment(EXPERIMENT)
    except Exception:
        experiment = session.call("get_experiment_by_name", EXPERIMENT)
        return experiment.experiment_id if experiment is not None else None


def standard_tags(kind: str | None) -> dict:
    tags = {VERSION_TAG: __version__}
    if kind:
        tags[KIND_TAG] = kind
    commit = git_commit()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return tags


def git_commit(folder: Path | None = None) -> str | None:
    """The working folder's git commit, or None outside a repository or without git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def settings_params(settings) -> dict:
    """A settings dataclass (or dict) as MLflow params: every field, values as text."""
    if settings is None:
        return {}
    if dataclasses.is_dataclass(settings):
        settings = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return {key: _text(value)[:MAX_PARAM_CHARS] for key, value in settings.items()}


def safe_items(values: dict) -> list[tuple[str, str]]:
    """(key, value) pairs with any secret left out: a key named like *secret*, *token* or
    *password*, or a value holding a secret key's value."""
    secrets = _secret_values()
    kept = []
    for key, value in values.items():
        text = _text(value)
        if SECRET_NAME.search(str(key)) or any(secret in text for secret in secrets):
            continue
        kept.append((str(key), text))
    return kept


def _secret_values() -> list[str]:
    return [os.environ[name] for name in SECRET_ENV if len(os.environ.get(name, "")) >= 4]


def _holds_secret(path: Path) -> bool:
    secrets = _secret_values()
    if not secrets:
        return False
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(secret.encode() in data for secret in secrets)


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
