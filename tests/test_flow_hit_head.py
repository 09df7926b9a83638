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
from genesis.data.normalization import Normalization
from genesis.geometry import Geometry, icecube86_like
from genesis.inpaint import flow_map_fill, inpaint_events, zero_fill
from genesis.models.flow import (LATERAL_STRINGS, ConditionalFlow, above_below_on_string, lateral_index,
                                 lateral_neighbours, nearest_strings)
from tests.test_inpaint_map import LINEAR, P, bimodal_events, conditioning, two_strings


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.one_thread)


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
    """Half the masks are generation's (everything in 1 of 4, else any share of all DOMs), the rest inpainting's."""
    geo = grid_geometry(strings=12, per_string=60)
    flow = hit_flow(p=720)
    g = LINEAR.normalize_geometry(torch.as_tensor(geo.positions)).float()
    masks = flow.training_masks(g, 2000, torch.Generator().manual_seed(0))
    per_string = masks.reshape(2000, 12, 60)
    share = masks.float().mean(-1)
    everything = masks.all(-1)
    whole = (per_string.all(-1) | ~per_string.any(-1)).all(-1) & ~everything  # strings all or nothing
    assert masks.shape == (2000, 720) and masks.dtype == torch.bool
    assert 0.21 < everything.float().mean() < 0.29  # 1/4: generation's first round sees nothing
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


# --- generation: hits drawn explicitly ---------------------------------------------------------------
ASINH = Normalization(representation="hit", npe_transform="log1p", time_reference="arrival", time_transform="asinh",
                      time_center_ns=10000.0, time_width_ns=200.0, affine_offsets=(1.0, 1.0, -600.0, -550.0, -550.0),
                      affine_scales=(2.0, 1.5, 1200.0, 1100.0, 1100.0), energy_transform="log10",
                      label_offsets=(3.0, 0.0, 0.0, -600.0, -550.0, -550.0),
                      label_scales=(4.0, 3.14159265, 6.28318531, 1200.0, 1100.0, 1100.0))


@pytest.mark.parametrize("norm", [LINEAR, ASINH], ids=["legacy", "hit"])
def test_sampling_draws_hits_from_the_head_and_no_hit_doms_are_exact(norm) -> None:
    """With P(hit) = sigmoid(-1) everywhere, about 27% of the DOMs are drawn hit; every other DOM carries exactly
    the no-hit value (legacy) or hit -1 and zeros ('hit'), and every hit at least the hit threshold's npe."""
    torch.manual_seed(0)
    cfg = FlowConfig(num_couplings=2, hidden_size=16, depth=1, num_heads=2, conditioning="physics", dom_width=8,
                     dom_neighbours=True, hit_head=16)
    flow = ConditionalFlow(cfg, P, norm)
    head_says(flow, -1.0)
    geo = norm.normalize_geometry(torch.as_tensor(two_strings().positions)).float()
    labels = norm.normalize_labels(torch.tensor([[1e5, 1.0, 2.0, 0.0, 0.0, 200.0]] * 16)).float()
    for values in ("head", "flow"):
        x = flow.sample(labels, geo, generator=torch.Generator().manual_seed(1), values=values)
        assert x.shape == (16, norm.channels, P)
        v = flow.to_flow_space(x)
        hit = v[:, 0] > flow.nohit_value()[0].float() + 1e-6
        share = hit.float().mean()
        assert abs(float(share) - float(torch.sigmoid(torch.tensor(-1.0)))) < 0.04  # SE 0.01 on 1920 DOMs
        assert torch.equal(v.transpose(1, 2)[~hit], flow.nohit_value().float().expand(int((~hit).sum()), 2))
        assert (v[:, 0][hit] >= flow._npe_floor().float() - 1e-6).all()
        if norm.representation == "hit":
            assert torch.equal(x[:, 0] > 0, hit) and (x[:, 0].abs() == 1).all()
            assert (x[:, 1:].transpose(1, 2)[~hit] == 0).all()
            phys = norm.denormalize_signal(x.double(), norm.denormalize_labels(labels.double()), two_strings().positions)
            assert ((phys[:, 0] > 0) == hit).all() and (phys[:, 1][~hit] == 0).all()


