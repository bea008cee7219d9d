"""The hosted-runner check (issue 27): a real exported pickle runs on the live file in a fresh
process within Numerai's limits and fits; a pickle that sleeps past the time limit or allocates
past the memory limit does not, with one line saying which (the limits are parameters, so the
test is fast); versions are compared with numerai-predict's pins; the pinned environment is
built once and reused."""

from __future__ import annotations

import os
import subprocess
import sys

import cloudpickle
import pytest

from numerflow import hosted_check
from numerflow.cli import app
from tests.helpers import runner

MB = 10**6


def exported(tmp_path, synthetic_models):
    out = tmp_path / "model.pkl"
    result = runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def pickled(tmp_path, name: str, behaviour: str):
    """A pickle whose predict sleeps (behaviour "sleep") or touches 600 MB ("allocate") before
    answering; made inside a function so cloudpickle stores it by value."""

    def make():
        def predict(live_features, live_benchmark_models=None):
            import time

            import numpy as np
            import pandas as pd

            if behaviour == "sleep":
                time.sleep(30)
            else:
                held = np.ones(600 * 10**6, dtype=np.uint8)  # np.ones writes every page: resident
                held.sum()
            return pd.DataFrame({"prediction": 0.5}, index=live_features.index)

        return predict

    path = tmp_path / f"{name}.pkl"
    path.write_bytes(cloudpickle.dumps(make()))
    return path


def test_an_exported_model_fits(tmp_path, synthetic_dir, synthetic_models):
    result = hosted_check.check_pickle(exported(tmp_path, synthetic_models), synthetic_dir / "live.parquet")
    assert result.fits, result.reason
    assert result.reason == ""
    assert 0 < result.wall_s < 60
    assert 20 < result.peak_mb < 4000  # a Python with numpy, pandas and pyarrow, not this test process's copy
    assert result.limits.startswith("1 CPU, ") and result.limits.endswith("4.0 GB, 600 s")
    assert result.line().startswith(f"hosted check ({result.limits}): fits; ")


@pytest.mark.slow
def test_past_the_time_limit_does_not_fit(tmp_path, synthetic_dir):
    result = hosted_check.check_pickle(pickled(tmp_path, "slow", "sleep"), synthetic_dir / "live.parquet", seconds=3)
    assert not result.fits
    assert result.reason == "it did not finish within 3 s"
    assert 3 <= result.wall_s < 10


def cgroup_possible() -> bool:
    return os.geteuid() == 0 and os.access(hosted_check.CGROUP_V1_MEMORY, os.W_OK)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["rlimit", "cgroup"])
def test_past_the_memory_limit_does_not_fit(tmp_path, synthetic_dir, isolation):
    if isolation == "cgroup" and not cgroup_possible():
        pytest.skip("a memory cgroup needs root and a writable /sys/fs/cgroup/memory")
    live = synthetic_dir / "live.parquet"
    big = pickled(tmp_path, "big", "allocate")
    result = hosted_check.check_pickle(big, live, memory_bytes=400 * MB, seconds=60, isolation=isolation)
    assert not result.fits, result
    assert result.reason == "it needed more than 0.4 GB of memory"
    assert ("memory cgroup" if isolation == "cgroup" else "peak RSS") in result.limits
    # The same pickle with room enough fits, and its peak shows the 600 MB it touched.
    roomy = hosted_check.check_pickle(big, live, memory_bytes=2000 * MB, seconds=60, isolation=isolation)
    assert roomy.fits, roomy.reason
    assert roomy.peak_mb > 600
    if isolation == "cgroup":
        leftovers = list(hosted_check.CGROUP_V1_MEMORY.rglob("numerflow-hosted-*"))
        assert leftovers == []


def test_a_pickle_that_fails_says_why(tmp_path, synthetic_dir):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    result = hosted_check.check_pickle(bad, synthetic_dir / "live.parquet", seconds=60)
    assert not result.fits
    assert result.reason.startswith("it failed: _pickle.UnpicklingError")


def test_versions_are_compared_with_numerai_predicts_pins():
    pins = hosted_check.PREDICT_PINS[(3, 11)]
    assert hosted_check.version_differences((3, 11), dict(pins)) == []
    notes = hosted_check.version_differences((3, 11), {**pins, "numpy": "2.4.6", "cloudpickle": None})
    assert notes == ["numpy 2.4.6 here, 2.1.3 in numerai-predict's Python 3.11 image",
                     "cloudpickle not installed here, 3.1.1 in numerai-predict's Python 3.11 image"]
    assert hosted_check.version_differences((3, 9)) == [
        "Python 3.9 has no numerai-predict image (images: 3.10, 3.11, 3.12, 3.13)"]


