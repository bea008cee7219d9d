"""pyproject.toml declares what the code needs: every third-party package numerflow imports is a
dependency (so a fresh `pip install numerflow` runs every command, per_era.png included), and the
Python requirement admits no version the code cannot run on."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> set[str]:
    """Top-level names of every absolute import in numerflow/, however deeply nested in a function."""
    names = set()
    for path in (ROOT / "numerflow").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


THIRD_PARTY = sorted(imported_top_level_modules() - set(sys.stdlib_module_names) - {"numerflow"})
# Imported only by an optional feature, declared as that extra: `sweep --ray` needs `numerflow[ray]`;
# submit's second opinion (numerai-tools) runs where the dev extra is installed and says so where not.
OPTIONAL = {"ray": "ray", "numerai_tools": "dev", "mlflow": "mlflow", "tabm": "tabm"}


def declared(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in requirements}


def test_the_walk_finds_the_imports():
    assert {"torch", "requests", "matplotlib", "typer"} <= set(THIRD_PARTY)


@pytest.mark.parametrize("module", THIRD_PARTY)
def test_imported_package_is_a_dependency(module):
    distributions = importlib.metadata.packages_distributions().get(module, [module])
    extra = PROJECT["optional-dependencies"][OPTIONAL[module]] if module in OPTIONAL else []
    assert declared(PROJECT["dependencies"] + extra) & {canonical(d) for d in distributions}, \
        f"numerflow imports {module} ({', '.join(distributions)}) but pyproject.toml does not depend on it"


def test_python_requirement_matches_the_code():
    minimum = re.fullmatch(r">=\s*3\.(\d+)", PROJECT["requires-python"].strip())
    assert minimum, PROJECT["requires-python"]
    if "tomllib" in imported_top_level_modules():  # in the standard library from 3.11
        assert int(minimum.group(1)) >= 11
    assert sys.version_info >= (3, int(minimum.group(1)))

