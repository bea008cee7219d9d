"""Plain helpers the test modules share (fixtures are in conftest.py): running the CLI in-process,
reading its one error line, a real small file system, a killed run, and hand-edited data sets."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from tests.fake_numerai import benchmark_columns

runner = CliRunner()
BENCHMARKS = benchmark_columns("v5.3")  # v53_lgbm_ender20 first


def cli(*args):
    """`numerflow <args>` in this process (typer's CliRunner); arguments may be paths or numbers."""
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The single line a failed command printed: exit 1, no traceback, one `Error: ...` line, on stderr."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert result.stderr.strip().splitlines() == lines, result.output
    return lines[0]


TINY = ["--layers", "8", "--epochs", "1", "--batch-size", "256", "--device", "cpu"]  # a model trained in seconds


def ok(result):
    """The command's result, after checking it succeeded (its output is the failure message)."""
    assert result.exit_code == 0, result.output
    return result


def one_error(result, *expected: str) -> str:
    """error_line, and each of `expected` in it."""
    line = error_line(result)
    for text in expected:
        assert text in line, line
    return line


def fresh_python(code: str, cwd=None) -> str:
    """Run `code` in a fresh Python process (imports start from nothing); its stdout, after checking it
    exited 0 (its stderr is the failure message)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def usage_error(result) -> str:
    """The `Error: ...` line of a click usage error (exit 2)."""
    assert result.exit_code == 2, result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")][-1]


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A real small (or read-only) file system at `folder`; skip where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


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


HAND_MADE = shutil.ignore_patterns(schema.VERSION_MANIFEST_FILE)  # its records would refuse edited files


def text_target_dataset(synthetic_dir, folder):
    shutil.copytree(synthetic_dir, folder, ignore=HAND_MADE)  # files changed below: no download record
    train = pd.read_parquet(folder / schema.TRAIN_FILE)
    train.assign(target=train["target"].astype(str)).to_parquet(folder / schema.TRAIN_FILE)
    return folder
