"""Faults with real processes: SIGKILL + resume, crash while writing a checkpoint, concurrent runs on one
SQLite store, a trainer that outlives the process that launched it (seen by a fresh `streamlit run`), an
unwritable store. Every wait fails on timeout; nothing here passes by construction."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT, assert_no_exception_box, browser_page, require_chromium, streamlit_app, tiny_cfg
from genesis import checkpoint, config, launcher, tracking
from genesis.errors import CheckpointError
from genesis.train import train

MAX_LOCK_RETRIES = 12  # 4 trainers + the Runs page on one SQLite file: locks must stay rare (measured: 0)


def cfg(home, *extra):
    return tiny_cfg(home, "train.log_every=1", *extra)


def wait(predicate, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def current_step(store, run_id) -> int:
    hist = store.metric_history(run_id, "train/loss")
    return int(hist["step"].max()) if not hist.empty else 0


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]):
            assert torch.equal(a[key].cpu(), b[key].cpu()), f"{what}: {key}"
        else:
            assert a[key] == b[key], f"{what}: {key}"


def test_sigkill_reconcile_and_resume_from_last_pt_weights(home):
    store = tracking.Store.default()
    interval = 4
    run_id = launcher.launch(cfg(home, "train.epochs=100", f"train.checkpoint_every={interval}"))
    wait(lambda: current_step(store, run_id) >= 3 * interval + 1, what="training progress")
    pid = int(store.run(run_id).data.tags[tracking.TAG_PID])
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    os.waitpid(pid, 0)
    killed_at = current_step(store, run_id)
    assert run_id in tracking.reconcile(store)
    run = store.run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[tracking.TAG_ERROR] == "process lost"
    last = store.artifact_dir(run_id) / "checkpoints" / "last.pt"
    saved = checkpoint.load_state(last)
    assert saved["step"] % interval == 0 and 3 * interval <= saved["step"] <= killed_at
    # Resume with no step left to take: the new run's last.pt holds exactly the weights the resumed trainer
    # started from (model, EMA, optimizer moments), which must be the killed run's last.pt.
    resumed = train(cfg(home, "train.epochs=100", f"train.max_steps={saved['step']}"), resume=last)
    assert resumed["status"] == "FINISHED" and resumed["step"] == saved["step"]
    start = checkpoint.load_state(Path(resumed["checkpoint_dir"]) / "last.pt")
    assert_same_tensors(saved["model"], start["model"], "model")
    assert_same_tensors(saved["ema"], start["ema"], "ema")
    for key, value in saved["optimizer"]["state"].items():
        assert_same_tensors(value, start["optimizer"]["state"][key], f"optimizer state {key}")


def test_crash_while_writing_checkpoint_keeps_previous_file(trained, tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    shutil.copy(trained.flow, last)  # a real checkpoint (the session's tiny flow)
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


def lock_retries_in_log(store, run_id) -> int:
    """Retried store errors that the trainer logged (tracking.retry logs each one)."""
    path = Path(store.run(run_id).data.tags[tracking.TAG_LOG])
    return path.read_text(errors="replace").count("store busy: retry")


@pytest.mark.slow
def test_four_runs_and_dashboard_share_sqlite_with_few_lock_retries(home):
    store = tracking.Store.default()
    retried_before = tracking.retries_total()
    # a time budget, not a step count: the trainers write for ~9 s on a fast or a busy machine alike
    runs = [launcher.launch(cfg(home, "train.max_minutes=0.15", "train.epochs=1000", f"name=parallel-{i}"))
            for i in range(4)]
    page = AppTest.from_file(str(ROOT / "views" / "runs.py"), default_timeout=120)
    page_runs_while_writing, deadline = 0, time.time() + 400
    while True:
        infos = [store.run(r) for r in runs]
        if all(i.info.status != "RUNNING" for i in infos):
            break
        assert time.time() < deadline, "the four runs did not end in time"
        writing = sum(i.info.status == "RUNNING" and "train/loss" in i.data.metrics for i in infos)
        at = page.run()  # the dashboard reads the same store while the trainers write to it
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]  # a lasting lock error shows as a message box
        page_runs_while_writing += writing >= 2
        time.sleep(0.2)
    assert page_runs_while_writing >= 3, f"the page ran only {page_runs_while_writing} times while 2+ runs logged"
    retried = {run_id: lock_retries_in_log(store, run_id) for run_id in runs}
    retried["dashboard"] = tracking.retries_total() - retried_before
    for run_id in runs:
        assert store.run(run_id).info.status == "FINISHED", launcher.log_tail(store, run_id, 40)
    assert sum(retried.values()) <= MAX_LOCK_RETRIES, retried
    print("lock retries:", retried, "page runs while 2+ runs logged:", page_runs_while_writing)


LAUNCH_AND_EXIT = """
import sys
from genesis import config, launcher
print(launcher.launch(config.load(sys.argv[1])))
"""


def test_trainer_outlives_its_launcher_and_a_fresh_dashboard_lists_it(home, tmp_path):
    require_chromium()
    store = tracking.Store.default()
    cfg_path = tmp_path / "survivor.yaml"
    config.save(cfg(home, "train.epochs=100", "name=survivor"), cfg_path)
    parent = subprocess.Popen([sys.executable, "-c", LAUNCH_AND_EXIT, str(cfg_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    out, err = parent.communicate(timeout=120)  # the launching process exits here
    assert parent.returncode == 0, err[-3000:]
    run_id = out.strip().splitlines()[-1]
    try:
        pid = int(store.run(run_id).data.tags[tracking.TAG_PID])
        assert tracking.process_alive(pid)
        ppid = int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])
        assert ppid not in (parent.pid, os.getpid())  # orphaned: nobody from the launch is its parent
        first = wait(lambda: current_step(store, run_id), what="a first step after the launcher exited")
        wait(lambda: current_step(store, run_id) >= first + 3, what="steps to keep increasing")
        with streamlit_app(home, tmp_path / "streamlit.log") as base, browser_page() as page:
            page.goto(f"{base}/train")
            page.get_by_text("survivor", exact=False).first.wait_for(state="visible")
            page.get_by_text(run_id[:8], exact=False).first.wait_for(state="visible")
            assert_no_exception_box(page, "train page of a fresh dashboard")
        assert store.run(run_id).info.status == "RUNNING" and tracking.process_alive(pid)
        assert current_step(store, run_id) > first
    finally:
        status = launcher.stop(run_id, timeout=60)
    assert status == "KILLED"
    assert store.run(run_id).data.tags[tracking.TAG_STOP] == "SIGTERM"


def test_unwritable_store_gives_clear_error(home):
    (home / "mlruns").write_text("a file where the folder should be")
    with pytest.raises(tracking.StoreError, match="cannot write the MLflow store"):
        tracking.Store.default()
    at = AppTest.from_file(str(ROOT / "views" / "home.py"), default_timeout=60).run()
    assert not at.exception
    assert any("cannot write the MLflow store" in e.value for e in at.error)
