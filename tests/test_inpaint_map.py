"""Flow MAP inpainting in the unconstrained space: observed DOMs bit-identical, the change of variables,
restarts and their per-DOM spread, non-zero normalization offsets, a whole job through a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genesis import checkpoint, config, inpaint
from genesis.config import DataConfig, FlowConfig, RunConfig
from genesis.data.normalization import Normalization
from genesis.geometry import Geometry
from genesis.inpaint import (
    flow_map_fill,
    from_unconstrained,
    inpaint_events,
    map_bounds,
    restart_spread,
    to_unconstrained,
    zero_fill,
)
from genesis.models.flow import ConditionalFlow

P = 120
# log1p npe with offset 1 / scale 2 and linear time with offset 9000 ns / scale 2000 ns: no hit = (-0.5, -4.5)
LINEAR = Normalization(affine_offsets=(1.0, 9000.0, -600.0, -550.0, -550.0),
                       affine_scales=(2.0, 2000.0, 1200.0, 1100.0, 1100.0), time_transform="none",
                       npe_transform="log1p")


def two_strings() -> Geometry:
    z = 500.0 - 17.0 * np.arange(60)
    pos = np.concatenate([np.column_stack([np.full(60, x), np.zeros(60), z]) for x in (0.0, 125.0)])
    return Geometry(pos, np.repeat([1, 2], 60), np.tile(np.arange(1, 61), 2), "two-strings")


def bimodal_events(n: int, seed: int, p_hit: float = 0.6) -> torch.Tensor:
    """Physical events (n, 2, P): every DOM independently hit with probability p_hit, then with about
    20 pe (integer counts) at about 11000 ns; else npe 0 and time 0."""
    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(n, P, generator=g) < p_hit
    npe = torch.poisson(torch.full((n, P), 20.0), generator=g).clamp_min(1)
    time = 11000 + 100 * torch.randn(n, P, generator=g)
    return torch.stack([torch.where(hit, npe, 0.0), torch.where(hit, time, 0.0)], 1)


def make_flow(norm: Normalization = LINEAR, couplings: int = 4, seed: int = 0) -> ConditionalFlow:
    torch.manual_seed(seed)
    cfg = FlowConfig(num_couplings=couplings, hidden_size=32, depth=1, num_heads=2, patch_size=60)
    return ConditionalFlow(cfg, P, norm)


def conditioning(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(b, 6), LINEAR.normalize_geometry(torch.as_tensor(two_strings().positions)).float()


# --- the unconstrained parametrisation -------------------------------------------------------------
def test_unconstrained_roundtrip_and_log_jacobian() -> None:
    lo, hi = torch.tensor([[[-0.51], [-4.51]]]), torch.tensor([[[3.0], [6.0]]])
    x = torch.tensor([[[-0.505, 0.0, 2.9], [-4.5, 1.0, 5.0]]], dtype=torch.float64)
    u = to_unconstrained(x, lo.double(), hi.double())
    back, log_jac = from_unconstrained(u, lo.double(), hi.double())
    assert torch.allclose(back, x, atol=1e-12)
    u_req = u.clone().requires_grad_(True)
    grad = torch.autograd.grad(from_unconstrained(u_req, lo.double(), hi.double())[0].sum(), u_req)[0]
    assert torch.allclose(log_jac, grad.log())


def test_map_bounds_follow_the_normalization_offsets() -> None:
    """The box starts one dequantization width below the no-hit value of the model's own normalization."""
    for norm, nohit in ((LINEAR, (-0.5, -4.5)), (Normalization(), (0.0, 0.0))):
        flow = make_flow(norm, couplings=2)
        x = norm.normalize_signal(bimodal_events(3, seed=1)).float()
        m = torch.zeros(P, dtype=torch.bool)
        m[:30] = True
        lo, hi = map_bounds(flow, zero_fill(x, m.numpy(), norm), m)
        w = flow.config.dequant_noise
        assert torch.allclose(lo[:, :, 0], torch.tensor(nohit) - w, atol=1e-6)
        assert (hi[:, :, 0] > x[:, :, ~m].amax(-1)).all()


