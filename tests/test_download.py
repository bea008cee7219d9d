"""The download stage with the real numerapi client over HTTP against the local fake Numerai server."""

from __future__ import annotations

import json

import pytest

from numerflow import numerai, schema
from numerflow.cli import app
from numerflow.config import DownloadConfig
from numerflow.stages.download import MANIFEST_FILE, choose_version, download
from numerflow.errors import ApiError, ConfigError
import pandas as pd
from tests.fake_numerai import QUANTUM_FEATURES
from tests.helpers import BENCHMARKS, runner


FULL = ["features.json", "live.parquet", "live_600.parquet", "live_example_preds.parquet",
        "live_example_preds_600.parquet", "live_round.json", "meta_model.parquet", "train.parquet",
        "validation.parquet", "validation_example_preds.parquet", MANIFEST_FILE]


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def run_cli(*args):
    result = runner.invoke(app, ["download", *map(str, args)])
    return result


def fresh(fake_numerai, tmp_path, **kw):
    """A download into tmp_path/data, then an empty server log."""
    result = download(DownloadConfig(data_dir=tmp_path / "data", **kw))
    fake_numerai.log.clear()
    return result


def test_fresh_download_newest_version(fake_numerai, tmp_path):
    result = download(DownloadConfig(data_dir=tmp_path / "data"))
    folder = tmp_path / "data" / "v5.2"
    assert result.version == "v5.2" and result.directory == folder and result.round == 600
    assert listing(folder) == sorted(FULL)  # no temporary files left
    for name in ["train.parquet", "validation.parquet", "features.json", "meta_model.parquet",
                 "validation_example_preds.parquet"]:
        assert (folder / name).read_bytes() == fake_numerai.datasets[f"v5.2/{name}"]
    live = fake_numerai.datasets["v5.2/live.parquet"]
    assert (folder / "live_600.parquet").read_bytes() == live == (folder / "live.parquet").read_bytes()
    assert schema.read_live_round(folder) == 600
    assert sorted(fake_numerai.file_gets()) == sorted(f"v5.2/{n}" for n in
                                                      ["features.json", "live.parquet", "live_example_preds.parquet",
                                                       "train.parquet", "meta_model.parquet",
                                                       "validation_example_preds.parquet", "validation.parquet"])
    assert not any(r.authorized for r in fake_numerai.log)  # public files need no credentials
    text = str(result)
    assert text.startswith(f"Dataset v5.2, round 600 in {folder}\n  fetched 7 file(s), ")
    assert text.endswith("live.parquet is round 600 (live_600.parquet)")


def test_cached_rerun_fetches_nothing(fake_numerai, tmp_path):
    fresh(fake_numerai, tmp_path)
    result = download(DownloadConfig(data_dir=tmp_path / "data"))
    assert fake_numerai.file_gets() == []
    assert [op for op in fake_numerai.ops() if op == "dataset"] == []
    assert result.fetched == [] and len(result.cached) == 7
    assert "fetched 0" not in str(result) and "  fetched" not in str(result)


def test_lost_live_alias_is_restored_without_fetching(fake_numerai, tmp_path):
    fresh(fake_numerai, tmp_path, live_only=True)
    folder = tmp_path / "data" / "v5.2"
    (folder / "live.parquet").unlink()
    (folder / "live_round.json").unlink()
    download(DownloadConfig(data_dir=tmp_path / "data", live_only=True))
    assert fake_numerai.file_gets() == []
    assert (folder / "live.parquet").read_bytes() == fake_numerai.datasets["v5.2/live.parquet"]
    assert schema.read_live_round(folder) == 600


