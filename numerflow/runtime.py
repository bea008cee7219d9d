"""Process settings numerflow makes before it first imports torch (never at `import numerflow`)."""

from __future__ import annotations

import os


def before_torch_import() -> None:
    """Call before numerflow's code first imports torch; the Python API (and so the CLI) calls it
    before every stage that uses torch.

    torch's OpenMP threads spin while waiting for work by default. With numerflow's small per-step
    kernels, any other busy process on the machine (a second job, a test runner, a browser) turns
    that spinning into a 10-30x slowdown of training; passive waiting costs almost nothing when
    the machine is quiet. Must be set before torch is imported; a user's own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
