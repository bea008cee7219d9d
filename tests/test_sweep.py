"""numerflow sweep: real sweeps on a tiny prepared set — with --jobs 2 in worker processes (finishes,
reproducible with the same seed, its best checkpoint predicts), killed with SIGKILL and resumed,
on a real local Ray cluster — and bad input refused before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from numerflow.cli import app
from numerflow.config import PrepareConfig
from tests.helpers import runner

pytestmark = pytest.mark.slow  # sweeps train trials for real, some on Ray, some killed: left out of the quick loop


RAY_MISSING = "the ray extra is not installed (pip install 'numerflow[ray]')"
try:
    import ray as _ray  # noqa: F401
    RAY_ADDRESS_ERROR = "cannot reach a Ray cluster"
except ImportError:  # the suite passes without the extra: --ray then says what to install
    RAY_ADDRESS_ERROR = "--ray needs Ray: pip install 'numerflow[ray]'"

SPACE = """
lr = {low = 1e-3, high = 3e-2, log = true}
layers = ["8", "16,8"]
dropout = {low = 0.0, high = 0.5}
loss = ["corr", "mse"]

[fixed]
epochs = 3
batch_size = 256
device = "cpu"
"""
TIMING = ["seconds", "finished_s"]  # the only columns allowed to differ between two runs


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory) -> Path:
    from numerflow.stages.prepare import prepare

    out = tmp_path_factory.mktemp("sweep") / "prepared"
    return prepare(PrepareConfig(data_dir=synthetic_dir.parent, feature_set="all", downsample=1, embargo=4,
                                 out_dir=out)).out_dir


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SPACE)
    return path


def numerflow_cli(*args, cwd: Path, check: bool = True, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "numerflow", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def sweep_args(space: Path, prepared: Path, name: str, trials: int, *more) -> list:
    return ["sweep", "--space", space, "--data", prepared, "--trials", trials, "--name", name, "--seed", 3, *more]


def table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "trials.csv").drop(columns=TIMING)


def test_jobs_2_sweep_finishes_is_reproducible_and_its_best_checkpoint_predicts(space, prepared, synthetic_dir, tmp_path):
    for name in ("a", "b"):
        out = numerflow_cli(*sweep_args(space, prepared, name, 4, "--jobs", 2), cwd=tmp_path)
        assert "Best trial" in out.stdout
    a, b = table(tmp_path / "sweeps" / "a"), table(tmp_path / "sweeps" / "b")
    assert len(a) == 4 and set(a["state"]) <= {"COMPLETE", "PRUNED"}
    assert a["lr"].nunique() == 4  # four different trials were sampled...
    pd.testing.assert_frame_equal(a, b)  # ...and the same four again, scored the same, with the same seed
    best = json.loads((tmp_path / "sweeps" / "a" / "best.json").read_text())
    complete = a[a["state"] == "COMPLETE"]
    assert best["score"] == pytest.approx(complete["score"].max())
    assert best["params"]["lr"] == pytest.approx(complete.loc[complete["score"].idxmax(), "lr"])
    assert (tmp_path / "sweeps" / "a" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "sweeps" / "a" / "trials").glob("*.pt"))  # only the best checkpoint is kept

    out = numerflow_cli("predict", "--model", tmp_path / "sweeps" / "a" / "best.pt",
                        "--data", synthetic_dir / "live.parquet", "--out", tmp_path / "preds.csv", cwd=tmp_path)
    predictions = pd.read_csv(tmp_path / "preds.csv")
    assert len(predictions) > 0 and predictions["prediction"].between(0, 1).all(), out.stdout
    # The checkpoint is the best trial's own: validate scores it to the trial's era-Spearman.
    from numerflow.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "sweeps" / "a" / "best.pt")
    kept = checkpoint["metrics"][checkpoint["best_epoch"] - 1]
    assert kept["corr_mean"] == pytest.approx(best["score"])
    report = json.loads(numerflow_cli("validate", "--model", tmp_path / "sweeps" / "a" / "best.pt", "--data",
                                      prepared / "validation.parquet", "--no-report", "--json", cwd=tmp_path).stdout)
    assert report["numerai_corr"]["mean"] == pytest.approx(best["score"], rel=1e-9)
    assert report["spearman"]["mean"] == pytest.approx(kept["val_mean"], rel=1e-9)

    shown = numerflow_cli("sweep", "--show", "a", cwd=tmp_path).stdout
    assert shown.splitlines()[0].split()[:3] == ["number", "state", "score"]
    assert shown.splitlines()[1].split()[0] == str(best["number"])  # best first


def test_a_killed_sweep_resumes_where_it_stopped(space, prepared, tmp_path):
    folder = tmp_path / "sweeps" / "k"
    process = subprocess.Popen([sys.executable, "-m", "numerflow", *map(str, sweep_args(space, prepared, "k", 6))],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (folder / "trials.csv").is_file() and len(pd.read_csv(folder / "trials.csv")) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the sweep ended before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = table(folder)
    assert 2 <= len(before) < 6

    out = numerflow_cli(*sweep_args(space, prepared, "k", 6, "--resume"), cwd=tmp_path)
    assert "Resuming" in out.stdout
    after = table(folder)
    finished = after[after["state"].isin(["COMPLETE", "PRUNED"])]
    assert len(finished) == 6
    # What was finished before the kill is kept as it was, not run again.
    done = before[before["state"].isin(["COMPLETE", "PRUNED"])]
    pd.testing.assert_frame_equal(after.set_index("number").loc[done["number"]].reset_index(), done.reset_index(drop=True))
    # A trial killed mid-run was run again with the same parameters.
    for _, killed in after[after["state"] == "FAIL"].iterrows():
        assert ((finished["lr"] == killed["lr"]) & (finished["layers"] == killed["layers"])).any()
    assert (folder / "best.pt").is_file()


def test_a_sweep_runs_on_a_local_ray_cluster(space, prepared, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    import numerflow

    monkeypatch.chdir(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        result = numerflow.sweep(space=space, data=prepared, trials=3, ray="auto", cpus_per_trial=1, name="r",
                                 seed=3, say=None)
    finally:
        ray.shutdown()
    rows = pd.read_csv(tmp_path / "sweeps" / "r" / "trials.csv")
    assert len(rows) == 3 and result.trials == 3
    assert set(rows["state"]) <= {"COMPLETE", "PRUNED"}
    assert (rows["state"] == "COMPLETE").any()
    from numerflow.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint["train_config"]["lr"] == pytest.approx(result.best["lr"])


def end_process_group(group: int, grace: float = 10.0) -> None:
    """SIGTERM to a process group this test started, SIGKILL to whatever is left after `grace`."""
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A real local Ray cluster for driver subprocesses: `ray start --head --block` in its own process
    group, ended by its group id. Its own temp folder keeps it out of /tmp/ray/ray_current_cluster,
    where another process's plain ray.init() would find and join it; token authentication is off
    (a throwaway cluster on this machine: no token to hand to the drivers)."""
    pytest.importorskip("ray", reason=RAY_MISSING)
    import shutil
    import socket
    import tempfile

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = Path(tempfile.mkdtemp(prefix="nfray", dir="/tmp"))  # short: Ray's socket paths live under it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "ray_head.log"
    with open(log, "w") as out:
        head = subprocess.Popen([Path(sys.executable).parent / "ray", "start", "--head", "--block", "--num-cpus", "2",
                                 "--port", str(port), "--include-dashboard=false", f"--temp-dir={temp}"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        end_process_group(head.pid)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_killed_ray_sweep_resumes_and_ends_with_the_trials_asked(space, prepared, tmp_path, ray_head):
    folder = tmp_path / "sweeps" / "rk"

    def ray_sweep(trials: int, *more) -> list[str]:
        return [str(a) for a in sweep_args(space, prepared, "rk", trials, "--ray", ray_head, "--cpus-per-trial", 1,
                                           *more)]

    driver = subprocess.Popen([sys.executable, "-m", "numerflow", *ray_sweep(4)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:  # Tune has saved its state, trials are running
        if list(folder.glob("ray/experiment_state-*.json")) and len(list(folder.glob("ray/trainable_*"))) >= 2:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the sweep ended before it could be killed: " + driver.stderr.read().decode()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (folder / "trials.csv").exists()  # the killed driver published nothing

    out = numerflow_cli(*ray_sweep(4, "--resume"), cwd=tmp_path)
    assert "Resuming the Ray Tune run" in out.stdout
    resumed = table(folder)
    assert list(resumed["number"]) == [0, 1, 2, 3] and set(resumed["state"]) <= {"COMPLETE", "PRUNED"}
    assert resumed["lr"].nunique() == 4

    # --trials may grow on --resume: one more Tune run draws the rest, the earlier trials kept as they were.
    numerflow_cli(*ray_sweep(6, "--resume"), cwd=tmp_path)
    grown = table(folder)
    assert len(grown) == 6 and set(grown["state"]) <= {"COMPLETE", "PRUNED"} and grown["lr"].nunique() == 6
    pd.testing.assert_frame_equal(grown.head(4), resumed)
    best = json.loads((folder / "best.json").read_text())
    assert best["score"] == pytest.approx(grown.loc[grown["state"] == "COMPLETE", "score"].max())
    assert (folder / "best.pt").is_file()


BAD_SPACES = {
    "unknown option": ("lr = [0.01]\nlearning_rat = [0.1]\n", "unknown option 'learning_rat'"),
    "low above high": ("dropout = {low = 0.6, high = 0.1}\n", "low (0.6) > high (0.1)"),
    "empty choices": ("layers = []\n", "empty list of choices"),
    "bad choice": ("loss = [\"corr\", \"huber\"]\n", "huber"),
    "unknown fixed": ("lr = [0.01]\n[fixed]\nepoch = 2\n", "unknown option 'epoch'"),
    "fixed twice": ("lr = [0.01]\nepochs = 2\n[fixed]\nepochs = 3\n", "epochs given both at the top level and in [fixed]"),
    "only fixed": ("epochs = 2\n", "nothing to search"),
    "bad top-level value": ("lr = [0.01]\ndropout = 1.5\n", "dropout"),
}


def test_a_top_level_scalar_is_fixed_as_in_ray_tunes_param_space(tmp_path):
    from numerflow.sweeps.space import load_space

    top = tmp_path / "top.toml"
    top.write_text('lr = [0.01, 0.02]\nepochs = 2\nlayers = "16,8"\nbatchnorm = false\n')
    table = tmp_path / "table.toml"
    table.write_text('lr = [0.01, 0.02]\n[fixed]\nepochs = 2\nlayers = "16,8"\nbatchnorm = false\n')
    mixed = tmp_path / "mixed.toml"
    mixed.write_text('lr = [0.01, 0.02]\nepochs = 2\n[fixed]\nlayers = "16,8"\nbatchnorm = false\n')
    spaces = [load_space(path) for path in (top, table, mixed)]
    for space in spaces:
        assert space.names == ["lr"] and space.fixed == {"epochs": 2, "layers": "16,8", "batchnorm": False}
        config = space.train_settings({"lr": 0.02})
        assert (config.epochs, config.layers, config.batchnorm, config.lr) == (2, [16, 8], False, 0.02)


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_a_bad_space_is_one_error_line_and_writes_nothing(case, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, expected = BAD_SPACES[case]
    (tmp_path / "bad.toml").write_text(text)
    result = runner.invoke(app, ["sweep", "--space", "bad.toml", "--data", str(prepared)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error: ")
    assert expected in result.output
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("args,code,expected", [
    (["--trials", "0"], 2, "--trials"),
    (["--ray", "127.0.0.1:1"], 1, RAY_ADDRESS_ERROR),
])
def test_bad_options_are_one_error_and_write_nothing(args, code, expected, space, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "--space", str(space), "--data", str(prepared), *args])
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sweeps").exists()


def test_an_existing_sweep_is_not_overwritten_without_resume(space, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps" / "sweep").mkdir(parents=True)
    result = runner.invoke(app, ["sweep", "--space", str(space), "--data", str(prepared)])
    assert result.exit_code == 1 and "--resume" in result.output
    assert list((tmp_path / "sweeps" / "sweep").iterdir()) == []


def test_cv_sweep_scores_each_trial_as_numerflow_cv_does(prepared, tmp_path, monkeypatch):
    import numerflow

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "cv.toml"
    space.write_text('lr = {low = 1e-3, high = 3e-2, log = true}\nlayers = ["8", "16,8"]\n\n'
                     '[fixed]\nepochs = 2\nbatch_size = 256\ndevice = "cpu"\n\n[cv]\nfolds = 3\nembargo = 2\n')
    result = numerflow.sweep(space=space, data=prepared, trials=2, cv=True, pruner="none", seed=1, say=None)
    rows = pd.read_csv(result.trials_csv)
    assert list(rows["state"]) == ["COMPLETE", "COMPLETE"] and list(rows["folds"]) == [3, 3]  # one step per fold
    assert "epochs" not in rows and "best_epoch" not in rows and list(rows["scored_folds"]) == [3, 3]
    assert json.loads((result.out_dir / "best.json").read_text())["scored_folds"] == 3
    assert "over 3 folds" in str(result)
    trial = rows.iloc[0]
    report = numerflow.cv(data=prepared, layers=[int(w) for w in str(trial["layers"]).split(",")], lr=float(trial["lr"]),
                          epochs=2, batch_size=256, device="cpu", seed=1, folds=3, embargo=2, name="check", say=None)
    assert trial["score"] == pytest.approx(report.data["overall"]["numerai_corr"]["mean"], rel=1e-9)
    # The trials leave no model: the best one's settings are trained once more for best.pt.
    from numerflow.checkpoint import load_checkpoint

    best = rows.loc[rows["score"].idxmax()]
    assert load_checkpoint(result.checkpoint)["train_config"]["lr"] == pytest.approx(best["lr"])


def test_cv_with_an_mmc_objective_is_refused(prepared, space, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "--space", str(space), "--data", str(prepared), "--cv",
                                      "--objective", "mmc_mean"])
    assert result.exit_code == 1 and result.output.startswith("Error: --cv scores CORR, BMC or payout"), result.output
    assert not (tmp_path / "sweeps").exists()


def test_resume_with_another_space_is_refused_and_changes_nothing(space, prepared, tmp_path, monkeypatch):
    import numerflow

    monkeypatch.chdir(tmp_path)
    numerflow.sweep(space=space, data=prepared, trials=1, seed=3, say=None)
    before = (tmp_path / "sweeps" / "sweep" / "trials.csv").read_bytes()
    space.write_text(SPACE.replace('["corr", "mse"]', '["corr"]'))
    result = runner.invoke(app, ["sweep", "--space", str(space), "--data", str(prepared), "--trials", "2",
                                      "--seed", "3", "--resume"])
    assert result.exit_code == 1 and "cannot resume with different settings: space" in result.output, result.output
    assert (tmp_path / "sweeps" / "sweep" / "trials.csv").read_bytes() == before


# --- pruning: never at a trial's last epoch ---------------------------------------------------------


def far_ahead_history(steps: int) -> list:
    """Four finished trials scoring 1.0 (unreachable) at every step: the median pruner (from step 2,
    after 4 trials) judges any real trial behind them at every step it may prune."""
    import optuna

    return [optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=1.0, params={}, distributions={},
                                      intermediate_values={step: 1.0 for step in range(1, steps + 1)})
            for _ in range(4)]


@pytest.mark.parametrize("kind", ["epochs", "cv folds"])
def test_a_trial_that_ran_all_its_epochs_is_complete_never_pruned(kind, prepared, tmp_path):
    from numerflow.config import CvConfig, TrainConfig
    from numerflow.sweeps.local import TrialJob, run_job
    from numerflow.sweeps.objective import Objective

    def job(steps: int) -> TrialJob:
        config = TrainConfig(data=prepared, layers=[8], batch_size=256, device="cpu",
                             epochs=steps if kind == "epochs" else 1)
        cv = CvConfig(**vars(config), folds=steps, embargo=0) if kind == "cv folds" else None
        return TrialJob(0, {}, config, prepared, Objective(), "median", far_ahead_history(3), tmp_path / f"{steps}.pt", cv)

    # Behind the others at step 2 of 3: pruned there, its last step never run...
    cut = run_job(job(3))
    assert cut.state == "PRUNED" and len(cut.scores) == 2
    # ...but step 2 of 2 is its last: the trial is finished, and complete with its score.
    whole = run_job(job(2))
    assert whole.state == "COMPLETE" and len(whole.scores) == 2 and 1 <= whole.best_epoch <= 2
    assert (tmp_path / "2.pt").is_file() == (kind == "epochs")  # a cv trial leaves no model
