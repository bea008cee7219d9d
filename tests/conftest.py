"""Shared fixtures: small synthetic Numerai data sets written with numerflow's own generator."""

from __future__ import annotations

import pytest

from numerflow.config import SyntheticConfig
from numerflow.runtime import before_torch_import

# Test modules import torch themselves, before any numerflow stage runs: the suite trains many
# small models, and spinning OpenMP threads make that 10-30x slower on a busy machine.
before_torch_import()


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic data set (folder `<tmp>/data/synthetic`), shared read-only by tests."""
    from numerflow.synthetic import write_synthetic

    data_dir = tmp_path_factory.mktemp("shared") / "data"
    return write_synthetic(SyntheticConfig(data_dir=data_dir, eras=40, rows_per_era=150, features=30, seed=1))
