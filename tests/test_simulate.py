import numpy as np
import pytest

from genesis import geometry as geometry_module
from genesis.data.simulate import SimConfig, draw_labels, simulate, simulate_at_labels, travel_direction
from genesis.errors import DataError


def collect(n, geo, seed, cfg=SimConfig(), workers=2):
    parts = list(simulate(n, geo, seed, cfg, workers=workers))
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


# --- the fast implementation against the original one (genesis.data.simulate_reference) -----------------
def test_expected_light_matches_reference(geometry):
    from genesis.data import simulate_reference as ref
    from genesis.data.simulate import direct_times, expected_light

    cfg, rng = SimConfig(), np.random.default_rng(5)
    labels = draw_labels(40, rng).astype(np.float64)
    labels[:5, 3:] = [[0, 0, 0], [-300, 0, 0], [200, -100, -400], [500, 500, 500], [46.3, -34.9, 200]]
    y = rng.uniform(0.1, 0.5, 40)
    light = expected_light(labels, y, geometry, cfg)
    rel = geometry.positions.astype(np.float64)[None] - labels[:, None, 3:]
    d = travel_direction(labels[:, 1], labels[:, 2])
    mu_t, t_t, _ = ref.track_light(rel, d, labels[:, 0] * (1 - y), cfg)
    mu_c, t_c, _ = ref.cascade_light(rel, labels[:, 0] * y, cfg)
    for new, old in ((light.mu_track, mu_t), (light.mu_cascade, mu_c)):
        assert new.shape == (40, geometry.n_doms) and new.dtype == np.float32
        assert np.allclose(new, old, rtol=1e-4, atol=1e-30)
    seen = np.nonzero(mu_t + mu_c > 1e-3)
    t_new, _ = direct_times(light, seen, cfg)
    assert len(t_new) > 1000 and np.abs(t_new - np.where(mu_t >= mu_c, t_t, t_c)[seen]).max() < 0.01  # ns


def test_hits_and_charges_are_exactly_poisson():
    from genesis.data.simulate import THIN_MU, bernoulli_positions, draw_hits, zero_truncated_poisson

    rng = np.random.default_rng(0)
    for lam in (1e-4, 0.5 * THIN_MU, 2 * THIN_MU, 0.3, 3.0):
        hits = draw_hits(np.full((100, 4000), lam, np.float32), rng)
        p = -np.expm1(-lam)
        assert abs(len(hits) / 4e5 - p) < 5 * np.sqrt(p * (1 - p) / 4e5), lam
        assert np.all(np.diff(hits) > 0)
        npe = zero_truncated_poisson(np.full(100_000, lam), rng)
        assert npe.min() >= 1 and abs(npe.mean() - lam / p) < 5 * np.sqrt(lam * 2 / 1e5 + 1e-10), lam
    # small-lam inversion: P(N = 2 | N >= 1) = (lam / 2) / (1 - e^-lam) e^-lam ~ 0.1575 at lam = 0.3
    npe = zero_truncated_poisson(np.full(200_000, 0.3), rng)
    assert abs((npe == 2).mean() - 0.3 ** 2 / 2 * np.exp(-0.3) / -np.expm1(-0.3)) < 0.003
    pos = bernoulli_positions(1_000_000, 1e-3, rng)
    assert np.all(np.diff(pos) > 0) and pos.max() < 1_000_000 and abs(len(pos) - 1000) < 5 * np.sqrt(1000)
    assert len(bernoulli_positions(1000, 0.0, rng)) == 0


def _feature_w1(signal_a, signal_b, labels, geo):
    """Normalized W1 between the genesis.metrics features of two simulations at the same labels, (F,)."""
    from genesis import metrics

    fa, fb = (metrics.event_features(s[:, 0], s[:, 1], geo.positions, geo.string, labels) for s in (signal_a, signal_b))
    return np.array([metrics.normalized_w1(fb[k], fa[k]) for k in metrics.FEATURES])


def test_same_feature_distributions_as_reference(geometry):
    """At the same labels, new-vs-old feature distances stay within the old-vs-old floor, while a
    simulator with different physics (brighter tracks, shorter scattering) does not."""
    from dataclasses import replace

    from genesis.data.simulate_reference import simulate_at_labels_reference as reference

    labels = np.concatenate([lab for _, lab in simulate(200, geometry, 11)])
    old = [reference(labels, geometry, np.random.default_rng(k)) for k in (1, 2, 3)]
    floor = np.maximum(_feature_w1(old[0], old[1], labels, geometry), _feature_w1(old[0], old[2], labels, geometry))
    bound = 2 * floor + 0.02
    new = simulate_at_labels(labels, geometry, np.random.default_rng(4))
    assert (_feature_w1(old[0], new, labels, geometry) <= bound).all()
    for changed in (dict(track_yield=9.0), dict(scatter_len=16.0)):
        cfg = replace(SimConfig(), **changed)
        other = simulate_at_labels(labels, geometry, np.random.default_rng(4), cfg)
        assert (_feature_w1(old[0], other, labels, geometry) > bound).any(), changed