# --- flow MAP ---------------------------------------------------------------------------------------
def test_observed_doms_come_back_bit_identical_for_every_restart() -> None:
    flow = make_flow()
    x = LINEAR.normalize_signal(bimodal_events(3, seed=2)).float()
    labels, geo = conditioning(3)
    mask = np.arange(P) % 3 == 0
    out = flow_map_fill(flow, zero_fill(x, mask, LINEAR), mask, labels, geo, steps=4, restarts=3,
                        generator=torch.Generator().manual_seed(0))
    assert out.restarts.shape == (3, 3, 2, P) and out.objective.shape == (3,)
    for fill in (out.filled, *out.restarts):
        assert torch.equal(fill[:, :, ~mask], x[:, :, ~mask])
        assert not torch.equal(fill[:, :, mask], zero_fill(x, mask, LINEAR)[:, :, mask])


def test_restarts_pick_the_highest_objective_per_event(monkeypatch) -> None:
    flow = make_flow(couplings=2)
    x = LINEAR.normalize_signal(bimodal_events(2, seed=3)).float()
    labels, geo = conditioning(2)
    mask = np.arange(P) < 10
    results = iter([(1.0, [0.0, 5.0]), (2.0, [3.0, 1.0]), (3.0, [1.0, 1.0])])

    def fixed_restart(flow, x_obs, m, labels, geometry, start, steps, lr, tick):
        value, obj = next(results)
        return torch.where(m, torch.full_like(x_obs, value), x_obs), torch.tensor(obj), [0.0, value]

    monkeypatch.setattr(inpaint.flow_map, "_map_restart", fixed_restart)
    out = flow_map_fill(flow, x, mask, labels, geo, steps=1, restarts=3)
    assert out.filled[0, :, mask].unique().tolist() == [2.0] and out.filled[1, :, mask].unique().tolist() == [1.0]
    assert out.objective.tolist() == [3.0, 5.0] and out.trace == [0.0, 3.0]
    assert torch.equal(out.filled[:, :, ~mask], x[:, :, ~mask])


def test_map_objective_never_below_its_start() -> None:
    """The kept iterate's objective (log density in u) is at least that of the start (step 0)."""
    flow = make_flow()
    x = LINEAR.normalize_signal(bimodal_events(3, seed=4)).float()
    labels, geo = conditioning(3)
    mask = torch.arange(P) % 5 == 0
    start = flow.sample(labels, geo, generator=torch.Generator().manual_seed(1), temperature=0.7)
    x_obs = zero_fill(x, mask.numpy(), LINEAR)
    zero_steps = inpaint._map_restart(flow, x_obs, mask, labels, geo, start, 0, 0.1, lambda: None)
    ten_steps = inpaint._map_restart(flow, x_obs, mask, labels, geo, start, 10, 0.1, lambda: None)
    assert (ten_steps[1] >= zero_steps[1]).all() and (ten_steps[1] > zero_steps[1]).any()
    assert len(ten_steps[2]) == 11


# --- uncertainty ------------------------------------------------------------------------------------
def test_restart_spread_hit_probability_and_spreads() -> None:
    nohit = LINEAR.normalize_signal(torch.zeros(1, 2, 1, dtype=torch.float64)).float()
    mask = np.array([True, True, False])
    phys = torch.tensor([[[10.0, 0.0, 5.0], [10000.0, 0.0, 9500.0]],
                         [[30.0, 0.0, 5.0], [10200.0, 0.0, 9500.0]],
                         [[0.0, 0.0, 5.0], [0.0, 0.0, 9500.0]]], dtype=torch.float64)  # 3 restarts, 1 event
    restarts = LINEAR.normalize_signal(phys).float().unsqueeze(1)  # (R, B, 2, P)
    spread = restart_spread(restarts, mask, LINEAR)
    assert spread.shape == (1, 3, 3)
    assert spread[0, 0].tolist() == pytest.approx([2 / 3, 0.0, 0.0])  # observed DOM: 0
    assert spread[0, 1, 0] == pytest.approx(np.std([10.0, 30.0, 0.0]), rel=1e-4)
    assert spread[0, 2, 0] == pytest.approx(np.std([10000.0, 10200.0], ddof=1), rel=1e-3)
    assert spread[0, 1:, 1].tolist() == [0.0, 0.0] and nohit.shape == (1, 2, 1)