def test_new_round_fetches_only_live_files(fake_numerai, tmp_path):
    fresh(fake_numerai, tmp_path)
    fake_numerai.new_round()
    result = download(DownloadConfig(data_dir=tmp_path / "data"))
    folder = tmp_path / "data" / "v5.2"
    assert sorted(fake_numerai.file_gets()) == ["v5.2/live.parquet", "v5.2/live_example_preds.parquet"]
    assert [n for n, _ in result.fetched] == ["live_601.parquet", "live_example_preds_601.parquet"]
    assert (folder / "live.parquet").read_bytes() == fake_numerai.datasets["v5.2/live.parquet"]
    assert (folder / "live_601.parquet").read_bytes() == fake_numerai.datasets["v5.2/live.parquet"]
    assert (folder / "live_600.parquet").read_bytes() == fake_numerai.past_rounds[600]["v5.2/live.parquet"]
    assert schema.read_live_round(folder) == 601


def test_past_round_leaves_current_live_alone(fake_numerai, tmp_path):
    fake_numerai.new_round()
    fresh(fake_numerai, tmp_path, live_only=True)
    folder = tmp_path / "data" / "v5.2"
    result = download(DownloadConfig(data_dir=tmp_path / "data", live_only=True, round=600))
    assert (folder / "live_600.parquet").read_bytes() == fake_numerai.past_rounds[600]["v5.2/live.parquet"]
    assert (folder / "live.parquet").read_bytes() == fake_numerai.datasets["v5.2/live.parquet"]
    assert schema.read_live_round(folder) == 601
    asked = [r.variables for r in fake_numerai.log if r.op == "dataset"]
    assert [(v["filename"], v["round"]) for v in asked] == [("v5.2/live.parquet", 600),
                                                           ("v5.2/live_example_preds.parquet", 600)]
    assert str(result).endswith("round 600 is a past round (current: 601); live.parquet was left as it was")


def test_live_only(fake_numerai, tmp_path):
    result = download(DownloadConfig(data_dir=tmp_path / "data", version="v5.1", live_only=True))
    folder = tmp_path / "data" / "v5.1"
    assert listing(folder) == sorted(["features.json", "live.parquet", "live_600.parquet", "live_example_preds.parquet",
                                      "live_example_preds_600.parquet", "live_round.json", MANIFEST_FILE])
    assert len(result.fetched) == 3


def test_force_refetches(fake_numerai, tmp_path):
    fresh(fake_numerai, tmp_path, live_only=True)
    download(DownloadConfig(data_dir=tmp_path / "data", live_only=True, force=True))
    assert len(fake_numerai.file_gets()) == 3


def test_changed_or_truncated_file_is_refetched(fake_numerai, tmp_path):
    fresh(fake_numerai, tmp_path, live_only=True)
    features = tmp_path / "data" / "v5.2" / "features.json"
    features.write_text("{}")  # size no longer matches the manifest
    download(DownloadConfig(data_dir=tmp_path / "data", live_only=True))
    assert fake_numerai.file_gets() == ["v5.2/features.json"]
    assert features.read_bytes() == fake_numerai.datasets["v5.2/features.json"]


def test_whole_files_from_elsewhere_are_adopted(fake_numerai, tmp_path):
    """Files put there by other means (no manifest) count as complete when whole."""
    folder = tmp_path / "data" / "v5.2"
    folder.mkdir(parents=True)
    (folder / "train.parquet").write_bytes(fake_numerai.datasets["v5.2/train.parquet"])
    (folder / "validation.parquet").write_bytes(fake_numerai.datasets["v5.2/validation.parquet"][:-100])
    download(DownloadConfig(data_dir=tmp_path / "data"))
    gets = fake_numerai.file_gets()
    assert "v5.2/train.parquet" not in gets and "v5.2/validation.parquet" in gets
    manifest = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    assert manifest["train.parquet"]["size"] == (folder / "train.parquet").stat().st_size


def test_server_error_then_success(fake_numerai, tmp_path):
    fake_numerai.fail("v5.2/train.parquet", times=2)
    fake_numerai.fail("listDatasets", times=1)
    download(DownloadConfig(data_dir=tmp_path / "data"))
    folder = tmp_path / "data" / "v5.2"
    assert (folder / "train.parquet").read_bytes() == fake_numerai.datasets["v5.2/train.parquet"]
    assert fake_numerai.file_gets().count("v5.2/train.parquet") == 3


