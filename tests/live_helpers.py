"""Tiny trained checkpoints for the live-round tests (predict, submit, round, export).

Import the fixtures into a test module with
`from tests.live_helpers import synthetic_models, fake_models  # noqa`. Training happens once per
session: pytest makes one fixture per importing module, so results are cached here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from numerflow.config import PrepareConfig, TrainConfig

_CACHE: dict[str, dict[str, Path]] = {}


def train_tiny(data_dir: Path, feature_set: str, out: Path, seed: int = 0, embargo: int = 4) -> Path:
    """prepare + one epoch of a small MLP: a real checkpoint in a few seconds."""
    from numerflow.stages.prepare import prepare
    from numerflow.stages.train import train

    prepared = prepare(PrepareConfig(data_dir=data_dir, feature_set=feature_set, downsample=1, embargo=embargo,
                                     out_dir=out.parent / f"prepared_{out.stem}"))
    return train(TrainConfig(data=prepared.out_dir, out=out, layers=[16], epochs=1, batch_size=256,
                             device="cpu", seed=seed)).checkpoint


@pytest.fixture(scope="session")
def synthetic_models(synthetic_dir, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints on the shared synthetic set: "all" (every feature), "small" (a subset), "all2"
    (every feature, another seed)."""
    if "synthetic" not in _CACHE:
        folder = tmp_path_factory.mktemp("live_models")
        data_dir = synthetic_dir.parent
        _CACHE["synthetic"] = {
            "all": train_tiny(data_dir, "all", folder / "all.pt"),
            "small": train_tiny(data_dir, "small", folder / "small.pt", seed=1),
            "all2": train_tiny(data_dir, "all", folder / "all2.pt", seed=2),
        }
    return _CACHE["synthetic"]


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints that fit the fake Numerai server's v5.2 data (features feature_f0..f3)."""
    from tests.fake_numerai import make_version_files

    if "fake" not in _CACHE:
        folder = tmp_path_factory.mktemp("fake_models")
        data_dir = folder / "data"
        for name, body in make_version_files("v5.2").items():
            (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / name).write_bytes(body)
        _CACHE["fake"] = {
            "a": train_tiny(data_dir, "all", folder / "a.pt"),
            "b": train_tiny(data_dir, "all", folder / "b.pt", seed=1),
        }
    return _CACHE["fake"]


def copy_live(source_dir: Path, dest_data_dir: Path, round_number: int | None, version: str = "v5.2") -> Path:
    """A data folder holding only `source_dir`'s live.parquet (and, if given, a round marker)."""
    folder = dest_data_dir / version
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source_dir / "live.parquet", folder / "live.parquet")
    if round_number is not None:
        (folder / "live_round.json").write_text(json.dumps({"round": round_number}))
    return folder / "live.parquet"


def assert_secret_absent(results, log_text: str, folder: Path) -> None:
    """The secret key is in no command output, no log line and no file written under `folder`."""
    from tests.fake_numerai import SECRET_KEY

    for result in results:
        assert SECRET_KEY not in result.output and SECRET_KEY not in (result.stderr or "")
    assert SECRET_KEY not in log_text
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path
