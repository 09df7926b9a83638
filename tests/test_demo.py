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
    """Every demo recipe (demo.SPECS) trains with the thread setting the shipped weights were made with
    (TRAIN_THREADS, one; set by demo._train, which the recipe's worker processes and this in-process path
    both run), whatever the caller's (two here, restored afterwards)."""
    from dataclasses import asdict

    from genesis.data.simulate import SimConfig, settings_from_record

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        paths = demo.build_demo_models(tmp_path, steps=2, batch_size=4, events=200, log=lambda _: None, jobs=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in paths] == [s.name for s in demo.SPECS]
    for path in paths:
        state = check_slim(path)
        prov = state["provenance"]
        assert prov["steps"] == 2 and prov["torch_threads"] == demo.TRAIN_THREADS == 1
        assert prov["data"]["seed"] == 1 and prov["data"]["events"] == 200
        # the training file was temporary: the checkpoint itself says which simulator settings made it
        assert state["data"]["source"]["simulator"] == asdict(SimConfig())
        assert settings_from_record(state["data"]) == (SimConfig(), None)
        events = sampling.generate(checkpoint.load_model(path), LABELS, steps=2, seed=0)
        assert events.shape == (1, 2, 5160) and np.isfinite(events).all()
    assert demo.demo_checkpoints(tmp_path) == paths
    # --from: a checkpoint trained elsewhere is exported the same way, and only into its own kind's slot
    with pytest.raises(CheckpointError, match="needs a diffusion one"):
        demo.export(paths[1], tmp_path / "x.pt", {}, kind="diffusion")
    again = demo.export(paths[0], tmp_path / "again.pt", {"trained_by": "test", "preset": "configs/tiny.yaml"},
                         log=lambda _: None, kind="diffusion")
    assert check_slim(again)["provenance"]["trained_by"] == "test"
    # the CLI exports only the kinds of --only (the demo flow stays as it was); one checkpoint per kind
    from genesis import cli

    out = tmp_path / "only"
    out.mkdir()
    (out / "demo-flow.pt").write_bytes(b"not touched")
    assert cli.main(["demo-models", "--only", "diffusion", "--from", str(paths[0]), "--out-dir", str(out)]) == 0
    assert check_slim(out / "demo-diffusion.pt")["kind"] == "diffusion"
    assert (out / "demo-flow.pt").read_bytes() == b"not touched"
    assert cli.main(["demo-models", "--from", str(paths[0]), "--out-dir", str(out)]) == 2  # two models, one file


def test_demo_models_only_trains_the_kinds_asked_for(tmp_path):
    """`genesis demo-models --only flow` retrains the demo flow and leaves the diffusion checkpoint alone."""
    from genesis import cli

    kept = tmp_path / "demo-diffusion.pt"
    kept.write_bytes(b"not touched")
    assert cli.main(["demo-models", "--only", "flow", "--out-dir", str(tmp_path), "--steps", "2", "--batch-size", "4",
                     "--events", "200"]) == 0
    assert kept.read_bytes() == b"not touched"
    assert check_slim(tmp_path / "demo-flow.pt")["kind"] == "flow"


CHARGE_FACTOR = 3.0  # loose: today's demo models are 0.4-2x the simulator's charge (README); to be tightened


@pytest.mark.parametrize("energy", [1e4, 1e5])
def test_shipped_demo_models_load_and_sample_sensible_events(energy):
    """A trained model, not noise: at the same labels as the simulator, the median hit DOM count and the
    median total charge of 8 sampled events are within CHARGE_FACTOR of the simulator's (64 events)."""
    from genesis.data.simulate import simulate_at_labels
    from genesis.geometry import icecube86_like

    shipped = demo.demo_checkpoints()
    if len(shipped) != len(demo.SPECS):
        pytest.fail(f"the demo checkpoints are missing from {demo.DEMO_DIR}: run `make demo-models`")
    labels = np.array([[energy, 1.0, 2.0, 0.0, 0.0, 0.0]], np.float32)
    sim = simulate_at_labels(np.repeat(labels, 64, 0), icecube86_like(), np.random.default_rng(0))
    sim_hits, sim_npe = np.median((sim[:, 0] > 0).sum(1)), np.median(sim[:, 0].sum(1))
    for path in shipped:
        check_slim(path)
        events = sampling.generate(checkpoint.load_model(path), np.repeat(labels, 8, 0), steps=20, seed=0)
        hits, npe = np.median((events[:, 0] > 0).sum(1)), np.median(events[:, 0].sum(1))
        assert sim_hits / CHARGE_FACTOR <= hits <= sim_hits * CHARGE_FACTOR, (path.name, hits, sim_hits)
        assert sim_npe / CHARGE_FACTOR <= npe <= sim_npe * CHARGE_FACTOR, (path.name, npe, sim_npe)

