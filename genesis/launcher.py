"""Start and stop training subprocesses that outlive the dashboard.

launch(): the MLflow run is created first (params, tags, request id), the config is written next to the
run's log, then `python -m genesis train --config <file> --run-id <id>` starts from an argv list (no
shell) in its own process group with stdout/stderr to the run's log file. A file lock plus the request
id make a repeated call (rerun, double click, second tab) return the same run instead of a new process.
stop(): SIGTERM to the group (the trainer saves last.pt and ends the run KILLED), SIGKILL after a timeout;
the run's tag genesis.stop records which of the two ended it ("SIGTERM" or "killed after timeout ...").
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genesis import config, paths, tracking
from genesis.errors import GenesisError
from genesis.train import check_data, log_file_for

log = logging.getLogger("genesis.launcher")


@contextmanager
def _launch_lock() -> Iterator[None]:
    lock_path = paths.mlruns_dir() / ".launch.lock"
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def find_request(store: tracking.Store, experiment: str, request_id: str) -> str | None:
    frame, _ = store.search([experiment], f"tags.`{tracking.TAG_REQUEST}` = '{request_id}'", max_results=1)
    return None if frame.empty else str(frame.iloc[0]["run_id"])


def train_argv(config_path: Path, run_id: str, gpus: int) -> list[str]:
    """argv of the trainer; torchrun (DDP) when more than one GPU is requested."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
                "-m", "genesis", "train", "--config", str(config_path), "--run-id", run_id]
    return [sys.executable, "-m", "genesis", "train", "--config", str(config_path), "--run-id", run_id]


def launch(cfg: config.RunConfig, request_id: str | None = None, gpus: int = 0,
           store: tracking.Store | None = None) -> str:
    """Create the run and start its trainer process; returns the run id (the same one for a repeated request)."""
    cfg = check_data(cfg)  # a bad dataset is reported before any run exists; paths made absolute
    if gpus > 1:
        import torch

        if torch.cuda.device_count() < gpus:
            raise GenesisError(f"{gpus} GPUs requested but {torch.cuda.device_count()} are available")
    store = store or tracking.Store.default()
    store.experiment_id(cfg.experiment)  # create database and experiment before any subprocess
    with _launch_lock():
        if request_id:
            existing = find_request(store, cfg.experiment, request_id)
            if existing:
                return existing
        tags = {tracking.TAG_KIND: cfg.kind, tracking.TAG_HOST: socket.gethostname()}
        if request_id:
            tags[tracking.TAG_REQUEST] = request_id
        run_id = store.create_run(cfg.experiment, cfg.name, tags, config.flatten(config.to_dict(cfg)))
        log_path = log_file_for(run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        store.set_tags(run_id, {tracking.TAG_LOG: str(log_path)})  # before the trainer looks for it
        cfg_path = log_path.with_suffix(".yaml")
        config.save(cfg, cfg_path)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
               "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(train_argv(cfg_path, run_id, gpus), stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=paths.home(), env=env, start_new_session=True)
        store.set_tags(run_id, {tracking.TAG_PID: str(proc.pid)})
    return run_id


def _pid(store: tracking.Store, run_id: str) -> int | None:
    pid = store.run(run_id).data.tags.get(tracking.TAG_PID)
    return int(pid) if pid else None


KILLED_AFTER_TIMEOUT = "killed after timeout"


def stop(run_id: str, timeout: float = 30.0, store: tracking.Store | None = None) -> str:
    """SIGTERM the run's process group, SIGKILL after `timeout`; returns the run's final status.

    The run's tag genesis.stop says how it ended: "SIGTERM" when the trainer stopped by itself (it saved
    last.pt), or "killed after timeout ..." when it had to be killed; the kill is also written to the
    run's log, so a stop that lost the final checkpoint is never mistaken for a clean one."""
    store = store or tracking.Store.default()
    run = store.run(run_id)
    if run.info.status != "RUNNING":
        return run.info.status
    pid = _pid(store, run_id)
    if pid is None or not tracking.process_alive(pid):
        store.end_run(run_id, "FAILED", "process lost")
        return "FAILED"
    _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and tracking.process_alive(pid):
        _reap(pid)
        time.sleep(0.2)
    killed = tracking.process_alive(pid)
    if killed:
        marker = f"{KILLED_AFTER_TIMEOUT} (SIGKILL {timeout:g} s after SIGTERM)"
        log.warning("run %s: trainer pid %d still alive %g s after SIGTERM: %s", run_id, pid, timeout, marker)
        _signal_group(pid, signal.SIGKILL)
        _append_log(store, run_id, f"genesis.launcher: {marker}; last.pt may be older than the last step")
        store.set_tags(run_id, {tracking.TAG_STOP: marker})
        kill_deadline = time.time() + 10
        while time.time() < kill_deadline and tracking.process_alive(pid):
            _reap(pid)
            time.sleep(0.1)
    else:
        _reap(pid)
        store.set_tags(run_id, {tracking.TAG_STOP: "SIGTERM"})
    if store.run(run_id).info.status == "RUNNING":  # it died before it could end its own run
        store.end_run(run_id, "KILLED", f"stopped by the user ({KILLED_AFTER_TIMEOUT})" if killed
                      else "stopped by the user (the trainer exited without ending its run)")
    return store.run(run_id).info.status


def _append_log(store: tracking.Store, run_id: str, line: str) -> None:
    path = store.run(run_id).data.tags.get(tracking.TAG_LOG)
    if path:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} WARNING {line}\n")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status if the trainer is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(store: tracking.Store, run_id: str, lines: int = 30) -> str:
    """Last lines of the run's log file ('' when there is none yet)."""
    path = store.run(run_id).data.tags.get(tracking.TAG_LOG)
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200 * lines))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
