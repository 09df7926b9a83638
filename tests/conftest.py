"""Shared fixtures: a small simulated dataset, the real IceCube-86 reference files when present.

GENESIS_REQUIRE_SHARED=1 (set by .ci/run) turns the skips for missing prerequisites (Debian chromium,
../shared/data/icecube86) into failures: use `require_or_skip(reason)` instead of `pytest.skip`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_ICECUBE = ROOT.parent / "shared" / "data" / "icecube86"
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
torch.set_num_threads(1)  # tiny models: a second intra-op thread costs more than it saves (see one_thread)


REQUIRE_SHARED_ENV = "GENESIS_REQUIRE_SHARED"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def require_or_skip(reason: str) -> None:
    """Skip the test for a missing prerequisite, or fail it when GENESIS_REQUIRE_SHARED=1 (CI)."""
    if os.environ.get(REQUIRE_SHARED_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_SHARED_ENV}={os.environ[REQUIRE_SHARED_ENV]}: prerequisites are required)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def geometry():
    from genesis.geometry import icecube86_like

    return icecube86_like()


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, geometry) -> Path:
    """400 simulated events on the IceCube-86-like geometry."""
    from genesis.data.simulate import simulate_to_file

    path = tmp_path_factory.mktemp("data") / "small.h5"
    return simulate_to_file(path, 400, geometry, seed=3)


@pytest.fixture(scope="session")
def real_geometry_csv() -> Path:
    path = SHARED_ICECUBE / "icecube86_geometry.csv"
    if not path.exists():
        require_or_skip(f"real IceCube-86 geometry not present: {path}")
    return path


TINY_DIT = ["model.hidden_size=32", "model.depth=1", "model.time_embed_dim=32", "train.device=cpu",
            "train.batch_size=16", "train.warmup_steps=2"]


@pytest.fixture()
def home(tmp_path, monkeypatch, small_data) -> Path:
    """A temporary project home (GENESIS_HOME) with data/demo.h5 and its own MLflow store."""
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo.h5").write_bytes(small_data.read_bytes())
    return tmp_path


def tiny_cfg(home: Path, *overrides: str):
    """configs/tiny.yaml shrunk for tests, training on home/data/demo.h5, plus overrides."""
    from genesis import config

    return config.load(ROOT / "configs" / "tiny.yaml", [f"data.path={home}/data/demo.h5", *TINY_DIT, *overrides])


def run_to_end(store, run_id: str, timeout_s: float = 900, poll_s: float = 0.5):
    """The MLflow run once it is no longer RUNNING (or after timeout_s): poll the store the pages read."""
    deadline = time.time() + timeout_s
    while store.run(run_id).info.status == "RUNNING" and time.time() < deadline:
        time.sleep(poll_s)
    return store.run(run_id)


def run_process_group(cmd: list[str], env: dict, timeout: float, what: str = "the process") -> str:
    """Run cmd (e.g. torchrun and its ranks) in its own process group; kill the whole group on a hang.
    Returns stdout + stderr; fails the test when it exits non-zero or outlives `timeout` s."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks too, not only torchrun
        out, _ = proc.communicate()
        pytest.fail(f"{what} still running after {timeout} s (hang):\n{out[-3000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


@pytest.fixture()
def one_thread():
    """Tiny models: a second intra-op thread saves nothing and, on cores shared with other work, made a
    training step 30x slower (2.9 s against 0.08 s). Use with pytestmark = pytest.mark.usefixtures(...)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run `python -m genesis ...` as a real subprocess; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "genesis", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# --- trained models shared by the whole session ---------------------------------------------------------
TRAINED_EVENTS = 300
TINY_FLOW = ["flow.num_couplings=2", "flow.hidden_size=32", "train.device=cpu", "train.batch_size=16"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, geometry):
    """One tiny diffusion run (5 steps, end-of-training evaluation on 30 test events) and one tiny flow run
    (4 steps), trained once for the whole session into their own project home (data/demo.h5 of 300 events,
    MLflow store in mlruns/). Also keeps the diffusion Trainer as the end-of-training evaluation saw it, so
    tests can compare checkpoints with the trainer's in-memory EMA model. Tests must not add runs here."""
    from types import SimpleNamespace

    from genesis import config, evaluate
    from genesis.data.simulate import simulate_to_file
    from genesis.train import train

    root = tmp_path_factory.mktemp("trained_home")
    (root / "data").mkdir()
    data = simulate_to_file(root / "data" / "demo.h5", TRAINED_EVENTS, geometry, seed=11)
    seen = []
    original = evaluate.evaluate_model

    def keep_trainer(trainer, n_events):
        seen.append(trainer)
        return original(trainer, n_events)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENESIS_HOME", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr(evaluate, "evaluate_model", keep_trainer)
        diff = train(config.load(ROOT / "configs" / "tiny.yaml", [
            f"data.path={data}", *TINY_DIT, "train.epochs=1", "train.max_steps=5", "train.batch_size=16",
            "train.log_every=1", "train.warmup_steps=1", "train.eval_events=30", "diffusion.sampling_steps=5"]))
        # without the expected-light input, whose extra head input changes the 4-step head's guesses: the CLI
        # round trip needs a head that calls some masked DOMs hit (tests/test_energy_response.py tests the input)
        flow = train(config.load(ROOT / "configs" / "flow_tiny.yaml", [
            f"data.path={data}", *TINY_FLOW, "train.max_steps=4", "flow.light_feature=false"]))
    assert diff["status"] == flow["status"] == "FINISHED", (diff, flow)
    assert len(seen) == 1, "the end-of-training evaluation did not run (train.eval_events)"
    return SimpleNamespace(root=root, data=data, n_events=TRAINED_EVENTS,
                           diffusion=Path(diff["checkpoint_dir"]) / "last.pt", diffusion_run=diff["run_id"],
                           flow=Path(flow["checkpoint_dir"]) / "last.pt", flow_run=flow["run_id"],
                           diffusion_trainer=seen[0], diffusion_result=diff, flow_result=flow)


@pytest.fixture()
def trained_home(trained, monkeypatch):
    """GENESIS_HOME set to the shared trained home for one test."""
    monkeypatch.setenv("GENESIS_HOME", str(trained.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return trained


# --- a real dashboard process and a headless browser -----------------------------------------------------
def require_chromium() -> Path:
    """Debian's chromium and playwright; a missing one skips, or fails under GENESIS_REQUIRE_SHARED=1 (CI)."""
    if not CHROMIUM.exists():
        require_or_skip(f"Debian chromium not installed at {CHROMIUM} (make browser)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_or_skip("playwright is not installed (pip install -r requirements-dev.txt)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_app(home: Path, log_path: Path, extra_env: dict | None = None, timeout: float = 90):
    """`streamlit run app.py` as its own process (own session) on a free port with GENESIS_HOME=home;
    yields the base URL; fails with the server's log when it does not answer within `timeout`."""
    port = free_port()
    env = {**os.environ, "GENESIS_HOME": str(home), "PYTHONPATH": str(ROOT), **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                                 "true", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    urllib.request.urlopen(base + "/_stcore/health", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise AssertionError("streamlit did not start:\n" + log_path.read_text()[-3000:])
                    time.sleep(0.5)
            yield base
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@contextmanager
def browser_page(timeout_ms: int = 120_000):
    """A headless chromium page (playwright); chromium must be there (require_chromium)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(require_chromium()), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def assert_no_exception_box(page, where: str) -> None:
    """No Streamlit exception box (data-testid stException) on the page: an exception inside a page never
    fails the HTTP request, only this box shows it."""
    boxes = page.locator("[data-testid='stException']")
    if boxes.count():
        raise AssertionError(f"Streamlit exception on {where}: " + " | ".join(boxes.all_inner_texts())[:3000])
