"""The Ray plumbing every multi-model command shares: joining a cluster (`sweep --ray`, `cv --ray`,
`ensemble --fit --ray`) and running one Ray task per unit of work (a cv fold, an ensemble member),
each in a worker process with its own CPUs and GPUs, gathered as they finish.

A task whose worker process dies (killed, out of memory, its node lost) is run once more
(Ray's max_retries=1); dying again, or raising, ends the command with one error naming the unit.
An exception the unit raises is not retried: the same inputs fail the same way.

Ray is an optional extra: `pip install numerflow[ray]`; nothing here imports it until called.
"""

from __future__ import annotations

import socket
from typing import Callable, Iterator

from numerflow.errors import ConfigError, NumerflowError, OptionError

CONNECT_SECONDS = 5.0
TASK_RETRIES = 1  # a unit whose worker died runs once more, then the command fails naming it


def connect(address: str):
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to); an unreachable
    cluster is a ConfigError, found before the command writes anything."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'numerflow[ray]'") from None
    if ray.is_initialized():  # already joined (a notebook, a test): use that cluster
        return ray
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster ({first_line(exc)})") from None
    return ray


def _check_reachable(address: str) -> None:
    """A TCP connection to host:port first: ray.init would otherwise wait a minute on a wrong address."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address}: give HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT, or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS):
            pass
    except OSError as exc:
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster ({exc.strerror or exc})") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_tasks(ray, function: Callable, units: list[tuple[str, tuple]], cpus: float,
              gpus: float) -> Iterator[tuple[int, object]]:
    """Run `function(*args)` as one Ray task per (name, args) unit, `cpus` and `gpus` reserved for
    each; yield (the unit's index, its result) as each finishes. The first unit that fails raises a
    NumerflowError naming it (the others are cancelled): a NumerflowError it raised keeps its kind."""
    remote = ray.remote(function)
    # The task's name is its worker's process title while it runs (ray::<name>): `ps` shows which unit it is.
    pending = {remote.options(name=name, num_cpus=cpus, num_gpus=gpus, max_retries=TASK_RETRIES,
                              retry_exceptions=False).remote(*args): index
               for index, (name, args) in enumerate(units)}
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise unit_error(ray, units[index][0], exc) from None
            yield index, result
    finally:
        for ref in pending:  # a failure (or a caller that stopped early): nothing left running for it
            ray.cancel(ref, force=True)


def unit_error(ray, name: str, exc: Exception) -> NumerflowError:
    """The one error for a unit whose task failed: its own NumerflowError (kind kept, the unit
    named), or what Ray says about a worker that died twice."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, NumerflowError):
            message = str(cause) if str(cause).startswith(name) else f"{name}: {cause}"
            return (ConfigError if isinstance(cause, OptionError) else type(cause))(message)
        return NumerflowError(f"{name}: failed on the Ray cluster ({type(cause).__name__}: {first_line(cause)})")
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError)):
        return NumerflowError(f"{name}: its Ray worker process died, and again when retried "
                              f"({type(exc).__name__})")
    return NumerflowError(f"{name}: failed on the Ray cluster ({type(exc).__name__}: {first_line(exc)})")
