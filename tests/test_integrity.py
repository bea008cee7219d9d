"""Issue 12, sections 1 and 2: a stage's outputs are published as a set (a failed or killed run
never leaves a mix that readers accept), downloads are accepted only when whole, and submissions
happen once, also under concurrency and kills. Kills are real: a subprocess SIGKILLs itself at a
chosen rename or call."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from numerflow.errors import DataError

runner = CliRunner()
SMALL = ["--eras", "20", "--rows-per-era", "40", "--features", "10"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def run_killed_at_rename(nth: int, *args, cwd: Path) -> subprocess.CompletedProcess:
    """`numerflow <args>` in a subprocess that SIGKILLs itself at its `nth` os.replace (rename),
    before that rename happens: no cleanup code of numerflow's runs."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        real, calls = os.replace, []
        def replace(src, dst, **kw):
            calls.append(dst)
            if len(calls) == {nth}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, **kw)
        os.replace = replace
        from numerflow.cli import main
        sys.argv = ["numerflow"] + sys.argv[1:]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("download", "--synthetic", "--data-dir", "data", "--seed", "0", *SMALL).exit_code == 0
    return tmp_path / "data"


# ---- prepare publishes train.parquet, validation.parquet and manifest.json as one set

def test_prepare_failing_on_its_second_output_keeps_the_old_set(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    prepared = data_dir / "prepared"
    old_train = (prepared / "train.parquet").read_bytes()
    (prepared / "validation.parquet").unlink()
    (prepared / "validation.parquet").mkdir()  # the rename of the second output must fail
    result = cli("prepare", "--data-dir", data_dir, "--feature-set", "all", "--downsample", "2")
    assert error_line(result) == f"Error: {prepared / 'validation.parquet'}: is a folder, not a file"
    assert (prepared / "train.parquet").read_bytes() == old_train  # nothing renamed
    assert temporaries(prepared) == []


def test_prepare_killed_between_renames_is_refused_by_readers_and_redone(data_dir):
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    prepared = data_dir / "prepared"
    # killed after renaming train.parquet, before validation.parquet and the manifest
    run_killed_at_rename(2, "prepare", "--data-dir", "data", "--feature-set", "all", "--downsample", "2",
                         cwd=data_dir.parent)
    with pytest.raises(DataError, match="does not match .*manifest.json .*mixed or incomplete set"):
        schema.read_prepared_manifest(prepared)
    result = cli("train", "--data", prepared, "--out", "m.pt", "--epochs", "1")
    assert error_line(result).startswith(f"Error: {prepared / 'train.parquet'}: does not match "
                                         f"{prepared / 'manifest.json'} (")
    assert error_line(result).endswith("run `numerflow prepare` again")
    assert temporaries(prepared)  # the killed run's validation.parquet, never renamed
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all", "--downsample", "2").exit_code == 0
    assert schema.read_prepared_manifest(prepared)["downsample"] == 2
    assert temporaries(prepared) == []  # the dead writer's temporary file was removed


# ---- download --synthetic publishes its files as one set

def test_synthetic_rerun_killed_after_train_is_refused_by_prepare(data_dir):
    run_killed_at_rename(2, "download", "--synthetic", "--data-dir", "data", "--seed", "5", *SMALL,
                         cwd=data_dir.parent)  # train.parquet of seed 5 beside seed 0's other files
    result = cli("prepare", "--data-dir", data_dir, "--feature-set", "all")
    folder = data_dir / "synthetic"
    assert error_line(result).startswith(f"Error: {folder / 'train.parquet'}: does not match "
                                         f"{folder / '.download_manifest.json'} (")
    assert not (data_dir / "prepared").exists()
    assert cli("download", "--synthetic", "--data-dir", data_dir, "--seed", "5", *SMALL).exit_code == 0
    assert cli("prepare", "--data-dir", data_dir, "--feature-set", "all").exit_code == 0
    assert temporaries(folder) == []


def test_synthetic_rerun_failing_after_train_keeps_the_old_set(data_dir):
    folder = data_dir / "synthetic"
    old = {name: (folder / name).read_bytes() for name in ("train.parquet", "live.parquet")}
    (folder / "validation.parquet").unlink()
    (folder / "validation.parquet").mkdir()
    result = cli("download", "--synthetic", "--data-dir", data_dir, "--seed", "5", *SMALL)
    assert error_line(result) == f"Error: {folder / 'validation.parquet'}: is a folder, not a file"
    assert {name: (folder / name).read_bytes() for name in old} == old
    assert temporaries(folder) == []
