"""The diffusion model's handles on the energy: the per-DOM expected-light input and the conditioned per-DOM head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genesis import checkpoint, config
from genesis.demo import DEMO_DIR
from genesis.errors import ConfigError
from genesis.models import physics
from genesis.physics import light_paths


def test_expected_light_predicts_the_simulated_charge(geometry):
    """The feature is worth giving the network: on simulated events its log10 tracks the hit DOMs' log10 npe
    (correlation ~0.9) and the event's total charge (~0.97), across four decades of energy."""
    from genesis.data.simulate import draw_labels
    from genesis.evaluate import simulate_triggered_at

    labels = draw_labels(120, np.random.default_rng(0))
    signal = simulate_triggered_at(labels, geometry, seed=1)
    lab, pos = torch.from_numpy(labels).double(), torch.from_numpy(geometry.positions).double()
    feature = 3 * physics.expected_light(lab[:, 0], light_paths(lab, pos)).numpy()
    npe = signal[:, 0]
    hit = npe > 0
    assert np.corrcoef(np.log10(npe[hit]), feature[hit])[0, 1] > 0.8
    assert np.corrcoef(np.log10(npe.sum(1)), np.log10((10 ** feature).sum(1)))[0, 1] > 0.9
    # and it grows with the energy at fixed geometry, by about a decade per decade at high energy
    brighter = lab.clone()
    brighter[:, 0] *= 10
    more = 3 * physics.expected_light(brighter[:, 0], light_paths(brighter, pos)).numpy()
    assert 0.7 < np.median((more - feature)[feature > 0]) <= 1.0


def test_npe_reference_leaves_a_narrow_residual_that_barely_moves_with_energy(geometry):
    """normalization.npe_reference 'expected': on simulated events the log1p npe of hit DOMs minus the
    reference spreads far less than log1p npe itself (0.49 against 1.63 on 20,000 events), and its mean
    across the four energy decades moves a fraction of what log1p npe's does (0.3 against 1.4)."""
    from genesis.data.normalization import Normalization
    from genesis.data.simulate import draw_labels
    from genesis.evaluate import simulate_triggered_at

    labels = draw_labels(200, np.random.default_rng(0))
    signal = simulate_triggered_at(labels, geometry, seed=1)
    norm = Normalization(representation="hit", npe_transform="log1p", npe_reference="expected",
                         affine_offsets=(0.0, 0.0, 0.0, 0.0, 0.0), affine_scales=(1.0, 1.0, 1.0, 1.0, 1.0))
    residual = norm.normalize_signal(signal, labels, geometry.positions)[:, 1]
    hit = signal[:, 0] > 0
    raw = np.log1p(signal[:, 0])
    assert residual[hit].std() < 0.4 * raw[hit].std()
    decade = np.broadcast_to(np.floor(np.log10(labels[:, :1])), hit.shape)[hit]
    means = lambda v: np.array([v[hit][decade == d].mean() for d in (3, 4, 5, 6)])  # noqa: E731
    assert np.ptp(means(residual)) < 0.35 * np.ptp(means(raw))


NO_LIGHT, NO_HEAD_LABELS = "model.light_feature=false", "model.dom_head_conditioning=false"


def _model(*overrides: str, n_doms: int = 120):
    cfg = config.load("configs/tiny.yaml", list(overrides))
    return checkpoint.build_model(cfg, n_doms, cfg.data.normalization), cfg


def test_light_feature_is_one_more_dom_input_and_needs_physics():
    plain, _ = _model(NO_LIGHT)
    light, _ = _model()
    assert light.geometry_embed.proj.in_features == plain.geometry_embed.proj.in_features + 60
    with pytest.raises(ConfigError, match="light_feature needs model.conditioning: physics"):
        _model("model.conditioning=labels")
    with pytest.raises(ConfigError, match="needs a per-DOM head"):
        _model("model.dom_head_width=0")


def test_flow_light_feature_reaches_the_couplings_and_the_hit_head():
    """flow.light_feature adds the expected charge as one more per-DOM input of the context, of every coupling's
    per-DOM network and of the hit head, and it changes with the energy at fixed geometry."""
    def flow(*overrides: str):
        cfg = config.load("configs/flow_tiny.yaml", list(overrides))
        return checkpoint.build_model(cfg, 120, cfg.data.normalization)

    plain, light = flow("flow.light_feature=false"), flow("flow.light_feature=true")
    assert light.context.geometry.in_features == plain.context.geometry.in_features + 60
    assert light.hit_head.mlp[0].in_features == plain.hit_head.mlp[0].in_features + 1
    couplings = [m.conditioner.dom_net[0].in_features for m in light.transforms if hasattr(m, "conditioner")]
    assert couplings == [m.conditioner.dom_net[0].in_features + 1 for m in plain.transforms if hasattr(m, "conditioner")]
    torch.manual_seed(0)
    labels = torch.rand(1, 6).repeat(2, 1)
    labels[1, 0] = labels[0, 0] + 0.25  # one decade more energy (log10 E / 4)
    geo = labels[0, 3:, None] + 0.03 * torch.randn(3, 120)  # DOMs within tens of metres of the vertex
    dom = light._inputs(labels, geo)[1]
    assert torch.equal(dom[:, :-1], plain._inputs(labels, geo)[1])
    assert (dom[1, -1] - dom[0, -1]).mean() > 0.1  # brighter by the extra decade
    with pytest.raises(ConfigError, match="light_feature needs flow.conditioning: physics"):
        flow("flow.light_feature=true", "flow.conditioning=labels", "flow.dom_width=0", "flow.dom_neighbours=false")


