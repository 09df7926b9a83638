"""The flow built for hit data, part two: per-DOM networks that read the DOMs above and below, and the
hit head (the hurdle part: P(hit) of a masked DOM given the observed ones) that flow MAP takes hit /
no hit from. Invertibility and exact log-dets with the neighbour inputs, the head never reading what it
predicts, its training masks and loss, MAP with a head (observed DOMs bit-identical, no-hit DOMs exact,
hit DOMs above the hit threshold), checkpoints with and without the new fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genesis import checkpoint, inpaint
from genesis.config import DataConfig, FlowConfig, RunConfig
from genesis.errors import ConfigError
from genesis.geometry import Geometry
from genesis.inpaint import flow_map_fill, inpaint_events, zero_fill
from genesis.models.flow import (LATERAL_STRINGS, ConditionalFlow, above_below_on_string, lateral_index,
                                 lateral_neighbours, nearest_strings)
from tests.test_inpaint_map import LINEAR, P, bimodal_events, conditioning, two_strings


def grid_geometry(strings: int = 8, per_string: int = 4) -> Geometry:
    """`strings` strings on a line, 100, 150, 200, ... m apart (no ties between distances), `per_string`
    DOMs each (a detector that is not IceCube)."""
    z = -17.0 * np.arange(per_string)
    xs = np.cumsum([0.0] + [100.0 + 50.0 * s for s in range(strings - 1)])
    pos = np.concatenate([np.column_stack([np.full(per_string, x), np.zeros(per_string), z]) for x in xs])
    return Geometry(pos, np.repeat(np.arange(1, strings + 1), per_string), np.tile(np.arange(1, per_string + 1), strings),
                    "line")


def hit_flow(p: int = P, patch: int = 60, head: int = 16, neighbours: bool = True, seed: int = 0) -> ConditionalFlow:
    torch.manual_seed(seed)
    cfg = FlowConfig(num_couplings=3, hidden_size=16, depth=1, num_heads=2, patch_size=patch, conditioning="physics",
                     dom_width=8, dom_neighbours=neighbours, hit_head=head, inpaint_fill="vote")
    return ConditionalFlow(cfg, p, LINEAR)


# --- neighbours -------------------------------------------------------------------------------------
def test_above_below_on_string_and_zero_past_the_ends() -> None:
    v = torch.arange(1.0, 9.0).reshape(1, 1, 8)  # two strings of four DOMs: 1 2 3 4 | 5 6 7 8
    out = above_below_on_string(v, segment=4)
    assert out[0, 0].tolist() == [0, 1, 2, 3, 0, 5, 6, 7]  # above
    assert out[0, 1].tolist() == [2, 3, 4, 0, 6, 7, 8, 0]  # below


def test_lateral_neighbours_read_the_same_dom_on_the_nearest_strings() -> None:
    geo = grid_geometry(strings=4, per_string=3)
    pos = torch.as_tensor(geo.positions).T  # (3, P) metres
    v = (10 * torch.arange(4.0).repeat_interleave(3) + torch.arange(3.0).repeat(4)).reshape(1, 1, 12)  # 10 s + dom
    assert nearest_strings(pos, 3, 2).tolist() == [[1, 2], [0, 2], [1, 3], [2, 1]]  # strings at 0, 100, 250, 450 m
    out = lateral_neighbours(v, lateral_index(pos, 3, k=2))  # (1, 2, 12): nearest string first
    assert out[0, 0].tolist() == [10, 11, 12, 0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert out[0, 1].tolist() == [20, 21, 22, 20, 21, 22, 30, 31, 32, 10, 11, 12]
    # string 1 hangs 34 m deeper (2 DOM spacings): the DOM at the nearest depth, not the same DOM number
    geo.positions[3:6, 2] -= 34.0
    out = lateral_neighbours(v, lateral_index(torch.as_tensor(geo.positions).T, 3, k=2))
    assert out[0, 0, :3].tolist() == [10, 10, 10] and out[0, 0, 3:6].tolist() == [2, 2, 2]


def test_neighbour_inputs_keep_the_flow_invertible_with_exact_log_det() -> None:
    """Per-DOM networks that read the DOMs above and below only ever read untransformed entries: the
    forward map stays invertible and its log-det equals log|det| of the full autograd Jacobian."""
    geo = grid_geometry(strings=2, per_string=4)
    flow = hit_flow(p=8, patch=4, head=0).double()
    for module in flow.modules():  # a non-trivial map: the zero-initialised last layers get weights
        if isinstance(module, torch.nn.Linear) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.3)
    labels = torch.tensor([[0.5, 0.3, 0.2, 0.0, 0.0, 0.1]], dtype=torch.float64)
    g = LINEAR.normalize_geometry(torch.as_tensor(geo.positions)).double()
    x = torch.randn(1, 2, 8, dtype=torch.float64)
    z, logdet = flow(x, labels, g)
    back, inv_logdet = flow.inverse(z, labels, g)
    assert torch.allclose(back, x, atol=1e-9) and torch.allclose(inv_logdet, -logdet, atol=1e-9)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.reshape(1, 2, 8), labels, g)[0].reshape(16), x.reshape(16))
    assert torch.allclose(torch.linalg.slogdet(jac)[1], logdet[0], atol=1e-8)
    assert not torch.allclose(z, x)  # the couplings did something


def test_neighbours_need_the_per_dom_network() -> None:
    cfg = FlowConfig(num_couplings=2, hidden_size=16, num_heads=2, dom_neighbours=True, dom_width=0)
    with pytest.raises(ConfigError, match="dom_width"):
        ConditionalFlow(cfg, P, LINEAR)


# --- the hit head -----------------------------------------------------------------------------------
def test_hit_head_never_reads_the_values_it_predicts() -> None:
    """On a detector with more strings than LATERAL_STRINGS, so that the lateral inputs are real: hidden DOMs'
    values change nothing; an observed DOM changes the prediction at the hidden DOMs beside it on other strings."""
    strings = LATERAL_STRINGS + 2
    geometry = grid_geometry(strings=strings, per_string=60)
    p = strings * 60
    flow = hit_flow(p=p)
    g = LINEAR.normalize_geometry(torch.as_tensor(geometry.positions)).float()
    lateral = flow.neighbours(g).lateral
    assert lateral is not None
    labels = LINEAR.normalize_labels(torch.tensor([[1e5, 1.0, 2.0, 100.0, 0.0, -20.0]] * 2)).float()
    x = LINEAR.normalize_signal(bimodal_events(2, seed=1).repeat(1, 1, strings // 2)).float()
    dom = torch.arange(p)
    observed = (dom + dom // 60) % 3 != 0  # shifted string by string: DOMs at one depth are hidden on some strings only
    other = torch.where(observed, x, torch.randn_like(x) * 3)  # anything at the hidden DOMs
    for module in flow.hit_head.mlp:  # outputs that depend on their inputs
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.3)
    with torch.no_grad():
        base = flow.predict_hits(x, observed, labels, g)
        for a, b in zip(base, flow.predict_hits(other, observed, labels, g)):
            assert torch.equal(a, b)
        # an observed DOM of string 1 is a lateral neighbour of hidden DOMs on other strings: it reaches them
        target = 61
        readers = (lateral == target).any(0) & ~observed
        assert bool(observed[target]) and readers.any() and (dom[readers] // 60 != 1).all()
        changed = x.clone()
        changed[:, :, target] += 1.0
        moved = flow.predict_hits(changed, observed, labels, g)
        assert not torch.equal(base.logits[:, readers], moved.logits[:, readers])


def test_training_masks_hide_random_doms_scattered_strings_and_clumps() -> None:
    """Half the masks are generation's (any share of all DOMs, everything in 1 of 8), the rest inpainting's."""
    geo = grid_geometry(strings=12, per_string=60)
    flow = hit_flow(p=720)
    g = LINEAR.normalize_geometry(torch.as_tensor(geo.positions)).float()
    masks = flow.training_masks(g, 2000, torch.Generator().manual_seed(0))
    per_string = masks.reshape(2000, 12, 60)
    share = masks.float().mean(-1)
    everything = masks.all(-1)
    whole = (per_string.all(-1) | ~per_string.any(-1)).all(-1) & ~everything  # strings all or nothing
    assert masks.shape == (2000, 720) and masks.dtype == torch.bool
    assert 0.09 < everything.float().mean() < 0.16  # 1/8: generation's first round sees nothing
    assert 0.25 < whole.float().mean() < 0.42  # a third: scattered strings and clumps
    assert 0.08 < (~whole & (share > 0.5) & ~everything).float().mean() < 0.3  # generation's later rounds
    clumped = whole & (per_string.all(-1).sum(-1) >= 4)
    assert clumped.any()  # clumps of adjacent strings appear
    assert masks.any(-1).float().mean() > 0.9


def test_training_loss_adds_the_hit_nll_and_trains_the_head() -> None:
    flow = hit_flow()
    labels, geo = conditioning(16)
    x = LINEAR.normalize_signal(bimodal_events(16, seed=2, p_hit=0.3)).float()
    nll, extra = flow.training_loss(x, labels, geo, generator=torch.Generator().manual_seed(0))
    assert extra["hit_nll"] > 0
    generator = torch.Generator().manual_seed(0)
    flow.training_masks(geo, 16, generator)  # drawn first, then the dequantization noise
    z, logdet = flow(flow.dequantize(x, generator), labels, geo)
    flow_nll = -(flow.base_log_prob(z) + logdet).mean()
    # trained on the sum; 'nll' is the flow's alone (logged and chosen on apart from the head's)
    assert torch.isclose(extra["nll"], flow_nll.detach(), rtol=1e-5)
    assert torch.isclose(nll.detach(), flow_nll.detach() + extra["hit_nll"], rtol=1e-5)
    # a pattern to learn: the top half of every string hit, the bottom half not
    top = (torch.arange(P) % 60 < 30).reshape(1, 1, P)
    x = torch.where(top, x.abs() + 0.5, flow.nohit_value().float().reshape(1, 2, 1)).expand_as(x).contiguous()

    def held_out_hit_nll() -> float:
        with torch.no_grad():
            return float(flow.training_loss(x, labels, geo, generator=torch.Generator().manual_seed(999))[1]["hit_nll"])

    before = held_out_hit_nll()
    opt = torch.optim.Adam(flow.hit_head.parameters(), lr=1e-2)
    for step in range(100):
        opt.zero_grad()
        flow.training_loss(x, labels, geo, generator=torch.Generator().manual_seed(step))[0].backward()
        opt.step()
    assert held_out_hit_nll() < 0.3 * before


def head_says(flow: ConditionalFlow, logit: float) -> None:
    """Make the head answer the same logit everywhere, and hit values at (0, 0) +- 1."""
    torch.nn.init.zeros_(flow.hit_head.mlp[-1].weight)
    with torch.no_grad():
        flow.hit_head.mlp[-1].bias.copy_(torch.tensor([logit, 0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("logit", [-8.0, 8.0])
def test_map_with_a_hit_head_takes_hit_or_no_hit_from_it(logit) -> None:
    flow = hit_flow()
    head_says(flow, logit)
    labels, geo = conditioning(2)
    x = LINEAR.normalize_signal(bimodal_events(2, seed=3)).float()
    mask = np.arange(P) % 4 == 0
    x_obs = zero_fill(x, mask, LINEAR)
    out = flow_map_fill(flow, x_obs, mask, labels, geo, steps=3, restarts=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.filled[:, :, ~mask], x[:, :, ~mask])  # observed DOMs bit-identical
    masked = out.filled[:, :, mask]
    assert torch.allclose(out.hit_probability[:, mask], torch.sigmoid(torch.tensor(logit)))
    assert (out.hit_probability[:, ~mask] == 0).all()
    if logit < 0:  # every masked DOM exactly the no-hit value
        assert torch.equal(masked, flow.nohit_value().float().reshape(1, 2, 1).expand_as(masked))
    else:  # every masked DOM a hit: npe at or above the hit threshold, inside the observed hits' time box
        threshold = flow._npe_normalized(torch.tensor(flow.config.hit_threshold, dtype=torch.float64)).float()
        assert (masked[:, 0] >= threshold - 1e-6).all()
        lo, hi = inpaint.hit_bounds(flow, x_obs, torch.as_tensor(mask))
        assert ((masked[:, 1] >= lo[:, 1] - 1e-5) & (masked[:, 1] <= hi[:, 1] + 1e-5)).all()
    for fill in out.fills.values():
        assert torch.equal(fill[:, :, ~mask], x[:, :, ~mask])


def config_with_head() -> RunConfig:
    return RunConfig(kind="flow", flow=FlowConfig(num_couplings=2, hidden_size=16, depth=1, num_heads=2, patch_size=60,
                                                  conditioning="physics", dom_width=8, inpaint_fill="vote",
                                                  dom_neighbours=True, hit_head=16),
                     data=DataConfig(normalization=LINEAR))


@pytest.mark.parametrize("kind", ["hit-head", "before-hit-head"])
def test_checkpoints_with_and_without_a_hit_head_load_and_inpaint(tmp_path, kind) -> None:
    """A checkpoint with the head reports its hit probability as the uncertainty; one written before the
    dom_neighbours / hit_head fields existed loads with both off and inpaints as before."""
    geometry = two_strings()
    cfg = config_with_head()
    torch.manual_seed(0)
    flow = ConditionalFlow(cfg.flow, P, LINEAR)
    if kind == "before-hit-head":
        import dataclasses

        cfg = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, dom_neighbours=False, hit_head=0))
        flow = ConditionalFlow(cfg.flow, P, LINEAR)
    state = checkpoint.make_state(cfg, flow, flow, geometry, 0, 0, 0.0)
    if kind == "before-hit-head":
        for key in ("dom_neighbours", "hit_head"):
            del state["config"]["flow"][key]
    loaded = checkpoint.load_model(checkpoint.save(state, tmp_path / "flow.pt"))
    assert (loaded.model.hit_head is not None) == (kind == "hit-head")
    signal = bimodal_events(2, seed=7).numpy().astype(np.float32)
    labels = np.tile(np.array([[1e5, 1.0, 2.0, 0.0, 0.0, -100.0]], np.float32), (2, 1))
    mask = np.arange(P) % 2 == 0
    result = inpaint_events(loaded, signal, labels, mask, "flow-map", geometry, steps=2, restarts=2)
    assert np.array_equal(result.filled[:, :, ~mask], signal[:, :, ~mask]) and np.isfinite(result.filled).all()
    if kind == "hit-head":
        with torch.no_grad():
            x = loaded.normalization.normalize_signal(torch.from_numpy(signal), torch.from_numpy(labels),
                                                      geometry.positions)
            lab = loaded.normalization.normalize_labels(torch.from_numpy(labels))
            g = loaded.normalization.normalize_geometry(torch.as_tensor(geometry.positions)).float()
            p_hit = torch.sigmoid(loaded.model.predict_hits(x.float(), torch.as_tensor(~mask), lab.float(), g).logits)
        assert np.allclose(result.uncertainty[:, 0][:, mask], p_hit[:, mask].numpy(), atol=1e-6)
