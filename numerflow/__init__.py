"""numerflow: a command-line pipeline for the Numerai tournament."""

__version__ = "0.1.0"
