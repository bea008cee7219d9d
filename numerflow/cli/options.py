"""Each command's options made from its settings dataclass (config.py), where every option is
defined once: `option(default, help=..., ...)` on a field becomes `--field-name` here, with that
help, default and environment variable. The settings dataclass checks every value (choices, bounds,
checks), not typer, so the command line and the Python API refuse a value with one message: its
OptionError becomes a usage error here (exit 2). --help still shows the choices and bounds."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from types import UnionType
from typing import Annotated, Optional, Union

import typer

from numerflow.errors import ConfigError, OptionError
from numerflow.options import CommandLine, bounds_text, command_line_of, flag_of, holds_whole_numbers


def options_from(leave_out: tuple[str, ...] = (), **settings_classes):
    """Decorate `command(settings, ..., **own_options)`: typer sees the fields of each settings
    class (keyword: the command's parameter that receives it) as options, followed by the
    command's own parameters; the command receives the built settings objects. A field that two
    classes share (download's data_dir) is one option for both. A value a dataclass refuses is a
    usage error (exit 2), as a bad option value is."""

    def decorate(command):
        option_fields = _command_line_fields(settings_classes.values(), leave_out)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for name, p in inspect.signature(command, eval_str=True).parameters.items() if name not in settings_classes]

        # typer hands the click context to one parameter only: the command's own, if it has one.
        asks_for_context = any(p.annotation is typer.Context for p in own)
        context_name = next((p.name for p in own if p.annotation is typer.Context), "command_context")

        @functools.wraps(command)
        def run(**values):
            context = values[context_name] if asks_for_context else values.pop(context_name)
            built = {name: _settings(cls, values, context) for name, cls in settings_classes.items()}
            return command(**built, **{p.name: values[p.name] for p in own})

        context = [] if asks_for_context else [
            inspect.Parameter(context_name, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
        parameters = context + [_typer_parameter(f, hint) for f, hint in option_fields.values()] + own
        run.__signature__ = inspect.Signature(parameters)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        run.settings_classes = tuple(settings_classes.values())  # what the command's options come from
        return run

    return decorate


def _command_line_fields(classes, leave_out) -> dict:
    """field name → (field, its type hint), in declaration order, first class first."""
    found = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if command_line_of(f).on_command_line and f.name not in leave_out and f.name not in found:
                found[f.name] = (f, hints[f.name])
    return found


def value_name(hint) -> str:
    """What --help calls an option's value (click's names: PATH, INTEGER, FLOAT, TEXT), for a hint
    such as `Path | None` or `list[Path]`: typer would print the annotation (`<list[Path]>`)."""
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (Union, UnionType) \
        else [hint]
    kind = kinds[0] if kinds else hint
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    return {Path: "PATH", int: "INTEGER", float: "FLOAT"}.get(kind, "TEXT")


def _typer_parameter(settings_field, hint) -> inspect.Parameter:
    spec: CommandLine = command_line_of(settings_field)
    default = settings_field.default_factory() if settings_field.default_factory is not MISSING else settings_field.default
    cli_type, metavar, show_default = hint, value_name(hint), True
    if spec.choices is not None:  # read as text: the dataclass refuses what is not a choice
        cli_type, metavar = str, "[" + "|".join(spec.choices.names()) + "]"
    elif spec.parse is not None:  # read as text, parsed by the field's parser: "512,256", "2,1"
        cli_type = Optional[str]
        default = ",".join(map(str, default)) if isinstance(default, list) and default else None
    bounds = bounds_text(spec.min, spec.max)
    if bounds:  # the dataclass enforces them; --help shows them where click showed its own ranges
        if default is None:
            metavar = f"{'INTEGER' if holds_whole_numbers(hint) else 'FLOAT'} {bounds}"
        else:
            show_default = f"{default}; {bounds}"
    flag = spec.flag or "--" + settings_field.name.replace("_", "-")
    option = typer.Option(*flag.split(" "), help=spec.help, envvar=spec.envvar, metavar=metavar, show_default=show_default,
                          callback=_checked_as_read(settings_field, holds_whole_numbers(hint)))
    return inspect.Parameter(settings_field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[cli_type, option])


def _checked_as_read(settings_field, whole_number: bool):
    """click checks each option as it reads it, before it looks for a missing argument: so does
    this, with the field's own check (the settings dataclass applies the same one again). A
    field read as text (`parse`) is checked when the settings are built."""
    spec = command_line_of(settings_field)

    def check(value):
        if value is None or spec.parse is not None:
            return value
        try:
            parsed = spec.choices.parse(value, flag_of(settings_field)) if spec.choices is not None else value
        except OptionError as exc:
            raise typer.BadParameter(exc.problem) from None  # click names the option
        problem = spec.problem(parsed, whole_number)
        if problem:
            raise typer.BadParameter(problem)
        return value

    return check


def _settings(settings_class, values: dict, context: typer.Context):
    """The settings object from the command line's values; a text option goes through its parser."""
    options = {}
    for f in fields(settings_class):
        if f.name not in values:
            continue
        spec, value = command_line_of(f), values[f.name]
        if spec.parse is not None:
            if value is None:
                continue  # the field's own default
            value = _parsed(spec, flag_of(f), value, context)
        options[f.name] = value
    try:
        return settings_class(**options)
    except OptionError as exc:  # worded as click words its own checks, env var included
        raise typer.BadParameter(exc.problem, ctx=context, param=_click_option(context, exc.option)) from None
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _click_option(context: typer.Context, flag: str):
    """The command's click option named `flag`, for an error message that names it."""
    return next((p for p in context.command.params if flag in getattr(p, "opts", [])), None)


def _parsed(spec: CommandLine, flag: str, text: str, context: typer.Context):
    try:
        return spec.parse(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), ctx=context, param=_click_option(context, flag)) from None
