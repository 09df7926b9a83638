"""Conditional flow: invertibility, exact log-determinants, training, sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genesis.config import FlowConfig
from genesis.data.normalization import Normalization
from genesis.errors import ConfigError
from genesis.models.flow import (
    MASK_KINDS,
    ActNorm,
    AffineCoupling,
    Conditioner,
    ConditionalFlow,
    coupling_mask,
)
from genesis.models.common import patchify, unpatchify


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.one_thread)

P = 120  # two "strings" of 60 DOMs


def synthetic_events(b: int, p: int, seed: int = 0) -> torch.Tensor:
    """Zero-inflated normalized events (B, 2, P): ~30% hit DOMs, exact zeros elsewhere."""
    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(b, p, generator=g) < 0.3
    npe = torch.where(hit, 0.02 + 0.3 * torch.rand(b, p, generator=g), torch.zeros(b, p))
    time = torch.where(hit, 0.5 + 0.3 * torch.rand(b, p, generator=g), torch.zeros(b, p))
    return torch.stack([npe, time], 1)


def make_flow(p: int = P, patch: int = 60, couplings: int = 4, seed: int = 0, hidden: int = 32) -> ConditionalFlow:
    torch.manual_seed(seed)
    cfg = FlowConfig(num_couplings=couplings, hidden_size=hidden, depth=1, num_heads=2, patch_size=patch)
    return ConditionalFlow(cfg, p, Normalization())


def perturb(module: nn.Module, std: float = 0.3, seed: int = 1) -> None:
    """Randomise zero-initialised output layers and ActNorm so no transform is the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, Conditioner):
                m.out.weight.copy_(torch.randn(m.out.weight.shape, generator=g) * std)
                m.out.bias.copy_(torch.randn(m.out.bias.shape, generator=g) * std)
                if m.dom_net is not None:
                    last = m.dom_net[-1]
                    last.weight.copy_(torch.randn(last.weight.shape, generator=g) * std)
                    last.bias.copy_(torch.randn(last.bias.shape, generator=g) * std)
            if isinstance(m, ActNorm):
                m.log_scale.copy_(torch.randn(m.log_scale.shape, generator=g) * std)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * std)
                m.initialized.fill_(True)


def conditioning(b: int, p: int, seed: int = 2, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 6, generator=g).to(dtype), torch.rand(3, p, generator=g).to(dtype)


