"""How the command line reports the failures a user can fix: one `Error: ...` line and exit 1."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import typer

from numerflow.errors import Interrupted, NumerflowError


def reports_errors(command):
    """Turn the expected failure classes into one `Error: ...` line and exit 1: numerflow's own
    errors, and OSError (a missing, unreadable, read-only or full file or folder), which every
    writer and reader lets through with the file's name (files.atomic_path and
    checkpoint.save_atomic add it where the OS does not). Anything else is a bug and keeps its
    traceback. A Ctrl-C is one line and exit 130: the stage's own (`Interrupted after epoch N of
    M: rerun with --resume`) where it can be continued, else `Interrupted`."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Interrupted as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted", err=True)
            raise typer.Exit(Interrupted.exit_code) from None
        except NumerflowError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # an output folder that cannot be made, a read-only or full disk
            typer.echo(f"Error: {os_error_line(exc)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def os_error_line(exc: OSError) -> str:
    """'models/x: Not a directory': the final name (a rename's target), not a temporary one."""
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    temporary = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", Path(str(where)).name) if where is not None else None
    if temporary:  # files.atomic_path's temporary name: the user knows the final one
        where = Path(str(where)).with_name(temporary.group(1))
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileExistsError):  # mkdir(exist_ok=True) meeting a file
        reason = "exists and is not a folder"
    return f"{where}: {reason}" if where is not None else reason