@pytest.mark.slow
def test_the_pinned_environment_is_built_once_and_reused(tmp_path):
    """A small pin (cloudpickle only) so the test downloads little; the registry is reachable."""
    python = hosted_check.image_env({"cloudpickle": "3.1.1"}, cache=tmp_path / "cache")
    version = subprocess.run([str(python), "-c", "import cloudpickle; print(cloudpickle.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "3.1.1"
    assert f"py{sys.version_info[0]}.{sys.version_info[1]}-" in python.parent.parent.name
    built = python.parent.parent.stat().st_mtime_ns
    assert hosted_check.image_env({"cloudpickle": "3.1.1"}, cache=tmp_path / "cache") == python
    assert python.parent.parent.stat().st_mtime_ns == built
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [python.parent.parent.name]  # no half-built folder


# --- export --check through the CLI ------------------------------------------------------------

def export_cli(tmp_path, synthetic_models, *args):
    return runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--out",
                                    str(tmp_path / "m.pkl"), *args])


def test_export_check_prints_time_peak_memory_and_the_versions_that_differ(tmp_path, synthetic_dir,
                                                                           synthetic_models, monkeypatch):
    python = tuple(sys.version_info[:2])
    pins = {**hosted_check.PREDICT_PINS.get(python, {"pandas": "0", "cloudpickle": "0"}), "numpy": "0.0.1"}
    monkeypatch.setitem(hosted_check.PREDICT_PINS, python, pins)
    live = synthetic_dir / "live.parquet"
    result = export_cli(tmp_path, synthetic_models, "--check", "--live", str(live))
    assert result.exit_code == 0, result.output
    rows = len(__import__("pandas").read_parquet(live))
    assert f"Hosted check: {rows:,} live rows of {live} in " in result.output
    assert " s, peak memory " in result.output and "(limits: 1 CPU, " in result.output
    assert f"Note: numpy {__import__('numpy').__version__} here, 0.0.1 in numerai-predict's Python" in result.output
    assert (tmp_path / "m.pkl").is_file()
    # Without --check (and no --upload) there is no check, as before.
    plain = export_cli(tmp_path, synthetic_models)
    assert plain.exit_code == 0 and "Hosted check" not in plain.output


def test_export_check_that_does_not_fit_is_one_error_and_writes_nothing(tmp_path, synthetic_dir, synthetic_models):
    import pandas as pd

    live = pd.read_parquet(synthetic_dir / "live.parquet")
    live.drop(columns=[c for c in live.columns if c.startswith("feature")][:1]).to_parquet(tmp_path / "partial.parquet")
    result = export_cli(tmp_path, synthetic_models, "--check", "--live", str(tmp_path / "partial.parquet"))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: the pickle does not fit Numerai's hosted runner on {tmp_path / 'partial.parquet'}")
    assert "it failed: ValueError: live_features lacks 1 feature(s)" in lines[0]
    assert lines[0].endswith("; nothing written")
    assert list(tmp_path.glob("*.pkl")) == [] and list(tmp_path.glob(".*")) == []


def test_export_image_env_runs_the_check_with_the_pinned_python(tmp_path, synthetic_dir, synthetic_models, monkeypatch):
    """The pinned environment's build is test_the_pinned_environment_is_built_once_and_reused's; here a
    stand-in interpreter that records its use shows export runs the check with image_env's Python."""
    used = tmp_path / "used"
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!/bin/sh\necho run >> {used}\nexec {sys.executable} \"$@\"\n")
    stand_in.chmod(0o755)
    monkeypatch.setattr(hosted_check, "image_env", lambda: stand_in)
    result = export_cli(tmp_path, synthetic_models, "--image-env", "--live", str(synthetic_dir / "live.parquet"))
    assert result.exit_code == 0, result.output
    assert "Hosted check: " in result.output and "Note:" not in result.output  # its versions are the pins
    assert used.read_text() == "run\n"
    refused = export_cli(tmp_path, synthetic_models, "--image-env", "--no-check")
    assert refused.exit_code == 2 and "--image-env" in refused.output
