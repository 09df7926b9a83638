"""Inpainting: masks, baselines, flow MAP inpainting, metrics and method dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genesis import inpaint
from genesis.config import FlowConfig
from genesis.data.normalization import Normalization
from genesis.errors import CheckpointError, ConfigError, DataError
from genesis.geometry import Geometry, icecube86_like
from genesis.inpaint import (
    combine,
    dead_doms_mask,
    deepcore_mask,
    flow_map_inpaint,
    improvement_ratios,
    inpaint_metrics,
    neighbour_fill,
    parse_mask,
    random_mask,
    run_inpainting,
    sphere_mask,
    strings_mask,
    zero_fill,
)
from genesis.models.common import NormalizationMetadata
from genesis.models.flow import ActNorm, Conditioner, ConditionalFlow

P = 120


@pytest.fixture(scope="module")
def ic86() -> Geometry:
    return icecube86_like()


def two_strings() -> Geometry:
    """Two vertical strings of 60 DOMs, 17 m apart, no DeepCore."""
    z = 500.0 - 17.0 * np.arange(60)
    pos = np.concatenate([np.column_stack([np.full(60, x), np.zeros(60), z]) for x in (0.0, 125.0)])
    return Geometry(pos, np.repeat([1, 2], 60), np.tile(np.arange(1, 61), 2), "two-strings")


# --- masks ------------------------------------------------------------------------------------------
def test_random_mask_fraction_and_seed(ic86: Geometry) -> None:
    m = random_mask(ic86, 0.1, seed=3)
    assert m.dtype == bool and m.shape == (5160,) and m.sum() == 516
    assert np.array_equal(m, random_mask(ic86, 0.1, seed=3))
    assert not np.array_equal(m, random_mask(ic86, 0.1, seed=4))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(DataError, match="between 0 and 1"):
            random_mask(ic86, bad)


def test_strings_and_deepcore_masks(ic86: Geometry) -> None:
    m = strings_mask(ic86, [36, 79])
    assert m.sum() == 120 and set(ic86.string[m].tolist()) == {36, 79}
    with pytest.raises(DataError, match="unknown string ids \\[99\\]"):
        strings_mask(ic86, [99])
    with pytest.raises(DataError, match="at least one"):
        strings_mask(ic86, [])
    with pytest.raises(DataError, match="every DOM"):
        strings_mask(ic86, list(range(1, 87)))
    dc = deepcore_mask(ic86)
    assert dc.sum() == 480 and set(ic86.string[dc].tolist()) == set(range(79, 87))
    with pytest.raises(DataError, match="no DeepCore"):
        deepcore_mask(two_strings())


def test_sphere_mask(ic86: Geometry) -> None:
    m = sphere_mask(ic86, (0, 0, -300), 100)
    dist = np.linalg.norm(ic86.positions - np.array([0, 0, -300]), axis=1)
    assert m.any() and np.array_equal(m, dist <= 100)
    with pytest.raises(DataError, match="selects no DOM"):
        sphere_mask(ic86, (5000, 0, 0), 10)
    with pytest.raises(DataError, match="every DOM"):
        sphere_mask(ic86, (0, 0, 0), 1e5)
    with pytest.raises(DataError, match="radius must be positive"):
        sphere_mask(ic86, (0, 0, 0), 0)
    with pytest.raises(DataError, match="3 finite numbers"):
        sphere_mask(ic86, (0, 0), 10)


def test_dead_dom_files(ic86: Geometry, tmp_path) -> None:
    csv_file = tmp_path / "dead.csv"
    csv_file.write_text("string,dom\n1,1\n2,60\n\n")
    assert np.flatnonzero(dead_doms_mask(ic86, csv_file)).tolist() == [0, 119]
    txt = tmp_path / "dead.txt"
    txt.write_text("# dead DOMs\n0\n5\n5159\n")
    assert np.flatnonzero(dead_doms_mask(ic86, txt)).tolist() == [0, 5, 5159]
    cases = {
        "string,dom\n99,1\n": "not in geometry",
        "0\n5160\n": "out of range",
        "1.5\n": "one integer DOM index",
        "a,b\n1,2\n": "must contain 'string' and 'dom'",
        "string,dom\n1,x\n": "integer string and dom",
        "# nothing\n": "lists no DOM",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.txt"
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            dead_doms_mask(ic86, path)
    with pytest.raises(DataError, match="not found"):
        dead_doms_mask(ic86, tmp_path / "missing.csv")


def test_combine() -> None:
    a, b = np.array([True, False, False]), np.array([False, False, True])
    assert combine(a, b).tolist() == [True, False, True]
    with pytest.raises(DataError, match="different shapes"):
        combine(a, np.ones(4, bool))
    with pytest.raises(DataError, match="at least one"):
        combine()


def test_parse_mask_forms(ic86: Geometry, tmp_path) -> None:
    assert np.array_equal(parse_mask("strings:36,79", ic86), strings_mask(ic86, [36, 79]))
    assert np.array_equal(parse_mask("random:0.1", ic86, seed=2), random_mask(ic86, 0.1, 2))
    assert np.array_equal(parse_mask("deepcore", ic86), deepcore_mask(ic86))
    assert np.array_equal(parse_mask("sphere:0,0,-300,100", ic86), sphere_mask(ic86, (0, 0, -300), 100))
    (tmp_path / "d.txt").write_text("7\n")
    assert np.flatnonzero(parse_mask(f"dead:{tmp_path / 'd.txt'}", ic86)).tolist() == [7]
    both = parse_mask("strings:36+random:0.05", ic86, seed=0)
    assert np.array_equal(both, strings_mask(ic86, [36]) | random_mask(ic86, 0.05, 1))


@pytest.mark.parametrize("spec, message", [
    ("", "accepted forms"), ("foo:1", "accepted forms"), ("strings:", "accepted forms"),
    ("strings:a", "accepted forms"), ("sphere:1,2,3", "accepted forms"), ("deepcore:1", "accepted forms"),
    ("strings:36++deepcore", "accepted forms"), ("random:2", "between 0 and 1"),
    ("strings:200", "unknown string"), ("strings:" + ",".join(map(str, range(1, 79))) + "+deepcore", "every DOM"),
])
def test_parse_mask_errors(ic86: Geometry, spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_mask(spec, ic86)


# --- baselines --------------------------------------------------------------------------------------
def test_zero_fill() -> None:
    x = torch.rand(2, 2, 5) + 1
    mask = np.array([False, True, False, False, True])
    out = zero_fill(x, mask)
    assert (out[:, :, mask] == 0).all() and torch.equal(out[:, :, ~mask], x[:, :, ~mask])
    with pytest.raises(DataError, match="5 DOMs"):
        zero_fill(x, np.ones(4, bool))


def test_neighbour_fill_uses_string_neighbours_by_depth() -> None:
    # String 1 stores its DOMs out of depth order; string 2 (indices 5, 6) is fully masked.
    z = np.array([0.0, -30.0, -10.0, -40.0, -20.0, 0.0, -10.0])
    geo = Geometry(np.column_stack([np.zeros(7), np.zeros(7), z]), [1, 1, 1, 1, 1, 2, 2], [1, 4, 2, 5, 3, 1, 2])
    x = torch.arange(14.0).reshape(1, 2, 7) + 1  # npe 1..7, time 8..14
    mask = np.array([True, False, False, True, True, True, True])
    out = neighbour_fill(x, mask, geo)
    assert out[0, :, 4].tolist() == [(2 + 3) / 2, (9 + 10) / 2]  # z -20: known above at -10, below at -30
    assert out[0, :, 0].tolist() == [3, 10]  # top DOM: only the known DOM below (z -10)
    assert out[0, :, 3].tolist() == [2, 9]  # bottom DOM: only the known DOM above (z -30)
    assert (out[0, :, 5:] == 0).all()
    assert torch.equal(out[:, :, ~mask], x[:, :, ~mask])


# --- flow MAP inpainting ----------------------------------------------------------------------------
def tiny_flow() -> ConditionalFlow:
    torch.manual_seed(0)
    cfg = FlowConfig(num_couplings=2, hidden_size=32, depth=1, num_heads=2, patch_size=60)
    flow = ConditionalFlow(cfg, P, Normalization())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial (untrained) density
        for m in flow.modules():
            if isinstance(m, Conditioner):
                m.out.weight.copy_(torch.randn(m.out.weight.shape, generator=g) * 0.1)
            if isinstance(m, ActNorm):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
                m.initialized.fill_(True)
    return flow


def events(b: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hit = torch.rand(b, P, generator=g) < 0.3
    x = torch.stack([hit * torch.rand(b, P, generator=g) * 0.3, hit * (0.5 + 0.3 * torch.rand(b, P, generator=g))], 1)
    return x, torch.rand(b, 6, generator=g), two_strings_geometry_norm()


def two_strings_geometry_norm() -> torch.Tensor:
    return Normalization().normalize_geometry(torch.as_tensor(two_strings().positions))


def test_map_keeps_observed_exactly_and_traces_from_its_start() -> None:
    flow, (x, labels, geo) = tiny_flow(), events()
    mask = np.zeros(P, bool)
    mask[10:25] = True
    calls = []
    filled, trace = flow_map_inpaint(flow, x, mask, labels, geo, steps=15, lr=0.05, restarts=1, init="zero",
                                     progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(filled[:, :, ~mask], x[:, :, ~mask])
    # MAP runs in the unconstrained (logit) space: its objective (tests/test_inpaint_map.py), not log p(x)
    # alone, is what must not fall; the trace of log p(x) starts at the zero fill
    start = flow.log_prob(zero_fill(x, mask), labels, geo)
    assert len(trace) == 16 and trace[0] == pytest.approx(start.mean().item(), rel=1e-4)
    assert not torch.equal(filled[:, :, mask], zero_fill(x, mask)[:, :, mask])
    assert calls[-1] == (15, 15) and len(calls) == 15
    assert all(p.requires_grad and p.grad is None for p in flow.parameters())  # restored, untouched


def test_map_sample_restarts_reproducible_and_keep_observed() -> None:
    flow, (x, labels, geo) = tiny_flow(), events()
    mask = np.zeros(P, bool)
    mask[60:80] = True
    flow.requires_grad_(False)
    flow.train()
    runs = [flow_map_inpaint(flow, x, mask, labels, geo, steps=5, restarts=2,
                             generator=torch.Generator().manual_seed(0))[0] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :, ~mask], x[:, :, ~mask])
    assert not torch.equal(runs[0][:, :, mask], x[:, :, mask])
    assert not any(p.requires_grad for p in flow.parameters()) and flow.training  # state restored
    with pytest.raises(ConfigError, match="init"):
        flow_map_inpaint(flow, x, mask, labels, geo, init="mean")


# --- metrics ----------------------------------------------------------------------------------------
def test_metrics_on_hand_made_events() -> None:
    """Physical events scored in the one scoring space (log1p npe, linear time)."""
    from genesis.inpaint import SCORING

    true = np.array([[[10.0, 0.0, 5.0, 20.0], [100.0, 0.0, 200.0, 300.0]]])
    mask = np.array([True, True, True, False])
    perfect = inpaint_metrics(true, true, mask)
    assert perfect["mse_all"] == 0 and perfect["hit_accuracy"] == 1 and perfect["npe_abs_error"] == 0
    assert perfect["time_error_ns"] == 0 and perfect["total_charge_error"] == 0 and perfect["n_masked_doms"] == 3
    assert perfect["precision"] == 1 and perfect["recall"] == 1 and perfect["n_true_hits"] == 2
    # DOM 0: 10 -> 14 pe and 100 -> 110 ns; DOM 1: a false hit of 1 pe at 50 ns; DOM 2: 5 pe missed (no hit).
    fill = np.array([[[14.0, 1.0, 0.0, 20.0], [110.0, 50.0, 0.0, 300.0]]])
    m = inpaint_metrics(torch.from_numpy(fill), true, mask)  # tensors too
    assert m["npe_abs_error"] == pytest.approx((4 + 1 + 5) / 3)
    assert m["npe_rel_error"] == pytest.approx((4 / 10 + 5 / 5) / 2)
    assert m["time_error_ns"] == pytest.approx(10.0)
    assert m["hit_accuracy"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(1 / 2) and m["recall"] == pytest.approx(1 / 2)
    assert m["total_charge_error"] == pytest.approx(abs(35 - 35) / 35)
    per_dom = ((SCORING.normalize_signal(fill) - SCORING.normalize_signal(true)) ** 2)[0, :, :3].mean(0)
    assert m["mse_all"] == pytest.approx(per_dom.mean())
    assert m["mse_all_se"] == pytest.approx(per_dom.std(ddof=1) / math.sqrt(3))
    assert m["mse_hit"] == pytest.approx(per_dom[[0, 2]].mean())
    no_overlap = inpaint_metrics(np.array([[[0, 0, 0, 20.0], [0, 0, 0, 300.0]]]), true, mask)
    assert math.isnan(no_overlap["time_error_ns"]) and math.isnan(no_overlap["precision"])
    assert no_overlap["recall"] == 0
    with pytest.raises(DataError, match="differ in shape"):
        inpaint_metrics(fill[:, :, :3], true, mask)


def test_improvement_ratios() -> None:
    metrics = {"flow-map": {"mse_all": 0.5}, "zero": {"mse_all": 2.0}, "neighbours": {"mse_all": 1.0}}
    assert improvement_ratios(metrics, "flow-map") == {"zero": 4.0, "neighbours": 2.0}
    with pytest.raises(ConfigError, match="no metrics"):
        improvement_ratios(metrics, "repaint")


# --- dispatch ---------------------------------------------------------------------------------------
def test_run_inpainting_dispatch_and_hides_truth() -> None:
    flow, (x, labels, _) = tiny_flow(), events()
    geo = two_strings()
    mask = np.zeros(P, bool)
    mask[:30] = True
    out, trace = run_inpainting("zero", None, x, mask, labels, geo)
    assert torch.equal(out, zero_fill(x, mask)) and trace == []
    out, _ = run_inpainting("neighbours", None, x, mask, labels, geo)
    assert torch.equal(out, neighbour_fill(zero_fill(x, mask), mask, geo))
    garbage = x.clone()
    garbage[:, :, mask] = 5.0  # the method must not see the true masked values
    a, trace = run_inpainting("flow-map", flow, x, mask, labels, geo, steps=3, restarts=1, init="zero")
    b, _ = run_inpainting("flow-map", flow, garbage, mask, labels, geo, steps=3, restarts=1, init="zero")
    assert torch.equal(a, b) and len(trace) == 4


def test_run_inpainting_errors() -> None:
    flow, (x, labels, _) = tiny_flow(), events()
    geo, mask = two_strings(), np.arange(P) < 10
    with pytest.raises(CheckpointError, match="needs a flow checkpoint"):
        run_inpainting("flow-map", torch.nn.Linear(2, 2), x, mask, labels, geo)
    with pytest.raises(CheckpointError, match="needs a diffusion checkpoint"):
        run_inpainting("repaint", flow, x, mask, labels, geo, diffusion=object())
    with pytest.raises(CheckpointError, match="needs a diffusion checkpoint"):
        run_inpainting("repaint", None, x, mask, labels, geo, diffusion=object())
    with pytest.raises(CheckpointError, match="no normalization metadata"):
        run_inpainting("repaint", torch.nn.Linear(2, 2), x, mask, labels, geo, diffusion=object())
    plain = NormalizationMetadata()
    plain.init_normalization(Normalization())
    with pytest.raises(CheckpointError, match="diffusion=GaussianDiffusion"):
        run_inpainting("repaint", plain, x, mask, labels, geo)
    with pytest.raises(ConfigError, match="unknown inpainting method"):
        run_inpainting("magic", flow, x, mask, labels, geo)
    with pytest.raises(ConfigError, match="does not take"):
        run_inpainting("flow-map", flow, x, mask, labels, geo, temperature=2.0)


def test_run_inpainting_repaint_with_a_real_diffusion_checkpoint(trained) -> None:
    """RePaint through run_inpainting with the session's tiny trained diffusion checkpoint (no stub):
    observed DOMs come back exactly, masked DOMs are filled, the truth at masked DOMs is never seen, and
    the fill is reproducible for a seed and changes with it."""
    from genesis.checkpoint import load_model
    from genesis.data import schema
    from genesis.diffusion import GaussianDiffusion

    loaded = load_model(trained.diffusion)
    norm, geo = loaded.normalization, loaded.geometry
    signal, labels, _ = schema.read_events(trained.data, 0, 2)
    x = norm.normalize_signal(torch.from_numpy(signal), torch.from_numpy(labels), geo.positions)
    lab = norm.normalize_labels(torch.from_numpy(labels))
    mask = geo.indices_of_strings([36, 79])
    diffusion = GaussianDiffusion(loaded.config.diffusion)

    def repaint(x_in, seed):
        return run_inpainting("repaint", loaded.model, x_in, mask, lab, geo, diffusion=diffusion, steps=4,
                              jump_length=2, resample=2, generator=torch.Generator().manual_seed(seed))

    out, trace = repaint(x, 0)
    assert trace == [] and out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out[:, :, ~mask], x[:, :, ~mask])  # observed DOMs exactly as given
    zero = zero_fill(x, mask, norm)
    assert (out[:, :, mask] - zero[:, :, mask]).abs().mean() > 1e-2  # masked DOMs were filled by the model
    garbage = x.clone()
    garbage[:, :, mask] = 5.0  # the method must not see the true masked values
    assert torch.equal(repaint(garbage, 0)[0], out)
    assert not torch.equal(repaint(x, 1)[0][:, :, mask], out[:, :, mask])
    assert inpaint.METHODS == ("flow-map", "repaint", "neighbours", "zero")


def test_map_restarts_keep_best_fill_per_event() -> None:
    flow, (x, labels, geo) = tiny_flow(), events(6)
    mask = np.arange(P) % 4 == 0
    one = inpaint.flow_map_fill(flow, x, mask, labels, geo, steps=2, restarts=1,
                                generator=torch.Generator().manual_seed(0))
    two = inpaint.flow_map_fill(flow, x, mask, labels, geo, steps=2, restarts=2,
                                generator=torch.Generator().manual_seed(0))
    # selection is by the MAP objective (log density in the unconstrained space), per event
    assert (two.objective >= one.objective - 1e-3).all()  # the same first restart (same seed), so never worse
    assert (two.objective > one.objective + 1e-3).any() and (two.objective - one.objective).abs().min() < 1e-3
    assert torch.equal(two.restarts[0], one.restarts[0])


def test_map_restart_selection_logic(monkeypatch) -> None:
    flow, (x, labels, geo) = tiny_flow(), events(2)
    mask = np.arange(P) < 5
    results = iter([  # (fill value, per-event log-prob, trace) of each restart
        (1.0, [0.0, 5.0], [0.0, 2.5]),
        (2.0, [3.0, 1.0], [0.0, 2.0]),
        (3.0, [1.0, 1.0], [0.0, 3.0]),
    ])

    def fake_restart(flow, x_obs, m, labels, geometry, start, steps, lr, tick):
        value, lp, trace = next(results)
        return torch.full_like(x_obs, value), torch.tensor(lp), trace

    monkeypatch.setattr(inpaint.flow_map, "_map_restart", fake_restart)
    filled, trace = flow_map_inpaint(flow, x, mask, labels, geo, steps=1, restarts=3)
    assert filled[0].unique().tolist() == [2.0] and filled[1].unique().tolist() == [1.0]
    assert trace == [0.0, 3.0]  # highest final mean log-prob, even though no event keeps that fill


# --- expected time ----------------------------------------------------------------------------------
def test_expected_time_is_a_range_from_the_warmup_tries_and_the_last_run() -> None:
    """Flow MAP of 100 steps x 2 restarts: 2 (1 s + 100 x 0.1 s) = 22 s at the fastest try, 44 s at the
    slowest, widened by the load margin; a slower last run (0.5 s per step) widens it further."""
    tries = [(1.0, 0.1), (2.0, 0.2)]
    low, high = inpaint.LOAD_MARGIN
    assert inpaint.expected_seconds("flow-map", tries, 100, 2) == pytest.approx((22 * low, 44 * high))
    assert inpaint.expected_seconds("flow-map", tries, 100, 2, last_rate=0.5).high == pytest.approx(100 * high)
    evaluations = inpaint.repaint_evaluations(10)
    assert inpaint.expected_seconds("repaint", [0.5, 1.0], 10) == pytest.approx((evaluations * 0.5 * low,
                                                                                 evaluations * high))
    text = inpaint.expected_time_text("cpu", 60, inpaint.TimeRange(17.6, 66.0), "100 steps x 2 restarts", True)
    assert text.startswith("Expected time: **18 s to 66 s** on cpu for 60 masked DOMs (100 steps x 2 restarts")
    assert "and the last run's speed" in text and "Lower the steps" in text
