"""Shared fixtures: a small synthetic Numerai data set written with numerflow's own generator, it
prepared, tiny trained checkpoints on it and on the fake server's data, the fake Numerai server (also
offering v5.3, and run from tmp_path), a test's own working folder, and two helpers for the
live-round tests (a data folder holding one live file; the secret-leak check). Test modules use them
by name; plain helpers are in tests/helpers.py. `train_tiny` is the one name imported from here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from numerflow.config import DownloadConfig, PrepareConfig, SyntheticConfig, TrainConfig
from numerflow.runtime import before_torch_import
from tests.fake_numerai import PUBLIC_ID, SECRET_KEY, FakeNumerai, make_version_files

# Test modules import torch themselves, before any numerflow stage runs: the suite trains many
# small models, and spinning OpenMP threads make that 10-30x slower on a busy machine.
before_torch_import()

# MLflow tracking (issue 28) is on by default where mlflow is installed; the suite's runs are not
# experiments, and a SQLite store per working folder would cost seconds each. The tracking tests
# (tests/test_tracking_commands.py) turn it back on.
os.environ.setdefault("NUMERFLOW_TRACK", "0")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic data set (folder `<tmp>/data/synthetic`), shared read-only by tests."""
    from numerflow.synthetic import write_synthetic

    data_dir = tmp_path_factory.mktemp("shared") / "data"
    return write_synthetic(SyntheticConfig(data_dir=data_dir, eras=40, rows_per_era=150, features=30, seed=1))


def train_tiny(data_dir: Path, feature_set: str, out: Path, seed: int = 0, embargo: int = 4) -> Path:
    """prepare + one epoch of a small MLP: a real checkpoint in a few seconds."""
    from numerflow.stages.prepare import prepare
    from numerflow.stages.train import train

    prepared = prepare(PrepareConfig(data_dir=data_dir, feature_set=feature_set, downsample=1, embargo=embargo,
                                     aux_targets=["none"], out_dir=out.parent / f"prepared_{out.stem}"))  # one head
    return train(TrainConfig(data=prepared.out_dir, out=out, layers=[16], epochs=1, batch_size=256,
                             device="cpu", seed=seed)).checkpoint


@pytest.fixture(scope="session")
def synthetic_models(synthetic_dir, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints on the shared synthetic set: "all" (every feature), "small" (a subset), "all2"
    (every feature, another seed). Trained once per session."""
    folder = tmp_path_factory.mktemp("live_models")
    data_dir = synthetic_dir.parent
    return {
        "all": train_tiny(data_dir, "all", folder / "all.pt"),
        "small": train_tiny(data_dir, "small", folder / "small.pt", seed=1),
        "all2": train_tiny(data_dir, "all", folder / "all2.pt", seed=2),
    }


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints that fit the fake Numerai server's v5.2 data (features feature_f0..f3)."""
    folder = tmp_path_factory.mktemp("fake_models")
    data_dir = folder / "data"
    for name, body in make_version_files("v5.2").items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_bytes(body)
    return {"a": train_tiny(data_dir, "all", folder / "a.pt"), "b": train_tiny(data_dir, "all", folder / "b.pt", seed=1)}


@pytest.fixture
def fake_numerai(monkeypatch):
    """A started FakeNumerai (tests/fake_numerai.py) that numerapi (and so numerflow.numerai) talks
    to; credentials for it in the environment; numerflow's retry waits shortened. Restores
    everything afterwards."""
    import numerapi.base_api

    server = FakeNumerai().start()
    monkeypatch.setattr(numerapi.base_api, "API_TOURNAMENT_URL", server.url)
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", PUBLIC_ID)
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def copy_live():
    """copy_live(source_dir, dest_data_dir, round_number, version="v5.2"): a data folder holding
    only `source_dir`'s live.parquet (and, if a round is given, its round marker)."""

    def copy(source_dir: Path, dest_data_dir: Path, round_number: int | None, version: str = "v5.2") -> Path:
        folder = dest_data_dir / version
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_dir / "live.parquet", folder / "live.parquet")
        if round_number is not None:
            (folder / "live_round.json").write_text(json.dumps({"round": round_number}))
        return folder / "live.parquet"

    return copy


@pytest.fixture
def assert_secret_absent():
    """assert_secret_absent(results, log_text, folder): the fake server's secret key is in no
    command output (stdout or stderr), no log line and no file written under `folder`."""

    def check(results, log_text: str, folder: Path) -> None:
        for result in results:
            assert SECRET_KEY not in result.output and SECRET_KEY not in (result.stderr or "")
        assert SECRET_KEY not in log_text
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET_KEY.encode() not in path.read_bytes(), path

    return check


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """tmp_path as the working folder (relative paths and numerflow.toml resolve there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    """The shared synthetic set prepared with every feature; read-only. Modules that need their own
    prepared folder define a `prepared` fixture, which pytest uses instead of this one."""
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("errors") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1,
                                 out_dir=out)).out_dir


@pytest.fixture
def numerai(fake_numerai, tmp_path, monkeypatch):
    """The fake Numerai server, with tmp_path as the working folder."""
    monkeypatch.chdir(tmp_path)
    return fake_numerai


@pytest.fixture
def numerai53(fake_numerai):
    """The fake server offering v5.2 and v5.3 (v5.3 with its 2026 file list)."""
    for name in [n for n in fake_numerai.datasets if n.startswith("v5.1/")]:
        del fake_numerai.datasets[name]
    fake_numerai.versions = ["v5.2", "v5.3"]
    fake_numerai.datasets.update(make_version_files("v5.3", fake_numerai.round_number, seed=7))
    return fake_numerai


@pytest.fixture
def v53_dir(numerai53, tmp_path):
    """v5.3 downloaded into tmp_path/data/v5.3."""
    from numerflow.stages.download import download

    return download(DownloadConfig(data_dir=tmp_path / "data")).directory
