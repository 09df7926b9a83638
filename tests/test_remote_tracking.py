"""A lab's shared tracking server: a real `mlflow server` on localhost, a run launched against it, read back
on the Runs page."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, run_to_end, tiny_cfg
from genesis import launcher, tracking

pytestmark = pytest.mark.slow


@pytest.fixture()
def mlflow_server(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("mlflow server did not start")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_launched_run_lands_on_the_shared_server(home, monkeypatch, mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    store = tracking.Store.default()
    assert not store.is_local and store.tracking_uri == mlflow_server
    run_id = launcher.launch(tiny_cfg(home, "train.max_steps=4", "train.log_every=2", "name=remote-run"))
    run = run_to_end(store, run_id, 240, 1)
    assert run.info.status == "FINISHED", launcher.log_tail(store, run_id, 40)
    assert "train/loss" in run.data.metrics and "val/loss" in run.data.metrics
    names = {a.path for a in store.client.list_artifacts(run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= names
    at = AppTest.from_file(str(ROOT / "views" / "runs.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [df.value for df in at.dataframe]
    assert any((frame["name"] == "remote-run").any() for frame in shown if "name" in frame)