def brute_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| per event of fn: (1, 2, P) -> (1, 2, P), by autograd.functional.jacobian."""
    out = []
    for b in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda xb: fn(xb.unsqueeze(0), b)[0], x[b])
        n = x[b].numel()
        out.append(torch.linalg.slogdet(jac.reshape(n, n))[1])
    return torch.stack(out)


def test_patchify_roundtrip_groups_consecutive_doms() -> None:
    x = torch.arange(2 * 8.0).reshape(1, 2, 8)
    tokens = patchify(x, 4)
    assert tokens.shape == (1, 2, 8)
    assert tokens[0, 1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]  # DOMs 4-7, npe then time
    assert torch.equal(unpatchify(tokens, 2), x)


@pytest.mark.parametrize("per_dom", [False, True])
def test_actnorm_init_inverse_and_logdet(per_dom: bool) -> None:
    x = torch.randn(3, 2, 4, dtype=torch.float64) * 3 + 1
    layer = ActNorm(4, per_dom=per_dom).double()
    y, logdet = layer(x)
    dims = (0,) if per_dom else (0, 2)
    assert torch.allclose(y.mean(dims), torch.zeros(()).double(), atol=1e-6)  # data-dependent init
    assert torch.allclose(y.std(dims, unbiased=False), torch.ones(()).double(), atol=1e-6)
    x_back, inv_logdet = layer.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(inv_logdet, -logdet)
    assert torch.allclose(logdet, brute_logdet(lambda xb, b: layer(xb), x), atol=1e-8)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_coupling_inverse_and_logdet_match_jacobian(kind: str) -> None:
    torch.manual_seed(0)
    p, patch, hidden = 4, 2, 16
    cond = Conditioner(hidden, depth=1, heads=2, patch_size=patch)
    layer = AffineCoupling(coupling_mask(kind, p, segment=2), cond, scale_bound=2.0).double()
    perturb(layer)
    x = torch.randn(2, 2, p, dtype=torch.float64)
    context = torch.randn(2, p // patch, hidden, dtype=torch.float64)
    y, logdet = layer(x, context)
    assert logdet.abs().min() > 1e-3  # a non-trivial map
    fixed = ~layer.mask.bool()
    assert torch.equal(y[:, fixed], x[:, fixed])  # the conditioning half passes through exactly
    x_back, inv_logdet = layer.inverse(y, context)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(inv_logdet, -logdet)
    assert torch.allclose(logdet, brute_logdet(lambda xb, b: layer(xb, context[b : b + 1]), x), atol=1e-8)


def test_log_scale_is_bounded() -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(coupling_mask("npe", 4, 2), Conditioner(16, 1, 2, 2), scale_bound=0.5)
    with torch.no_grad():
        layer.conditioner.out.weight.fill_(50.0)
    _, logdet = layer(torch.randn(3, 2, 4), torch.randn(3, 2, 16))
    assert (logdet.abs() <= 0.5 * 4 + 1e-5).all()  # 4 transformed values, |s| <= bound each


def test_masks_are_complementary_pairs_and_alternate() -> None:
    masks = {k: coupling_mask(k, P, 60) for k in MASK_KINDS}
    for a, b in [("odd-doms", "even-doms"), ("time", "npe"), ("bottom-half", "top-half")]:
        assert torch.equal(masks[a], ~masks[b])
    assert masks["odd-doms"][:, 1].all() and not masks["odd-doms"][:, 0].any()
    top = masks["top-half"]
    assert top[:, :30].all() and top[:, 60:90].all() and not top[:, 30:60].any()
    flow = make_flow(couplings=6)
    assert flow.mask_kinds == list(MASK_KINDS)


def test_whole_flow_logdet_matches_jacobian() -> None:
    flow = make_flow(p=4, patch=2, couplings=6, hidden=16).double()
    perturb(flow)
    labels, geometry = conditioning(2, 4, dtype=torch.float64)
    x = torch.randn(2, 2, 4, dtype=torch.float64)
    z, logdet = flow(x, labels, geometry)
    brute = brute_logdet(lambda xb, b: flow(xb, labels[b : b + 1], geometry), x)
    assert logdet.abs().min() > 1e-2
    assert torch.allclose(logdet, brute, atol=1e-7)


def test_flow_inverts_and_logdets_cancel() -> None:
    flow = make_flow()
    x = synthetic_events(4, P)
    labels, geometry = conditioning(4, P)
    flow(x, labels, geometry)  # ActNorm initialisation
    perturb(flow, std=0.1)
    z, logdet = flow(x, labels, geometry)
    x_back, inv_logdet = flow.inverse(z, labels, geometry)
    assert not torch.allclose(z, x, atol=1e-2)
    assert torch.allclose(x_back, x, atol=1e-4)
    assert torch.allclose(inv_logdet, -logdet, rtol=1e-4, atol=1e-3)


def test_fresh_couplings_are_identity() -> None:
    flow = make_flow()
    x, (labels, geometry) = synthetic_events(2, P), conditioning(2, P)
    for layer in flow.transforms:
        if isinstance(layer, AffineCoupling):
            y, logdet = layer(x, flow._context(labels, geometry))
            assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))


def test_log_prob_finite_and_batched_geometry_matches_broadcast() -> None:
    flow = make_flow()
    perturb(flow, std=0.1)
    x, (labels, geometry) = synthetic_events(3, P), conditioning(3, P)
    lp = flow.log_prob(x, labels, geometry)
    assert lp.shape == (3,) and torch.isfinite(lp).all()
    lp_batched = flow.log_prob(x, labels, geometry.expand(3, 3, P))
    assert torch.allclose(lp, lp_batched)
    other = flow.log_prob(x, labels, geometry + 0.5)
    assert not torch.allclose(lp, other)  # geometry conditions the density
    assert not torch.allclose(lp, flow.log_prob(x, labels + 0.5, geometry))  # and so do the labels


def test_training_lowers_nll() -> None:
    flow = make_flow()
    x, (labels, geometry) = synthetic_events(16, P), conditioning(16, P)
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss, logs = flow.training_loss(x, labels, geometry, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(logs) == {"nll", "bits_per_dim"}
    assert logs["bits_per_dim"].item() == pytest.approx(logs["nll"].item() / (2 * P * 0.6931471805599453))
    assert sum(losses[-5:]) / 5 < losses[0] - 0.1 * abs(losses[0])


LINEAR = Normalization(affine_offsets=(1.0, 9000.0, -600.0, -550.0, -550.0),
                       affine_scales=(2.0, 2000.0, 1200.0, 1100.0, 1100.0), time_transform="none", npe_transform="log1p")
SHIFTED = Normalization(affine_offsets=(0.3, -50.0, 0.0, 0.0, 0.0), affine_scales=(150.0, 8.0, 1.0, 1.0, 1.0))
NORMALIZATIONS = {"original": Normalization(), "linear-time": LINEAR, "shifted-ln": SHIFTED}


def physical_events(b: int, p: int, seed: int = 0) -> torch.Tensor:
    """Physical events (B, 2, P): ~30% hit DOMs, half with integer counts and half with continuous charges,
    hit times 9000..15000 ns; no-hit DOMs npe 0 and time 0."""
    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(b, p, generator=g) < 0.3
    counts = torch.randint(1, 50, (b, p), generator=g).double()
    charge = torch.where(torch.arange(p) % 2 == 0, counts, counts + 0.37)
    npe = torch.where(hit, charge, torch.zeros(b, p, dtype=torch.float64))
    time = torch.where(hit, 9000 + 6000 * torch.rand(b, p, generator=g, dtype=torch.float64),
                       torch.zeros(b, p, dtype=torch.float64))
    return torch.stack([npe, time], 1)


def make_flow_with(norm: Normalization, p: int = P) -> ConditionalFlow:
    torch.manual_seed(0)
    return ConditionalFlow(FlowConfig(num_couplings=2, hidden_size=16, depth=1, num_heads=2, patch_size=60), p, norm)


@pytest.mark.parametrize("name", list(NORMALIZATIONS))
def test_dequantization_spreads_only_point_masses(name: str) -> None:
    """No-hit DOMs go one-sided below the no-hit value of *this* normalization (non-zero offsets too),
    integer counts by at most half a photoelectron, and no hit time and no continuous charge changes."""
    norm = NORMALIZATIONS[name]
    flow = make_flow_with(norm)
    phys = physical_events(6, P)
    x = norm.normalize_signal(phys).float()
    nohit = norm.normalize_signal(torch.zeros(1, 2, 1, dtype=torch.float64)).reshape(2)
    assert torch.allclose(flow.nohit_value(), nohit)
    noisy = flow.dequantize(x, torch.Generator().manual_seed(0))
    w = flow.config.dequant_noise
    hit = phys[:, 0] > 0
    count = hit & (phys[:, 0] == phys[:, 0].round())
    assert torch.equal(noisy[:, 1][hit], x[:, 1][hit])  # no hit time is dequantized
    assert torch.equal(noisy[:, 0][hit & ~count], x[:, 0][hit & ~count])  # continuous charges kept
    below = nohit[0].float() - noisy[:, 0][~hit]
    assert (below >= 0).all() and (below <= w * (1 + 1e-4)).all() and below.std() > w / 10
    assert ((noisy[:, 1][~hit] - nohit[1].float()).abs() <= w / 2 * (1 + 1e-4)).all()
    back = norm.denormalize_signal(noisy.double())
    moved = (back[:, 0] - phys[:, 0])[count]
    assert (moved.abs() <= 0.5 + 1e-3).all() and moved.abs().mean() > 0.1
    assert (back[:, 0][hit] > 0.5 - 1e-3).all()  # every hit stays above the 0.5-pe hit threshold
    assert (noisy[:, 0][hit] > noisy[:, 0][~hit].max()).all()  # hits and no-hits never overlap


def test_dequantization_off_and_training_with_offsets() -> None:
    flow = make_flow_with(LINEAR)
    x = LINEAR.normalize_signal(physical_events(8, P)).float()
    labels, geometry = conditioning(8, P)
    loss, logs = flow.training_loss(x, labels, geometry, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    off = make_flow_with(LINEAR)
    off.config = FlowConfig(**{**off.config.__dict__, "dequant_noise": 0.0})
    assert torch.equal(off.dequantize(x), x)


def test_sample_shape_and_seed_reproducibility() -> None:
    flow = make_flow()
    perturb(flow, std=0.1)
    labels, geometry = conditioning(3, P)
    a = flow.sample(labels, geometry, generator=torch.Generator().manual_seed(5))
    b = flow.sample(labels, geometry, generator=torch.Generator().manual_seed(5))
    c = flow.sample(labels, geometry, generator=torch.Generator().manual_seed(6))
    cold = flow.sample(labels, geometry, generator=torch.Generator().manual_seed(5), temperature=0.0)
    assert a.shape == (3, 2, P) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, cold)


def test_config_errors_and_metadata() -> None:
    with pytest.raises(ConfigError, match="patch_size"):
        ConditionalFlow(FlowConfig(patch_size=7, hidden_size=32, num_heads=2), P, Normalization())
    with pytest.raises(ConfigError, match="num_heads"):
        ConditionalFlow(FlowConfig(patch_size=60, hidden_size=30, num_heads=4), P, Normalization())
    with pytest.raises(ConfigError, match="mask kind"):
        coupling_mask("diagonal", P, 60)
    flow = make_flow()
    assert flow.n_doms == P and flow.config.num_couplings == 4
    params = flow.get_normalization_params()
    assert params["affine_scales"][0] == 200.0 and params["time_transform"] == "ln"


# --- physics conditioning and the per-DOM coupling network ----------------------------------------
def physics_flow(norm: Normalization = LINEAR, dom_width: int = 8, p: int = P) -> ConditionalFlow:
    torch.manual_seed(0)
    cfg = FlowConfig(num_couplings=3, hidden_size=16, depth=1, num_heads=2, patch_size=60, conditioning="physics",
                     dom_width=dom_width)
    return ConditionalFlow(cfg, p, norm)


def physics_conditioning(b: int, norm: Normalization, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized labels (B, 6) of physical ones (1e3..1e6 GeV, any direction, vertex inside) and the
    normalized positions of two 60-DOM strings."""
    g = torch.Generator().manual_seed(seed)
    phys = torch.stack([10 ** (3 + 3 * torch.rand(b, generator=g)), torch.pi * torch.rand(b, generator=g),
                        2 * torch.pi * torch.rand(b, generator=g), *(100 * torch.randn(3, b, generator=g))], 1)
    z = 500.0 - 17.0 * torch.arange(60.0)
    pos = torch.cat([torch.stack([torch.full((60,), x), torch.zeros(60), z]) for x in (0.0, 125.0)], 1)
    return norm.normalize_labels(phys.double()).float(), norm.normalize_geometry(pos.T.double()).float()


