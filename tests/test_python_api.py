"""The Python API: `import numerflow` gives the stages as functions with the CLI's options as
keyword arguments; the CLI is a skin over exactly these functions, so both give the same results."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import numerflow
from numerflow import config as cfg
from numerflow.cli import app
from numerflow.errors import ConfigError

STAGES = {"download": cfg.DownloadConfig, "write_synthetic": cfg.SyntheticConfig, "prepare": cfg.PrepareConfig,
          "train": cfg.TrainConfig, "cv": cfg.CvConfig, "validate": cfg.ValidateConfig, "predict": cfg.PredictConfig,
          "submit": cfg.SubmitConfig, "round": cfg.RoundConfig, "export": cfg.ExportConfig}


def test_import_changes_nothing_and_imports_no_torch():
    code = ("import os, sys\nbefore = dict(os.environ)\nimport numerflow\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
            "print(callable(numerflow.train))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_functions_stay_functions_after_every_submodule_is_imported():
    for module in pkgutil.walk_packages(numerflow.__path__, "numerflow."):
        importlib.import_module(module.name)
    assert "numerflow.stages.train" in sys.modules and "numerflow.stages.round" in sys.modules
    for name in [*STAGES, "quickstart"]:
        function = getattr(numerflow, name)
        assert inspect.isfunction(function), f"numerflow.{name} is {function!r}"
        assert function.__name__ == name and function.__doc__


@pytest.mark.parametrize("name", STAGES)
def test_keyword_arguments_are_the_config_fields_with_their_defaults_and_help(name):
    function = getattr(numerflow, name)
    params = inspect.signature(function).parameters
    expected = {f.name: f for f in fields(STAGES[name])}
    assert [p for p in params if p not in ("settings", "say", "upload")] == list(expected)
    assert params["settings"].kind is inspect.Parameter.POSITIONAL_ONLY  # or one whole settings object
    for field_name, settings_field in expected.items():
        default = settings_field.default_factory() if callable(settings_field.default_factory) else settings_field.default
        assert params[field_name].default == default, field_name
        assert params[field_name].kind is inspect.Parameter.KEYWORD_ONLY
        assert settings_field.metadata["option"].help in function.__doc__, field_name  # the one help text


def test_a_settings_object_or_keyword_options_not_both(tmp_path):
    with pytest.raises(TypeError, match="not both"):
        numerflow.train(cfg.TrainConfig(), epochs=2)


def test_unknown_options_and_bad_choices_are_refused_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="epochz"):
        numerflow.train(epochz=3)
    with pytest.raises(ConfigError, match=r"--loss: 'pearson' is not one of mse, corr"):
        numerflow.train(data=tmp_path, loss="pearson")
    with pytest.raises(ConfigError, match=r"--device: 'gpu' is not a device \(choose auto, cpu, cuda, cuda:N or mps\)"):
        numerflow.predict(device="gpu")
    with pytest.raises(ConfigError, match=r"--weights: got 1 weight\(s\) for 2 --model\(s\)"):
        numerflow.predict(models=[tmp_path / "a.pt", tmp_path / "b.pt"], weights=[1.0])
    assert not any(tmp_path.iterdir())


def checkpoint_bytes(path) -> dict[str, bytes]:
    """Every record of a torch checkpoint (a zip) by name. torch names the archive's top folder
    after the file it writes, here a random temporary name, so the records are compared."""
    with zipfile.ZipFile(path) as archive:
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


def python_pipeline(folder: Path) -> dict:
    """synthetic data → prepare → train → validate → predict through `import numerflow`."""
    synthetic = numerflow.write_synthetic(data_dir="data", eras=24, rows_per_era=60, features=16, seed=3)
    prepared = numerflow.prepare(data_dir="data", dataset=synthetic, feature_set="all", aux_targets=["all"],
                                 downsample=1, embargo=1)
    trained = numerflow.train(data=prepared.out_dir, out="models/m.pt", layers=[8, 4],
                              activation=numerflow.options.Activation.silu, epochs=2, batch_size=128,
                              seed=5, device="cpu", say=None)
    report = numerflow.validate(model=trained.checkpoint, data_dir="data", report_dir="reports/m")
    predicted = numerflow.predict(models=[trained.checkpoint], data_dir="data")
    assert not Path("predictions").exists()  # a file only when asked
    return {"checkpoint": checkpoint_bytes(trained.checkpoint), "report": report.data,
            "predictions": predicted.frame, "round": predicted.round}


def cli_pipeline(folder: Path) -> dict:
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.stdout

    run("download", "--synthetic", "--data-dir", "data", "--eras", 24, "--rows-per-era", 60, "--features", 16,
        "--seed", 3)
    run("prepare", "--data-dir", "data", "--dataset", "data/synthetic", "--feature-set", "all", "--aux-targets", "all",
        "--downsample", 1, "--embargo", 1)
    run("train", "--data", "data/prepared", "--out", "models/m.pt", "--layers", "8,4", "--activation", "silu",
        "--epochs", 2, "--batch-size", 128, "--seed", 5, "--device", "cpu")
    report = json.loads(run("validate", "--model", "models/m.pt", "--data-dir", "data", "--report", "reports/m",
                            "--json"))
    run("predict", "--model", "models/m.pt", "--data-dir", "data")
    (written,) = Path("predictions").iterdir()  # the CLI writes its default file
    return {"checkpoint": checkpoint_bytes("models/m.pt"), "report": report,
            "predictions": pd.read_csv(written, dtype={"id": str}).set_index("id"), "file": written}


def test_the_pipeline_from_python_matches_the_cli(tmp_path, monkeypatch):
    (tmp_path / "py").mkdir()
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "py")
    api = python_pipeline(tmp_path / "py")
    monkeypatch.chdir(tmp_path / "cli")
    cli = cli_pipeline(tmp_path / "cli")

    assert api["checkpoint"] == cli["checkpoint"]  # same seed on CPU: the same bytes
    assert api["report"]["spearman"]["eras_scored"] > 0
    for result, folder in ((api, tmp_path / "py"), (cli, tmp_path / "cli")):  # notes name their data folder
        result["report"]["notes"] = [note.replace(str(folder.resolve()), "<folder>") for note in result["report"]["notes"]]
    assert api["report"] == cli["report"]
    assert cli["file"].name == f"m_{api['round']}.csv"
    frame = api["predictions"]
    assert frame.index.name == "id" and list(frame.columns) == ["prediction"] and len(frame) == 60
    assert frame.index.tolist() == cli["predictions"].index.tolist()
    assert (frame["prediction"] - cli["predictions"]["prediction"]).abs().max() < 1e-12  # CSV round trip


def test_validate_scores_in_memory_predictions(tmp_path, monkeypatch, synthetic_dir, capsys):
    """A DataFrame indexed by id, one with an id column, or a Series score as the same file would."""
    monkeypatch.chdir(tmp_path)
    prepared = numerflow.prepare(data_dir=synthetic_dir.parent, dataset=synthetic_dir, feature_set="small",
                                 downsample=1, out_dir="prep")
    trained = numerflow.train(data=prepared.out_dir, out="m.pt", layers=[8], epochs=1, batch_size=128, device="cpu")
    assert capsys.readouterr().out.startswith("epoch 1/1: train loss ")  # say=print: progress in a notebook
    validation = prepared.out_dir / "validation.parquet"
    predicted = numerflow.predict(models=[trained.checkpoint], data=validation, out="p.parquet")
    assert predicted.out == Path("p.parquet") and Path("p.parquet").is_file()
    frame = predicted.frame
    by_model = numerflow.validate(model=trained.checkpoint, data=validation, write_report=False).data
    from_file = numerflow.validate(predictions="p.parquet", data=validation, write_report=False).data
    for predictions in (frame, frame.reset_index(), frame["prediction"]):
        report = numerflow.validate(predictions=predictions, data=validation, write_report=False)
        assert report.source == "predictions" and not report.files
        assert report.data["spearman"] == from_file["spearman"]
        assert report.data["numerai_corr"] == from_file["numerai_corr"]
    # Ranking within eras keeps each era's Spearman: the model's raw scores give the same numbers.
    assert report.data["spearman"]["mean"] == pytest.approx(by_model["spearman"]["mean"], abs=1e-12)
    with pytest.raises(numerflow.errors.DataError, match="predictions: no 'id' column"):
        numerflow.validate(predictions=frame.reset_index(drop=True), data=validation, write_report=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pt", "p.parquet", "prep"]


def test_round_reads_its_models_from_the_settings_file_it_is_given(tmp_path):
    settings = tmp_path / "elsewhere.toml"
    settings.write_text('[models.a]\nmodel = "a.pt"\nneutralize = true\n')
    with pytest.raises(ConfigError, match=r"elsewhere.toml: \[models.a\]: neutralize must be a number within \[0, 1\]"):
        numerflow.round(config_file=settings, data_dir=tmp_path / "data", dry_run=True, say=None)
    with pytest.raises(ConfigError, match=r"nowhere.toml: file not found$"):
        numerflow.round(config_file=tmp_path / "nowhere.toml", dry_run=True, say=None)
