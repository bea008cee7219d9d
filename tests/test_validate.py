"""validate: predictions mode on raw Numerai-layout files and model mode on prepared data, through
the CLI; the JSON keys, the report files, MMC/example lookups, and each bad input's exact error."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from numerflow.config import PrepareConfig, TrainConfig, ValidateConfig

runner = CliRunner()
SUMMARY = {"mean", "std", "sharpe", "max_drawdown", "hit_rate", "eras_scored"}


@pytest.fixture(scope="module")
def prepared_model(synthetic_dir, tmp_path_factory):
    """Prepared data from the shared synthetic set and a one-epoch checkpoint trained on it."""
    from numerflow.stages.prepare import prepare
    from numerflow.stages.train import train

    folder = tmp_path_factory.mktemp("validate")
    prepared = prepare(PrepareConfig(data_dir=synthetic_dir.parent, dataset=synthetic_dir, feature_set="all",
                                     aux_targets=["all"], downsample=1, out_dir=folder / "prepared"))
    trained = train(TrainConfig(data=prepared.out_dir, out=folder / "tiny.pt", layers=[16], epochs=1,
                                batch_size=256, device="cpu"))
    return prepared.out_dir, trained.checkpoint


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def raw_validation(synthetic_dir):
    return synthetic_dir / schema.VALIDATION_FILE


def example_predictions(synthetic_dir, seed=0) -> pd.DataFrame:
    """id,prediction for the synthetic validation rows: the example model plus noise."""
    example = pd.read_parquet(synthetic_dir / schema.VALIDATION_EXAMPLE_FILE)
    rng = np.random.default_rng(seed)
    values = example[schema.PREDICTION].to_numpy() + rng.normal(scale=0.1, size=len(example))
    return pd.DataFrame({schema.ID: example.index.astype(str), schema.PREDICTION: values})


def run_validate(*args):
    return runner.invoke(app, ["validate", *map(str, args)])


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_predictions_mode_on_raw_data_json(in_tmp, synthetic_dir, raw_validation):
    preds = example_predictions(synthetic_dir)
    preds.to_csv("preds.csv", index=False)
    result = run_validate("--predictions", "preds.csv", "--data", raw_validation, "--json", "--no-report")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)  # stdout holds the JSON and nothing else
    for key in ("rows", "eras", "spearman", "numerai_corr", "per_era", "mmc", "corr_with_example",
                "feature_exposure", "fnc", "aux_targets"):
        assert key in report, key
    for key in ("spearman", "numerai_corr", "mmc", "fnc", "corr_with_example"):
        assert set(report[key]) == SUMMARY
    assert set(report["feature_exposure"]) >= {"max", "rms"}
    assert all(set(s) == SUMMARY for s in report["aux_targets"].values())
    assert "target" not in report["aux_targets"]
    # Independent check: the blog's per-era Spearman with pandas and scipy on the same rows.
    data = pd.read_parquet(raw_validation, columns=[schema.ERA, schema.DATA_TYPE, schema.TARGET])
    data = data[data[schema.DATA_TYPE] == "validation"].join(preds.set_index(schema.ID))
    per_era = data.dropna().groupby(schema.ERA).apply(lambda d: spearmanr(d.prediction, d.target)[0])
    assert report["spearman"]["mean"] == pytest.approx(per_era.mean(), abs=1e-12)
    assert report["rows"] == len(data) and report["eras"] == data[schema.ERA].nunique()
    assert [row["era"] for row in report["per_era"]] == sorted(per_era.index)
    assert set(report["per_era"][0]) >= {"era", "rows", "spearman", "numerai_corr", "mmc", "fnc"}
    assert report["corr_with_example"]["mean"] > 0.5  # the predictions are the example plus noise
    assert not (in_tmp / "reports").exists()


def test_report_files_default_folder_and_table(in_tmp, synthetic_dir, raw_validation):
    example_predictions(synthetic_dir).to_parquet("lgbm.parquet", index=False)
    result = run_validate("--predictions", "lgbm.parquet", "--data", raw_validation)
    assert result.exit_code == 0, result.output
    out = in_tmp / "reports" / "lgbm"
    assert {p.name for p in out.iterdir()} == {"report.json", "per_era.csv", "per_era.png"}
    report = json.loads((out / "report.json").read_text())
    per_era = pd.read_csv(out / "per_era.csv", dtype={"era": str})
    assert per_era["era"].tolist() == [row["era"] for row in report["per_era"]]
    assert per_era["numerai_corr"].to_numpy() == pytest.approx([r["numerai_corr"] for r in report["per_era"]])
    assert (out / "per_era.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.output.startswith(f"Validated lgbm.parquet on {raw_validation}: {report['rows']:,} rows")
    assert "numerai_corr" in result.output and f"Report: {out.relative_to(in_tmp)}/" in result.output


def test_report_option_chooses_the_folder(in_tmp, synthetic_dir, raw_validation):
    example_predictions(synthetic_dir).to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", raw_validation, "--report", "out/r1", "--no-exposure")
    assert result.exit_code == 0, result.output
    report = json.loads((in_tmp / "out" / "r1" / "report.json").read_text())
    assert "fnc" not in report and "feature_exposure" not in report


def test_read_report_gives_back_what_validate_wrote(in_tmp, synthetic_dir, raw_validation):
    """reports.read_report is how later commands (compare) read a report folder: the same dict,
    per-era table included, and the same printed summary, from the files alone."""
    from numerflow.reports import read_report
    from numerflow.stages.validate import validate

    example_predictions(synthetic_dir).to_csv("p.csv", index=False)
    written = validate(ValidateConfig(predictions=in_tmp / "p.csv", data=raw_validation, report_dir=in_tmp / "r"))
    read = read_report(in_tmp / "r")
    assert read.data == written.data and read.data["per_era"] == written.data["per_era"]
    assert [p.name for p in read.files] == ["report.json", "per_era.csv", "per_era.png"]
    assert str(read) == str(written)


def test_read_report_of_a_folder_without_one_names_it(in_tmp):
    from numerflow.errors import DataError
    from numerflow.reports import read_report

    with pytest.raises(DataError, match=r"r/report.json: file not found \(run `numerflow validate`"):
        read_report(in_tmp / "r")


def test_without_matplotlib_the_other_files_and_a_note(in_tmp, synthetic_dir, raw_validation, monkeypatch):
    from numerflow.stages.validate import validate

    example_predictions(synthetic_dir).to_csv("p.csv", index=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    report = validate(ValidateConfig(predictions=in_tmp / "p.csv", data=raw_validation, report_dir=in_tmp / "r"))
    assert {p.name for p in (in_tmp / "r").iterdir()} == {"report.json", "per_era.csv"}
    assert "Note: matplotlib is not installed: per_era.png not drawn (pip install matplotlib)" in str(report)


def test_model_mode_on_prepared_data_matches_the_trainer(in_tmp, prepared_model):
    prepared, checkpoint = prepared_model
    result = run_validate("--model", checkpoint, "--data", prepared / schema.VALIDATION_FILE, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # The manifest's version_dir leads to meta_model.parquet and the example predictions.
    assert {"mmc", "corr_with_example", "fnc", "feature_exposure", "aux_targets"} <= set(report)
    # The trainer scored the same rows with the same model after its epoch: same number.
    from numerflow.checkpoint import load_checkpoint

    last_epoch = load_checkpoint(checkpoint)["metrics"][-1]
    assert report["spearman"]["mean"] == pytest.approx(last_epoch["val_mean"], abs=1e-9)
    assert (in_tmp / "reports" / checkpoint.stem / "report.json").is_file()


def test_summary_table_columns_align_with_long_target_names(in_tmp, prepared_model):
    prepared, checkpoint = prepared_model
    result = run_validate("--model", checkpoint, "--data", prepared / schema.VALIDATION_FILE, "--no-report")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["mean", "std"])
    # the table ends before the lines below it (the benchmark's name, the feature exposure)
    table = lines[header:next(i for i, line in enumerate(lines)
                              if line.startswith(("bmc and corr_with_benchmark", "feature exposure")))]
    names = [line[:-45].strip() for line in table[1:]]  # 45: the six right-aligned value columns
    assert max(map(len, names)) > 22, names  # the synthetic targets include names that overflow 22 characters
    assert len({len(line) for line in table}) == 1, "\n".join(table)  # every row ends in the same column
    assert all(line[:-45].endswith(" ") and len(line[-45:].split()) == 6 for line in table[1:]), "\n".join(table)


def test_model_mode_default_data(in_tmp, prepared_model):
    prepared, checkpoint = prepared_model
    shutil.copytree(prepared, in_tmp / "data" / "prepared")
    result = run_validate("--model", checkpoint, "--no-report")
    assert result.exit_code == 0, result.output
    assert f"on {schema.VALIDATION_FILE}" not in result.output  # the full default path is shown
    assert "data/prepared/validation.parquet" in result.output


def test_missing_default_data(in_tmp):
    result = run_validate("--model", "m.pt")
    assert error_line(result) == ("Error: data/prepared/validation.parquet: file not found "
                                  "(run `numerflow prepare` first, or pass --data)")


def test_ids_not_in_the_data(in_tmp, synthetic_dir, raw_validation):
    preds = example_predictions(synthetic_dir)
    extra = pd.DataFrame({schema.ID: ["nX1", "nX2", "nX3"], schema.PREDICTION: [0.1, 0.2, 0.3]})
    pd.concat([preds, extra]).to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", raw_validation)
    assert error_line(result) == f"Error: p.csv: 3 of {len(preds) + 3} id(s) are not in {raw_validation}"
    assert not (in_tmp / "reports").exists()


def test_missing_target_column(in_tmp, synthetic_dir, raw_validation):
    data = pd.read_parquet(raw_validation).drop(columns=[schema.TARGET, schema.MAIN_TARGET])  # and the column it aliases
    data.to_parquet("no_target.parquet")
    example_predictions(synthetic_dir).to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", "no_target.parquet")
    available = ", ".join(c for c in data.columns if c.startswith("target_"))
    assert error_line(result) == (f"Error: no_target.parquet: target 'target' not found (available: {available}; "
                                  f"choose one with --target)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_predictions(in_tmp, synthetic_dir, raw_validation, bad):
    preds = example_predictions(synthetic_dir)
    preds.loc[[3, 7], schema.PREDICTION] = bad
    preds.to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", raw_validation)
    assert error_line(result) == "Error: p.csv: 2 NaN or infinite prediction(s)"


def test_no_prediction_column(in_tmp, synthetic_dir, raw_validation):
    example_predictions(synthetic_dir).rename(columns={schema.PREDICTION: "score"}).to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", raw_validation)
    assert error_line(result) == "Error: p.csv: no 'prediction' column"


def test_missing_files(in_tmp, synthetic_dir, raw_validation):
    result = run_validate("--predictions", "absent.csv", "--data", raw_validation)
    assert error_line(result) == "Error: absent.csv: file not found"
    example_predictions(synthetic_dir).to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", "absent.parquet")
    assert error_line(result) == "Error: absent.parquet: file not found"
    result = run_validate("--model", "absent.pt", "--data", raw_validation)
    assert error_line(result) == "Error: absent.pt: file not found"


def test_model_and_predictions_together_is_a_usage_error(in_tmp):
    result = run_validate("--model", "m.pt", "--predictions", "p.csv")
    assert result.exit_code == 2


def test_partial_predictions_and_no_side_files_are_noted(in_tmp, synthetic_dir, raw_validation):
    shutil.copy(raw_validation, in_tmp / "alone.parquet")  # no meta_model / example preds beside it
    preds = example_predictions(synthetic_dir)
    preds.iloc[: len(preds) // 2].to_csv("half.csv", index=False)
    result = run_validate("--predictions", "half.csv", "--data", "alone.parquet", "--json", "--no-report")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"] == len(preds) // 2
    assert "mmc" not in report and "corr_with_example" not in report
    assert report["notes"] == [
        f"{len(preds) - len(preds) // 2:,} validation rows have no prediction: scored the {len(preds) // 2:,} that do",
        "meta_model.parquet not found in .: MMC left out",
        "validation_example_preds.parquet not found in .: corr_with_example left out",
        "validation_benchmark_models.parquet not found in .: BMC left out",
    ]


def test_duplicate_ids(in_tmp, synthetic_dir, raw_validation):
    preds = example_predictions(synthetic_dir)
    pd.concat([preds, preds.iloc[:2]]).to_csv("p.csv", index=False)
    result = run_validate("--predictions", "p.csv", "--data", raw_validation)
    assert error_line(result) == "Error: p.csv: 2 duplicate id(s)"