def test_physics_flow_inverts_exactly_with_offsets() -> None:
    """Physics conditioning (per-DOM light geometry from the labels through non-zero offsets, log10
    energy) and per-DOM coupling networks keep the flow exactly invertible, log-dets consistent."""
    norm = Normalization(**{**LINEAR.__dict__, "energy_transform": "log10",
                            "label_offsets": (3.0, 0.0, 0.0, -600.0, -550.0, -550.0),
                            "label_scales": (4.0, 3.14159265, 6.28318531, 1200.0, 1100.0, 1100.0)})
    flow = physics_flow(norm).double()
    perturb(flow, std=0.1)
    labels, geometry = physics_conditioning(2, norm)
    labels, geometry = labels.double(), geometry.double()
    x = norm.normalize_signal(physical_events(2, P)).double()
    z, logdet = flow(x, labels, geometry)
    back, inv_logdet = flow.inverse(z, labels, geometry)
    assert torch.allclose(back, x, atol=1e-8) and torch.allclose(inv_logdet, -logdet, atol=1e-8)
    # exact inversion means no coupling reads what it transforms, so log|det| is the sum of its log-scales
    # (the brute-force Jacobian of the same machinery: test_whole_flow_logdet_matches_jacobian)
    assert logdet.abs().max() > 1e-3  # a non-trivial map
    context = flow._context(labels, geometry)
    assert context.dom.shape == (2, 3 + 5, P) and torch.isfinite(context.dom).all()
    assert not torch.allclose(context.dom[0, 3:], context.dom[1, 3:])  # the light geometry follows the labels


