"""The docs keep up with the code (after simonw/sqlite-utils' tests/test_docs.py): every command has
its page in docs/, every option of a command is named on that page, every environment variable an
option reads is named there too, README's links lead to pages that exist, and README's test
command is the one CI runs."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import typer

import numerflow
from numerflow import config as cfg
from numerflow.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMAND = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands.items())


def options_of(command) -> list[str]:
    """Every long option name of a command (`--batchnorm` and `--no-batchnorm` both), not --help.
    (typer may carry its own copy of click, so options are told by their kind, not their class.)"""
    names = []
    for param in command.params:
        if param.param_type_name == "option":
            names += [name for name in param.opts + param.secondary_opts if name.startswith("--")]
    return names


def mentions(text: str, name: str) -> bool:
    """`name` as a whole word: `--data` is not mentioned by `--data-dir`, nor `round` by `rounds`."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def page(command_name: str) -> str:
    path = DOCS / f"{command_name}.md"
    assert path.is_file(), f"`numerflow {command_name}` has no page: write docs/{command_name}.md"
    return path.read_text()


@pytest.fixture(scope="module")
def all_docs() -> str:
    return "\n".join(path.read_text() for path in sorted(DOCS.glob("*.md")))


def test_the_walk_finds_the_commands_and_their_options():
    # Guards the parametrized tests below against an empty walk (pytest would only skip them).
    assert {"download", "train", "predict"} <= {name for name, _ in COMMANDS}
    assert {"--epochs", "--batchnorm", "--no-batchnorm", "--data-dir"} <= set(options_of(COMMAND.commands["train"]))
    assert "--version" in options_of(COMMAND)


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_command_has_a_page_that_shows_it_run(name):
    assert mentions(page(name), f"numerflow {name}"), f"docs/{name}.md never shows `numerflow {name}`"


@pytest.mark.parametrize("name,option", [(name, option) for name, command in COMMANDS
                                         for option in options_of(command)])
def test_option_is_documented_on_its_command_page(name, option):
    assert mentions(page(name), option), f"docs/{name}.md does not mention `numerflow {name} {option}`"


@pytest.mark.parametrize("name,variable", [(name, param.envvar) for name, command in COMMANDS
                                           for param in command.params if isinstance(param.envvar, str)])
def test_environment_variable_is_documented_where_it_applies(name, variable):
    assert mentions(page(name), variable), f"docs/{name}.md does not say that {variable} applies"
    assert mentions(page("configuration"), variable)


@pytest.mark.parametrize("option", options_of(COMMAND))
def test_global_option_is_documented(all_docs, option):
    assert mentions(all_docs + (ROOT / "README.md").read_text(), option)


@pytest.mark.parametrize("name,command", COMMANDS)
def test_command_has_help_with_an_example(name, command):
    assert command.help and "Example: numerflow " + name in command.help


def test_readme_links_lead_to_existing_pages_and_reach_every_page():
    readme = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    assert links, "README.md links to no page in docs/"
    missing = sorted(link for link in links if not (ROOT / link).is_file())
    assert not missing, f"README.md links to missing pages: {missing}"
    pages = {f"docs/{path.name}" for path in DOCS.glob("*.md")}
    assert pages <= links, f"pages README.md does not link to: {sorted(pages - links)}"


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: `## prepare memory` → `prepare-memory`."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_between_pages_lead_to_existing_pages_and_headings():
    for path in DOCS.glob("*.md"):
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)", path.read_text()):
            assert (DOCS / target).is_file(), f"{path.name} links to missing {target}"
            if anchor:
                assert anchor in anchors((DOCS / target).read_text()), f"{path.name}: no #{anchor} in {target}"


def test_readme_opens_with_quickstart_then_the_test_command_ci_runs():
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()][-1]
    readme = (ROOT / "README.md").read_text()
    first, second = [block.strip() for block in re.findall(r"```bash\n(.*?)```", readme, re.S)[:2]]
    assert first.endswith("&& numerflow quickstart"), "README.md opens with the install-and-quickstart command"
    assert second == ci_command, f"README.md's second command is not exactly .ci/run's last line:\n{ci_command}"


@pytest.mark.slow
def test_python_api_walk_through_runs(tmp_path, monkeypatch):
    """docs/python-api.md's cells, run in order in a fresh folder: the page cannot drift from the API."""
    import numerflow

    if not callable(getattr(numerflow, "train", None)):
        pytest.skip("numerflow exposes no Python API functions yet")
    cells = re.findall(r"```python\n(.*?)```", (DOCS / "python-api.md").read_text(), re.S)
    assert len(cells) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for cell in cells:
        exec(compile(cell, "docs/python-api.md", "exec"), namespace)
    assert list(namespace["preds"].index.names) == ["id"] and list(namespace["preds"].columns) == ["prediction"]
    assert not (tmp_path / "predictions").exists()  # predict wrote no file: none was asked for
    assert namespace["report"].data["spearman"]["eras_scored"] > 0



SETTINGS_OF = {"download": cfg.DownloadConfig, "prepare": cfg.PrepareConfig, "train": cfg.TrainConfig,
               "cv": cfg.CvConfig, "validate": cfg.ValidateConfig, "predict": cfg.PredictConfig,
               "submit": cfg.SubmitConfig, "round": cfg.RoundConfig, "export": cfg.ExportConfig,
               "sweep": cfg.SweepConfig}


@pytest.mark.parametrize("name", SETTINGS_OF)
def test_each_option_is_its_settings_fields_one_definition(name):
    """`numerflow NAME --help` shows the help text of config.py's field, and the Python function's
    docstring shows the same text: one definition, used by both."""
    params = {param.name: param for param in COMMAND.commands[name].params}
    function_doc = getattr(numerflow, name).__doc__
    for settings_field in fields(SETTINGS_OF[name]):
        spec = settings_field.metadata["option"]
        if spec.on_command_line and settings_field.name in params:
            assert params[settings_field.name].help == spec.help, settings_field.name
        assert spec.help in function_doc, settings_field.name


def test_each_help_text_is_written_once_in_the_source():
    source = "\n".join(path.read_text() for path in (ROOT / "numerflow").rglob("*.py"))
    source = re.sub(r'"\s*\n\s*"', "", source)  # a help text split over lines as "..." "..." is one string
    helps = {settings_field.metadata["option"].help for cls in SETTINGS_OF.values() for settings_field in fields(cls)}
    for name, command in COMMANDS:
        helps |= {param.help for param in command.params if param.help}
    for text in sorted(helps):
        written = f'help="{text}"'
        assert source.count(written) == 1, f"help text written {source.count(written)} times: {text!r}"
