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
