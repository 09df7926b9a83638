"""The launcher with real trainer subprocesses and a real MLflow UI on the same SQLite store."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import tiny_cfg
from genesis import checkpoint, launcher, tracking


def cfg(home, *extra):
    return tiny_cfg(home, "train.log_every=2", "train.checkpoint_every=4", *extra)


def wait_status(store, run_id, statuses, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = store.run(run_id).info.status
        if status in statuses:
            return status
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {store.run(run_id).info.status}; log:\n"
                         + launcher.log_tail(store, run_id, 40))


def wait_metric(store, run_id, key="train/loss", timeout=180):
    """Wait until the run has logged `key`; fails (with the log) on timeout instead of returning silently."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if key in store.run(run_id).data.metrics:
            return
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} logged no {key} in {timeout} s; log:\n" + launcher.log_tail(store, run_id, 40))


STOPPED = re.compile(r"stopped by signal (\S+) at step (\d+); saved last.pt")


def test_launch_runs_to_finished_and_is_idempotent(home):
    store = tracking.Store.default()
    run_id = launcher.launch(cfg(home, "train.max_steps=6"), request_id="req-1")
    again = launcher.launch(cfg(home, "train.max_steps=6"), request_id="req-1")
    assert again == run_id
    run = store.run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags[tracking.TAG_PID]
    # only the params of its kind: a diffusion run has model.* and diffusion.*, no flow.*
    assert run.data.params["model.patch_size"] and run.data.params["diffusion.timesteps"]
    assert not [k for k in run.data.params if k.startswith("flow.")]
    assert wait_status(store, run_id, {"FINISHED", "FAILED"}) == "FINISHED", launcher.log_tail(store, run_id, 40)
    frame, _ = store.search()
    assert len(frame) == 1
    assert "done:" in launcher.log_tail(store, run_id)


def test_stop_saves_last_pt_in_the_signal_handler(home):
    """SIGTERM: the trainer itself saves last.pt at the step it stopped (no periodic save can have written it:
    checkpoint_every is beyond the run) and ends KILLED; the launcher did not have to SIGKILL."""
    store = tracking.Store.default()
    run_id = launcher.launch(cfg(home, "train.epochs=100", "train.checkpoint_every=100000", "train.log_every=1"))
    wait_metric(store, run_id)
    assert launcher.stop(run_id, timeout=60) == "KILLED"
    log = launcher.log_tail(store, run_id, 400)
    stops = STOPPED.findall(log)
    assert len(stops) == 1, log[-3000:]
    sig, step = stops[0]
    assert sig in (str(int(signal.SIGTERM)), "SIGTERM", "Signals.SIGTERM"), sig
    last = store.artifact_dir(run_id) / "checkpoints" / "last.pt"
    assert checkpoint.load_state(last)["step"] == int(step) >= 1
    run = store.run(run_id)
    assert run.data.tags[tracking.TAG_STOP] == "SIGTERM"
    assert launcher.KILLED_AFTER_TIMEOUT not in log
    assert launcher.KILLED_AFTER_TIMEOUT not in run.data.tags.get(tracking.TAG_ERROR, "")


def test_stop_marks_a_trainer_that_ignores_sigterm(home):
    """A trainer that does not end within the timeout is SIGKILLed, and the run says so (tag and log)."""
    store = tracking.Store.default()
    run_id = launcher.launch(cfg(home, "train.epochs=100"))
    pid = int(store.run(run_id).data.tags[tracking.TAG_PID])
    os.kill(pid, signal.SIGSTOP)  # a hung trainer (stopped before it trained): SIGTERM stays pending
    assert launcher.stop(run_id, timeout=1) == "KILLED"
    assert not tracking.process_alive(pid)
    run = store.run(run_id)
    assert run.data.tags[tracking.TAG_STOP].startswith(launcher.KILLED_AFTER_TIMEOUT)
    assert launcher.KILLED_AFTER_TIMEOUT in run.data.tags[tracking.TAG_ERROR]
    assert launcher.KILLED_AFTER_TIMEOUT in launcher.log_tail(store, run_id, 5)
    assert not STOPPED.search(launcher.log_tail(store, run_id, 400))


def test_crash_at_start_fails_with_reason_and_log(home):
    store = tracking.Store.default()
    run_id = launcher.launch(cfg(home, "train.device=cuda"))
    assert wait_status(store, run_id, {"FAILED", "FINISHED"}) == "FAILED"
    assert "cuda" in store.run(run_id).data.tags[tracking.TAG_ERROR].lower()
    assert "cuda" in launcher.log_tail(store, run_id).lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_run_visible_in_mlflow_ui(trained):
    """`mlflow ui` on the same SQLite store serves a run the trainer logged (the session's trained home)."""
    store = tracking.Store(f"sqlite:///{trained.root / 'mlruns' / 'mlflow.db'}", str(trained.root / "mlruns" / "artifacts"))
    run_id = trained.diffusion_run
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.tracking_uri,
                           "--default-artifact-root", store.artifact_root, "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
                body = json.load(urllib.request.urlopen(url, timeout=5))
            except OSError:
                time.sleep(1)
        assert body is not None, "mlflow ui did not answer in 90 s"
        assert body["run"]["info"]["run_id"] == run_id and body["run"]["info"]["status"] == "FINISHED"
        assert any(m["key"] == "train/loss" for m in body["run"]["data"]["metrics"])
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_every_form_field_has_a_readable_label():
    """No field of the Train form falls back to its key ('Dom width' for flow.dom_width)."""
    from genesis import launcher

    keys = [s["key"] for kind in ("diffusion", "flow") for specs in launcher.form_specs(kind).values() for s in specs]
    assert keys and not [k for k in keys if k not in launcher.FORM_LABELS]
