"""The 2026 layout (issue 10, section 1): v5.3 through the fake Numerai server with the real numerapi
client: download with the benchmark models' files, prepare of the `quantum` set and the main target,
validate's BMC against numerai-tools era by era, and the bad input around them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from numerai_tools.scoring import correlation_contribution
from scipy.stats import spearmanr
from typer.testing import CliRunner

from numerflow import schema
from numerflow.cli import app
from numerflow.config import DownloadConfig, PrepareConfig, ValidateConfig
from numerflow.scoring.ids import RowIds, numerai_id_keys
from numerflow.stages.download import download
from numerflow.stages.prepare import prepare
from numerflow.stages.validate import validate
from tests.fake_numerai import QUANTUM_FEATURES, benchmark_columns, make_version_files

BENCHMARKS = benchmark_columns("v5.3")  # v53_lgbm_ender20 first


@pytest.fixture
def numerai53(fake_numerai):
    """The fake server offering v5.2 and v5.3 (v5.3 with its 2026 file list)."""
    for name in [n for n in fake_numerai.datasets if n.startswith("v5.1/")]:
        del fake_numerai.datasets[name]
    fake_numerai.versions = ["v5.2", "v5.3"]
    fake_numerai.datasets.update(make_version_files("v5.3", fake_numerai.round_number, seed=7))
    return fake_numerai


@pytest.fixture
def v53_dir(numerai53, tmp_path):
    """v5.3 downloaded into tmp_path/data/v5.3."""
    return download(DownloadConfig(data_dir=tmp_path / "data")).directory


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --- download -----------------------------------------------------------------------------------

def test_download_takes_v53_as_newest_with_its_benchmark_files(numerai53, tmp_path):
    result = download(DownloadConfig(data_dir=tmp_path / "data"))
    folder = tmp_path / "data" / "v5.3"
    assert result.version == "v5.3" and result.directory == folder and result.not_offered == []
    for name in ["train_benchmark_models.parquet", "validation_benchmark_models.parquet"]:
        assert (folder / name).read_bytes() == numerai53.datasets[f"v5.3/{name}"]
    live = numerai53.datasets["v5.3/live_benchmark_models.parquet"]
    assert (folder / "live_benchmark_models_600.parquet").read_bytes() == live
    assert (folder / "live_benchmark_models.parquet").read_bytes() == live
    assert list(pd.read_parquet(folder / "validation_benchmark_models.parquet").columns) == ["era"] + BENCHMARKS
    assert "live_benchmark_models.parquet" in {n.split("/")[1] for n in numerai53.file_gets()}
    meta = json.loads((folder / "features.json").read_text())
    assert len(meta["feature_sets"]["quantum"]) == QUANTUM_FEATURES

    # A new round: only the round's files, the live benchmark models among them.
    numerai53.log.clear()
    numerai53.new_round()
    again = download(DownloadConfig(data_dir=tmp_path / "data"))
    assert sorted(numerai53.file_gets()) == ["v5.3/live.parquet", "v5.3/live_benchmark_models.parquet",
                                             "v5.3/live_example_preds.parquet"]
    assert (folder / "live_benchmark_models.parquet").read_bytes() == numerai53.datasets[
        "v5.3/live_benchmark_models.parquet"] != live
    assert (folder / "live_benchmark_models_600.parquet").read_bytes() == live  # the past round's is kept
    assert again.round == 601


def test_live_only_fetches_the_live_benchmark_models(numerai53, tmp_path):
    download(DownloadConfig(data_dir=tmp_path / "data", live_only=True))
    assert sorted(numerai53.file_gets()) == sorted(f"v5.3/{n}" for n in [
        "features.json", "live.parquet", "live_example_preds.parquet", "live_benchmark_models.parquet"])


def test_benchmark_files_missing_from_a_release_that_has_some_are_reported(numerai53, tmp_path):
    del numerai53.datasets["v5.3/validation_benchmark_models.parquet"]
    result = download(DownloadConfig(data_dir=tmp_path / "data"))
    assert result.not_offered == ["validation_benchmark_models.parquet"]
    # a release without any (the v5.2 stand-in) is not said to lack them
    assert download(DownloadConfig(data_dir=tmp_path / "data", version="v5.2")).not_offered == []


# --- prepare ------------------------------------------------------------------------------------

def test_prepare_quantum_and_all_on_v53(v53_dir, tmp_path):
    meta = json.loads((v53_dir / "features.json").read_text())
    for feature_set in ("quantum", "all"):
        result = prepare(PrepareConfig(dataset=v53_dir, feature_set=feature_set, aux_targets=["all"],
                                       out_dir=tmp_path / feature_set, downsample=1, embargo=0))
        assert result.features == meta["feature_sets"][feature_set]
        train = pd.read_parquet(result.train)
        assert list(train.columns[1:1 + len(result.features)]) == result.features
        assert all(train[f].dtype == np.int8 for f in result.features)
        # `target` is target_ender_20's alias on v5.3: kept as the main target, and said so
        assert result.targets == ["target", "target_ender_20", "target_cyrusd_20"]
        assert "target 'target' ('target' is the alias of target_ender_20: the same values)" in str(result)


def test_prepare_takes_target_ender_20_when_target_is_absent(v53_dir, tmp_path):
    release = tmp_path / "no_alias"
    release.mkdir()
    shutil.copyfile(v53_dir / "features.json", release / "features.json")
    for name in ("train.parquet", "validation.parquet"):
        pd.read_parquet(v53_dir / name).drop(columns=["target"]).to_parquet(release / name)
    result = run("prepare", "--dataset", release, "--feature-set", "quantum", "--aux-targets", "none",
                 "--out-dir", tmp_path / "prep")
    assert result.exit_code == 0, result.output
    assert "target 'target_ender_20' ('target' is absent: target_ender_20 is the main target)" in result.output
    manifest = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert manifest["target"] == "target_ender_20" and manifest["targets"] == ["target_ender_20"]


@pytest.mark.parametrize("version, feature_set", [("v5.2", "quantum"), ("v5.3", "quantum_2027")])
def test_prepare_refuses_a_set_the_release_does_not_have(numerai53, tmp_path, version, feature_set):
    folder = download(DownloadConfig(data_dir=tmp_path / "data", version=version)).directory
    sets = sorted(json.loads((folder / "features.json").read_text())["feature_sets"])
    result = run("prepare", "--dataset", folder, "--feature-set", feature_set, "--out-dir", tmp_path / "prep")
    assert error_line(result) == (f"Error: {folder / 'features.json'}: unknown feature set '{feature_set}' "
                                  f"(available: {', '.join(sets)})")
    assert not (tmp_path / "prep").exists()


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
    result = run("validate", "--predictions", path, "--data", prepared.validation, "--json", "--no-report")
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
    result = run("validate", "--predictions", path, "--data", prepared.validation, "--benchmark", "v99_lgbm_x",
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
