"""numerflow: a command-line pipeline and Python library for the Numerai tournament.

Every stage is a function here, with the CLI options as keyword arguments (see numerflow.python_api):
download, write_synthetic, prepare, train, cv, validate, predict, submit, round, export, sweep, quickstart,
diagnostics, scores, compare, ensemble.
Importing numerflow imports no torch and changes nothing in the process."""

from numerflow.version import __version__  # noqa: E402,F401

# Stage modules live in numerflow.stages, so importing them never replaces these functions.
from numerflow.python_api import (  # noqa: E402
    cv,
    download,
    ensemble,
    export,
    predict,
    prepare,
    quickstart,
    round,
    show_sweep,
    submit,
    sweep,
    train,
    validate,
    write_synthetic,
)
from numerflow.python_api import diagnostics, scores  # noqa: E402  (Numerai's own numbers)
from numerflow.python_api import compare  # noqa: E402  (numerflow compare)

# `round` is left out: `from numerflow import *` must not shadow the builtin round() in a notebook.
__all__ = ["download", "write_synthetic", "prepare", "train", "cv", "validate", "predict", "submit", "export",
           "sweep", "show_sweep", "quickstart", "__version__"]
__all__ += ["diagnostics", "scores"]
__all__ += ["compare"]
__all__ += ["ensemble"]
from numerflow.python_api import ui  # noqa: E402  (numerflow ui: MLflow's UI)
__all__ += ["ui"]
from numerflow.python_api import show_sweep_space  # noqa: E402  (sweep --show-space: the built-in space)
__all__ += ["show_sweep_space"]
