"""numerflow ui: MLflow's UI on a real store, loaded in headless Chromium as a user would, and its
bad input (no mlflow extra, a port in use)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from numerflow.cli import app
from tests.helpers import runner



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_the_mlflow_extra_it_is_one_error_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as where the extra is not installed: import fails
    result = runner.invoke(app, ["ui"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ['Error: numerflow ui needs MLflow: pip install "numerflow[mlflow]"']


def test_a_port_in_use_is_one_error_line(tmp_path):
    pytest.importorskip("mlflow", reason='numerflow ui needs the mlflow extra: pip install "numerflow[mlflow]"')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["ui", "--port", str(port), "--store", f"sqlite:///{tmp_path / 'm.db'}"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: cannot listen on 127.0.0.1:{port}") and "--port" in lines[0]
    assert not (tmp_path / "m.db").exists()


def test_a_port_out_of_range_is_a_usage_error():
    result = runner.invoke(app, ["ui", "--port", "70000"])
    assert result.exit_code == 2 and "--port" in result.output


def log_a_train_and_a_sweep(store_uri: str) -> str:
    from numerflow.tracking import TrackingConfig, tracked_run

    config = TrackingConfig(store_uri)
    with tracked_run("train", "mlp-train", {"epochs": 3, "layers": "64"}, config=config) as run:
        for epoch, loss in enumerate([0.30, 0.25, 0.22]):
            run.log_metrics(epoch, {"train_loss": loss, "validation_corr": 0.01 + epoch / 200})
        run.log_final({"corr_mean": 0.021, "corr_sharpe": 1.1})
    with tracked_run("sweep", "sweep-wide", {"trials": 3}, config=config) as sweep:
        for trial in range(3):
            with sweep.child(f"trial-{trial}", {"lr": 10 ** -(trial + 2)}) as child:
                child.log_final({"corr_sharpe": 0.5 + trial / 2})
        sweep.log_final({"corr_sharpe": 1.5})
    import mlflow

    return mlflow.MlflowClient(store_uri).get_run(run.run_id).info.experiment_id


def wait_for_http(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"numerflow ui exited early with {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds} s")


@pytest.mark.slow
def test_the_browser_lists_the_runs_of_a_train_and_a_sweep(tmp_path):
    pytest.importorskip("mlflow", reason='numerflow ui needs the mlflow extra: pip install "numerflow[mlflow]"')
    pytest.importorskip("selenium", reason="the browser test needs selenium (the dev extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    store_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = log_a_train_and_a_sweep(store_uri)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "numerflow", "ui", "--port", str(port), "--store", store_uri],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # its own group: the MLflow server under it stops with it
    browser = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, seconds=90)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
            options.add_argument(argument)
        browser = webdriver.Chrome(service=Service(chromedriver), options=options)
        browser.get(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs")
        WebDriverWait(browser, 60).until(lambda b: "mlp-train" in b.page_source and "sweep-wide" in b.page_source)
        time.sleep(1)  # let the table finish drawing for the picture
        screenshot = Path(os.environ.get("NUMERFLOW_UI_SCREENSHOT") or tmp_path / "mlflow-ui.png")
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.quit()
        server.send_signal(signal.SIGINT)  # Ctrl+C, as a user stops it
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output, _ = server.communicate()
            pytest.fail("numerflow ui did not stop on Ctrl+C")
    assert f"open http://127.0.0.1:{port} in a browser" in output
    assert server.returncode == 0, output
    with socket.socket() as sock:  # the MLflow server stopped with it: the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
