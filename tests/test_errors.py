"""Issue 12 §3: every expected failure is one `Error: ...` line naming the file, every command
checks its numbers at parse time (exit 2), and a real bug still shows its traceback.

Full and read-only disks are real: a small tmpfs mounted for the test (the tests run as root;
where mounting is not allowed they skip and say why)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import typing
from pathlib import Path

import pytest
import typer

import numerflow
from numerflow import files, numerai
from numerflow.cli import app, os_error_line
from numerflow.config_base import SEED_MAX
from numerflow.config import PrepareConfig
from numerflow.errors import ConfigError
from tests.test_bad_input import error_line, run, usage_error


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


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


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("errors") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1,
                                 out_dir=out)).out_dir


def train_args(prepared: Path, out: Path, *extra):
    return ["train", "--data", prepared, "--out", out, "--layers", "16", "--epochs", "1", "--batch-size", "256",
            "--device", "cpu", *extra]


# ---- parse-time checks: seeds and every numeric option of every command --------------------

@pytest.mark.parametrize("command", [["train"], ["download", "--synthetic"]])
@pytest.mark.parametrize("seed, message", [
    ("-1", "Input should be greater than or equal to 0"),  # numpy's Generator: ValueError
    ("1208925819614629174706176", f"Input should be less than or equal to {SEED_MAX}"),  # torch: overflow
    (str(SEED_MAX + 1), f"Input should be less than or equal to {SEED_MAX}"),
])
def test_seeds_outside_what_numpy_and_torch_take_are_usage_errors(in_tmp, command, seed, message):
    assert usage_error(run(*command, "--seed", seed)) == f"Error: Invalid value for '--seed': {message}"


def test_the_seed_limits_are_what_numpy_and_torch_accept():
    import numpy as np
    import torch

    np.random.default_rng([SEED_MAX, 5])
    np.random.seed(SEED_MAX)
    torch.manual_seed(SEED_MAX)
    with pytest.raises(ValueError):
        np.random.default_rng([-1, 0])
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        torch.manual_seed(1208925819614629174706176)


def test_the_api_refuses_a_bad_seed_before_training(tmp_path, prepared):
    with pytest.raises(ConfigError, match="--seed: Input should be greater than or equal to 0"):  # the CLI's message
        numerflow.train(data=prepared, out=tmp_path / "m.pt", seed=-1, epochs=1)
    assert list(tmp_path.iterdir()) == []


def numeric_options() -> list[tuple[str, str, type]]:
    """(command, --option, int or float) for every number option of every command, as click
    parses them (the options made from config.py's fields and each command's own)."""
    found = []
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            annotation = getattr(param, "type_descriptor", None) and param.type_descriptor.annotation
            base = {a for a in typing.get_args(annotation) if a is not type(None)} or {annotation}
            kind = float if float in base else int if int in base and bool not in base else None
            if kind is not None and param.param_type_name == "option":
                found.append((name, next(d for d in param.opts if d.startswith("--")), kind))
    return found


NUMERIC_OPTIONS = numeric_options()


def test_the_audit_sees_every_kind_of_number_option():
    assert ("train", "--seed", int) in NUMERIC_OPTIONS and ("train", "--lr", float) in NUMERIC_OPTIONS
    assert ("predict", "--neutralize", float) in NUMERIC_OPTIONS and ("download", "--round", int) in NUMERIC_OPTIONS


@pytest.mark.parametrize("command, flag, kind", NUMERIC_OPTIONS)
def test_every_number_option_refuses_negative_and_non_finite_values_at_parse_time(in_tmp, command, flag, kind):
    bad = ["-1"] + (["nan", "inf", "-inf"] if kind is float else ["1e3", "nan"])
    for value in bad:
        result = run(command, f"{flag}={value}")
        assert result.exit_code == 2, (command, flag, value, result.output)
        assert f"Invalid value for '{flag}'" in usage_error(result)


@pytest.mark.parametrize("line, flag", [("weight_decay = inf", "--weight-decay"), ("l1 = nan", "--l1"),
                                        ("seed = -1", "--seed"), ("dropout = nan", "--dropout")])
def test_numbers_from_numerflow_toml_get_the_same_checks_as_flags(in_tmp, line, flag):
    (in_tmp / "numerflow.toml").write_text(f"[train]\n{line}\n")  # TOML has inf and nan literals
    assert f"Invalid value for '{flag}'" in usage_error(run("train"))


# ---- numerflow.toml: not UTF-8, a folder, keys named like the options ------------------------

def test_a_settings_file_that_is_not_utf8_is_one_error_line(in_tmp):
    (in_tmp / "numerflow.toml").write_bytes('[train]\n# réglages\nepochs = 3\n'.encode("latin-1"))
    assert error_line(run("prepare")) == ("Error: numerflow.toml: not UTF-8 text (byte 0xe9 at offset 11); "
                                          "save it as UTF-8")


def test_a_settings_file_that_is_a_folder_is_an_error_not_ignored(in_tmp):
    (in_tmp / "numerflow.toml").mkdir()
    assert error_line(run("prepare")) == "Error: numerflow.toml: not a file (a settings file must be a TOML file)"


def test_an_unreadable_settings_file_is_one_error_line_naming_it(in_tmp, monkeypatch):
    folder = in_tmp / "conf"
    folder.mkdir()
    monkeypatch.setenv("NUMERFLOW_CONFIG", str(folder / "numerflow.toml" / "x"))  # a path through a file
    (folder / "numerflow.toml").write_text("")
    assert error_line(run("prepare")).startswith(f"Error: {folder / 'numerflow.toml' / 'x'}: file not found")


@pytest.mark.parametrize("table, key, value, expected", [
    ("download", "round", "0", "Error: Invalid value for '--round': Input should be greater than or equal to 1"),
    ("predict", "model", '"nowhere.pt"\ndata = "{live}"', "Error: nowhere.pt: file not found"),
    ("export", "model", '["a.pt", "nowhere.pt"]', "Error: a.pt: file not found"),
])
def test_toml_keys_are_the_option_names(in_tmp, synthetic_dir, table, key, value, expected):
    value = value.format(live=synthetic_dir / "live.parquet")
    (in_tmp / "numerflow.toml").write_text(f"[{table}]\n{key} = {value}\n")
    result = run(table)
    assert (usage_error(result) if result.exit_code == 2 else error_line(result)) == expected


def test_toml_json_key_is_validates_json_option(in_tmp, prepared, synthetic_models):
    (in_tmp / "numerflow.toml").write_text(f'[validate]\njson = true\nno_report = true\n'
                                           f'model = "{synthetic_models["all"]}"\n'
                                           f'data = "{prepared / "validation.parquet"}"\n')
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert "mean" in json.dumps(json.loads(result.output))  # the whole output is the JSON report


@pytest.mark.parametrize("table, internal, option", [
    ("predict", "models", "model"), ("validate", "as_json", "json"),
    ("quickstart", "folder", "dir"),
])
def test_toml_internal_names_are_refused_with_the_option_name(in_tmp, table, internal, option):
    (in_tmp / "numerflow.toml").write_text(f"[{table}]\n{internal} = 1\n")
    assert error_line(run("prepare")) == (f"Error: numerflow.toml: [{table}]: '{internal}' is an internal name; "
                                          f"write {option} = ... (keys are named like the options: --{option})")


def test_a_dotenv_that_is_not_utf8_is_one_error_naming_it_without_the_secret(in_tmp, monkeypatch):
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)
    (in_tmp / ".env").write_bytes("NUMERAI_PUBLIC_ID=pub\n# clé\nNUMERAI_SECRET_KEY=CANARYSECRET\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        numerai.credentials()
    assert str(caught.value) == ".env: not UTF-8 text (byte 0xe9 at offset 26); save it as UTF-8"


# ---- NUMERFLOW_RETRY_BASE_SECONDS --------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e300", "two"])
def test_a_bad_retry_base_is_one_error_line_before_any_request(in_tmp, monkeypatch, value):
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", value)
    result = run("download", "--data-dir", in_tmp / "data")
    assert error_line(result) == (f"Error: NUMERFLOW_RETRY_BASE_SECONDS must be a number of seconds from 0 to "
                                  f"3600, got '{value}'")
    assert not (in_tmp / "data").exists()


def test_a_good_retry_base_is_used(monkeypatch):
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", " 0.5 ")
    assert numerai.retry_base_seconds() == 0.5
    monkeypatch.setenv("NUMERFLOW_RETRY_BASE_SECONDS", "")
    assert numerai.retry_base_seconds() == numerai.RETRY_BASE_SECONDS


# ---- full disks: one line naming the file ------------------------------------------------------

def test_train_on_a_full_disk_is_one_error_line_naming_the_file(tmp_path, prepared):
    with tmpfs(tmp_path / "disk", "size=16k") as disk:
        result = run(*train_args(prepared, disk / "model.pt", "--layers", "512"))
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        last = result.output.strip().splitlines()[-1]  # epoch lines come first
        assert last in (f"Error: {disk / 'model.pt'}: No space left on device",
                        f"Error: {disk / 'model.pt.resume'}: No space left on device"), result.output
        assert not (disk / "model.pt").exists()
        assert [p.name for p in disk.iterdir() if p.name.endswith(".tmp")] == []


def test_a_full_disk_names_the_file_an_atomic_write_was_writing(tmp_path):
    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        with pytest.raises(OSError) as caught:
            files.write_json(disk / "big.json", {"x": "y" * 100_000})
        assert os_error_line(caught.value) == f"{disk / 'big.json'}: No space left on device"


def test_prepare_on_a_full_disk_is_one_error_line_naming_the_file(tmp_path):
    from tests.test_prepare import write_version

    version = write_version(tmp_path / "data" / "v5.2", train_eras=40, rows_per_era=400)
    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        # the train file fails on the writer thread; the error may surface after validation began
        result = run("prepare", "--dataset", version, "--feature-set", "all", "--out-dir", disk)
        assert error_line(result) == f"Error: {disk / 'train.parquet'}: No space left on device"
        assert list(disk.iterdir()) == []


def test_torch_zip_writer_failures_come_back_as_the_os_error(tmp_path):
    import torch

    from numerflow.checkpoint import save_atomic

    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        with pytest.raises(OSError) as caught:
            save_atomic(disk / "x.pt", {"w": torch.zeros(100_000)})
        assert os_error_line(caught.value) == f"{disk / 'x.pt'}: No space left on device"
        assert list(disk.iterdir()) == []


# ---- train checks that --out can be written before training -----------------------------------

def assert_refused_before_training(result, expected: str):
    assert error_line(result) == expected  # one line: no epoch was trained first


def test_train_out_under_a_regular_file_fails_before_training(tmp_path, prepared):
    (tmp_path / "blocker").write_text("")
    out = tmp_path / "blocker" / "models" / "model.pt"
    assert_refused_before_training(run(*train_args(prepared, out)),
                                   f"Error: --out: cannot make the folder {out.parent}: a file is in the way")


def test_train_out_on_a_read_only_disk_fails_before_training(tmp_path, prepared):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as disk:
        assert_refused_before_training(run(*train_args(prepared, disk / "model.pt")),
                                       f"Error: --out: cannot write in {disk} (Read-only file system)")


@pytest.mark.skipif(os.geteuid() == 0,
                    reason="root writes into a mode-0555 folder, so only a non-root run can test permissions")
def test_train_out_in_a_folder_without_write_permission_fails_before_training(tmp_path, prepared):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    assert_refused_before_training(run(*train_args(prepared, folder / "model.pt")),
                                   f"Error: --out: cannot write in {folder} (Permission denied)")


# ---- real bugs keep their traceback ------------------------------------------------------------

def test_an_unexpected_exception_still_shows_its_traceback(in_tmp, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(numerflow, "prepare", broken)
    result = run("prepare")
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