def test_later_rounds_see_the_hits_of_earlier_ones() -> None:
    """A head that says 'hit' where a DOM above or below was seen hit: drawn in rounds, hits spread along the
    strings (neighbours of hits are hit far more often than P(hit) without any), in one round they cannot."""
    flow = hit_flow(head=16)
    torch.nn.init.zeros_(flow.hit_head.mlp[-1].weight)
    torch.nn.init.zeros_(flow.hit_head.mlp[0].weight)
    s = flow.hit_head.SEEN
    with torch.no_grad():  # first layer: unit 0 = the 'seen hit' flags above and below; last: logit -3 + 8 unit 0
        flow.hit_head.mlp[0].weight[0, s + 0] = 1.0
        flow.hit_head.mlp[0].weight[0, s + s] = 1.0
        flow.hit_head.mlp[0].bias.zero_()
        flow.hit_head.mlp[2].weight.zero_()
        flow.hit_head.mlp[2].bias.zero_()
        flow.hit_head.mlp[2].weight[0, 0] = 1.0
        flow.hit_head.mlp[-1].weight[0, 0] = 8.0
        flow.hit_head.mlp[-1].bias.copy_(torch.tensor([-3.0, 0.0, 0.0, 0.0, 0.0]))
    labels, geo = conditioning(32)

    def below_a_hit(rounds: int) -> float:
        """P(the DOM below a hit DOM is hit)."""
        hit = flow.sample_hits(labels, geo, torch.Generator().manual_seed(0), rounds=rounds)[1].reshape(32, -1, 60)
        return float((hit[..., 1:] & hit[..., :-1]).sum() / hit[..., :-1].sum())

    assert below_a_hit(1) < 0.1  # sigmoid(-3) = 0.047: drawn all at once, every DOM on its own
    assert below_a_hit(8) > 0.3


# --- neighbours on the real detector, cached ---------------------------------------------------------
def test_lateral_neighbours_by_physical_distance_on_icecube86() -> None:
    """The nearest strings are the nearest in metres (brute force), not in normalized coordinates (x and y
    scaled differently), and DeepCore's DOMs read the DOM at the nearest depth; computed once per geometry."""
    geometry = icecube86_like()
    flow = hit_flow(p=geometry.n_doms)
    g = LINEAR.normalize_geometry(torch.as_tensor(geometry.positions)).float()
    found = flow.neighbours(g)
    assert flow.neighbours(g) is found  # cached for the same tensor
    centres = geometry.positions.reshape(86, 60, 3)[:, :, :2].mean(1)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(86) * 1e9
    expected = np.argsort(dist, 1, kind="stable")[:, :LATERAL_STRINGS]
    assert np.array_equal(np.sort(found.lateral.reshape(LATERAL_STRINGS, 86, 60)[:, :, 0].T // 60, 1),
                          np.sort(expected, 1))
    scaled = centres / np.array([1200.0, 1100.0])  # what the flow chose before: normalized coordinates
    dist_n = np.linalg.norm(scaled[:, None] - scaled[None], axis=-1) + np.eye(86) * 1e9
    before = np.sort(np.argsort(dist_n, 1, kind="stable")[:, :LATERAL_STRINGS], 1)
    assert (np.sort(expected, 1) != before).any(1).sum() >= 5  # 19 of 86 strings differ (issue 23)
    depth = geometry.positions[:, 2]
    gap = np.abs(depth[found.lateral.numpy()] - depth[None])  # (k, P) depth gap to each lateral neighbour
    per_string = depth.reshape(86, 60)
    for j in range(LATERAL_STRINGS):  # no DOM on that string is nearer in depth
        other = found.lateral[j].numpy() // 60
        best = np.abs(per_string[other] - depth[:, None]).min(1)
        assert np.allclose(gap[j], best)
    moved = g.clone()
    again = flow.neighbours(moved)
    assert again is not found and torch.equal(again.lateral, found.lateral)  # another tensor: computed again
    moved[0] += 1000.0 / 1200.0  # moved in place by 1 km: computed again (the same neighbours, shifted together)
    assert flow.neighbours(moved) is not again


def test_the_shipped_demo_flow_still_loads_and_samples() -> None:
    """A checkpoint from before explicit hit sampling: it loads and its samples are events (no-hit DOMs at exactly
    npe 0 and time 0, hit DOMs at >= the hit threshold), its head now drawing the hits."""
    from genesis import sampling
    from genesis.demo import DEMO_DIR

    loaded = checkpoint.load_model(DEMO_DIR / "demo-flow.pt")
    labels = np.array([[1e4, 1.0, 2.0, 0.0, 0.0, -100.0], [1e6, 1.0, 2.0, 0.0, 0.0, -100.0]], np.float32)
    events = sampling.generate(loaded, labels, seed=0)
    hit = events[:, 0] > 0
    assert events.shape == (2, 2, loaded.geometry.n_doms) and np.isfinite(events).all()
    assert (events[:, 1][~hit] == 0).all() and (events[:, 0][hit] >= loaded.config.flow.hit_threshold).all()
    assert (hit.sum(1) > 0).all() and (hit.sum(1) < 0.5 * loaded.geometry.n_doms).all()
