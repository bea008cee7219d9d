"""Process settings numerflow makes before it first imports torch (never at `import numerflow`)."""

from __future__ import annotations

import os

# How torch's OpenMP threads wait for the next kernel, set before torch is imported (a user's own
# setting of any of these wins):
# - GOMP_SPINCOUNT (libgomp, the OpenMP of torch's Linux wheels): spin about 3,000 times, then
#   sleep. A training step is dozens of short kernels; threads that sleep between them at once
#   (OMP_WAIT_POLICY=PASSIVE, numerflow's earlier setting) are woken for each, and the default
#   recipe's epoch took 8.8-9.1 s instead of 6.9-7.1 s on a quiet 2-core machine. Spinning without
#   bound (ACTIVE) or libgomp's default (300,000 spins) is ruinous when another process wants the
#   cores: with one busy process beside it the epoch took 20 s (ACTIVE) and 50 s (default) against
#   12 s (PASSIVE) and 14 s (3,000 spins); with two, 15.5 s (PASSIVE) and 15.9 s (3,000 spins).
# - KMP_BLOCKTIME (LLVM's and Intel's OpenMP, e.g. torch on macOS): 0, sleep at once, as before.
OPENMP_WAITING = {"GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0"}


def before_torch_import() -> None:
    """Call before numerflow's code first imports torch; the Python API (and so the CLI) calls it
    before every stage that uses torch. OMP_WAIT_POLICY, when the user sets it, overrides both."""
    for name, value in OPENMP_WAITING.items():
        os.environ.setdefault(name, value)
