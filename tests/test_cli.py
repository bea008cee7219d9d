"""The command line as a whole: help texts, version, torch-free start-up, config precedence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from numerflow import __version__
from numerflow.cli import app
import numerflow
from tests.helpers import cli, runner


COMMANDS = ["download", "prepare", "train", "validate", "predict", "submit", "round", "export", "quickstart"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_ends_with_an_example(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Example: numerflow {name}" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"numerflow {__version__}"


def test_help_does_not_import_torch():
    code = ("import sys\nfrom numerflow.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "numerflow", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_invalid_toml_is_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "numerflow.toml").write_text("[train\nepochs = ")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare", "--help"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: numerflow.toml: invalid TOML")


def test_toml_defaults_rank_below_env_and_flags(tmp_path, monkeypatch):
    """numerflow.toml sets a default, NUMERFLOW_* overrides it, a flag overrides both."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "numerflow.toml").write_text('[prepare]\nfeature_set = "from_toml"\ndata_dir = "nowhere"\n')
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == 1
    assert "nowhere" in result.output
    monkeypatch.setenv("NUMERFLOW_DATA_DIR", "envdir")
    result = runner.invoke(app, ["prepare"])
    assert "envdir" in result.output
    result = runner.invoke(app, ["prepare", "--data-dir", "flagdir"])
    assert "flagdir" in result.output


@pytest.mark.slow
def test_openmp_threads_spin_briefly_unless_the_user_chose(tmp_path):
    """Unbounded spinning made training 4-25x slower on a busy 2-core machine, sleeping at once
    made it 1.3x slower on a quiet one: the waiting is set when a stage that uses torch is called
    (importing numerflow changes nothing), before torch is imported; a user's own setting wins."""
    from numerflow.runtime import OPENMP_WAITING

    code = ("import os, sys, numerflow\n"
            "assert os.environ.get('GOMP_SPINCOUNT') in (None, '7')\n"
            "try:\n    numerflow.train(data='nowhere', say=None)\nexcept numerflow.errors.NumerflowError:\n    pass\n"
            "print(os.environ['GOMP_SPINCOUNT'], os.environ['KMP_BLOCKTIME'], os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME",
                                                                           "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert out.stdout.split() == [OPENMP_WAITING["GOMP_SPINCOUNT"], OPENMP_WAITING["KMP_BLOCKTIME"], "None"]
    env["GOMP_SPINCOUNT"] = "7"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert out.stdout.split()[0] == "7"


@pytest.mark.parametrize("name", ["train", "validate", "predict", "round"])
def test_every_device_option_is_checked_alike_and_reads_numerflow_device(name, tmp_path, monkeypatch):
    """One --device option for every command: the same names accepted, NUMERFLOW_DEVICE honoured."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [name, "--device", "tpu"])
    assert result.exit_code == 2
    assert result.output.strip().endswith("Error: Invalid value for '--device' (env var: 'NUMERFLOW_DEVICE'): "
                                          "'tpu' is not a device (choose auto, cpu, cuda, cuda:N or mps)")
    monkeypatch.setenv("NUMERFLOW_DEVICE", "gpu0")
    result = runner.invoke(app, [name])
    assert result.exit_code == 2
    assert result.output.strip().endswith("'gpu0' is not a device (choose auto, cpu, cuda, cuda:N or mps)")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("option, value, choices", [("--loss", "pearson", "mse, corr"),
                                                    ("--activation", "tanh", "relu, silu"),
                                                    ("--schedule", "cosine", "onecycle, constant"),
                                                    ("--predict-with", "max", "main, mean")])
def test_choices_are_the_option_enums(option, value, choices):
    result = runner.invoke(app, ["train", option, value])
    assert result.exit_code == 2
    assert f"'{value}' is not one of {choices}" in result.output


# ---- real bugs keep their traceback ------------------------------------------------------------

def test_an_unexpected_exception_still_shows_its_traceback(in_tmp, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(numerflow, "prepare", broken)
    result = cli("prepare")
    assert isinstance(result.exception, ZeroDivisionError)  # not turned into an Error: line


def test_a_torch_runtime_error_that_is_not_io_still_propagates(tmp_path, monkeypatch):
    import torch

    from numerflow.checkpoint import save_atomic

    def broken(obj, file):
        raise RuntimeError("a bug in a tensor")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug in a tensor"):
        save_atomic(tmp_path / "x.pt", {})
    assert list(tmp_path.iterdir()) == []
