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

from numerflow import schema
from numerflow.cli import app
from numerflow.config import PrepareConfig, TrainConfig, ValidateConfig
from numerai_tools.scoring import correlation_contribution
from numerflow.scoring.ids import RowIds, numerai_id_keys
from numerflow.stages.prepare import prepare
from numerflow.stages.validate import validate
from tests.helpers import BENCHMARKS, cli, error_line, runner

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


@pytest.mark.slow
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


def test_validate_scores_only_validation_rows_of_a_raw_file(in_tmp, synthetic_dir, synthetic_models):
    """Results on a raw file holding other rows too equal those on its validation rows alone."""
    mixed_dir = in_tmp / "mixed"
    shutil.copytree(synthetic_dir, mixed_dir)
    valid = pd.read_parquet(synthetic_dir / schema.VALIDATION_FILE)
    other = valid.assign(data_type="test", target=valid["target"].sample(frac=1, random_state=0).to_numpy())
    other.index = "t" + other.index.astype(str)
    other.index.name = "id"
    pd.concat([other, valid]).sort_values("era", kind="stable").to_parquet(mixed_dir / schema.VALIDATION_FILE)
    preds = pd.DataFrame({"id": valid.index, "prediction": np.random.default_rng(1).random(len(valid))})
    preds.to_csv("preds.csv", index=False)
    for source in (["--predictions", "preds.csv"], ["--model", synthetic_models["all"]]):
        reports = []
        for folder in (synthetic_dir, mixed_dir):
            result = cli("validate", *source, "--data", folder / schema.VALIDATION_FILE, "--json", "--no-report")
            assert result.exit_code == 0, result.output
            report = {k: v for k, v in json.loads(result.output).items() if k != "data"}
            # notes name the folder the side files were looked for in
            report["notes"] = [note.replace(str(folder), "<folder>") for note in report["notes"]]
            reports.append(report)
        assert reports[0] == reports[1]
        assert reports[0]["rows"] == len(valid)


def test_validate_text_target_is_a_data_error(in_tmp, synthetic_dir, synthetic_models):
    valid = pd.read_parquet(synthetic_dir / schema.VALIDATION_FILE)
    valid.assign(target="high").to_parquet("v.parquet")
    result = cli("validate", "--model", synthetic_models["all"], "--data", "v.parquet", "--no-report")
    assert error_line(result) == "Error: v.parquet: target column 'target' holds str values, not numbers"


def test_empty_predictions_file_names_it(in_tmp, synthetic_dir):
    (in_tmp / "p.csv").write_text("id,prediction\n")
    result = cli("validate", "--predictions", "p.csv", "--data", synthetic_dir / schema.VALIDATION_FILE, "--no-report")
    assert error_line(result) == "Error: p.csv: no rows"


# --- validate: BMC ------------------------------------------------------------------------------

@pytest.fixture
def v53_scored(v53_dir, tmp_path):
    """Prepared v5.3 (every feature) and a predictions file for its validation rows."""
    prepared = prepare(PrepareConfig(dataset=v53_dir, feature_set="all", out_dir=tmp_path / "prep",
                                     downsample=1, embargo=0))
    valid = pd.read_parquet(prepared.validation)
    rng = np.random.default_rng(3)
    predictions = pd.DataFrame({"prediction": rng.random(len(valid)) + valid["target"].to_numpy()},
                               index=valid.index)
    predictions.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "p.parquet")  # another row order
    return prepared, valid, predictions["prediction"], tmp_path / "p.parquet"


def expected_per_era(valid, predictions, benchmark_file, column):
    """numerai-tools' correlation_contribution and scipy's Spearman with the benchmark, era by era,
    on the rows the benchmark file covers."""
    bench = pd.read_parquet(benchmark_file)[column]
    frame = valid[["era"]].assign(target=valid["target"].astype(np.float64), prediction=predictions,
                                  benchmark=bench).dropna(subset=["benchmark"])  # numerai-tools in float64
    bmc, corr = {}, {}
    for era, rows in frame.groupby("era"):
        bmc[era] = correlation_contribution(rows[["prediction"]], rows["benchmark"], rows["target"]).iloc[0]
        corr[era] = spearmanr(rows["prediction"], rows["benchmark"])[0]
    return bmc, corr


