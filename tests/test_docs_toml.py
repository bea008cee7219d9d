"""Issue 27: every TOML example in docs/*.md works as written. A sweep space runs as a one-trial
sweep on the data of a plain `numerflow prepare` of the synthetic set; a numerflow.toml is read
through the settings-file reader, every table and key of it checked as `numerflow` checks it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.main import get_command

from numerflow.cli import app
from numerflow.cli.settings_file import OTHER_TABLES
from numerflow.config import PrepareConfig
from tests.helpers import runner

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


def toml_blocks() -> list[tuple[str, str]]:
    blocks = [(f"{page.name}#{number}", text) for page in sorted(DOCS.glob("*.md"))
              for number, text in enumerate(BLOCK.findall(page.read_text()), start=1)]
    assert blocks, f"no ```toml block in {DOCS}"  # the extraction itself must find something
    return blocks


def is_settings_file(text: str) -> bool:
    """numerflow.toml holds command tables ([train], [models.x]) only; a sweep space holds train's
    options at the top level."""
    commands = set(get_command(app).commands) | set(OTHER_TABLES)
    table = tomllib.loads(text)
    return all(isinstance(value, dict) and name.replace("_", "-") in commands for name, value in table.items())


BLOCKS = toml_blocks()


def test_the_docs_hold_both_kinds_of_toml():
    kinds = {is_settings_file(text) for _, text in BLOCKS}
    assert kinds == {True, False}


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    """A plain `numerflow prepare` (the docs' own command) of the synthetic set."""
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("docs_toml") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, out_dir=out)).out_dir


@pytest.mark.slow
@pytest.mark.parametrize("where, text", [b for b in BLOCKS if not is_settings_file(b[1])], ids=lambda v: v[:20])
def test_a_sweep_space_in_the_docs_runs_as_written(where, text, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("sweep.toml").write_text(text)
    result = runner.invoke(app, ["sweep", "--space", "sweep.toml", "--data", str(prepared), "--trials", "1",
                                      "--device", "cpu", "--no-memory-check"])
    assert result.exit_code == 0, f"{where}:\n{text}\n{result.output}"
    assert "1 trial(s) (0 pruned, 0 failed)" in result.output and Path("sweeps/sweep/best.pt").is_file()


@pytest.mark.parametrize("where, text", [b for b in BLOCKS if is_settings_file(b[1])], ids=lambda v: v[:20])
def test_a_numerflow_toml_in_the_docs_has_only_known_tables_and_keys(where, text, tmp_path):
    from numerflow import config_base
    from numerflow.cli.settings_file import toml_defaults
    from numerflow.stages.round import model_specs

    path = tmp_path / "numerflow.toml"
    path.write_text(text)
    settings = config_base.load_settings(path)
    defaults = toml_defaults(settings, get_command(app).commands)  # an unknown table or key raises
    from numerflow.tracking import tracking_config

    tracking_config(settings)  # an unknown [tracking] key raises
    models = settings.tables.get("models")
    specs = model_specs(models, str(path)) if models is not None else []
    tracked = "tracking" in settings.tables
    assert len(defaults) + len(specs) == len(settings.tables) - (models is not None) - tracked + len(models or {})
