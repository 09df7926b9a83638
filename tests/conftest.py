"""Shared fixtures: a small simulated dataset, the real IceCube-86 reference files when present.

GENESIS_REQUIRE_SHARED=1 (set by .ci/run) turns the skips for missing prerequisites (Debian chromium,
../shared/data/icecube86) into failures: use `require_or_skip(reason)` instead of `pytest.skip`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_ICECUBE = ROOT.parent / "shared" / "data" / "icecube86"
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
torch.set_num_threads(2)


REQUIRE_SHARED_ENV = "GENESIS_REQUIRE_SHARED"


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
        flow = train(config.load(ROOT / "configs" / "flow_tiny.yaml", [
            f"data.path={data}", *TINY_FLOW, "train.max_steps=4"]))
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
