"""MLflow tracking of train, cv, sweep, ensemble, validate and compare (issue 28 point 1), through
the CLI on tiny synthetic data into a real SQLite store, read back with MLflow's own client. The
commands log from a background process; NUMERFLOW_TRACK_WAIT=1 makes them wait for it, so the
store can be read right after (the last tests check the background path itself)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from numerflow.cli import app
from numerflow.config import PrepareConfig
from numerflow.provenance import data_fingerprint
from numerflow.tracking import DATA_VERSION_TAG, EXPERIMENT, FINGERPRINT_TAG, KIND_TAG, PARENT_TAG
from numerflow.tracking_jobs import FAILED_MARK, LOG_FILE, store_lock
from tests.helpers import runner

mlflow = pytest.importorskip("mlflow", reason='MLflow tracking needs the mlflow extra: pip install "numerflow[mlflow]"')

SECRET = "trackingTestSecret9f3"  # NUMERAI_SECRET_KEY while every tracked command runs
TINY = ["--layers", "8", "--batch-size", "256", "--device", "cpu"]


def ok(result):
    assert result.exit_code == 0, result.output + str(result.exception)
    return result


@pytest.fixture(scope="module")
def tracked(synthetic_dir, tmp_path_factory):
    """One folder and one SQLite store: prepare, then train, cv, sweep, validate, compare and
    ensemble, each through the CLI with tracking on. Returns (folder, client, outputs by kind)."""
    from numerflow.stages.prepare import prepare

    root = tmp_path_factory.mktemp("tracked")
    prepared = prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                     out_dir=root / "data" / "prepared")).out_dir
    (root / "space.toml").write_text('lr = [0.005, 0.02]\nlayers = "8"\nepochs = 2\nbatch_size = 256\n'
                                     'device = "cpu"\n')
    uri = f"sqlite:///{root / 'mlflow.db'}"
    commands = {
        "train": ["train", "--data", prepared, "--epochs", "3", *TINY],
        "cv": ["cv", "--data", prepared, "--folds", "2", "--embargo", "2", "--epochs", "2", "--name", "c", *TINY],
        "sweep": ["sweep", "--space", "space.toml", "--data", prepared, "--trials", "2", "--pruner", "none",
                  "--name", "s"],
        "validate": ["validate", "--model", "models/model.pt", "--data", prepared / "validation.parquet"],
        "compare": ["compare", "reports/model", "sweeps/s", "--data", prepared / "validation.parquet", "--device", "cpu"],
        "ensemble": ["ensemble", "cv/c", "--size", "2"],
    }
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("NUMERFLOW_TRACK", "1")
        patch.setenv("NUMERFLOW_TRACK_WAIT", "1")
        patch.setenv("NUMERAI_SECRET_KEY", SECRET)
        for kind, args in commands.items():
            outputs[kind] = ok(runner.invoke(app, list(map(str, args)))).output
    return root, mlflow.MlflowClient(uri), outputs


def runs_of(client, kind: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = '{kind}'")


def children_of(client, run) -> list:
    return client.search_runs([run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{run.info.run_id}'")


def artifacts(client, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.mark.slow
def test_train_logs_settings_an_epoch_history_tags_and_model_json(tracked):
    root, client, outputs = tracked
    [run] = runs_of(client, "train")
    params, tags = run.data.params, run.data.tags
    assert params["epochs"] == "3" and params["layers"] == "8" and params["batch_size"] == "256"
    assert len(history(client, run, "train_loss")) == 3 and [s for s, _ in history(client, run, "val_mean")] == [1, 2, 3]
    assert run.data.metrics["best_epoch"] in (1, 2, 3) and "best_val_mean" in run.data.metrics
    assert tags[DATA_VERSION_TAG] == "synthetic"
    assert tags[FINGERPRINT_TAG] == data_fingerprint(root / "data" / "prepared")  # what the reports record
    assert run.info.status == "FINISHED" and "model.json" in artifacts(client, run)
    assert "Warning" not in outputs["train"]


@pytest.mark.slow
def test_cv_is_a_parent_with_a_child_per_fold(tracked):
    _, client, _ = tracked
    [run] = runs_of(client, "cv")
    assert "numerai_corr_mean" in run.data.metrics and "report.json" in artifacts(client, run)
    folds = children_of(client, run)
    assert sorted(f.data.params["fold"] for f in folds) == ["1", "2"]
    for fold in folds:
        assert "numerai_corr_mean" in fold.data.metrics and len(history(client, fold, "train_loss")) == 2


@pytest.mark.slow
def test_sweep_is_a_parent_with_a_child_per_trial(tracked):
    root, client, _ = tracked
    [run] = runs_of(client, "sweep")
    assert run.data.metrics["trials"] == 2 and {"trials.csv", "best.json"} <= artifacts(client, run)
    trials = children_of(client, run)
    assert len(trials) == 2 and all(t.data.params["lr"] in ("0.005", "0.02") for t in trials)
    assert all("score" in t.data.metrics for t in trials)


@pytest.mark.slow
def test_validate_and_compare_log_their_scores_and_files(tracked):
    _, client, _ = tracked
    [validate] = runs_of(client, "validate")
    assert {"numerai_corr_mean", "numerai_corr_sharpe", "numerai_corr_max_drawdown"} <= set(validate.data.metrics)
    assert {"report.json", "per_era.png"} <= artifacts(client, validate)
    [compare] = runs_of(client, "compare")
    assert {"compare.csv", "cumulative.png"} <= artifacts(client, compare)
    rows = children_of(client, compare)
    assert sorted(r.data.params["model"] for r in rows) == ["model", "s:best"]  # compare.csv's model names
    assert all("corr_mean" in r.data.metrics and "payout_mean" in r.data.metrics for r in rows)


@pytest.mark.slow
def test_ensemble_logs_members_weights_and_its_score(tracked):
    _, client, _ = tracked
    [run] = runs_of(client, "ensemble")
    assert run.data.params["member_1"] == "cv/c" and run.data.metrics["weight_member_1"] == 1.0
    assert "ensemble_objective" in run.data.metrics and "ensemble.json" in artifacts(client, run)


@pytest.mark.slow
def test_no_secret_in_any_param_tag_run_name_or_file(tracked, monkeypatch):
    root, client, _ = tracked
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("NUMERFLOW_TRACK", "1")
    monkeypatch.setenv("NUMERFLOW_TRACK_WAIT", "1")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET)
    # a report folder named like the secret: its name would be the run's name and a param
    ok(runner.invoke(app, ["validate", "--model", "models/model.pt", "--report", f"reports/{SECRET}",
                           "--data", str(root / "data" / "prepared" / "validation.parquet")]))
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs_of(client, "validate")) == 2
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values(), run.info.run_name]:
            assert SECRET not in value
    for path in root.rglob("*"):  # the store itself and every artifact copy
        if path.is_file() and f"reports/{SECRET}" not in path.as_posix():
            assert SECRET.encode() not in path.read_bytes(), path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def validate_here(tracked, tmp_path, monkeypatch) -> list[str]:
    """`numerflow validate` of the tracked project's model, run from an empty tmp_path with tracking
    on and no MLFLOW_TRACKING_URI: what it leaves there is what tracking wrote."""
    root, _, _ = tracked
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NUMERFLOW_TRACK", "1")
    return ["validate", "--model", str(root / "models" / "model.pt"), "--no-report",
            "--data", str(root / "data" / "prepared" / "validation.parquet")]


@pytest.mark.slow
def test_no_track_writes_nothing_and_an_unreachable_server_is_one_warning(validate_here, tmp_path, monkeypatch):
    validate = validate_here
    ok(runner.invoke(app, [*validate, "--no-track"]))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    result = ok(runner.invoke(app, validate))
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "no tracking server answers" in warnings[0], result.output
    assert "Traceback" not in result.output and "numerai_corr" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_enabled_false_in_numerflow_toml_writes_nothing(validate_here, tmp_path):
    (tmp_path / "numerflow.toml").write_text("[tracking]\nenabled = false\n")
    ok(runner.invoke(app, validate_here))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numerflow.toml"]


@pytest.mark.slow
def test_without_mlflow_importable_train_runs_and_imports_nothing(tracked, tmp_path):
    """The Python API in a fresh process where `import mlflow` fails (as without the extra)."""
    root, _, _ = tracked
    code = ("import sys; sys.modules['mlflow'] = None; import numerflow; "
            f"r = numerflow.train(data={str(root / 'data' / 'prepared')!r}, out='m.pt', layers=[8], epochs=1, "
            "batch_size=256, device='cpu', say=None); "
            "assert r.checkpoint.is_file(); "
            "assert not any(n.startswith('mlflow.') for n in sys.modules), 'mlflow imported'; print('trained')")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMERFLOW_TRACK", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr
    assert "Warning" not in done.stderr and not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def validate_args(root: Path) -> list[str]:
    return ["validate", "--model", str(root / "models" / "model.pt"), "--no-report",
            "--data", str(root / "data" / "prepared" / "validation.parquet")]


@pytest.mark.slow
def test_without_wait_the_command_returns_first_and_its_run_appears_when_the_logger_is_done(tracked, tmp_path):
    """The test holds the store's lock, so the logging process cannot have logged anything when the
    command (a real process) returns; once the lock is free, the run appears."""
    root, _, _ = tracked
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "NUMERFLOW_TRACK_WAIT"}
    env.update(MLFLOW_TRACKING_URI=uri, NUMERFLOW_TRACK="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with store_lock(uri):
        done = subprocess.run([sys.executable, "-m", "numerflow", *validate_args(root)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "numerai_corr" in done.stdout, done.stderr
        assert "Warning" not in done.stderr and not (tmp_path / "mlflow.db").exists()
    deadline, runs = time.monotonic() + 240, []
    while not runs and time.monotonic() < deadline:
        time.sleep(2)  # the logger takes the lock back within 0.05 s; holding it, the store is never half-made
        with store_lock(uri):
            if (tmp_path / "mlflow.db").exists():
                runs = runs_of(mlflow.MlflowClient(uri), "validate")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", (tmp_path / LOG_FILE).read_text()
    assert "numerai_corr_mean" in runs[0].data.metrics and not (tmp_path / FAILED_MARK).exists()


@pytest.mark.slow
def test_a_failure_in_the_logger_goes_to_the_log_and_the_next_command_says_so_once(tracked, tmp_path, monkeypatch):
    root, _, _ = tracked
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.db").write_text("not a SQLite database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'broken.db'}")
    monkeypatch.setenv("NUMERFLOW_TRACK", "1")
    monkeypatch.delenv("NUMERFLOW_TRACK_WAIT", raising=False)
    first = ok(runner.invoke(app, validate_args(root)))
    assert "Warning" not in first.output
    deadline = time.monotonic() + 240
    while not (tmp_path / FAILED_MARK).exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert (tmp_path / FAILED_MARK).exists()
    log = (tmp_path / LOG_FILE).read_text()
    assert "not logged to MLflow: validate" in log and "Warning:" in log, log
    monkeypatch.setenv("NUMERFLOW_TRACK_WAIT", "1")  # this one's own failure then is its own warning
    second = ok(runner.invoke(app, validate_args(root)))
    naming_the_log = [line for line in second.output.splitlines() if str(LOG_FILE) in line]
    assert len(naming_the_log) == 1 and naming_the_log[0].startswith("Warning:"), second.output
    assert not (tmp_path / FAILED_MARK).exists() and "Traceback" not in second.output