def test_flow_hit_head_npe_is_a_correction_to_the_expected_charge():
    """With flow.light_feature the hit head's npe mean starts from each DOM's expected charge (at least 1 pe): a
    head with zero output predicts it, 10x the energy predicts more charge near the track; without it, 0."""
    cfg = config.load("configs/flow_tiny.yaml")
    flow = checkpoint.build_model(cfg, 120, cfg.data.normalization)
    torch.nn.init.zeros_(flow.hit_head.mlp[-1].weight)
    torch.nn.init.zeros_(flow.hit_head.mlp[-1].bias)
    torch.manual_seed(0)
    labels = torch.rand(1, 6).repeat(2, 1)
    labels[1, 0] = labels[0, 0] + 0.25  # one decade more energy (log10 E / 4)
    geo = labels[0, 3:, None] + 0.03 * torch.randn(3, 120)
    x, observed = torch.zeros(2, 2, 120), torch.zeros(2, 120, dtype=torch.bool)
    npe = flow._npe_physical(flow.predict_hits(x, observed, labels, geo).mean[:, 0])
    expected = (10 ** (3 * flow._inputs(labels, geo)[1][:, -1].double())).clamp_min(1.0)
    assert torch.allclose(npe, expected, rtol=1e-4)
    assert (npe[1] >= npe[0]).all() and npe[1].sum() > 2 * npe[0].sum()
    plain = checkpoint.build_model(config.load("configs/flow_tiny.yaml", ["flow.light_feature=false"]), 120,
                                   cfg.data.normalization)
    torch.nn.init.zeros_(plain.hit_head.mlp[-1].weight)
    torch.nn.init.zeros_(plain.hit_head.mlp[-1].bias)
    assert torch.equal(plain.predict_hits(x, observed, labels, geo).mean, torch.zeros(2, 2, 120))


def test_conditioned_head_reads_the_labels_directly():
    """With the token path fixed, a conditioned head's output still changes with the labels (through c);
    its FiLM starts at zero, so a new model predicts what it would without it."""
    torch.manual_seed(0)
    model, cfg = _model()
    geo = torch.randn(3, 120)
    x, t = torch.randn(1, model.channels, 120).expand(2, -1, -1).contiguous(), torch.tensor([10, 10])
    labels = torch.rand(1, 6).expand(2, 6).clone()
    cond = model.condition(labels, geo, torch.zeros(2, dtype=torch.bool))
    c = model.t_embedder(t) + cond.y
    tokens = torch.randn(1, model.num_tokens, cfg.model.hidden_size).expand(2, -1, -1).contiguous()
    head = model.dom_head
    torch.nn.init.normal_(head.mlp[-1].weight)
    before = head(x, tokens, cond.dom_prepared, c)
    assert torch.allclose(before[0], before[1])
    torch.nn.init.normal_(head.film[-1].weight)
    c2 = c.clone()
    c2[1] += 1.0  # another label embedding, same tokens and per-DOM inputs
    after = head(x, tokens, cond.dom_prepared, c2)
    assert torch.equal(after[0], head(x, tokens, cond.dom_prepared, c)[0])
    assert not torch.allclose(after[0], after[1])


def test_checkpoints_from_before_the_new_inputs_load_and_keep_them_off(tmp_path, geometry):
    """A checkpoint whose config has neither key (written before they existed) rebuilds its model without them."""
    model, cfg = _model(NO_LIGHT, NO_HEAD_LABELS, n_doms=geometry.n_doms)
    state = checkpoint.make_state(cfg, model, None, geometry, step=1, epoch=0, best_val_loss=0.0)
    for key in ("light_feature", "dom_head_conditioning"):
        del state["config"]["model"][key]
    path = checkpoint.save(state, tmp_path / "old.pt")
    loaded = checkpoint.load_model(path, use_ema=False)
    assert not loaded.config.model.light_feature and not loaded.config.model.dom_head_conditioning
    assert loaded.model.dom_head.film is None
    x, labels = torch.randn(2, model.channels, geometry.n_doms), torch.rand(2, 6)
    geo = cfg.data.normalization.normalize_geometry(torch.from_numpy(geometry.positions))
    with torch.no_grad():
        assert torch.equal(loaded.model(x, torch.tensor([3, 7]), labels, geo), model(x, torch.tensor([3, 7]), labels, geo))