def check_bmc(report, valid, predictions, benchmark_file, column):
    bmc, corr = expected_per_era(valid, predictions, benchmark_file, column)
    assert report["benchmark"] == column
    assert [row["era"] for row in report["per_era"]] == sorted(bmc)
    for row in report["per_era"]:
        assert row["bmc"] == pytest.approx(bmc[row["era"]], abs=1e-9)
        assert row["corr_with_benchmark"] == pytest.approx(corr[row["era"]], abs=1e-9)
    assert report["bmc"]["mean"] == pytest.approx(np.mean(list(bmc.values())), abs=1e-9)
    assert report["corr_with_benchmark"]["mean"] == pytest.approx(np.mean(list(corr.values())), abs=1e-9)


def test_validate_reports_bmc_as_numerai_tools_per_era(v53_scored, v53_dir, tmp_path):
    prepared, valid, predictions, path = v53_scored
    result = cli("validate", "--predictions", path, "--data", prepared.validation, "--json", "--no-report")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    check_bmc(report, valid, predictions, v53_dir / "validation_benchmark_models.parquet", "v53_lgbm_ender20")
    assert "mmc" in report and all("mmc" in row for row in report["per_era"])  # beside MMC
    # --benchmark picks another column
    other = validate(ValidateConfig(predictions=path, data=prepared.validation, benchmark="v52_lgbm_ender20",
                                    write_report=False)).data
    check_bmc(other, valid, predictions, v53_dir / "validation_benchmark_models.parquet", "v52_lgbm_ender20")
    assert other["bmc"]["mean"] != report["bmc"]["mean"]
    text = str(validate(ValidateConfig(predictions=path, data=prepared.validation, write_report=False)))
    assert "\nbmc " in text and "\ncorr_with_benchmark " in text
    assert "bmc and corr_with_benchmark against v53_lgbm_ender20" in text


def test_validate_a_checkpoint_reports_bmc(v53_dir, tmp_path):
    from tests.conftest import train_tiny

    checkpoint = train_tiny(v53_dir.parent, "all", tmp_path / "m.pt", embargo=0)
    report = validate(ValidateConfig(model=checkpoint, data=tmp_path / "prepared_m" / "validation.parquet",
                                     write_report=False)).data
    assert report["benchmark"] == "v53_lgbm_ender20" and np.isfinite(report["bmc"]["mean"])
    assert all(row["bmc"] is not None and row["corr_with_benchmark"] is not None for row in report["per_era"])


def test_benchmark_file_covering_part_of_the_rows_is_scored_on_those(v53_scored, v53_dir, tmp_path):
    prepared, valid, predictions, path = v53_scored
    bench_file = v53_dir / "validation_benchmark_models.parquet"
    bench = pd.read_parquet(bench_file)
    bench.iloc[::3].to_parquet(bench_file)  # two rows in three have no benchmark value
    report = validate(ValidateConfig(predictions=path, data=prepared.validation, write_report=False))
    covered = len(bench.iloc[::3].index.intersection(valid.index))
    assert (f"validation_benchmark_models.parquet covers {covered:,} of the {len(valid):,} scored rows: "
            f"BMC and corr_with_benchmark are measured on those rows") in report.notes
    check_bmc(report.data, valid, predictions, bench_file, "v53_lgbm_ender20")


def test_absent_benchmark_file_is_a_note(v53_scored, v53_dir, tmp_path):
    prepared, _, _, path = v53_scored
    (v53_dir / "validation_benchmark_models.parquet").unlink()
    report = validate(ValidateConfig(predictions=path, data=prepared.validation, write_report=False))
    assert f"validation_benchmark_models.parquet not found in {v53_dir}: BMC left out" in report.notes
    assert "bmc" not in report.data and "bmc" not in report.data["per_era"][0]
    assert "mmc" in report.data


def test_unknown_benchmark_column_lists_the_available_ones(v53_scored, v53_dir, tmp_path):
    prepared, _, _, path = v53_scored
    result = cli("validate", "--predictions", path, "--data", prepared.validation, "--benchmark", "v99_lgbm_x",
                 "--report", tmp_path / "report")
    assert error_line(result) == (f"Error: {v53_dir / 'validation_benchmark_models.parquet'}: no benchmark column "
                                  f"'v99_lgbm_x' (available: {', '.join(BENCHMARKS)})")
    assert not (tmp_path / "report").exists()


