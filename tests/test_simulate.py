import numpy as np
import pytest

from genesis import geometry as geometry_module
from genesis.data.simulate import SimConfig, draw_labels, simulate, simulate_at_labels, travel_direction
from genesis.errors import DataError


def collect(n, geo, seed, cfg=SimConfig()):
    parts = list(simulate(n, geo, seed, cfg))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_deterministic_by_seed(geometry):
    a, la = collect(50, geometry, 7)
    b, lb = collect(50, geometry, 7)
    c, _ = collect(50, geometry, 8)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.shape == (50, 2, 5160) and a.dtype == np.float32


def test_labels_isotropic_and_in_range():
    lab = draw_labels(20000, np.random.default_rng(0))
    assert lab[:, 0].min() >= 1e3 and lab[:, 0].max() <= 1e7
    # log-uniform energy: median near 1e5; cos zenith uniform: mean ~0
    assert 4.8 < np.log10(np.median(lab[:, 0])) < 5.2
    assert abs(np.cos(lab[:, 1]).mean()) < 0.02
    assert np.hypot(lab[:, 3], lab[:, 4]).max() <= 550 and np.abs(lab[:, 5]).max() <= 550


def test_trigger_and_no_hit_times(geometry):
    sig, _ = collect(100, geometry, 1)
    hits = (sig[:, 0] > 0).sum(1)
    assert hits.min() >= SimConfig().min_hits
    assert (sig[:, 1][sig[:, 0] == 0] == 0).all() and (sig[:, 0] >= 0).all()


def fixed_labels(n, energy, zenith=np.pi / 2, azimuth=0.0, x=-300.0):
    return np.tile([[energy, zenith, azimuth, x, 0.0, 0.0]], (n, 1)).astype(np.float32)


def test_brighter_with_energy(geometry):
    rng = np.random.default_rng(0)
    low = simulate_at_labels(fixed_labels(40, 1e3), geometry, rng)[:, 0].sum(1).mean()
    mid = simulate_at_labels(fixed_labels(40, 1e5), geometry, rng)[:, 0].sum(1).mean()
    high = simulate_at_labels(fixed_labels(40, 1e7), geometry, rng)[:, 0].sum(1).mean()
    assert low < mid < high and high > 20 * low


def test_hits_cluster_along_track_and_times_grow(geometry):
    cfg = SimConfig(noise_rate=0.0)
    # horizontal track coming from +x (azimuth 0), starting at x = +400 m and crossing the detector
    labels = fixed_labels(30, 1e5, x=400.0)
    d = travel_direction(labels[:, 1], labels[:, 2])[0]
    sig = simulate_at_labels(labels, geometry, np.random.default_rng(2), cfg)
    rel = geometry.positions - labels[0, 3:]
    s = rel @ d
    rho = np.linalg.norm(rel - s[:, None] * d, axis=1)
    hit = sig[:, 0] > 0
    assert rho[hit.any(0)].mean() < 0.5 * rho[~hit.any(0)].mean()
    # first-hit time grows along the track direction (positive correlation on hit DOMs)
    corr = [np.corrcoef(s[h], sig[i, 1][h])[0, 1] for i, h in enumerate(hit) if h.sum() > 5]
    assert np.median(corr) > 0.5


def test_bad_config():
    with pytest.raises(DataError, match="energy_min"):
        SimConfig(energy_min=10, energy_max=1)
    with pytest.raises(DataError, match="positive"):
        next(simulate(0, geometry_module.icecube86_like()))


def test_simulates_on_real_geometry(real_geometry_csv):
    geo = geometry_module.from_csv(real_geometry_csv)
    sig, lab = collect(20, geo, 0)
    assert sig.shape == (20, 2, 5160) and ((sig[:, 0] > 0).sum(1) >= 8).all()


def test_any_geometry_size():
    pos = np.stack(np.meshgrid(np.linspace(-100, 100, 5), np.linspace(-100, 100, 5), np.linspace(-100, 100, 10)),
                   -1).reshape(-1, 3)
    string, dom = geometry_module.default_ids(len(pos), pos[:, :2])
    geo = geometry_module.Geometry(pos, string, dom, "cube")
    sig, _ = collect(10, geo, 0, SimConfig(min_hits=1, energy_min=1e4, energy_max=1e5, radius=100, half_height=100))
    assert sig.shape == (10, 2, 250)