# --- a whole job through a real checkpoint ----------------------------------------------------------
def test_inpaint_events_keeps_observed_physical_values_and_reports_uncertainty(tmp_path) -> None:
    """Through a saved and reloaded flow checkpoint with non-zero offsets: observed DOMs of the physical
    result are bit-identical to the input, and the per-DOM uncertainty is there for masked DOMs only."""
    geometry = two_strings()
    cfg = RunConfig(kind="flow", flow=FlowConfig(num_couplings=2, hidden_size=32, depth=1, num_heads=2,
                                                 patch_size=60), data=DataConfig(normalization=LINEAR))
    flow = make_flow(couplings=2)
    path = checkpoint.save(checkpoint.make_state(cfg, flow, flow, geometry, 0, 0, 0.0), tmp_path / "flow.pt")
    loaded = checkpoint.load_model(path)
    signal = bimodal_events(3, seed=6).numpy().astype(np.float32)
    signal[:, 1] += np.where(signal[:, 0] > 0, 0.123, 0.0).astype(np.float32)  # hit times that are not round
    labels = np.tile(np.array([[1e5, 1.0, 2.0, 0.0, 0.0, -100.0]], np.float32), (3, 1))
    mask = np.arange(P) % 7 == 0
    result = inpaint_events(loaded, signal, labels, mask, "flow-map", geometry, steps=3, restarts=2)
    assert np.array_equal(result.filled[:, :, ~mask], signal[:, :, ~mask])
    assert result.uncertainty is not None and result.uncertainty.shape == (3, 3, P)
    assert (result.uncertainty[:, :, ~mask] == 0).all() and (result.uncertainty[:, 0, mask] >= 0).all()
    assert config.to_dict(loaded.config)["data"]["normalization"]["affine_offsets"][0] == 1.0
    zero = inpaint_events(loaded, signal, labels, mask, "zero", geometry, compare_baselines=False)
    assert zero.uncertainty is None
    # the CLI job writes the uncertainty next to the fill
    import h5py

    from genesis.data import schema

    schema.write_events(tmp_path / "events.h5", signal, labels, geometry)
    inpaint.inpaint_to_file(str(path), str(tmp_path / "events.h5"), "0,2", "strings:2", "flow-map",
                            str(tmp_path / "out.h5"), steps=2, restarts=2, device="cpu")
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["uncertainty"].shape == (2, 3, P) and (f["uncertainty"][:, :, :60] == 0).all()
        assert np.array_equal(f["input"][:, :, :60], signal[[0, 2]][:, :, :60])


def test_uncertainty_figure_colours_the_masked_doms() -> None:
    from genesis import viz

    geometry = two_strings()
    npe, time = np.zeros(P, np.float32), np.zeros(P, np.float32)
    npe[:5], time[:5] = 3.0, 10000.0
    mask = np.arange(P) >= 100
    unc = np.where(mask, np.linspace(0, 1, P), 0).astype(np.float32)
    fig = viz.uncertainty_event_figure(geometry, npe, time, unc, mask, "hit probability")
    masked = [t for t in fig.data if t.name == "masked DOMs: hit probability"][0]
    assert len(masked.x) == 20 and np.allclose(masked.marker.color, unc[mask])
    assert masked.marker.colorbar.title.text == "hit probability"
    assert len([t for t in fig.data if t.name == "hits"][0].x) == 5
    with pytest.raises(ValueError, match="shape"):
        viz.uncertainty_event_figure(geometry, npe, time, unc[:10], mask, "x")


