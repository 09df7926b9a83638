"""Faults with real processes: SIGKILL + resume, crash while writing a checkpoint, concurrent runs on one
SQLite store, a dashboard restarted while runs are active, an unwritable store."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT, tiny_cfg
from genesis import checkpoint, launcher, tracking
from genesis.errors import CheckpointError
from genesis.train import train


def cfg(home, *extra):
    return tiny_cfg(home, "train.log_every=1", *extra)


def wait(predicate, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def current_step(store, run_id) -> int:
    hist = store.metric_history(run_id, "train/loss")
    return int(hist["step"].max()) if not hist.empty else 0


def test_sigkill_reconcile_and_resume_loses_at_most_one_interval(home):
    store = tracking.Store.default()
    interval = 4
    run_id = launcher.launch(cfg(home, "train.epochs=100", f"train.checkpoint_every={interval}"))
    wait(lambda: current_step(store, run_id) >= 3 * interval + 1, what="training progress")
    pid = int(store.run(run_id).data.tags[tracking.TAG_PID])
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    os.waitpid(pid, 0)
    killed_at = current_step(store, run_id)
    tracking.reconcile(store)
    assert store.run(run_id).info.status == "FAILED"
    last = store.artifact_dir(run_id) / "checkpoints" / "last.pt"
    saved = checkpoint.load_state(last)["step"]
    assert killed_at - saved <= interval + 1  # the metric may be logged one step after the save
    resumed = train(cfg(home, "train.epochs=100", f"train.max_steps={saved + 3}"), resume=last)
    assert resumed["step"] == saved + 3 and resumed["status"] == "FINISHED"


def test_crash_while_writing_checkpoint_keeps_previous_file(home, monkeypatch):
    result = train(cfg(home, "train.max_steps=2"))
    last = Path(result["checkpoint_dir"]) / "last.pt"
    before = last.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(CheckpointError, match="No space left"):
        checkpoint.save({"format": "genesis-checkpoint"}, last)
    assert last.read_bytes() == before
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    checkpoint.load_state(last)  # still a valid checkpoint


@pytest.mark.slow
def test_four_runs_and_dashboard_share_sqlite_without_lock_errors(home):
    store = tracking.Store.default()
    runs = [launcher.launch(cfg(home, "train.max_steps=12", f"name=parallel-{i}")) for i in range(4)]
    page = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=120)
    while any(store.run(r).info.status == "RUNNING" for r in runs):
        at = page.run()  # the dashboard reads the same store while all four write to it
        assert not at.exception, [e.value for e in at.exception]
        time.sleep(0.5)
    for run_id in runs:
        log = launcher.log_tail(store, run_id, 400)
        assert store.run(run_id).info.status == "FINISHED", log
        assert "database is locked" not in log


def test_restarted_dashboard_finds_active_runs(home):
    store = tracking.Store.default()
    run_id = launcher.launch(cfg(home, "train.epochs=100", "name=survivor"))
    try:
        wait(lambda: current_step(store, run_id) >= 1, what="first step")
        at = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=120).run()  # a fresh dashboard
        assert not at.exception
        assert any("survivor" in m.value for m in at.markdown), [m.value for m in at.markdown]
    finally:
        launcher.stop(run_id, timeout=60)
    assert store.run(run_id).info.status == "KILLED"


def test_unwritable_store_gives_clear_error(home):
    (home / "mlruns").write_text("a file where the folder should be")
    with pytest.raises(tracking.StoreError, match="cannot write the MLflow store"):
        tracking.Store.default()
    at = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=60).run()
    assert not at.exception
    assert any("cannot write the MLflow store" in e.value for e in at.error)
