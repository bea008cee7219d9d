"""The settings files: numerflow.toml (keys named like the options, typos and internal names
refused, wrong types a usage error, not UTF-8 or not a file one error line, NUMERFLOW_CONFIG naming
no file) and a .env that is not UTF-8 (named, without the secret)."""

from __future__ import annotations
import json
import pytest
from numerflow import numerai
from numerflow.errors import ConfigError
from tests.helpers import cli, error_line, usage_error


# ---- numerflow.toml ----------------------------------------------------------------------------

@pytest.mark.parametrize("toml, message", [
    ("[train]\nepochz = 3\n", "numerflow.toml: [train]: unknown key(s) epochz (allowed: activation, arch, batch_size, "
     "batchnorm, bmc_weight, data, data_dir, device, dropout, epochs, input_batchnorm, k, l1, layers, loss, lr, "
     "memory_check, out, patience, precision, predict_with, resume, schedule, seed, targets, track, weight_decay)"),
    ("[predict]\nmodelz = \"a.pt\"\n", "numerflow.toml: [predict]: unknown key(s) modelz (allowed: batch_size, data, "
     "data_dir, device, ensemble, memory_check, model, neutralize, neutralize_benchmark, out, version, weights)"),
    ("[trian]\nepochs = 3\n", "numerflow.toml: unknown table [trian] (tables: compare, cv, diagnostics, download, ensemble, export, predict, "
     "prepare, quickstart, round, scores, submit, sweep, train, ui, validate, models, tracking)"),
    ("train = 3\n", "numerflow.toml: 'train' must be a table: [train] with option = value lines"),
])
def test_toml_typos_are_errors_not_ignored(in_tmp, toml, message):
    (in_tmp / "numerflow.toml").write_text(toml)
    assert error_line(cli("prepare")) == f"Error: {message}"


def test_toml_wrong_type_is_a_usage_error(in_tmp):
    (in_tmp / "numerflow.toml").write_text('[train]\nepochs = "six"\n')
    assert usage_error(cli("train")) == ("Error: Invalid value for '--epochs': Input should be a valid integer, "
                                         "unable to parse string as an integer")


def test_toml_lists_and_hyphenated_keys(in_tmp, synthetic_dir):
    (in_tmp / "numerflow.toml").write_text(f'[prepare]\ndata-dir = "{synthetic_dir.parent}"\nfeature_set = "small"\n'
                                           f'aux-targets = ["target_ender_20", "target_cyrusd_20"]\nout_dir = "prep"\n')
    result = cli("prepare")
    assert result.exit_code == 0, result.output
    manifest = json.loads((in_tmp / "prep" / "manifest.json").read_text())
    assert manifest["targets"] == ["target", "target_ender_20", "target_cyrusd_20"]


@pytest.mark.parametrize("toml, message", [
    ("models = 5\n", "'models' must be [models.<name>] tables, one per Numerai model"),
    ('[models.a]\nmodel = "a.pt"\nweights = ["x"]\n', "[models.a]: weights must be a list with one number per checkpoint"),
    ('[models.a]\nmodel = "a.pt"\nneutralize = true\n', "[models.a]: neutralize must be a number within [0, 1]"),
])
def test_round_models_tables_are_checked_first(in_tmp, toml, message):
    (in_tmp / "numerflow.toml").write_text(toml)
    assert error_line(cli("round", "--dry-run")) == f"Error: numerflow.toml: {message}"


def test_numerflow_config_naming_no_file(in_tmp, monkeypatch):
    monkeypatch.setenv("NUMERFLOW_CONFIG", "conf/typo.toml")
    assert error_line(cli("prepare")) == "Error: conf/typo.toml: file not found (named by NUMERFLOW_CONFIG)"


# ---- numerflow.toml: not UTF-8, a folder, keys named like the options ------------------------

def test_a_settings_file_that_is_not_utf8_is_one_error_line(in_tmp):
    (in_tmp / "numerflow.toml").write_bytes('[train]\n# réglages\nepochs = 3\n'.encode("latin-1"))
    assert error_line(cli("prepare")) == ("Error: numerflow.toml: not UTF-8 text (byte 0xe9 at offset 11); "
                                          "save it as UTF-8")


def test_a_settings_file_that_is_a_folder_is_an_error_not_ignored(in_tmp):
    (in_tmp / "numerflow.toml").mkdir()
    assert error_line(cli("prepare")) == "Error: numerflow.toml: not a file (a settings file must be a TOML file)"


def test_an_unreadable_settings_file_is_one_error_line_naming_it(in_tmp, monkeypatch):
    folder = in_tmp / "conf"
    folder.mkdir()
    monkeypatch.setenv("NUMERFLOW_CONFIG", str(folder / "numerflow.toml" / "x"))  # a path through a file
    (folder / "numerflow.toml").write_text("")
    assert error_line(cli("prepare")).startswith(f"Error: {folder / 'numerflow.toml' / 'x'}: file not found")


@pytest.mark.parametrize("table, key, value, expected", [
    ("download", "round", "0", "Error: Invalid value for '--round': Input should be greater than or equal to 1"),
    ("predict", "model", '"nowhere.pt"\ndata = "{live}"', "Error: nowhere.pt: file not found"),
    ("export", "model", '["a.pt", "nowhere.pt"]', "Error: a.pt: file not found"),
])
def test_toml_keys_are_the_option_names(in_tmp, synthetic_dir, table, key, value, expected):
    value = value.format(live=synthetic_dir / "live.parquet")
    (in_tmp / "numerflow.toml").write_text(f"[{table}]\n{key} = {value}\n")
    result = cli(table)
    assert (usage_error(result) if result.exit_code == 2 else error_line(result)) == expected


def test_toml_json_key_is_validates_json_option(in_tmp, prepared, synthetic_models):
    (in_tmp / "numerflow.toml").write_text(f'[validate]\njson = true\nno_report = true\n'
                                           f'model = "{synthetic_models["all"]}"\n'
                                           f'data = "{prepared / "validation.parquet"}"\n')
    result = cli("validate")
    assert result.exit_code == 0, result.output
    assert "mean" in json.dumps(json.loads(result.output))  # the whole output is the JSON report


@pytest.mark.parametrize("table, internal, option", [
    ("predict", "models", "model"), ("validate", "as_json", "json"),
    ("quickstart", "folder", "dir"),
])
def test_toml_internal_names_are_refused_with_the_option_name(in_tmp, table, internal, option):
    (in_tmp / "numerflow.toml").write_text(f"[{table}]\n{internal} = 1\n")
    assert error_line(cli("prepare")) == (f"Error: numerflow.toml: [{table}]: '{internal}' is an internal name; "
                                          f"write {option} = ... (keys are named like the options: --{option})")


def test_a_dotenv_that_is_not_utf8_is_one_error_naming_it_without_the_secret(in_tmp, monkeypatch):
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)
    (in_tmp / ".env").write_bytes("NUMERAI_PUBLIC_ID=pub\n# clé\nNUMERAI_SECRET_KEY=CANARYSECRET\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        numerai.credentials()
    assert str(caught.value) == ".env: not UTF-8 text (byte 0xe9 at offset 26); save it as UTF-8"
