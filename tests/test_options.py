"""Option values are checked at parse time (a usage error, exit 2): seeds within what numpy and
torch take, every number option of every command refusing negative and non-finite values, the same
checks for numbers from numerflow.toml, and the Python API refusing a bad seed before training."""

from __future__ import annotations
import pytest
from numerflow.cli import app
import typing
import typer
import numerflow
from numerflow.config_base import SEED_MAX
from numerflow.errors import ConfigError
from tests.helpers import cli, usage_error


# ---- option values fail at parse time (exit 2) -------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["predict", "--model", "a.pt", "--model", "b.pt", "--weights", "1"],
     "Error: Invalid value for '--weights': got 1 weight(s) for 2 --model(s)"),
    (["predict", "--model", "a.pt", "--weights", "-1"],
     "Error: Invalid value for '--weights': weights must be non-negative numbers with a positive sum"),
    (["export", "--model", "a.pt", "--weights", "0"],
     "Error: Invalid value for '--weights': weights must be non-negative numbers with a positive sum"),
    (["export", "--model", "a.pt", "--weights", "x"],
     "Error: Invalid value for '--weights': expected comma-separated numbers, got 'x'"),
    (["predict", "--model", "a.pt", "--out", "p.txt"], "Error: Invalid value for '--out': 'p.txt' must end in .csv or .parquet"),
    (["validate", "--predictions", "p.txt"], "Error: Invalid value for '--predictions': 'p.txt' must end in .csv or .parquet"),
    (["download", "--round", "0"], "Error: Invalid value for '--round': Input should be greater than or equal to 1"),
    (["train", "--lr", "0"], "Error: Invalid value for '--lr': must be a number above 0, got 0.0"),
])
def test_bad_option_values_are_usage_errors(in_tmp, args, message):
    assert usage_error(cli(*args)) == message


# ---- parse-time checks: seeds and every numeric option of every command --------------------

@pytest.mark.parametrize("command", [["train"], ["download", "--synthetic"]])
@pytest.mark.parametrize("seed, message", [
    ("-1", "Input should be greater than or equal to 0"),  # numpy's Generator: ValueError
    ("1208925819614629174706176", f"Input should be less than or equal to {SEED_MAX}"),  # torch: overflow
    (str(SEED_MAX + 1), f"Input should be less than or equal to {SEED_MAX}"),
])
def test_seeds_outside_what_numpy_and_torch_take_are_usage_errors(in_tmp, command, seed, message):
    assert usage_error(cli(*command, "--seed", seed)) == f"Error: Invalid value for '--seed': {message}"


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
        result = cli(command, f"{flag}={value}")
        assert result.exit_code == 2, (command, flag, value, result.output)
        assert f"Invalid value for '{flag}'" in usage_error(result)


@pytest.mark.parametrize("line, flag", [("weight_decay = inf", "--weight-decay"), ("l1 = nan", "--l1"),
                                        ("seed = -1", "--seed"), ("dropout = nan", "--dropout")])
def test_numbers_from_numerflow_toml_get_the_same_checks_as_flags(in_tmp, line, flag):
    (in_tmp / "numerflow.toml").write_text(f"[train]\n{line}\n")  # TOML has inf and nan literals
    assert f"Invalid value for '{flag}'" in usage_error(cli("train"))