# --- the Inpaint page -------------------------------------------------------------------------------
def _choose(at, label: str, predicate):
    box = next(s for s in at.selectbox if s.label == label)
    return box.select_index(next(i for i, o in enumerate(box.options) if predicate(o))).run()


def test_inpaint_page_uncertainty_colour_and_repaint_estimate(trained_home) -> None:
    """Flow MAP on the page offers the per-DOM uncertainty as a 3D colour; RePaint shows its expected
    time (a range from a timed warm-up) before it starts."""
    import json
    import re
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    at = AppTest.from_file(str(root / "views" / "inpaint.py"), default_timeout=180).run()
    at = _choose(at, "Checkpoint", lambda o: o.startswith("tiny-flow") and "last.pt" in o)
    at = _choose(at, "Event from dataset", lambda o: o.endswith("demo.h5"))
    at.multiselect[0].set_value([36])
    next(n for n in at.number_input if n.label == "Optimisation steps").set_value(3)
    next(n for n in at.number_input if n.label == "Restarts").set_value(2)
    at = next(b for b in at.run().button if b.label == "Inpaint").click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    colour = next(r for r in at.radio if r.label == "3D colour")
    at = colour.set_value("hit probability").run()
    names = [t.get("name") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]
    assert "masked DOMs: hit probability" in names

    at = _choose(at, "Checkpoint", lambda o: o.startswith("tiny-dit") and "last.pt" in o)
    assert next(s for s in at.selectbox if s.label == "Method").value == "repaint"  # follows the checkpoint's kind
    assert not at.exception, [e.value for e in at.exception]
    expected = next(c.value for c in at.caption if c.value.startswith("Expected time"))
    assert "network evaluations" in expected and "timed warm-up on this machine now" in expected
    assert re.match(r"Expected time: \*\*[\d.,e-]+ s to [\d.,e-]+ s\*\* on cpu", expected), expected


# --- combining the restarts: the per-DOM vote ------------------------------------------------------
def test_vote_fill_majority_hits_mean_values_and_observed_bit_identical() -> None:
    """Non-zero offsets (no hit = (-0.5, -4.5)): a masked DOM is hit when at least half of the restarts hit
    it, with the mean normalized npe and time of those restarts; else exactly the no-hit value."""
    flow = make_flow(couplings=2)
    mask = np.array([True, True, True, False])
    phys = torch.tensor([[[10.0, 0.0, 3.0, 7.0], [10000.0, 0.0, 9000.0, 9100.0]],
                         [[30.0, 0.0, 0.0, 7.0], [10200.0, 0.0, 0.0, 9100.0]],
                         [[0.0, 2.0, 0.0, 7.0], [0.0, 9500.0, 0.0, 9100.0]]], dtype=torch.float64)  # 3 restarts
    restarts = LINEAR.normalize_signal(phys).float().unsqueeze(1)  # (R, B = 1, 2, P = 4)
    x_obs = restarts[0].clone()
    x_obs[:, :, 3] = torch.tensor([0.123456, 1.2345678])  # any observed value comes back as given
    m = torch.as_tensor(mask)
    fill = inpaint.vote_fill(flow, restarts, m, x_obs)
    nohit = flow.nohit_value().float()
    assert torch.allclose(fill[0, :, 0], restarts[:2, 0, :, 0].mean(0))  # 2 of 3 hit: their mean
    assert torch.equal(fill[0, :, 1], nohit) and torch.equal(fill[0, :, 2], nohit)  # 1 of 3: no hit
    assert torch.equal(fill[0, :, 3], x_obs[0, :, 3])
    assert torch.equal(inpaint.vote_fill(flow, restarts, m, x_obs, share=0.3)[0, :, 2], restarts[0, 0, :, 2])


