"""The typer app every command registers with, and what runs before any command: --version and
reading numerflow.toml once."""

from __future__ import annotations

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click: its own classes
from typer.core import TyperArgument, TyperCommand, TyperGroup

from numerflow.version import __version__
from numerflow import config_base
from numerflow.cli.errors import reports_errors
from numerflow.cli.settings_file import toml_defaults

class OneLineUsageErrors(TyperGroup):
    """A command's bad option value, missing argument or unknown name is one `Error: ...` line and
    exit 2, as every other error is one line (click would print the usage block above it; --help
    shows it)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if not isinstance(exc, NoArgsIsHelpError):  # that one prints the help: keep it
                exc.ctx = None  # click prints the usage block only for an error with a context
            raise


class PlainHelp(TyperCommand):
    """A command whose --help names each option's value by its metavar (`PATH`, `INTEGER x>=1`,
    `[mse|corr]`, made in cli/options.py) and each positional argument by its name alone: typer
    would show the Python annotation instead (`--data <list[Path]>`, `CANDIDATE <list[Path]>`),
    which tells a user nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = lambda ctx: None  # typer's help reads the type from here
            elif param.metavar is not None:
                param.display_type_rich = lambda ctx, metavar=param.metavar: metavar


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="numerflow: download, prepare, train, validate, predict and submit for the Numerai tournament.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the secret key
    rich_markup_mode=None,
)


def version_callback(value: bool):
    if value:
        typer.echo(f"numerflow {__version__}")
        raise typer.Exit()


@app.callback()
@reports_errors
def main_options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
):
    """numerflow: a fast, memory-lean PyTorch pipeline for the Numerai tournament."""
    # numerflow.toml is read once per run, here: its tables ([train], [prepare], ...) become
    # defaults that flags and NUMERFLOW_* variables override (click's default_map ranks below
    # both), and `round` gets its [models.<name>] tables from ctx.obj.
    ctx.obj = config_base.load_settings()
    ctx.default_map = toml_defaults(ctx.obj, ctx.command.commands)