def test_dropped_connection_leaves_no_final_file_and_rerun_completes(fake_numerai, tmp_path):
    fake_numerai.drop("v5.2/train.parquet", times=numerai.RETRY_ATTEMPTS)
    result = run_cli("--data-dir", tmp_path / "data")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: download of v5.2/train.parquet failed after {numerai.RETRY_ATTEMPTS} "
                                    f"tries: connection dropped after ")
    folder = tmp_path / "data" / "v5.2"
    assert "train.parquet" not in listing(folder)
    assert not [n for n in listing(folder) if n.endswith(".tmp")]
    fake_numerai.log.clear()
    result = run_cli("--data-dir", tmp_path / "data")
    assert result.exit_code == 0, result.output
    # files fetched before the failure were kept; the rest are fetched now
    assert sorted(fake_numerai.file_gets()) == ["v5.2/meta_model.parquet", "v5.2/train.parquet",
                                                "v5.2/validation.parquet", "v5.2/validation_example_preds.parquet"]
    assert (folder / "train.parquet").read_bytes() == fake_numerai.datasets["v5.2/train.parquet"]


def test_unknown_version_lists_available(fake_numerai, tmp_path):
    with pytest.raises(ConfigError):
        download(DownloadConfig(data_dir=tmp_path / "data", version="v9.9"))
    result = run_cli("--data-dir", tmp_path / "data", "--version", "v9.9")
    assert result.exit_code == 1
    assert result.stderr == "Error: unknown dataset version 'v9.9' (available: v5.1, v5.2)\n"
    assert not (tmp_path / "data").exists()


def test_versions_sort_numerically():
    assert choose_version(None, ["v5.9/train.parquet", "v5.10/train.parquet", "v4.3/x", "misc.csv"]) == "v5.10"


def test_required_file_missing_is_an_error(fake_numerai, tmp_path):
    del fake_numerai.datasets["v5.2/validation.parquet"]
    with pytest.raises(ApiError, match=r"^Numerai does not offer v5.2/validation.parquet$"):
        download(DownloadConfig(data_dir=tmp_path / "data"))


def test_optional_file_missing_is_reported(fake_numerai, tmp_path):
    del fake_numerai.datasets["v5.2/meta_model.parquet"]
    result = download(DownloadConfig(data_dir=tmp_path / "data"))
    assert result.not_offered == ["meta_model.parquet"]
    assert "not offered by Numerai for v5.2: meta_model.parquet" in str(result)


def test_cli_download(fake_numerai, tmp_path, monkeypatch):
    monkeypatch.delenv("NUMERAI_PUBLIC_ID")
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    monkeypatch.chdir(tmp_path)
    result = run_cli("--live-only")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Dataset v5.2, round 600 in data/v5.2\n  fetched 3 file(s), ")
    result = run_cli("--live-only")
    assert result.output == ("Dataset v5.2, round 600 in data/v5.2\n"
                             "  up to date (not fetched): features.json, live_600.parquet, live_example_preds_600.parquet\n"
                             "  live.parquet is round 600 (live_600.parquet)\n")


def test_cli_api_down(fake_numerai, tmp_path):
    fake_numerai.fail("rounds", times=numerai.RETRY_ATTEMPTS)
    result = run_cli("--data-dir", tmp_path / "data")
    assert result.exit_code == 1
    assert result.stderr == f"Error: Numerai API call 'rounds' failed after {numerai.RETRY_ATTEMPTS} tries: HTTP 500\n"


def test_cli_bad_round(fake_numerai, tmp_path):
    result = run_cli("--data-dir", tmp_path / "data", "--round", "0")
    assert result.exit_code == 2  # a bad option value: a usage error at parse time
    assert result.stderr.splitlines()[-1] == "Error: Invalid value for '--round': Input should be greater than or equal to 1"
    assert fake_numerai.log == []


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