def test_flow_map_fill_choices_and_the_flows_default(monkeypatch) -> None:
    flow = make_flow(couplings=2)
    x = LINEAR.normalize_signal(bimodal_events(2, seed=5)).float()
    labels, geo = conditioning(2)
    mask = np.arange(P) % 4 == 0
    with torch.no_grad():
        flow(x, labels, geo)  # ActNorm's data-dependent init, so both calls below see the same flow
    kwargs = dict(steps=2, restarts=3, generator=torch.Generator().manual_seed(0))
    best = flow_map_fill(flow, zero_fill(x, mask, LINEAR), mask, labels, geo, **kwargs)  # old flows: 'best'
    picked = best.restarts.gather(0, best.best.view(1, -1, 1, 1).expand(1, *x.shape))[0]
    assert torch.equal(best.filled, picked)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    vote = flow_map_fill(flow, zero_fill(x, mask, LINEAR), mask, labels, geo, fill="vote", **kwargs)
    assert torch.equal(vote.restarts, best.restarts)
    assert torch.equal(vote.filled, inpaint.vote_fill(flow, vote.restarts, torch.as_tensor(mask), x))
    assert torch.equal(vote.filled[:, :, ~mask], x[:, :, ~mask])
    with pytest.raises(inpaint.ConfigError, match="fill"):
        flow_map_fill(flow, x, mask, labels, geo, steps=1, fill="median")


def physics_config(fill: str = "vote") -> RunConfig:
    return RunConfig(kind="flow", flow=FlowConfig(num_couplings=2, hidden_size=16, depth=1, num_heads=2, patch_size=60,
                                                  conditioning="physics", dom_width=8, inpaint_fill=fill),
                     data=DataConfig(normalization=LINEAR))


@pytest.mark.parametrize("kind", ["physics-vote", "before-physics"])
def test_checkpoints_with_and_without_physics_conditioning_load_and_inpaint(tmp_path, kind) -> None:
    """A physics-conditioned flow with the vote fill, and a checkpoint written before the flow had the
    conditioning / dom_width / inpaint_fill fields (its config lacks them), both load and inpaint with
    the observed DOMs bit-identical; the old one keeps the best-restart fill."""
    import dataclasses

    geometry = two_strings()
    if kind == "physics-vote":
        cfg = physics_config()
        torch.manual_seed(0)
        flow = ConditionalFlow(cfg.flow, P, LINEAR)
    else:
        cfg = RunConfig(kind="flow", flow=FlowConfig(num_couplings=2, hidden_size=32, depth=1, num_heads=2,
                                                     patch_size=60), data=DataConfig(normalization=LINEAR))
        flow = make_flow(couplings=2)
    state = checkpoint.make_state(cfg, flow, flow, geometry, 0, 0, 0.0)
    if kind == "before-physics":
        for key in ("conditioning", "dom_width", "inpaint_fill"):
            del state["config"]["flow"][key]
    path = checkpoint.save(state, tmp_path / "flow.pt")
    loaded = checkpoint.load_model(path)
    assert loaded.model.config.inpaint_fill == ("vote" if kind == "physics-vote" else "best")
    assert [f.name for f in dataclasses.fields(loaded.model.config)]  # a full config, defaults filled in
    signal = bimodal_events(2, seed=7).numpy().astype(np.float32)
    labels = np.tile(np.array([[1e5, 1.0, 2.0, 0.0, 0.0, -100.0]], np.float32), (2, 1))
    mask = np.arange(P) < 60  # a whole string
    result = inpaint_events(loaded, signal, labels, mask, "flow-map", geometry, steps=2, restarts=3)
    assert np.array_equal(result.filled[:, :, ~mask], signal[:, :, ~mask])
    assert set(result.fills) == {"best", "vote"}
    assert np.array_equal(result.filled, result.fills[loaded.model.config.inpaint_fill])
    for fill in result.fills.values():
        assert np.array_equal(fill[:, :, ~mask], signal[:, :, ~mask]) and np.isfinite(fill).all()