# --- id matching --------------------------------------------------------------------------------

def test_numerai_ids_become_exact_integer_keys():
    ids = pd.Index(["n0123456789abcdef"[:16], "nfffffffffffffff", "n000000000000000"])
    assert numerai_id_keys(ids).tolist() == [int(i[1:], 16) for i in ids]
    for other in (["n0123456789abcdeF"], ["x0123456789abcde"], ["n0123"], ["era1", "era2"], [1, 2]):
        assert numerai_id_keys(pd.Index(other)) is None


@pytest.mark.parametrize("ids", [[f"n{i:015x}" for i in (5, 9, 1, 7)], ["a", "bb", "ccc", "d"],
                                 [f"row-of-era-{i}" for i in (5, 9, 1, 7)]])  # integer keys twice, then text
def test_row_ids_place_values_on_the_data_rows(ids, tmp_path):
    rows = RowIds(pd.Index(ids), tmp_path / "v.parquet")
    placed = rows.place(pd.Index([ids[2], ids[0], "n00000000000000f"]), [1.0, 2.0, 3.0], "side", strict=False)
    np.testing.assert_array_equal(placed, [2.0, np.nan, 1.0, np.nan])
    with pytest.raises(Exception, match=r"^p: 1 duplicate id\(s\)$"):
        rows.place(pd.Index([ids[1], ids[1]]), [1.0, 2.0], "p", strict=True)
    with pytest.raises(Exception, match=r"^p: 1 of 2 id\(s\) are not in "):
        rows.place(pd.Index([ids[1], "zz"]), [1.0, 2.0], "p", strict=True)
    with pytest.raises(Exception, match=r"v.parquet: 1 duplicate id\(s\)$"):
        RowIds(pd.Index(ids + ids[:1]), tmp_path / "v.parquet")


@pytest.mark.parametrize("make_id", [lambda i: f"n{i * 7919:015x}", lambda i: f"n{i}", lambda i: f"row-{i:09d}"])
def test_row_ids_across_chunks_and_key_blocks(make_id, monkeypatch, tmp_path):
    """Ids as a Parquet reader hands them over (several chunks, kept as they are) and key blocks
    that cross chunk edges give the same placement, in row order and shuffled, as one array; a
    repeat in another chunk is still found."""
    import pyarrow as pa

    from numerflow.scoring import ids as ids_module

    monkeypatch.setattr(ids_module, "KEY_BLOCK_ROWS", 7)
    ids = [make_id(i) for i in range(50)]
    chunked = pa.chunked_array([ids[:13], ids[13:14], ids[14:]], type=pa.large_string())
    if make_id(1).startswith("n0"):
        assert numerai_id_keys(chunked).tolist() == [int(i[1:], 16) for i in ids]
    rows = RowIds(pd.Series(pd.arrays.ArrowStringArray(chunked)), tmp_path / "v.parquet")
    values = np.arange(50.0)
    np.testing.assert_array_equal(rows.place(pa.chunked_array([ids[:30], ids[30:]]), values, "p", strict=True), values)
    order = np.random.default_rng(0).permutation(50)
    shuffled = rows.place(pd.Index(np.array(ids, dtype=object)[order]), values[order], "p", strict=True)
    np.testing.assert_array_equal(shuffled, values)
    with pytest.raises(Exception, match=r"v.parquet: 1 duplicate id\(s\)$"):
        RowIds(pa.chunked_array([ids[:20], ids[20:] + ids[3:4]]), tmp_path / "v.parquet")


def test_validate_a_raw_release_without_the_target_alias(v53_dir, tmp_path):
    raw = pd.read_parquet(v53_dir / "validation.parquet").drop(columns=["target"])
    raw.to_parquet(tmp_path / "validation.parquet")
    predictions = pd.DataFrame({"prediction": np.random.default_rng(0).random(len(raw))}, index=raw.index)
    predictions.to_csv(tmp_path / "p.csv")
    report = validate(ValidateConfig(predictions=tmp_path / "p.csv", data=tmp_path / "validation.parquet",
                                     write_report=False)).data
    assert report["target"] == "target_ender_20" and report["rows"] == len(raw)
