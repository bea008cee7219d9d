"""numerflow's version, in a module of its own so that any module can name it without importing
the package root (which imports the Python API, and with it every floor above)."""

__version__ = "0.1.0"
