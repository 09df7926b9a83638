"""PMTDiT: shapes, patching, adaLN-Zero init, label dropout, normalization metadata round trip."""

from __future__ import annotations

import pytest
import torch

from genesis.config import DiTConfig
from genesis.data.normalization import Normalization
from genesis.errors import ConfigError
from genesis.models.common import patchify, unpatchify
from genesis.models.dit import PMTDiT

P = 120


def tiny(**kw) -> DiTConfig:
    base = dict(hidden_size=32, depth=2, num_heads=4, patch_size=15, time_embed_dim=32, label_dropout=0.0)
    return DiTConfig(**{**base, **kw})


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every weight (the zero-initialised layers included) so outputs depend on all inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def inputs(B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 2, P, generator=g), torch.randint(0, 50, (B,), generator=g),
            torch.rand(B, 6, generator=g), torch.rand(3, P, generator=g))


@pytest.mark.parametrize("patch_size", [1, 15, 60])
@pytest.mark.parametrize("fusion", ["sum", "film"])
def test_output_shape(patch_size, fusion):
    torch.manual_seed(0)
    model = randomize(PMTDiT(tiny(patch_size=patch_size, fusion=fusion), P, Normalization()))
    x, t, labels, geo = inputs()
    out = model(x, t, labels, geo)
    assert out.shape == (3, 2, P) and torch.isfinite(out).all()
    assert model.num_tokens == P // patch_size
    # per-event geometry (B, 3, P) and float timesteps are accepted too
    out_b = model(x, t.float(), labels, geo.expand(3, 3, P))
    torch.testing.assert_close(out_b, out)


def test_patchify_roundtrip_keeps_consecutive_doms_together():
    x = torch.arange(2 * 2 * P, dtype=torch.float32).reshape(2, 2, P)
    tokens = patchify(x, 15)
    assert tokens.shape == (2, 8, 30)
    assert torch.equal(tokens[0, 1, :15], x[0, 0, 15:30])  # token 1 = DOMs 15..29, channel 0 first
    assert torch.equal(unpatchify(tokens, 2), x)


def test_patch_size_must_divide_doms():
    with pytest.raises(ConfigError, match="patch_size"):
        PMTDiT(tiny(patch_size=7), P, Normalization())
    with pytest.raises(ConfigError, match="num_heads"):
        PMTDiT(tiny(num_heads=5), P, Normalization())


def test_wrong_input_shape_is_refused():
    model = PMTDiT(tiny(), P, Normalization())
    x, t, labels, geo = inputs()
    with pytest.raises(ValueError, match="geometry"):
        model(x, t, labels, geo[:, :60])


def test_zero_init_gives_zero_output():
    model = PMTDiT(tiny(fusion="film"), P, Normalization())
    x, t, labels, geo = inputs()
    out = model(x, t, labels, geo)
    assert torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_labels_geometry_and_step():
    model = randomize(PMTDiT(tiny(fusion="film"), P, Normalization()).eval())
    x, t, labels, geo = inputs()
    ref = model(x, t, labels, geo)
    assert not torch.allclose(model(x, t, labels + 1, geo), ref)
    assert not torch.allclose(model(x, t, labels, geo + 1), ref)
    assert not torch.allclose(model(x, t + 7, labels, geo), ref)
    # attention mixes tokens: changing the first patch (DOMs 0..14) changes the last one
    x2 = x.clone()
    x2[..., :15] += 1
    assert not torch.allclose(model(x2, t, labels, geo)[..., -15:], ref[..., -15:])


def test_label_dropping():
    model = randomize(PMTDiT(tiny(label_dropout=0.5), P, Normalization()))
    x, t, labels, geo = inputs(B=8)
    drop = torch.ones(8, dtype=torch.bool)
    model.eval()
    cond = model(x, t, labels, geo)
    uncond = model(x, t, labels, geo, drop_labels=drop)
    # dropped labels use the null embedding: the labels themselves no longer matter
    torch.testing.assert_close(model(x, t, labels * 3, geo, drop_labels=drop), uncond)
    assert not torch.allclose(cond, uncond)
    # an explicit drop_labels wins over random dropout in training mode
    model.train()
    torch.testing.assert_close(model(x, t, labels, geo, drop_labels=~drop), cond)
    # random dropout in training mode drops some but not all of 8 x 8 events (p = 0.5)
    torch.manual_seed(1)
    dropped = torch.cat([(model(x, t, labels, geo) - uncond).abs().amax((1, 2)) < 1e-5 for _ in range(8)])
    assert 0 < dropped.sum() < dropped.numel()


def test_normalization_metadata_roundtrip(tmp_path):
    norm = Normalization(affine_offsets=(0.5, 1.0, -500.0, -500.0, -500.0), affine_scales=(3.0, 7.0, 1000.0, 1000.0, 1000.0),
                         time_transform="log10", npe_transform="log1p", energy_transform="log10")
    model = randomize(PMTDiT(tiny(), P, norm)).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = PMTDiT(tiny(), P, Normalization()).eval()
    assert fresh.get_normalization_params() != model.get_normalization_params()
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert fresh.get_normalization_params() == model.get_normalization_params()
    assert fresh.normalization == norm
    x, t, labels, geo = inputs()
    assert torch.equal(fresh(x, t, labels, geo), model(x, t, labels, geo))


