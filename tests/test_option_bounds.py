"""Bounds, choices and checks are declared once, on each settings field (config.py's option()), and
applied by the settings dataclass: the command line (a usage error, exit 2) and the Python API (an
OptionError) refuse a bad value with the same message. The walk below visits every option of
every command and takes its bad values from the field's own declaration, not from a list here."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import typer

import numerflow
from numerflow.cli import app
from numerflow.config import TrainConfig
from numerflow.errors import OptionError
from numerflow.options import command_line_of, flag_of
from numerflow.training.settings import check_config
from tests.helpers import runner



def api_function(settings_class):
    """The Python API function whose keyword arguments are `settings_class`'s fields."""
    marker = f"(the fields of numerflow.config.{settings_class.__name__})"
    public = [*numerflow.__all__, "round"]  # `round` is public but left out of __all__ (the builtin)
    found = [getattr(numerflow, name) for name in public
             if marker in (getattr(getattr(numerflow, name), "__doc__", None) or "")]
    assert len(found) == 1, (settings_class, found)
    return found[0]


def declared_bad_values(spec) -> list:
    """Values the field's declaration refuses: not a choice, one past each bound (and nan for a
    bounded float), and the values its check says it refuses."""
    bad = []
    if spec.choices is not None:
        bad.append("no-such-" + spec.choices.names()[0])
    if spec.min is not None:
        bad.append(spec.min - 1)
    if spec.max is not None:
        bad.append(spec.max + 1)
    bound = spec.min if spec.min is not None else spec.max
    if isinstance(bound, float):
        bad.append(math.nan)
    if spec.check is not None:
        bad.extend(spec.check.refuses)  # every check declares what it refuses (options.refuses)
    return bad


def command_line_text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def cases():
    """(command, its required arguments, settings class, field, bad value) for every option of
    every command that has a bound, a choice or a check."""
    click_commands = typer.main.get_command(app).commands
    found = []
    for info in app.registered_commands:
        name = info.name or info.callback.__name__
        command = click_commands[name]
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        arguments = ["x" for p in command.params if p.param_type_name == "argument" and p.required]
        for settings_class in getattr(info.callback, "settings_classes", ()):
            for f in fields(settings_class):
                if flag_of(f) not in flags:
                    continue  # a Python-only field, or one the command leaves out (cv's --patience)
                for value in declared_bad_values(command_line_of(f)):
                    found.append(pytest.param(name, arguments, settings_class, f.name, value,
                                              id=f"{name}-{flag_of(f)}={command_line_text(value)}"))
    return found


CASES = cases()


def test_the_walk_finds_every_kind_of_declaration():
    """The walk is not empty and reaches bounds, choices, checks and the shared --name."""
    ids = {case.id for case in CASES}
    for expected in ("train---dropout=1.99", "train---dropout=-1.0", "train---loss=no-such-mse",
                     "train---lr=0.0", "train---layers=0", "download---eras=11", "predict---out=refused.txt",
                     "cv---name=a/b", "compare---name=..", "ensemble---name=a/b", "sweep---seed=4294967296",
                     "diagnostics---timeout=inf", "validate---device=tpu", "prepare---bin-features=6"):
        assert expected in ids, expected
    assert not any(case.id.startswith("cv---patience") for case in CASES)  # cv leaves --patience out
    assert len(CASES) > 80


@pytest.mark.parametrize("command, arguments, settings_class, field_name, value", CASES)
def test_the_command_line_and_the_api_refuse_alike(command, arguments, settings_class, field_name, value,
                                                   tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no numerflow.toml; anything written would show here
    for variable in ("NUMERFLOW_CONFIG", "NUMERFLOW_DEVICE", "NUMERFLOW_PRECISION", "NUMERFLOW_DATA_DIR"):
        monkeypatch.delenv(variable, raising=False)
    flag = flag_of(next(f for f in fields(settings_class) if f.name == field_name))

    with pytest.raises(OptionError) as refused:
        api_function(settings_class)(**{field_name: value})
    assert refused.value.option == flag
    assert str(refused.value) == f"{flag}: {refused.value.problem}"

    result = runner.invoke(app, [command, flag, command_line_text(value), *arguments])
    assert result.exit_code == 2, result.output
    last_line = result.output.strip().splitlines()[-1]
    assert last_line.startswith(f"Error: Invalid value for '{flag}'"), last_line
    assert last_line.endswith(f": {refused.value.problem}"), last_line
    assert not any(tmp_path.iterdir())


def test_dropout_1_5_fails_with_the_same_message_from_python_and_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match=r"^--dropout: Input should be less than or equal to 0\.99$"):
        numerflow.train(dropout=1.5)
    result = runner.invoke(app, ["train", "--dropout", "1.5"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("Error: Invalid value for '--dropout': "
                                                      "Input should be less than or equal to 0.99")


def test_bounds_are_inclusive_and_take_numpy_numbers():
    config = TrainConfig(dropout=0.99, batch_size=2, epochs=np.int64(1), seed=2**32 - 1, lr=np.float64(0.5))
    assert (config.dropout, config.batch_size, config.epochs) == (0.99, 2, 1)


@pytest.mark.parametrize("options, problem", [
    ({"epochs": 2.5}, "--epochs: Input should be a valid integer, got 2.5"),
    ({"seed": True}, "--seed: Input should be a valid integer, got True"),
    ({"dropout": "0.5"}, "--dropout: Input should be a valid number, got '0.5'"),
    ({"layers": []}, "--layers: layer widths must be positive integers"),
])
def test_the_api_refuses_values_of_the_wrong_kind(options, problem):
    with pytest.raises(OptionError) as refused:
        TrainConfig(**options)
    assert str(refused.value) == problem


def test_check_config_applies_the_declared_options_to_a_changed_config():
    config = TrainConfig()
    config.dropout = 1.5
    with pytest.raises(OptionError, match="--dropout: Input should be less than or equal to 0.99"):
        check_config(config)
    config.dropout, config.loss = 0.5, "pearson"
    with pytest.raises(OptionError, match="--loss: 'pearson' is not one of mse, corr"):
        check_config(config)


def test_help_still_shows_the_bounds_and_the_choices():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "(0.5; 0<=x<=0.99)" in result.output and "(6; x>=1)" in result.output  # click: [default: (...)]
    assert "--patience INTEGER x>=1" in result.output
    assert "[mse|corr]" in result.output


def test_a_folder_name_is_one_folder(tmp_path):
    from numerflow.config import CompareConfig, CvConfig, EnsembleConfig

    for settings_class in (CvConfig, CompareConfig, EnsembleConfig):
        assert settings_class(name="run-1.b_c").name == "run-1.b_c"
        for bad in ("../up", "a/b", ".", "", "a b"):
            with pytest.raises(OptionError, match="is not a folder name"):
                settings_class(name=bad)
    assert not Path(tmp_path, "up").exists()
