"""The numerflow command line, a thin skin over the Python API (numerflow/python_api.py): app.py
holds the typer app and the global options, options.py makes each command's options from its
settings dataclass (config.py), commands.py holds the commands, errors.py the one-line errors and
settings_file.py numerflow.toml's defaults. The API imports stage modules (and torch) only when
called, so `numerflow --help` stays fast."""

from numerflow.cli import commands  # noqa: F401 (registers every command with the app)
from numerflow.cli.app import app
from numerflow.cli.errors import os_error_line

__all__ = ["app", "main", "os_error_line"]


def main():
    app(prog_name="numerflow")