DEMO_DIFFUSION = DEMO_DIR / "demo-diffusion.pt"
# The shipped demo's median charge, sampled as it records (unipc-8, quadratic grid; detector noise kept apart), is
# 0.91x, 1.00x and 0.94x the simulator's at 1e4, 1e5 and 1e6 GeV here (16 events, this direction; 128 events against
# 256 simulated: 1.07, 1.07, 1.01); the demo before noise was kept apart 0.98x, 0.81x, 0.72x (128 events: 1.03, 0.88,
# 0.76); the model before the energy handles 0.72x, 0.47x and 0.18x. The goal: within 1.5x at all three.
DEMO_CHARGE_FACTOR = 1.5


@pytest.mark.parametrize("energy", [1e4, 1e5, 1e6])
def test_shipped_demo_diffusion_charge_follows_the_energy(energy, geometry):
    from genesis import sampling
    from genesis.data.simulate import simulate_at_labels

    labels = np.array([[energy, 1.0, 2.0, 0.0, 0.0, 0.0]], np.float32)
    sim = simulate_at_labels(np.repeat(labels, 64, 0), geometry, np.random.default_rng(0))
    events = sampling.generate(checkpoint.load_model(DEMO_DIFFUSION), np.repeat(labels, 16, 0), seed=0)
    ratio = np.median(events[:, 0].sum(1)) / np.median(sim[:, 0].sum(1))
    assert 1 / DEMO_CHARGE_FACTOR <= ratio <= DEMO_CHARGE_FACTOR, ratio


DEMO_FLOW = DEMO_DIR / "demo-flow.pt"
# The shipped demo flow (flow.light_feature, retrained by `genesis demo-models --only flow`) at these labels, 32 events
# against 128 simulated: median charge 1.16x, 1.43x and 1.75x the simulator's at 1e4, 1e5 and 1e6 GeV, slope of log10
# charge against log10 energy 1.05 against 0.96; the flow shipped before it: 183, 326 and 573 pe against 78, 634 and
# 6,470 (slope 0.25). The goal: the slope within 20%.
FLOW_SLOPE_TOLERANCE = 0.2
# Hit DOMs of the demo flow are 0.90-0.97x the simulator's under the label-aware evaluation; 1.5x is a loose guard.
FLOW_HIT_FACTOR = 1.5


def test_shipped_demo_flow_charge_follows_the_energy(geometry):
    from genesis import sampling
    from genesis.data.simulate import simulate_at_labels

    energies = np.array([1e4, 1e5, 1e6])
    loaded = checkpoint.load_model(DEMO_FLOW)
    sim_npe, flow_npe = [], []
    for energy in energies:
        labels = np.array([[energy, 1.0, 2.0, 0.0, 0.0, 0.0]], np.float32)
        sim = simulate_at_labels(np.repeat(labels, 128, 0), geometry, np.random.default_rng(0))
        events = sampling.generate(loaded, np.repeat(labels, 32, 0), seed=0)
        sim_npe.append(np.median(sim[:, 0].sum(1)))
        flow_npe.append(np.median(events[:, 0].sum(1)))
        hits = np.median((events[:, 0] > 0).sum(1)) / np.median((sim[:, 0] > 0).sum(1))
        assert 1 / FLOW_HIT_FACTOR <= hits <= FLOW_HIT_FACTOR, (energy, hits)
    sim_slope = np.polyfit(np.log10(energies), np.log10(sim_npe), 1)[0]
    flow_slope = np.polyfit(np.log10(energies), np.log10(flow_npe), 1)[0]
    assert abs(flow_slope / sim_slope - 1) <= FLOW_SLOPE_TOLERANCE, (flow_slope, sim_slope)


def test_npe_reference_travels_in_the_model_state_and_old_states_read_none():
    """A checkpoint alone must denormalize: the npe reference is model state like the time reference."""
    model, _ = _model("data.normalization.npe_reference=expected")
    fresh, _ = _model()
    fresh.load_state_dict(model.state_dict())
    assert fresh.normalization.npe_reference == "expected" and fresh.normalization == model.normalization
    old = model.state_dict()
    key = next(k for k in old if k.endswith("_extra_state"))
    old[key] = {k: v for k, v in old[key].items() if k != "npe_reference"}
    fresh.load_state_dict(old)
    assert fresh.normalization.npe_reference == "none"