def test_positional_embedding_breaks_permutation_equivariance():
    model = randomize(PMTDiT(tiny(), P, Normalization())).eval()
    x, t, labels, geo = inputs()
    perm = torch.arange(P).reshape(8, 15).flip(0).reshape(-1)  # reverse the order of the 8 patches
    out, out_perm = model(x, t, labels, geo), model(x[..., perm], t, labels, geo[..., perm])
    assert not torch.allclose(out_perm, out[..., perm], atol=1e-4)
    with torch.no_grad():
        model.pos_embed.zero_()  # without it, attention over patches is permutation-equivariant
    out, out_perm = model(x, t, labels, geo), model(x[..., perm], t, labels, geo[..., perm])
    torch.testing.assert_close(out_perm, out[..., perm], atol=1e-5, rtol=1e-5)


def physics_model(**kw):
    from genesis.config import DiTConfig
    from genesis.data.normalization import Normalization

    cfg = DiTConfig(hidden_size=32, depth=1, num_heads=4, patch_size=60, time_embed_dim=32, conditioning="physics",
                    dom_head_width=8, **kw)
    norm = Normalization(representation="hit", energy_transform="log10",
                         label_offsets=(3.0, 0.0, 0.0, -600.0, -550.0, -550.0))
    return PMTDiT(cfg, 120, norm)


def test_physics_conditioning_shapes_and_unconditional_pass_ignores_labels():
    torch.manual_seed(0)
    model = physics_model().eval()
    for p in model.dom_head.mlp[-1].parameters():  # the zero-initialised head would hide a label leak
        torch.nn.init.normal_(p, std=0.1)
    x, geo, t = torch.randn(2, 3, 120), torch.rand(3, 120), torch.tensor([5, 50])
    a, b = torch.rand(2, 6), torch.rand(2, 6)
    assert model(x, t, a, geo).shape == (2, 3, 120)
    assert not torch.allclose(model(x, t, a, geo), model(x, t, b, geo))
    drop = torch.ones(2, dtype=torch.bool)
    torch.testing.assert_close(model(x, t, a, geo, drop_labels=drop), model(x, t, b, geo, drop_labels=drop))


def test_dom_features_follow_the_cherenkov_geometry():
    from genesis.models import physics

    # a vertical down-going track (zenith 0) from the origin: a DOM 100 m below and 50 m to the side
    labels = torch.tensor([[1e5, 0.0, 0.0, 0.0, 0.0, 0.0]])
    dom = torch.tensor([[50.0, 0.0, -100.0]])
    f = physics.dom_features(labels, dom)[0, :, 0]
    rho, s = 50.0, 100.0
    s_emit = s - rho / physics.TAN_CHERENKOV
    arrival = s_emit / physics.C_VACUUM + rho / physics.SIN_CHERENKOV * physics.REFRACTIVE_INDEX / physics.C_VACUUM
    assert f[2].item() == pytest.approx(s / physics.LENGTH_SCALE_M)
    assert f[3].item() == pytest.approx(arrival / physics.TIME_SCALE_NS, rel=1e-5)
    assert f[4].item() == 1.0
    above = physics.dom_features(labels, torch.tensor([[0.0, 0.0, 100.0]]))[0, :, 0]  # behind the vertex
    assert above[4].item() == -1.0
    assert above[3].item() == pytest.approx(100 * physics.REFRACTIVE_INDEX / physics.C_VACUUM / physics.TIME_SCALE_NS, rel=1e-5)


@pytest.mark.parametrize("fusion", ["sum", "film"])
@pytest.mark.parametrize("conditioning", ["labels", "physics"])
def test_cached_conditioning_gives_the_same_output(fusion, conditioning):
    """forward(cond=condition(...)) is forward() without it: the samplers make it once per batch."""
    norm = Normalization(representation="hit", energy_transform="log10",
                         label_offsets=(3.0, 0.0, 0.0, -600.0, -550.0, -550.0))
    cfg = DiTConfig(hidden_size=32, depth=1, num_heads=4, patch_size=60, time_embed_dim=32, fusion=fusion,
                    conditioning=conditioning, dom_head_width=8)
    model = randomize(PMTDiT(cfg, 120, norm)).eval()
    x, geo, labels = torch.randn(4, 3, 120), torch.rand(3, 120), torch.rand(4, 6)
    drop = torch.tensor([False, True, False, True])
    cond = model.condition(labels, geo, drop)
    for t in (torch.tensor([3, 3, 3, 3]), torch.tensor([900, 10, 1, 0])):
        ref = model(x, t, labels, geo, drop_labels=drop)
        assert torch.equal(model(x, t, labels, geo, cond=cond), ref)
        assert torch.equal(model(x, t, None, geo, cond=cond), ref)  # labels are not read again
    assert not torch.allclose(model(x, t, labels, geo, cond=model.condition(labels + 0.5, geo, drop)), ref)
    with pytest.raises(ValueError, match="conditioning made for 4 events"):
        model(x[:2], t[:2], labels[:2], geo, cond=cond)


def test_dom_head_in_parts_equals_the_head_on_concatenated_inputs():
    """The head's first layer is evaluated in parts (per-DOM inputs once, tokens at token resolution):
    it must equal the Conv1d MLP over [signal | per-DOM inputs | token features repeated per DOM]."""
    model = randomize(physics_model()).eval()
    head = model.dom_head
    x, dom, tokens = torch.randn(2, 3, 120), torch.randn(2, 8, 120), torch.randn(2, 2, 32)
    per_dom = head.token_proj(tokens).transpose(1, 2).repeat_interleave(60, dim=2)
    reference = head.mlp(torch.cat([x, dom, per_dom], 1))
    torch.testing.assert_close(head(x, tokens, head.prepare(dom)), reference, atol=1e-5, rtol=1e-5)
