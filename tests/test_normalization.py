import math

import numpy as np
import pytest
import torch

from genesis.data.normalization import Normalization, denormalize_signal, suggest
from genesis.errors import ConfigError


def physical_signal(n=4, p=30, seed=0):
    rng = np.random.default_rng(seed)
    npe = rng.poisson(2.0, (n, p)).astype(np.float32) * rng.uniform(0.5, 30, (n, p)).astype(np.float32)
    time = np.where(npe > 0, rng.uniform(9000, 15000, (n, p)), 0).astype(np.float32)
    return np.stack([npe, time], 1)


@pytest.mark.parametrize("time_transform", ["ln", "log10", "none"])
@pytest.mark.parametrize("npe_transform", ["none", "log1p"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_signal_round_trip(time_transform, npe_transform, as_torch):
    norm = Normalization(time_transform=time_transform, npe_transform=npe_transform)
    x = physical_signal().astype(np.float64)
    x = torch.from_numpy(x) if as_torch else x
    y = norm.normalize_signal(x)
    assert type(y) is type(x) and tuple(y.shape) == tuple(x.shape)
    back = denormalize_signal(y, norm.affine_offsets, norm.affine_scales, time_transform, npe_transform)
    assert np.allclose(np.asarray(back), np.asarray(x), rtol=1e-6, atol=1e-5)


def test_original_defaults_and_no_hit_zero():
    norm = Normalization()
    assert norm.affine_offsets == (0, 0, -600, -550, -550) and norm.affine_scales == (200, 10, 1200, 1100, 1100)
    assert norm.label_scales == pytest.approx((1e8, math.pi, 2 * math.pi, 1200, 1100, 1100))
    x = np.zeros((1, 2, 3), np.float32)
    assert (norm.normalize_signal(x) == 0).all()
    t = np.array([[[0.0], [math.e ** 10 - 1]]])
    assert norm.normalize_signal(t)[0, 1, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("energy_transform", ["none", "log10"])
def test_label_round_trip(energy_transform):
    norm = Normalization(energy_transform=energy_transform)
    lab = np.array([[1e4, 1.0, 2.0, 10.0, -20.0, 30.0], [5e6, 2.0, 6.0, -500, 400, 0]])
    assert np.allclose(norm.denormalize_labels(norm.normalize_labels(lab)), lab, rtol=1e-9)
    lab_t = torch.tensor(lab)
    assert torch.allclose(norm.denormalize_labels(norm.normalize_labels(lab_t)), lab_t)


def test_geometry_normalization(geometry):
    g = Normalization().normalize_geometry(geometry.positions)
    assert g.shape == (3, 5160) and -0.1 < g.min() and g.max() < 1.1


def test_dict_round_trip_and_errors():
    norm = Normalization(time_transform="log10", npe_transform="log1p", energy_transform="log10")
    assert Normalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(ConfigError, match="unknown normalization key"):
        Normalization.from_dict({**norm.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="time_transform"):
        Normalization(time_transform="sqrt")
    with pytest.raises(ConfigError, match="affine_scales"):
        Normalization(affine_scales=(1, 2, 3))
    assert norm.differences(Normalization())


def test_suggest(geometry):
    sig = physical_signal(50, 5160)
    lab = np.tile([[1e5, 1, 1, 0, 0, 0]], (50, 1))
    s = suggest(sig, lab, geometry.positions, Normalization(npe_transform="log1p"))
    y = s.normalize_signal(sig)[:, :, :]
    hit = sig[:, 0] > 0
    assert 0.5 < y[:, 0][hit].max() < 1.2 and 0.5 < y[:, 1][hit].max() <= 1.0
    g = s.normalize_geometry(geometry.positions)
    assert g.min() >= 0 and g.max() <= 1


def test_hit_representation_round_trip_and_neutral_no_hit_values():
    norm = Normalization(representation="hit", time_transform="none", npe_transform="log1p",
                         affine_offsets=(1.0, 9000.0, 0.0, 0.0, 0.0), affine_scales=(2.0, 2000.0, 1.0, 1.0, 1.0))
    x = np.array([[[0.0, 3.0, 1.0, 0.0], [0.0, 10100.0, 9800.0, 12345.0]]], np.float32)  # last: time without a hit
    y = norm.normalize_signal(x)
    assert norm.channels == 3 and y.shape == (1, 3, 4)
    np.testing.assert_array_equal(y[0, 0], [-1, 1, 1, -1])
    np.testing.assert_array_equal(y[0, 1:, [0, 3]], 0.0)  # npe and time of DOMs without a hit: neutral 0
    back = norm.denormalize_signal(y)
    np.testing.assert_allclose(back, [[[0, 3, 1, 0], [0, 10100, 9800, 0]]], rtol=1e-6)
    torch_back = norm.denormalize_signal(norm.normalize_signal(torch.from_numpy(x)))
    np.testing.assert_allclose(torch_back.numpy(), back, rtol=1e-6)
    y[0, 0, 1] = -0.2  # a sampled "no hit" wins over the npe and time channels
    assert norm.denormalize_signal(y)[0, :, 1].tolist() == [0.0, 0.0]


def test_representation_is_metadata_and_old_dicts_load_as_legacy():
    d = Normalization(representation="hit").to_dict()
    assert d["representation"] == "hit" and Normalization.from_dict(d).representation == "hit"
    del d["representation"]
    assert Normalization.from_dict(d).representation == "legacy"
    with pytest.raises(ConfigError, match="representation"):
        Normalization(representation="sentinel")


def arrival_norm(**kw) -> Normalization:
    return Normalization(representation="hit", time_transform="none", npe_transform="log1p", time_reference="arrival",
                         affine_offsets=(1.0, 10000.0, 0.0, 0.0, 0.0), affine_scales=(2.0, 2000.0, 1.0, 1.0, 1.0), **kw)


def assert_round_trips(norm: Normalization, x, labels, positions) -> None:
    """Normalizing then denormalizing events gives them back, as numpy arrays and as torch tensors."""
    back = norm.denormalize_signal(norm.normalize_signal(x, labels, positions), labels, positions)
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-6)
    t = [torch.from_numpy(a) for a in (x, labels, positions)]
    np.testing.assert_allclose(norm.denormalize_signal(norm.normalize_signal(*t), *t[1:]).numpy(), x, rtol=1e-9, atol=1e-6)


def test_time_reference_arrival_learns_the_delay_after_direct_light():
    """A down-going track (zenith 0) from the origin: a DOM 100 m below on its axis sees direct light
    100 m / c = 333.6 ns after the vertex time; its time channel is the delay after that."""
    norm = arrival_norm()
    positions = np.array([[0.0, 0.0, -100.0], [0.0, 0.0, -200.0], [30.0, 0.0, 50.0]])
    labels = np.array([[1e5, 0.0, 0.0, 0.0, 0.0, 0.0]])
    x = np.array([[[2.0, 5.0, 0.0], [10000.0 + 100 / 0.299792458 + 40.0, 10700.0, 0.0]]])
    y = norm.normalize_signal(x, labels, positions)
    assert y[0, 2, 0] == pytest.approx(40.0 / 2000.0, abs=1e-6)  # 40 ns after direct light
    assert y[0, 2, 1] == pytest.approx((10700.0 - 10000.0 - 200 / 0.299792458) / 2000.0, abs=1e-6)
    np.testing.assert_array_equal(y[0, :, 2], [-1.0, 0.0, 0.0])  # no hit: neutral, as without a reference
    assert_round_trips(norm, x, labels, positions)


def test_time_reference_needs_labels_except_without_hits_and_is_validated():
    norm = arrival_norm()
    x = physical_signal(2, 5)
    with pytest.raises(ValueError, match="time_reference 'arrival' needs the events' physical labels"):
        norm.normalize_signal(x)
    with pytest.raises(ValueError, match="needs the events' physical labels"):
        norm.denormalize_signal(norm.normalize_signal(x, np.zeros((2, 6)) + 1, np.zeros((5, 3))))
    np.testing.assert_array_equal(norm.normalize_signal(np.zeros((1, 2, 3))), [[[-1] * 3, [0] * 3, [0] * 3]])
    with pytest.raises(ConfigError, match="time_reference 'arrival' needs representation 'hit'"):
        Normalization(time_reference="arrival", time_transform="none")
    with pytest.raises(ConfigError, match="time_reference"):
        Normalization(representation="hit", time_transform="none", time_reference="vertex")
    old = arrival_norm().to_dict()
    del old["time_reference"]
    assert Normalization.from_dict(old).time_reference == "none"  # checkpoints before the reference existed


def test_suggest_measures_times_from_the_reference(geometry):
    rng = np.random.default_rng(0)
    labels = np.column_stack([np.full(8, 1e5), rng.uniform(0, 3, 8), rng.uniform(0, 6, 8), rng.uniform(-300, 300, (8, 3))])
    shift = arrival_norm().time_shift(np.zeros((8, 2, geometry.n_doms)), labels, geometry.positions)
    npe = (rng.uniform(size=(8, geometry.n_doms)) < 0.05) * 3.0
    signal = np.stack([npe, np.where(npe > 0, 10000.0 + shift + rng.uniform(0, 500, npe.shape), 0.0)], 1)
    s = suggest(signal, labels, geometry.positions, arrival_norm())
    assert s.time_reference == "arrival" and 9900.0 <= s.affine_offsets[1] <= 10000.0 and s.affine_scales[1] <= 600


def asinh_norm() -> Normalization:
    return Normalization(representation="hit", time_transform="asinh", npe_transform="log1p", time_reference="arrival",
                         time_center_ns=10000.0, time_width_ns=200.0, affine_offsets=(1.0, 1.0, 0.0, 0.0, 0.0),
                         affine_scales=(2.0, 1.5, 1.0, 1.0, 1.0))


def test_asinh_delay_is_signed_and_round_trips():
    """asinh((delay - 10 us) / 200 ns): linear near direct light, logarithmic in the scattering tail, and
    early (noise) hits keep a finite, ordered value instead of being clipped."""
    positions = np.array([[0.0, 0.0, -100.0]] * 3)
    labels = np.array([[1e5, 0.0, 0.0, 0.0, 0.0, 0.0]])
    direct = 10000.0 + 100 / 0.299792458
    delays = np.array([-3000.0, 20.0, 2000.0])
    x = np.stack([np.array([[1.0, 2.0, 3.0]]), direct + delays[None]], 1)  # three DOMs at one place
    y = asinh_norm().normalize_signal(x, labels, positions)[0, 2]
    np.testing.assert_allclose(y, (np.arcsinh(delays / 200.0) - 1.0) / 1.5, rtol=1e-9)
    assert y[0] < y[1] < y[2]
    np.testing.assert_allclose(asinh_norm().denormalize_signal(asinh_norm().normalize_signal(x, labels, positions),
                                                               labels, positions), x, rtol=1e-9)
    as_torch = asinh_norm().normalize_signal(torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(positions))
    np.testing.assert_allclose(as_torch.numpy(), asinh_norm().normalize_signal(x, labels, positions), rtol=1e-9)


def test_asinh_parameters_are_validated_and_optional_in_old_dicts():
    with pytest.raises(ConfigError, match="time_width_ns positive"):
        Normalization.from_dict({**asinh_norm().to_dict(), "time_width_ns": 0.0})
    with pytest.raises(ConfigError, match="time_center_ns must be a number"):
        Normalization(time_center_ns="soon")
    d = asinh_norm().to_dict()
    assert Normalization.from_dict(d) == asinh_norm()
    old = Normalization().to_dict()
    del old["time_center_ns"], old["time_width_ns"]
    assert Normalization.from_dict(old) == Normalization()


def test_suggest_centres_asinh_on_the_early_light(geometry):
    """suggest puts the asinh centre at the 10th percentile of the hit delays (rounded down to 100 ns)
    and maps hit times to about [0, 1]."""
    rng = np.random.default_rng(0)
    labels = np.tile([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0]], (20, 1))
    positions = geometry.positions
    base = Normalization(representation="hit", time_transform="asinh", time_reference="arrival", time_width_ns=200.0)
    direct = base.time_shift(np.zeros((20, 2, len(positions))), labels, positions)
    npe = (rng.random((20, len(positions))) < 0.05).astype(np.float64)
    time = np.where(npe > 0, direct + 10000.0 + rng.exponential(400.0, npe.shape), 0.0)
    s = suggest(np.stack([npe, time], 1), labels, positions, base)
    assert 9900.0 <= s.time_center_ns <= 10000.0 and s.time_width_ns == 200.0
    y = s.normalize_signal(np.stack([npe, time], 1), labels, positions)[:, 2][npe > 0]
    assert -0.05 <= y.min() and 0.8 < np.percentile(y, 99) <= 1.0 and y.max() < 1.2


def test_refractive_index_sets_the_arrival_reference_and_old_dicts_read_the_default():
    """Vertex light to a DOM 50 m above an up-going track's vertex arrives 50 n / c after it: the index is a
    normalization field (validated, carried by to_dict), and dicts from before it read the simulator's 1.32."""
    positions = np.array([[0.0, 0.0, 50.0]])
    labels = np.array([[1e5, 0.0, 0.0, 0.0, 0.0, 0.0]])  # comes from above: travels down, away from the DOM
    x = np.array([[[1.0], [10000.0]]])
    for n in (1.32, 1.5):
        y = arrival_norm(refractive_index=n).normalize_signal(x, labels, positions)
        assert y[0, 2, 0] == pytest.approx((10000.0 - 10000.0 - 50 * n / 0.299792458) / 2000.0, abs=1e-9)
    old = arrival_norm().to_dict()
    del old["refractive_index"]
    assert Normalization.from_dict(old).refractive_index == 1.32
    assert Normalization.from_dict(arrival_norm(refractive_index=1.5).to_dict()).refractive_index == 1.5
    with pytest.raises(ConfigError, match="refractive_index"):
        Normalization(refractive_index=0.9)


def expected_npe_norm() -> Normalization:
    return Normalization(representation="hit", npe_transform="log1p", npe_reference="expected",
                         affine_offsets=(0.3, 0.0, 0.0, 0.0, 0.0), affine_scales=(0.5, 1.0, 1.0, 1.0, 1.0))


def test_npe_reference_measures_charge_from_the_expected_hit_charge():
    """A 1-pe hit on a DOM far from the light is what is expected there (residual ~0); a bright DOM
    near the track is measured from the expected light; both round-trip, numpy and torch."""
    from genesis.physics import hit_npe_reference

    norm = expected_npe_norm()
    positions = np.array([[0.0, 0.0, -100.0], [15.0, 0.0, -100.0], [900.0, 0.0, 400.0], [40.0, 0.0, 0.0]])
    labels = np.array([[1e5, 0.0, 0.0, 0.0, 0.0, 0.0]])
    x = np.array([[[0.0, 250.0, 1.0, 0.0], [0.0, 10500.0, 12000.0, 0.0]]])
    y = norm.normalize_signal(x, labels, positions)
    assert y[0, 1, 2] * 0.5 + 0.3 == pytest.approx(0.0, abs=0.01)  # dark DOM, 1 pe
    ref = hit_npe_reference(torch.from_numpy(labels), torch.from_numpy(positions)).numpy()[0]
    assert ref[1] > 3.0  # a bright DOM: m ~ tens of pe
    assert y[0, 1, 1] * 0.5 + 0.3 == pytest.approx(np.log1p(250.0) - ref[1], rel=1e-9)
    np.testing.assert_array_equal(y[0, :, 3], [-1.0, 0.0, 0.0])  # no hit: neutral, as without a reference
    assert_round_trips(norm, x, labels, positions)


def test_npe_reference_is_validated_needs_labels_and_old_dicts_have_none():
    with pytest.raises(ConfigError, match="npe_reference 'expected' needs representation 'hit'"):
        Normalization(npe_reference="expected", npe_transform="log1p")
    with pytest.raises(ConfigError, match="npe_transform 'log1p'"):
        Normalization(representation="hit", npe_reference="expected")
    with pytest.raises(ConfigError, match="npe_reference"):
        Normalization(representation="hit", npe_transform="log1p", npe_reference="median")
    with pytest.raises(ValueError, match="npe_reference 'expected' needs the events' physical labels"):
        expected_npe_norm().normalize_signal(physical_signal(2, 5))
    old = {k: v for k, v in expected_npe_norm().to_dict().items() if k != "npe_reference"}
    assert Normalization.from_dict(old).npe_reference == "none"
    assert Normalization.from_dict(expected_npe_norm().to_dict()) == expected_npe_norm()


def test_suggest_centres_the_npe_residual(geometry):
    from genesis.data.simulate import draw_labels
    from genesis.evaluate import simulate_triggered_at

    labels = draw_labels(40, np.random.default_rng(0))
    signal = simulate_triggered_at(labels, geometry, seed=1)
    s = suggest(signal, labels, geometry.positions, expected_npe_norm())
    y = s.normalize_signal(signal, labels, geometry.positions)[:, 1][signal[:, 0] > 0]
    assert s.npe_reference == "expected" and abs(y.mean()) < 0.1 and 0.3 < y.std() < 0.7


def test_dequantized_npe_floors_back_to_the_counts_and_leaves_the_rest():
    """diffusion.dequantize_npe's transform: every hit DOM's npe becomes npe + u with u in [0, 1) spread over
    the whole unit (mean ~0.5), so its floor is the count; no-hit DOMs, the hit channel and times are untouched."""
    norm = Normalization(representation="hit", npe_transform="log1p", affine_offsets=(1.0, 9000.0, -600, -550, -550),
                         affine_scales=(2.0, 2000.0, 1200, 1100, 1100), time_transform="none")
    rng = np.random.default_rng(0)
    npe = rng.integers(1, 300, (64, 50)) * (rng.random((64, 50)) < 0.4)
    time = np.where(npe > 0, rng.uniform(9000, 15000, npe.shape), 0.0)
    x = norm.normalize_signal(torch.tensor(np.stack([npe, time], 1), dtype=torch.float64))
    spread = norm.dequantize_npe(x, torch.Generator().manual_seed(0))
    back = norm.denormalize_signal(spread).numpy()
    hit = npe > 0
    u = back[:, 0] - npe
    assert np.array_equal(np.floor(back[:, 0] + 1e-9), npe)
    assert u[hit].min() >= -1e-9 and u[hit].max() < 1 and abs(u[hit].mean() - 0.5) < 0.05
    assert torch.equal(spread[:, 0], x[:, 0]) and torch.equal(spread[:, 2], x[:, 2])
    assert torch.equal(spread[:, 1][~torch.from_numpy(hit)], x[:, 1][~torch.from_numpy(hit)])
