"""export --upload end to end through the fake Numerai server with the real numerapi client, the
hosted check (export --check: a fresh process within Numerai's limits, by numerflow.hosted_check), the finite-output check, the pickle's
handling of live_benchmark_models, and exactly predict's ranks at full v5.3 width."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import torch

from numerflow.cli import app
from numerflow import hosted_check
from tests.fake_numerai import PUBLIC_ID, SECRET_KEY, fixed_id
from tests.helpers import error_line, runner

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
UPLOAD_OPS = {"computePickleUploadAuth", "createComputePickleUpload"}


def export_upload(*args):
    return runner.invoke(app, ["export", *args, "--out", "model.pkl", "--upload"])


# --- upload ---------------------------------------------------------------------------------------

def test_upload_chooses_the_image_of_this_python_and_the_version_trained_on(tmp_path, monkeypatch, fake_numerai,
                                                                              fake_models, caplog, assert_secret_absent):
    monkeypatch.chdir(tmp_path)
    result = export_upload("--model", str(fake_models["a"]), "--model-name", "other_model")
    assert result.exit_code == 0, result.output
    assert f"image 'Python {PYTHON}'" in result.output and "data version v5.2" in result.output
    assert "Hosted check: 60 live rows" in result.output  # the fake v5.2 live file the model was trained beside
    [upload] = fake_numerai.model_uploads
    assert upload["dockerImageId"] == fixed_id("image", f"Python {PYTHON}")
    assert upload["dataVersionId"] == fixed_id("data", "v5.2")
    assert upload["modelId"] == fake_numerai.models["other_model"] and upload["tournament"] == 8
    assert upload["body"] == (tmp_path / "model.pkl").read_bytes()
    assert upload["id"] in result.output
    assert_secret_absent([result], caplog.text, tmp_path)


@pytest.mark.slow
def test_upload_retries_a_failed_put_and_reports_a_refused_one(tmp_path, monkeypatch, fake_numerai, fake_models):
    monkeypatch.chdir(tmp_path)
    fake_numerai.fail("upload", times=2)  # HTTP 500 twice, then accepted
    result = export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert [r.status for r in fake_numerai.log if r.path == "upload"] == [500, 500, 200]
    fake_numerai.fail("upload", status=403)
    line = error_line(export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model"))
    assert line == "Error: upload of model.pkl refused: HTTP 403"
    assert len(fake_numerai.model_uploads) == 1  # only the first


def test_numerapis_own_model_upload_is_answered_by_the_fake(tmp_path, fake_numerai):
    """The fake answers the query texts numerapi itself sends (so upload_model's copies stay faithful)."""
    from numerapi import NumerAPI

    pickle = tmp_path / "m.pkl"
    pickle.write_bytes(b"pickle bytes")
    napi = NumerAPI(PUBLIC_ID, SECRET_KEY)
    assert napi.model_upload_docker_images()["Python 3.12"] == fixed_id("image", "Python 3.12")
    upload_id = napi.model_upload(str(pickle), model_id=fake_numerai.models["fake_model"], data_version="v5.1",
                                  docker_image="Python 3.10")
    [upload] = fake_numerai.model_uploads
    assert upload["id"] == upload_id and upload["body"] == b"pickle bytes"
    assert upload["dataVersionId"] == fixed_id("data", "v5.1")


def test_no_image_for_this_python_is_one_error_and_nothing_is_written_or_uploaded(tmp_path, monkeypatch, fake_numerai,
                                                                                 fake_models):
    monkeypatch.chdir(tmp_path)
    fake_numerai.docker_images = [name for name in fake_numerai.docker_images if name != f"Python {PYTHON}"]
    result = export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model")
    line = error_line(result)
    assert f"no model-upload image for Python {PYTHON}" in line
    assert all(name in line for name in fake_numerai.docker_images)
    others = [name.split()[-1] for name in fake_numerai.docker_images]
    assert f"export from Python {' or '.join(others)} instead" in line
    assert not (tmp_path / "model.pkl").exists()
    assert not UPLOAD_OPS & set(fake_numerai.ops()) and fake_numerai.model_uploads == []


def test_synthetic_data_uploads_for_the_newest_version_with_a_note(tmp_path, monkeypatch, fake_numerai,
                                                                  synthetic_models):
    monkeypatch.chdir(tmp_path)
    result = export_upload("--model", str(synthetic_models["all"]))  # no name: the account has two models
    assert "give --model-name" in error_line(result)
    result = export_upload("--model", str(synthetic_models["all"]), "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert ("Note: trained on synthetic, not a Numerai version: uploading for the newest data version, v5.2"
            in result.output)
    assert fake_numerai.model_uploads[0]["dataVersionId"] == fixed_id("data", "v5.2")


def test_a_trained_version_numerai_does_not_offer_is_refused(tmp_path, monkeypatch, fake_numerai, fake_models):
    monkeypatch.chdir(tmp_path)
    fake_numerai.versions = ["v5.1"]
    line = error_line(export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model"))
    assert "trained on v5.2 but Numerai's model uploads offer data versions v5.1" in line
    assert not (tmp_path / "model.pkl").exists() and fake_numerai.model_uploads == []


def test_the_version_recorded_at_training_wins_over_a_folder_prepared_anew(tmp_path, monkeypatch, fake_numerai,
                                                                            fake_models):
    monkeypatch.chdir(tmp_path)
    checkpoint = torch.load(fake_models["a"], weights_only=True)
    assert checkpoint["trained_on"]["version"] == "v5.2"
    manifest = json.loads((Path(checkpoint["train_config"]["data"]) / "manifest.json").read_text())
    prepared_anew = tmp_path / "prepared"
    prepared_anew.mkdir()
    (prepared_anew / "manifest.json").write_text(json.dumps({**manifest, "version": "v5.1"}))
    checkpoint["train_config"]["data"] = str(prepared_anew)
    torch.save(checkpoint, tmp_path / "recorded.pt")
    result = export_upload("--model", str(tmp_path / "recorded.pt"), "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert fake_numerai.model_uploads[0]["dataVersionId"] == fixed_id("data", "v5.2")
    del checkpoint["trained_on"]  # a checkpoint from before the record: the folder's manifest is all there is
    torch.save(checkpoint, tmp_path / "older.pt")
    result = export_upload("--model", str(tmp_path / "older.pt"), "--model-name", "fake_model")
    assert result.exit_code == 0, result.output
    assert fake_numerai.model_uploads[1]["dataVersionId"] == fixed_id("data", "v5.1")


def test_a_pickle_failing_on_the_live_features_is_not_written_or_uploaded(tmp_path, monkeypatch, fake_numerai,
                                                                          fake_models):
    monkeypatch.chdir(tmp_path)
    live = pd.read_parquet(fake_models["a"].parent / "data" / "v5.2" / "live.parquet")
    live.drop(columns="feature_f1").to_parquet(tmp_path / "partial.parquet")
    line = error_line(export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model",
                                    "--live", "partial.parquet"))
    assert line.startswith("Error: the pickle does not fit Numerai's hosted runner on partial.parquet (1 CPU, ")
    assert line.endswith("it failed: ValueError: live_features lacks 1 feature(s) the model needs: ['feature_f1']; "
                         "nothing written or uploaded")
    assert not (tmp_path / "model.pkl").exists() and not UPLOAD_OPS & set(fake_numerai.ops())


def test_upload_needs_credentials_and_never_shows_the_secret(tmp_path, monkeypatch, fake_numerai, fake_models, caplog,
                                                           assert_secret_absent):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    line = error_line(export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model"))
    assert "NUMERAI_SECRET_KEY" in line and not (tmp_path / "model.pkl").exists()
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY)
    fake_numerai.reject_auth()
    result = export_upload("--model", str(fake_models["a"]), "--model-name", "fake_model")
    assert "refused the credentials" in error_line(result)
    assert_secret_absent([result], caplog.text, tmp_path)


def test_upload_options_only_with_upload(tmp_path, monkeypatch, fake_models):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["export", "--model", str(fake_models["a"]), "--model-name", "x"])
    assert result.exit_code == 2 and "--model-name is for --upload" in result.output
    result = runner.invoke(app, ["export", "--model", str(fake_models["a"]), "--out", "m.pickle", "--upload"])
    assert error_line(result) == "Error: m.pickle: Numerai's model uploads take a .pkl file; choose --out NAME.pkl"


# --- the runner check -----------------------------------------------------------------------------

def _pickle(tmp_path, function):
    path = tmp_path / "probe.pkl"
    path.write_bytes(cloudpickle.dumps(function))
    return path


def _live(tmp_path, rows: int = 50):
    live = pd.DataFrame({"era": "0600", "feature_a": np.arange(rows) % 5},
                        index=pd.Index([f"id{i}" for i in range(rows)], name="id"))
    live.to_parquet(tmp_path / "live.parquet")
    return tmp_path / "live.parquet"


def test_runner_check_runs_on_one_thread_without_credentials_and_passes_the_benchmark_frame(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")

    def probe(live_features, live_benchmark_models=None):
        import os

        import pandas as pd
        from threadpoolctl import threadpool_info

        assert "NUMERAI_SECRET_KEY" not in os.environ, "credentials reached the runner"
        assert all(os.environ[name] == "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
        assert all(pool["num_threads"] == 1 for pool in threadpool_info()), threadpool_info()
        assert list(live_benchmark_models.columns) == ["v53_lgbm_ender20"], "no benchmark frame"
        return pd.DataFrame({"prediction": live_features["feature_a"].rank(pct=True)})

    live = _live(tmp_path)
    pd.DataFrame({"v53_lgbm_ender20": np.linspace(0, 1, 50)},
                 index=pd.read_parquet(live).index).to_parquet(tmp_path / "live_benchmark_models.parquet")
    report = hosted_check.check_pickle(_pickle(tmp_path, probe), live)
    assert report.fits, report.reason
    assert 0 < report.peak_mb < hosted_check.HOSTED_MEMORY_BYTES / 1e6


@pytest.mark.slow
def test_runner_check_refuses_bad_output_too_much_memory_and_too_much_time(tmp_path, monkeypatch):
    live = _live(tmp_path)

    def nan_predictions(live_features, live_benchmark_models=None):
        import pandas as pd
        return pd.DataFrame({"prediction": float("nan")}, index=live_features.index)

    def slow(live_features, live_benchmark_models=None):
        import time
        time.sleep(30)

    def ranks(live_features, live_benchmark_models=None):
        return live_features[["feature_a"]].rank(pct=True).rename(columns={"feature_a": "prediction"})

    nan = hosted_check.check_pickle(_pickle(tmp_path, nan_predictions), live)
    assert not nan.fits and nan.reason == "it failed: it returned predictions that are NaN or outside [0, 1]"
    over = hosted_check.check_pickle(_pickle(tmp_path, ranks), live, memory_bytes=10 * 2**20,  # below any pandas
                                     isolation="rlimit")
    assert not over.fits and over.reason.startswith("it needed more than 0.01") and over.peak_mb > 10
    late = hosted_check.check_pickle(_pickle(tmp_path, slow), live, seconds=3)
    assert not late.fits and late.reason == "it did not finish within 3 s"


# --- the pickle's arguments, its finite-output check, its exactness -------------------------------

def test_pickle_works_with_or_without_live_benchmark_models_of_any_columns(tmp_path, monkeypatch, synthetic_dir,
                                                                          synthetic_models):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--out", "m.pkl"]).exit_code == 0
    predict = cloudpickle.loads((tmp_path / "m.pkl").read_bytes())
    live = pd.read_parquet(synthetic_dir / "live.parquet")
    expected = predict(live)
    benchmarks = {
        "as at export": pd.DataFrame({"v52_lgbm_ender20": np.linspace(0, 1, len(live))}, index=live.index),
        "more columns": pd.DataFrame({f"v53_model_{i}": np.linspace(0, 1, len(live)) for i in range(5)},
                                     index=live.index),
        "no columns": pd.DataFrame(index=live.index),
        "other rows": pd.DataFrame({"v53_lgbm_ender20": [0.5]}, index=pd.Index(["elsewhere"], name="id")),
    }
    pd.testing.assert_frame_equal(predict(live, None), expected)
    for name, frame in benchmarks.items():
        pd.testing.assert_frame_equal(predict(live, frame), expected, obj=name)
    # live_features with extra columns (a benchmark merged in, new features) predicts the same
    wider = live.assign(v53_lgbm_ender20=0.5, feature_new_in_v6=np.int8(2))
    pd.testing.assert_frame_equal(predict(wider, benchmarks["more columns"]), expected)


def test_export_of_a_checkpoint_with_nan_weights_is_refused_and_writes_nothing(tmp_path, monkeypatch, synthetic_models):
    monkeypatch.chdir(tmp_path)
    checkpoint = torch.load(synthetic_models["small"], weights_only=True)
    checkpoint["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, tmp_path / "nan.pt")
    result = runner.invoke(app, ["export", "--model", str(synthetic_models["all"]), "--model", "nan.pt",
                                 "--out", "m.pkl"])
    assert error_line(result) == ("Error: nan.pt: the model produced non-finite predictions (67 of 67 sample rows); "
                                  "nothing written")
    assert list(tmp_path.iterdir()) == [tmp_path / "nan.pt"]


def write_wide_model(folder, n_features: int = 3555, rows: int = 3000):
    """A v5.3-wide checkpoint whose scores crowd around 0.5 as a trained regressor's do (so that
    float32 rounding reorders near-ties: 88 of these 3,000 rows differed before), and its live file."""
    from numerflow.model import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(n_features=n_features, layers=[64], batchnorm=True)
    model = build_model(config)
    with torch.no_grad():
        model.net[-1].bias.fill_(0.5)
        model.net[-1].weight.mul_(0.01)
    features = [f"feature_{i:04d}" for i in range(n_features)]
    torch.save({"numerflow_version": "test", "model_config": config.to_dict(), "features": features,
                "targets": ["target"], "predict_with": "main", "state_dict": model.state_dict(), "train_config": {},
                "metrics": [], "best_epoch": 1}, folder / "wide.pt")
    live = pd.DataFrame(np.random.default_rng(0).integers(0, 5, (rows, n_features), dtype=np.int8), columns=features)
    live.insert(0, "era", "1234")
    live.index = pd.Index([f"id{i}" for i in range(rows)], name="id")
    live.to_parquet(folder / "live.parquet")


@pytest.mark.slow
def test_pickle_gives_exactly_predicts_ranks_at_full_width(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_wide_model(tmp_path)
    assert runner.invoke(app, ["export", "--model", "wide.pt", "--out", "wide.pkl"]).exit_code == 0
    result = runner.invoke(app, ["predict", "--model", "wide.pt", "--data", "live.parquet", "--out", "p.csv"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv("p.csv", dtype={"id": str}).set_index("id")["prediction"]
    exported = cloudpickle.loads((tmp_path / "wide.pkl").read_bytes())(pd.read_parquet("live.parquet"))["prediction"]
    assert predicted.nunique() > 2900  # ranks, not a constant
    np.testing.assert_array_equal(exported.to_numpy(), predicted.reindex(exported.index).to_numpy())
