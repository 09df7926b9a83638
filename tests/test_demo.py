"""Demo checkpoints: built by the project's trainer, slim, self-describing, and they sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genesis import checkpoint, demo, sampling
from genesis.errors import CheckpointError

LABELS = np.array([[1e5, 1.0, 2.0, 0.0, 0.0, 0.0]], np.float32)


def check_slim(path) -> dict:
    state = torch.load(path, weights_only=True)
    assert state["optimizer"] is None and state["scheduler"] is None and state["ema"] is None
    assert path.stat().st_size < 8e6
    prov = state["provenance"]
    assert prov["steps"] == state["step"] and prov["preset"].startswith("configs/") and prov["git_commit"]
    return state


def test_slim_state_keeps_the_weights_sampling_uses():
    ema, raw = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    state = {"model": raw, "ema": ema, "optimizer": {"x": 1}, "scheduler": {"y": 2}, "step": 5}
    slim = demo.slim_state(state, {"steps": 5})
    assert slim["model"] is ema and slim["ema"] is None and slim["optimizer"] is None and slim["scheduler"] is None
    assert demo.slim_state({**state, "ema": None}, {})["model"] is raw


def test_build_demo_models_trains_slims_and_records_provenance(tmp_path):
    paths = demo.build_demo_models(tmp_path, steps=2, batch_size=4, events=200, log=lambda _: None, jobs=1)
    assert [p.name for p in paths] == [s.name for s in demo.SPECS]
    for path in paths:
        state = check_slim(path)
        assert state["provenance"]["steps"] == 2 and state["provenance"]["data"] == {"simulator_seed": 1, "events": 200}
        events = sampling.generate(checkpoint.load_model(path), LABELS, steps=2, seed=0)
        assert events.shape == (1, 2, 5160) and np.isfinite(events).all()
    assert demo.demo_checkpoints(tmp_path) == paths
    # --from: a checkpoint trained elsewhere is exported the same way, and only into its own kind's slot
    with pytest.raises(CheckpointError, match="needs a diffusion one"):
        demo.export(paths[1], tmp_path / "x.pt", {}, kind="diffusion")
    again = demo.export(paths[0], tmp_path / "again.pt", {"trained_by": "test", "preset": "configs/tiny.yaml"},
                         log=lambda _: None, kind="diffusion")
    assert check_slim(again)["provenance"]["trained_by"] == "test"


def test_shipped_demo_models_load_and_sample_sensible_events():
    shipped = demo.demo_checkpoints()
    if len(shipped) != len(demo.SPECS):
        pytest.fail(f"the demo checkpoints are missing from {demo.DEMO_DIR}: run `make demo-models`")
    for path in shipped:
        check_slim(path)
        loaded = checkpoint.load_model(path)
        events = sampling.generate(loaded, np.repeat(LABELS, 4, 0), steps=20, seed=0)
        n_hit = (events[:, 0] > 0).sum(1)
        assert np.all(n_hit > 0) and np.all(n_hit < 2000), n_hit  # a trained model, not noise