def test_physics_flow_starts_as_identity_and_trains() -> None:
    flow = physics_flow()
    labels, geometry = physics_conditioning(4, LINEAR)
    x = LINEAR.normalize_signal(physical_events(4, P)).float()
    flow(x, labels, geometry)  # ActNorm data init
    for layer in flow.transforms:
        if isinstance(layer, AffineCoupling):
            y, logdet = layer(x, flow._context(labels, geometry))
            assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(4))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, _ = flow.training_loss(x, labels, geometry, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.transforms[1].conditioner.dom_net.parameters())


def test_flows_from_before_physics_conditioning_keep_their_parameters() -> None:
    """A FlowConfig without the new fields (an older checkpoint's) builds the same modules as before:
    no per-DOM networks, a 3-channel geometry and 6-label context."""
    flow = make_flow()
    assert flow.config.conditioning == "labels" and flow.config.dom_width == 0 and flow.config.inpaint_fill == "best"
    assert not any("dom_net" in k or "summary" in k for k in flow.state_dict())
    assert flow.context.geometry.in_features == 3 * 60 and flow.context.labels[0].in_features == 6
    with pytest.raises(ConfigError, match="per-DOM"):
        physics_flow().transforms[1].conditioner(torch.zeros(1, 2, P), torch.zeros(1, 2, 16))
