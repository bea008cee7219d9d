"""numerflow.tracking against a real MLflow SQLite store, read back with MLflow's own client."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from numerflow import config_base
from numerflow.errors import ConfigError
from numerflow.tracking import (DATA_VERSION_TAG, DEFAULT_URI, GIT_COMMIT_TAG, KIND_TAG, PARENT_TAG, VERSION_TAG,
                                RecordedRun, TrackingConfig, preflight, replay, tracked_run, tracking_config)
from numerflow.version import __version__
from tests.helpers import fresh_python

mlflow = pytest.importorskip("mlflow", reason='MLflow tracking needs the mlflow extra: pip install "numerflow[mlflow]"')


@dataclass
class FakeTrainSettings:  # a settings dataclass of the shape config.py's have
    epochs: int = 3
    layers: list = (64, 32)
    data: Path = Path("data/prepared")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store (and its artifact folder) for the module: creating a store runs MLflow's
    schema migrations, seconds each time. The working folder is the store's, as for a user."""
    folder = tmp_path_factory.mktemp("store")
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    with contextlib.chdir(folder):
        yield TrackingConfig(uri=f"sqlite:///{folder / 'mlflow.db'}"), mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_run_reads_back_params_metric_histories_tags_and_artifacts(store, tmp_path, capfd):
    config, client = store
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text('{"corr_mean": 0.02}')
    (report / "per_era.png").write_bytes(b"\x89PNG fake")
    model_json = tmp_path / "model.json"
    model_json.write_text("{}")
    with tracked_run("train", "mlp-64", FakeTrainSettings(), tags={DATA_VERSION_TAG: "v5.2"}, config=config) as run:
        for epoch, (loss, corr) in enumerate([(0.30, 0.010), (0.25, 0.015), (0.22, 0.018)]):
            run.log_metrics(epoch, {"train_loss": loss, "validation_corr": corr})
        run.log_final({"corr_mean": 0.021, "corr_sharpe": 1.4, "not_a_number": "x"})
        run.log_artifacts([report, model_json])
        run_id = run.run_id
    assert capfd.readouterr().err == ""

    logged = client.get_run(run_id)
    assert logged.info.run_name == "mlp-64" and logged.info.status == "FINISHED"
    assert logged.data.params == {"epochs": "3", "layers": "64,32", "data": "data/prepared"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == [(0, 0.30), (1, 0.25),
                                                                                           (2, 0.22)]
    assert [m.value for m in client.get_metric_history(run_id, "validation_corr")] == [0.010, 0.015, 0.018]
    assert logged.data.metrics["corr_mean"] == 0.021 and "not_a_number" not in logged.data.metrics
    tags = logged.data.tags
    assert tags[KIND_TAG] == "train" and tags[VERSION_TAG] == __version__ and tags[DATA_VERSION_TAG] == "v5.2"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags[GIT_COMMIT_TAG] == head and len(head) == 40
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["model.json", "per_era.png", "report.json"]
    assert Path(client.download_artifacts(run_id, "report.json", str(tmp_path))).read_text() == '{"corr_mean": 0.02}'


def test_a_sweep_is_a_parent_with_a_child_per_trial(store):
    config, client = store
    with tracked_run("sweep", "wide", {"trials": 3}, config=config) as sweep:
        for trial in range(3):
            with sweep.child(f"trial {trial}", {"lr": 10 ** -(trial + 2)}) as child:
                child.log_final({"corr_sharpe": 0.5 + trial})
        sweep.log_final({"best_corr_sharpe": 2.5})
    children = client.search_runs([client.get_run(sweep.run_id).info.experiment_id],
                                  filter_string=f"tags.{PARENT_TAG} = '{sweep.run_id}'", order_by=["attributes.run_name"])
    assert [c.info.run_name for c in children] == ["trial 0", "trial 1", "trial 2"]
    assert [c.data.params["lr"] for c in children] == ["0.01", "0.001", "0.0001"]
    assert [c.data.metrics["corr_sharpe"] for c in children] == [0.5, 1.5, 2.5]
    assert all(c.info.status == "FINISHED" for c in children)
    assert client.get_run(sweep.run_id).data.params == {"trials": "3"}


def test_a_failing_block_marks_the_run_failed_and_raises(store):
    config, client = store
    with pytest.raises(ValueError, match="boom"):
        with tracked_run("cv", "folds", config=config) as run:
            raise ValueError("boom")
    assert client.get_run(run.run_id).info.status == "FAILED"


def test_secrets_never_reach_params_tags_or_artifacts(store, tmp_path, monkeypatch):
    config, client = store
    monkeypatch.setenv("NUMERAI_SECRET_KEY", "S3CRETVALUE123")
    settings = {"secret_key": "abc", "api_token": "t", "db_password": "p", "Numerai_Secret": "q",
                "note": "key=S3CRETVALUE123", "lr": 0.1}
    leaky = tmp_path / "leaky.txt"
    leaky.write_text("NUMERAI_SECRET_KEY=S3CRETVALUE123")
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing to see")
    with tracked_run("train", "secretive", settings, tags={"auth_token": "t", "where": "S3CRETVALUE123"},
                     config=config) as run:
        run.log_artifacts([leaky, clean])
    logged = client.get_run(run.run_id)
    assert logged.data.params == {"lr": "0.1"}
    assert "auth_token" not in logged.data.tags and "where" not in logged.data.tags
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["clean.txt"]
    assert "S3CRETVALUE123" not in repr(logged.to_dictionary())


def test_a_failure_mid_run_is_one_warning_and_tracking_stays_off(store, capfd):
    config, client = store
    with tracked_run("train", "deleted-under-it", config=config) as run:
        run.log_metrics(0, {"train_loss": 0.3})
        client.delete_run(run.run_id)  # MLflow now refuses every write to it
        run.log_metrics(1, {"train_loss": 0.2})
        run.log_metrics(2, {"train_loss": 0.1})
        with run.child("fold 0") as child:
            child.log_final({"corr_mean": 0.01})
        assert not run.active and not child.active
        reached_the_end = True
    assert reached_the_end
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Warning: MLflow tracking off for the rest of this run"), err
    assert [m.value for m in client.get_metric_history(run.run_id, "train_loss")] == [0.3]


def test_an_unreachable_server_is_one_warning_and_the_block_runs(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    config = tracking_config(config_base.SettingsFile(tmp_path / "numerflow.toml", {}))
    assert config.uri == f"http://127.0.0.1:{port}"
    with tracked_run("train", "offline", {"lr": 0.1}, config=config) as run:
        run.log_metrics(0, {"train_loss": 0.3})
        with run.child("trial 0") as child:
            child.log_final({"corr_mean": 0.01})
        run.log_artifacts([tmp_path])
        ran = True
    assert ran and run.run_id is None
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and err[0].startswith("Warning:"), err


@pytest.mark.parametrize("uri", ["not a uri", "mlflow.db", ""])
def test_a_tracking_uri_that_is_not_a_uri_is_one_warning(tmp_path, monkeypatch, capfd, uri):
    monkeypatch.chdir(tmp_path)
    with tracked_run("train", "x", {"lr": 0.1}, config=TrackingConfig(uri=uri)) as run:
        run.log_final({"corr_mean": 0.01})
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a URI" in err[0], err
    assert list(tmp_path.iterdir()) == []  # no store made under a stray name


def test_where_runs_go(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    none = config_base.SettingsFile(tmp_path / "numerflow.toml", {})
    assert tracking_config(none) == TrackingConfig(DEFAULT_URI, True) == TrackingConfig("sqlite:///mlflow.db")
    team = config_base.SettingsFile(tmp_path / "numerflow.toml", {"tracking": {"uri": "http://team:5000"}})
    assert tracking_config(team).uri == "http://team:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_config(team).uri == "http://env:5000"
    off = config_base.SettingsFile(tmp_path / "numerflow.toml", {"tracking": {"enabled": False}})
    assert tracking_config(off).enabled is False and tracking_config(none, enabled=False).enabled is False
    with pytest.raises(ConfigError, match="unknown key"):
        tracking_config(config_base.SettingsFile(tmp_path / "numerflow.toml", {"tracking": {"url": "x"}}))


def test_toml_tracking_table_is_read_from_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NUMERFLOW_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "numerflow.toml").write_text('[tracking]\nuri = "sqlite:///runs.db"\nenabled = false\n')
    assert tracking_config() == TrackingConfig("sqlite:///runs.db", enabled=False)


def test_tracking_off_imports_no_mlflow_and_writes_nothing(tmp_path):
    code = ("import sys\nimport numerflow, numerflow.tracking as t\n"
            "assert 'mlflow' not in sys.modules, 'import numerflow imported mlflow'\n"
            "with t.tracked_run('train', 'x', {'lr': 1}, config=t.TrackingConfig('sqlite:///m.db', False)) as run:\n"
            "    run.log_final({'corr_mean': 0.1})\n"
            "assert 'mlflow' not in sys.modules, 'tracking off imported mlflow'\nprint('ok')")
    assert fresh_python(code, cwd=tmp_path).strip() == "ok"
    assert list(tmp_path.iterdir()) == []


def test_a_recorded_run_replays_as_the_same_run(store, tmp_path):
    """What a command records (no MLflow) and the logging process replays: params, tags, metric
    steps with their recorded times, a child, artifacts."""
    config, client = store
    (tmp_path / "model.json").write_text("{}")
    recorded = RecordedRun("sweep", "replayed", {"trials": 2}, {DATA_VERSION_TAG: "v5.2"})
    recorded.log_metrics(1, {"train_loss": 0.3, "skip": "x"})
    recorded.log_metrics(2, {"train_loss": 0.2})
    with recorded.child("trial 0", {"lr": 0.01}) as child:
        child.log_final({"score": 0.5})
    recorded.log_artifacts([tmp_path / "model.json"])
    spec = json.loads(json.dumps(recorded.spec))  # as it crosses to the logging process
    assert replay(spec, config)
    [run] = client.search_runs([client.get_experiment_by_name("numerflow").experiment_id],
                               "attributes.run_name = 'replayed'")
    assert run.data.params == {"trials": "2"} and run.data.tags[DATA_VERSION_TAG] == "v5.2"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.3), (2, 0.2)]
    assert history[0].timestamp == spec["ops"][0]["time"] and "skip" not in run.data.metrics
    [child] = client.search_runs([run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{run.info.run_id}'")
    assert child.data.params == {"lr": "0.01"} and child.data.metrics == {"score": 0.5}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.json"]


def test_preflight_catches_what_a_command_can_check_at_once(tmp_path):
    assert preflight(f"sqlite:///{tmp_path / 'm.db'}") is None
    assert "not a URI" in preflight("mlflow.db")
    assert "not writable" in preflight(f"sqlite:///{tmp_path / 'missing' / 'm.db'}")
    assert "no tracking server answers" in preflight(f"http://127.0.0.1:{closed_port()}")


def test_wait_from_numerflow_toml_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMERFLOW_TRACK_WAIT", raising=False)
    table = config_base.SettingsFile(tmp_path / "numerflow.toml", {"tracking": {"wait": True}})
    assert tracking_config(table).wait is True
    none = config_base.SettingsFile(tmp_path / "numerflow.toml", {})
    assert tracking_config(none).wait is False
    monkeypatch.setenv("NUMERFLOW_TRACK_WAIT", "1")
    assert tracking_config(none).wait is True
    with pytest.raises(ConfigError, match="wait must be true or false"):
        tracking_config(config_base.SettingsFile(tmp_path / "numerflow.toml", {"tracking": {"wait": "yes"}}))
