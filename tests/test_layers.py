"""The floors of numerflow/ run one way (cli → python_api → stages → sweeps → training → the
lower modules) and no module imports itself back through others. import-linter checks the
contracts written in pyproject.toml ([tool.importlinter]); grimp, the import graph it builds on,
finds cycles. Anyone can run the same check: `lint-imports`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="import-linter (the dev extra) is not installed")

ROOT = Path(__file__).resolve().parent.parent


def test_the_layer_contracts_hold():
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_cycles():
    graph = grimp.build_graph("numerflow")
    cycles = sorted((module, imported) for module in graph.modules
                    for imported in graph.find_modules_directly_imported_by(module)
                    if graph.chain_exists(importer=imported, imported=module))
    assert cycles == [], f"imports that come back round: {cycles}"


def test_the_cycle_check_can_fail():
    graph = grimp.build_graph("numerflow")
    graph.add_import(importer="numerflow.errors", imported="numerflow.config")  # config imports errors
    assert graph.chain_exists(importer="numerflow.config", imported="numerflow.errors")
    assert graph.chain_exists(importer="numerflow.errors", imported="numerflow.config")