def test_workers_and_batches_run_in_any_order(geometry):
    one, l1 = collect(70, geometry, 5, workers=1)
    two, l2 = collect(70, geometry, 5, workers=2)
    assert np.array_equal(one, two) and np.array_equal(l1, l2)


def test_rebatch_sizes():
    from genesis.data.simulate import rebatch

    parts = [(np.full((k, 2, 3), k, np.float32), np.zeros((k, 6), np.float32)) for k in (5, 7, 1, 0, 9, 4)]
    out = list(rebatch(iter(parts), 8))
    assert [len(s) for s, _ in out] == [8, 8, 8, 2] and [len(l) for _, l in out] == [8, 8, 8, 2]
    assert np.array_equal(np.concatenate([s for s, _ in out]), np.concatenate([s for s, _ in parts]))
    # reused buffers: batch k shares memory with batch k + 2, and holds the right events until then
    seen = []
    for s, _ in rebatch(iter(parts), 8, reuse=2):
        seen.append(s)
        assert np.array_equal(s, np.concatenate([p for p, _ in parts])[8 * (len(seen) - 1):8 * len(seen)])
    assert np.shares_memory(seen[0], seen[2]) and not np.shares_memory(seen[0], seen[1])


def test_file_written_in_chunks_is_valid_and_complete(tmp_path, geometry):
    from genesis.data import schema
    from genesis.data.simulate import simulate_to_file

    calls = []
    small = simulate_to_file(tmp_path / "small.h5", 150, geometry, seed=2, write_events=64,
                             progress=lambda done, n: calls.append((done, n)))
    whole = simulate_to_file(tmp_path / "whole.h5", 150, geometry, seed=2)
    summary = schema.validate(small, geometry)
    assert summary.n_events == 150 and calls[-1] == (150, 150)
    sig, lab, _ = schema.read_events(small)
    ref_sig, ref_lab = collect(150, geometry, 2)
    assert np.array_equal(sig, ref_sig) and np.array_equal(lab, ref_lab)
    assert np.array_equal(schema.read_events(whole)[0], sig)
    assert schema.read_geometry(small).fingerprint() == geometry.fingerprint()


def test_cli_simulate_shows_progress_and_writes_the_builtin_detector(tmp_path):
    from conftest import run_cli

    from genesis.data import schema

    out = tmp_path / "sim.h5"
    r = run_cli("simulate", "--events", "300", "--out", str(out), "--seed", "4")
    assert r.returncode == 0, r.stderr
    assert "simulating" in r.stderr and "300/300" in r.stderr and "(icecube86)" in r.stdout
    assert schema.validate(out).n_events == 300
    assert schema.read_geometry(out).fingerprint() == geometry_module.icecube86().fingerprint()
    r = run_cli("simulate", "--events", "20", "--out", str(tmp_path / "grid.h5"), "--geometry", "icecube86-grid")
    assert r.returncode == 0 and "(icecube86-grid)" in r.stdout
    r = run_cli("simulate", "--events", "20", "--out", str(tmp_path / "x.h5"), "--geometry", "nowhere.csv")
    assert r.returncode == 2 and "nowhere.csv: geometry file not found" in r.stderr


@pytest.mark.parametrize("n", [1.32, 1.45])
def test_simulator_and_time_reference_share_one_light_model(geometry, n):
    """The simulator's direct track-light time is genesis.physics' arrival time (the normalization's time
    reference) wherever the cone reaches a DOM from inside the track, at any refractive index; the index
    of SimConfig changes it."""
    import torch

    from genesis.data.simulate import direct_times, expected_light
    from genesis.physics import arrival_time_ns

    labels = np.array([[1e6, 2.5, 1.0, 20.0, -30.0, 40.0]])
    cfg = SimConfig(refractive_index=n)
    light = expected_light(labels, np.array([0.1]), geometry, cfg)
    inside = (light.s_emit[0] > 1.0) & (light.s_emit[0] < 1000.0) & (light.mu_track[0] >= light.mu_cascade[0])
    assert inside.sum() > 20
    dom = np.flatnonzero(inside)
    t_sim, _ = direct_times(light, (np.zeros_like(dom), dom), cfg)
    t_ref = arrival_time_ns(torch.tensor(labels), torch.tensor(geometry.positions, dtype=torch.float64), n)[0, dom]
    np.testing.assert_allclose(t_sim, t_ref.numpy(), rtol=1e-4)
    if n != 1.32:
        t_default = arrival_time_ns(torch.tensor(labels), torch.tensor(geometry.positions, dtype=torch.float64))[0, dom]
        assert (t_ref > t_default).all()
    with pytest.raises(DataError, match="refractive_index"):
        SimConfig(refractive_index=1.0)


def test_data_layer_does_not_import_the_models():
    """genesis.data sits below genesis.models: the light geometry it needs is genesis.physics."""
    import pathlib
    import re

    import genesis.data.simulate

    for path in pathlib.Path(genesis.data.simulate.__file__).parent.glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+genesis\.models", path.read_text(), re.M), path.name
