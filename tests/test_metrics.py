"""Known-answer tests for genesis.metrics (features, LineFit, distances, classifier AUCs, response curves,
standard errors, report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genesis import metrics as M

C_VAC = 0.299792458  # m/ns


def _line_event(zenith: float, azimuth: float, n_hit: int = 8, n_dead: int = 4):
    """One event whose hits lie on a straight track travelling along -dir(zenith, azimuth), with hit
    times growing at light speed along it; extra no-hit DOMs carry garbage times (inf/NaN)."""
    travel = -M.direction_from_angles(zenith, azimuth)
    s = np.linspace(-200.0, 250.0, n_hit)
    pos = np.r_[np.array([10.0, -20.0, 30.0]) + s[:, None] * travel, np.full((n_dead, 3), 500.0)]
    npe = np.r_[np.linspace(1.0, 5.0, n_hit), np.zeros(n_dead)][None]
    time = np.r_[1e4 + s / C_VAC, [np.inf, -np.inf, np.nan, 0.0][:n_dead]][None]
    string = np.r_[np.arange(n_hit) % 3, np.full(n_dead, 9)]
    return npe, time, pos, string


def _toy_sim(n: int, seed: int, p_side: int = 3, doms: int = 20, time_shift: float = 0.0,
             npe_scale: float = 1.0):
    """Tiny vectorized muon-track toy: strings on a grid, Poisson charge falling with distance from the
    track, hit time = track time to closest approach + light travel.
    Returns npe, time, pos, string, labels."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(p_side) * 100.0 - 100.0, np.arange(p_side) * 100.0 - 100.0)
    z = np.arange(doms) * -20.0 + 190.0
    pos = np.stack([np.repeat(gx.ravel(), doms), np.repeat(gy.ravel(), doms), np.tile(z, p_side ** 2)], 1)
    string = np.repeat(np.arange(1, p_side ** 2 + 1), doms)
    energy = 10 ** rng.uniform(3, 5, n)
    zen, azi = np.arccos(rng.uniform(-1, 1, n)), rng.uniform(0, 2 * np.pi, n)
    vtx = rng.uniform(-80, 80, (n, 3))
    travel = -M.direction_from_angles(zen, azi)
    rel = pos[None] - vtx[:, None]                                   # (n, P, 3)
    s = np.einsum("npk,nk->np", rel, travel)
    d = np.linalg.norm(rel - s[..., None] * travel[:, None], axis=-1)
    mu = 3.0 * npe_scale * (energy[:, None] / 1e3) ** 0.7 * np.exp(-d / 30.0)
    npe = rng.poisson(mu).astype(np.float64)
    time = s / C_VAC + d / 0.22 + rng.normal(0, 3.0, s.shape) + 1e4 + time_shift
    time = np.where(npe > 0, time, np.inf)
    return npe, time, pos, string, np.c_[energy, zen, azi, vtx]


# ----------------------------------------------------------------------------------------- LineFit
@pytest.mark.parametrize("zen,azi", [(1.0, 2.0), (0.3, 0.2), (2.6, 5.5), (np.pi / 2, 4.0)])
def test_linefit_recovers_straight_line_direction(zen, azi):
    npe, time, pos, string = _line_event(zen, azi)
    labels = np.array([[1e4, zen, azi, 0, 0, 0]])
    f = M.event_features(npe, time, pos, string, labels)
    assert f["linefit_valid"][0]
    assert abs(f["linefit_zenith"][0] - zen) < 1e-3
    assert abs(f["linefit_azimuth"][0] - azi) < 1e-3
    assert abs(f["linefit_speed"][0] - C_VAC) < 1e-6
    assert f["linefit_angle"][0] < 1e-6
    # The reversed direction is pi away: the angle is measured, not a constant.
    rev = M.event_features(npe, time, pos, string, np.array([[1e4, np.pi - zen, azi + np.pi, 0, 0, 0]]))
    assert abs(rev["linefit_angle"][0] - np.pi) < 1e-6


def test_linefit_convention_without_helpers():
    """Coordinates written by hand, so a sign error shared by helpers cannot cancel out."""
    pos = np.array([[0, 0, 100.0], [0, 0, 50.0], [0, 0, 0.0], [0, 0, -50.0]])
    down = M.event_features(np.ones((1, 4)), np.array([[0, 50, 100, 150.0]]), pos, np.zeros(4, int))
    assert down["linefit_zenith"][0] < 1e-6            # later hits lower: comes from above, zenith 0
    xpos = np.array([[-100.0, 0, 0], [0, 0, 0], [100.0, 0, 0]])
    east = M.event_features(np.ones((1, 3)), np.array([[0, 100, 200.0]]), xpos, np.zeros(3, int))
    assert abs(east["linefit_zenith"][0] - np.pi / 2) < 1e-6  # moving toward +x: comes from -x
    assert abs(east["linefit_azimuth"][0] - np.pi) < 1e-6
    assert abs(east["linefit_speed"][0] - 1.0) < 1e-9


def test_linefit_on_toy_tracks_beats_random():
    npe, time, pos, string, labels = _toy_sim(300, seed=1)
    f = M.event_features(npe, time, pos, string, labels)
    summ = M.angular_error_summary(f["linefit_angle"], f["linefit_valid"])
    assert summ["n"] > 200 and summ["median_deg"] < 30  # random directions would give ~90 deg


# ---------------------------------------------------------------------------------------- features
def test_centroid_symmetric_and_weighted():
    c = np.array([5.0, -7.0, 100.0])
    pos = c + np.array([[10, 0, 0], [-10, 0, 0], [0, 10, 0], [0, -10, 0], [0, 0, 10], [0, 0, -10.0]])
    string = np.arange(6)
    f = M.event_features(np.full((1, 6), 2.5), np.zeros((1, 6)), pos, string)
    np.testing.assert_allclose([f["centroid_x"][0], f["centroid_y"][0], f["centroid_z"][0]], c, atol=1e-9)
    g = M.event_features(np.array([[3.0, 1.0, 0, 0, 0, 0]]), np.zeros((1, 6)), pos, string)
    assert abs(g["centroid_x"][0] - (c[0] + 5.0)) < 1e-9  # (3*10 + 1*-10) / 4 = +5: npe-weighted


def test_time_and_charge_features_known_values():
    pos = np.zeros((4, 3))
    string = np.array([7, 3, 7, 1])  # unsorted ids: hits on strings 7 and 3 -> 2 strings
    npe = np.array([[1.0, 3.0, 0.0, -0.5]])  # negative npe counts as no hit
    time = np.array([[1000.0, 1004.0, 5.0, 9.0]])
    f = M.event_features(npe, time, pos, string)
    assert f["total_npe"][0] == 4.0 and f["n_hit_doms"][0] == 2 and f["n_hit_strings"][0] == 2
    assert abs(f["time_mean"][0] - 1003.0) < 1e-9
    assert abs(f["time_std"][0] - np.sqrt(3.0)) < 1e-9  # (1*9 + 3*1) / 4
    assert f["time_span"][0] == 4.0 and f["brightest_fraction"][0] == 0.75
    assert abs(f["log10_total_npe"][0] - np.log10(5.0)) < 1e-12
    same = M.event_features(np.array([[1.0, 0, 2.0, 0]]), time, pos, string)  # both hits on string 7
    assert same["n_hit_strings"][0] == 1


def test_degenerate_linefit_uses_documented_fallback():
    pos = np.array([[0, 0, 0.0], [0, 0, 0.0], [10.0, 0, 0], [20.0, 0, 0]])
    npe = np.array([[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0]])  # co-located hits; simultaneous hits
    time = np.array([[0.0, 50.0, 0, 0], [0, 0, 7.0, 7.0]])
    f = M.event_features(npe, time, pos, np.zeros(4, int), np.array([[1e3, 0.5, 1.0, 0, 0, 0]] * 2))
    assert f["linefit_valid"].tolist() == [False, False]
    assert f["linefit_zenith"].tolist() == [0.0, 0.0] and f["linefit_speed"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(f["linefit_angle"], [0.5, 0.5])  # angle to the vertical fallback


def test_empty_and_single_hit_events_are_finite():
    pos = np.random.default_rng(0).normal(size=(5, 3))
    npe = np.array([[0.0] * 5, [0, 0, 4.0, 0, 0]])
    time = np.array([[np.nan] * 5, [np.inf, np.inf, 17.0, -np.inf, np.nan]])
    f = M.event_features(npe, time, pos, np.arange(5), np.array([[1e3, 1.0, 1.0, 0, 0, 0]] * 2))
    assert set(M.FEATURES) <= set(f) and len(M.FEATURES) == 14
    for k, v in f.items():
        assert v.shape == (2,) and np.isfinite(v.astype(float)).all(), k
    assert f["n_hit_doms"].tolist() == [0, 1] and f["linefit_valid"].tolist() == [False, False]
    assert f["brightest_fraction"].tolist() == [0.0, 1.0] and f["time_span"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose([f["centroid_x"][1], f["time_mean"][1]], [pos[2, 0], 17.0])
    assert f["linefit_speed"].tolist() == [0.0, 0.0]
    assert M.event_features(np.zeros((0, 5)), np.zeros((0, 5)), pos, np.arange(5))["total_npe"].shape == (0,)


def test_invalid_inputs_raise():
    pos, string = np.zeros((3, 3)), np.arange(3)
    with pytest.raises(ValueError, match="hit DOMs"):
        M.event_features(np.ones((1, 3)), np.array([[0, np.nan, 1.0]]), pos, string)
    with pytest.raises(ValueError, match="npe contains"):
        M.event_features(np.array([[np.nan, 1, 1]]), np.zeros((1, 3)), pos, string)
    with pytest.raises(ValueError, match="positions"):
        M.event_features(np.ones((1, 4)), np.zeros((1, 4)), pos, string)


def test_chunked_equals_unchunked(monkeypatch):
    npe, time, pos, string, labels = _toy_sim(20, seed=2)
    whole = M.event_features(npe, time, pos, string, labels)
    monkeypatch.setattr(M, "_CHUNK", 3)
    parts = M.event_features(npe, time, pos, string, labels)
    for k in whole:
        np.testing.assert_allclose(whole[k], parts[k], rtol=1e-12, atol=1e-12, err_msg=k)  # BLAS rounding


# --------------------------------------------------------------------------------------- distances
def test_distances_zero_for_identical_and_monotonic_in_shift():
    x = np.random.default_rng(0).normal(size=4000)
    assert M.wasserstein1(x, x) == 0.0 and M.histogram_jsd(x, x) == 0.0
    shifts = [0.1, 0.3, 0.7, 1.5, 3.0]
    w1 = [M.normalized_w1(x + d, x) for d in shifts]
    jsd = [M.histogram_jsd(x + d, x) for d in shifts]
    assert np.all(np.diff(w1) > 0) and np.all(np.diff(jsd) > 0)
    np.testing.assert_allclose(w1, shifts, rtol=0.05)  # a pure shift moves every quantile by d
    assert 0 < jsd[0] < jsd[-1] <= 1
    assert M.histogram_jsd(np.zeros(10), np.ones(10)) == pytest.approx(1.0)  # disjoint supports
    assert np.isfinite(M.normalized_w1(x, np.full(5, 2.0)))  # constant reference: std guarded


def test_feature_distances_structure():
    a = {k: np.arange(10.0) for k in M.FEATURES}
    b = {k: np.arange(10.0) + (k == "time_span") for k in M.FEATURES}
    d = M.feature_distances(a, b)
    assert list(d) == M.FEATURES
    assert d["time_span"]["w1"] == pytest.approx(1.0) and d["total_npe"]["w1"] == 0.0
    with pytest.raises(ValueError, match="missing"):
        M.feature_distances({"total_npe": a["total_npe"]}, b)


# ---------------------------------------------------------------------------------------- DOM maps
def test_map_correlation():
    npe = np.random.default_rng(0).poisson(np.linspace(0.1, 3, 50), size=(200, 50)).astype(float)
    assert M.map_correlation(npe, npe) == pytest.approx({"occupancy_corr": 1.0, "mean_npe_corr": 1.0})
    occ, mean = M.dom_maps(npe)
    assert occ.shape == mean.shape == (50,) and np.all((occ >= 0) & (occ <= 1))
    assert M.map_correlation(npe[:, ::-1], npe)["mean_npe_corr"] < 0  # reversed gradient
    assert M.map_correlation(np.zeros((3, 50)), npe) == {"occupancy_corr": 0.0, "mean_npe_corr": 0.0}
    with pytest.raises(ValueError, match="DOM counts"):
        M.map_correlation(npe[:, :10], npe)


# -------------------------------------------------------------------------------------- classifier
def test_roc_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.4
    diff = s[y][:, None] - s[~y][None, :]
    brute = ((diff > 0) + 0.5 * (diff == 0)).mean()
    assert M.roc_auc(s, y) == pytest.approx(brute)
    assert M.roc_auc(np.r_[1.0, 2], np.r_[False, True]) == 1.0
    assert M.roc_auc(np.r_[1.0, 2], np.r_[True, False]) == 0.0


def test_classifier_auc_same_vs_different_and_deterministic():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1200, 6)), rng.normal(size=(1000, 6))
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    same = M.classifier_auc(a, b, seed=0)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)  # no side effects
    assert abs(same["auc"] - 0.5) < 0.1
    assert (same["n_train"], same["n_val"], same["n_test"]) == (750, 250, 1000)  # 1000 rows each: 37.5/12.5/50
    assert M.classifier_auc(a, b, seed=0)["auc"] == same["auc"]
    c = b.copy()
    c[:, 2] = c[:, 2] * 0.2 + 3.0
    assert M.classifier_auc(c, a, seed=0)["auc"] > 0.95


def test_classifier_auc_needs_min_events():
    x = np.zeros((M.MIN_EVENTS_FOR_AUC - 1, 3))
    with pytest.raises(ValueError, match=str(M.MIN_EVENTS_FOR_AUC)):
        M.classifier_auc(x, np.zeros((1000, 3)))


def _toy_labels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[10 ** rng.uniform(3, 5, n), np.arccos(rng.uniform(-1, 1, n)), rng.uniform(0, 2 * np.pi, n),
                 rng.uniform(-80, 80, (n, 3))]


def _toy_at(labels: np.ndarray, seed: int, energy_power: float = 0.7):
    """The _toy_sim detector and light at given labels (N, 6); energy_power 0: charge ignores the energy.
    Returns npe, time (N, P), pos, string."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(3) * 100.0 - 100.0, np.arange(3) * 100.0 - 100.0)
    pos = np.stack([np.repeat(gx.ravel(), 20), np.repeat(gy.ravel(), 20), np.tile(np.arange(20) * -20.0 + 190, 9)], 1)
    travel = -M.direction_from_angles(labels[:, 1], labels[:, 2])
    rel = pos[None] - labels[:, None, 3:]
    s = np.einsum("npk,nk->np", rel, travel)
    d = np.linalg.norm(rel - s[..., None] * travel[:, None], axis=-1)
    npe = rng.poisson(3.0 * (labels[:, :1] / 1e3) ** energy_power * np.exp(-d / 30.0)).astype(np.float64)
    time = s / C_VAC + d / 0.22 + rng.normal(0, 3.0, s.shape) + 1e4
    return npe, np.where(npe > 0, time, np.inf), pos, np.repeat(np.arange(1, 10), 20)


def _matrix(npe, time, pos, string):
    return M.feature_matrix(M.event_features(npe, time, pos, string))


def test_row_split_is_a_disjoint_partition():
    parts = M.row_split(1001, seed=3)
    allrows = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(allrows), np.arange(1001))  # every row exactly once: none in two parts
    assert [len(parts[k]) for k in ("train", "val", "test")] == [376, 125, 500]
    again, other = M.row_split(1001, seed=3), M.row_split(1001, seed=4)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(ValueError, match="cannot be split"):
        M.row_split(3)


def test_label_aware_classifier_sees_events_at_the_wrong_labels():
    """A generator whose events are right on the whole but belong to other label rows (labels shuffled):
    the unconditional classifier sees nothing, the label-aware one sees it clearly."""
    labels = _toy_labels(600, seed=10)
    npe, time, pos, string = _toy_at(labels, seed=2)
    swapped = _toy_at(labels[np.random.default_rng(5).permutation(600)], seed=3)
    same = _toy_at(labels, seed=3)
    ref, gen_bad, gen_good = _matrix(npe, time, pos, string), _matrix(*swapped), _matrix(*same)
    split = M.row_split(600, seed=0)
    plain = M.classifier_auc(gen_bad, ref, split=split)
    aware = M.conditional_classifier_auc(gen_bad, labels, ref, labels, split=split)
    honest = M.conditional_classifier_auc(gen_good, labels, ref, labels, split=split)
    assert abs(plain["auc"] - 0.5) < 0.1, plain
    assert aware["auc"] > 0.8 and aware["auc"] - 4 * aware["auc_se"] > 0.5, aware
    assert abs(honest["auc"] - 0.5) < 0.1, honest
    assert aware["n_test"] == plain["n_test"] == 600  # 300 rows, both of their events
    np.testing.assert_allclose(M.label_features(labels[:2])[:, 0], np.log10(labels[:2, 0]))
    np.testing.assert_allclose(np.linalg.norm(M.label_features(labels)[:, 1:4], axis=1), 1.0)
    with pytest.raises(ValueError, match="paired"):
        M.classifier_auc(ref, ref[:-10], split=split)


def test_auc_standard_error_matches_the_spread_and_shrinks():
    rng = np.random.default_rng(0)
    aucs, ses = [], []
    for _ in range(200):
        scores = np.r_[rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)]
        positive = np.r_[np.ones(400, bool), np.zeros(400, bool)]
        aucs.append(M.roc_auc(scores, positive))
        ses.append(M.auc_standard_error(scores, positive))
    assert np.mean(ses) == pytest.approx(np.std(aucs), rel=0.2)  # DeLong = the actual spread over test sets
    big = np.r_[rng.normal(1.0, 1.0, 6400), rng.normal(0.0, 1.0, 6400)]
    se_big = M.auc_standard_error(big, np.r_[np.ones(6400, bool), np.zeros(6400, bool)])
    assert se_big == pytest.approx(np.mean(ses) / 4, rel=0.15)  # 16x the events: a quarter of the error
    assert 3300 <= M.events_for_auc_se(0.01, 0.5) <= 3400  # 1/sqrt(6m) <= 0.01 with half the rows tested
    assert M.events_for_auc_se(0.01, 0.9) < M.events_for_auc_se(0.01, 0.8) < M.events_for_auc_se(0.01, 0.5)


def test_bootstrap_w1_is_exact_and_its_error_shrinks_with_n():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=37), rng.normal(size=53) + 0.3
    assert M._w1_sorted(np.sort(a)[None], np.sort(b)[None])[0] == pytest.approx(M.wasserstein1(a, b), rel=1e-12)
    spread, errors = {}, {}
    for n in (250, 1000):
        w = [M.normalized_w1(rng.normal(0.3, 1, n), rng.normal(0, 1, n)) for _ in range(60)]
        spread[n] = np.std(w)
        g, r = {"x": rng.normal(0.3, 1, n)}, {"x": rng.normal(0, 1, n)}
        errors[n] = M.w1_norm_standard_errors(g, r, names=["x"], n_boot=100, seed=0)["x"]
    assert errors[1000] == pytest.approx(errors[250] / 2, rel=0.3)
    for n in spread:  # the bootstrap error is the spread of W1 over independent samples
        assert errors[n] == pytest.approx(spread[n], rel=0.4), (n, errors, spread)


def test_response_curves_known_values():
    labels = np.zeros((8, 6))
    labels[:, 0] = [10, 10, 10, 10, 1e4, 1e4, 1e4, 1e4]  # two energy bins of 4 events
    labels[:, 5] = np.arange(8.0)
    feats = {k: np.zeros(8) for k in M.RESPONSE_FEATURES}
    feats["log10_total_npe"] = np.array([1.0, 2, 3, 4, 5, 5, 5, 5])
    gen = {**feats, "log10_total_npe": feats["log10_total_npe"] + 1}
    out = M.response_curves(gen, labels, feats, labels, n_bins=2)
    c = out["curves"]["log10_total_npe_vs_log10_energy"]
    np.testing.assert_allclose(out["bins"]["log10_energy"]["centers"], [1.0, 4.0])
    np.testing.assert_allclose(c["ref"]["mean"], [2.5, 5.0])
    np.testing.assert_allclose(c["ref"]["std"], [np.std([1, 2, 3, 4], ddof=1), 0.0])
    np.testing.assert_allclose(c["ref"]["se"], [np.std([1, 2, 3, 4], ddof=1) / 2, 0.0])
    # bin 1: diff 1 over sqrt(2) * se; bin 2: both spreads 0, means differ -> left out (NaN)
    assert c["z"][0] == pytest.approx(1 / (np.sqrt(2) * c["ref"]["se"][0])) and np.isnan(c["z"][1])
    assert c["summary"] == pytest.approx(c["z"][0])
    assert out["curves"]["n_hit_doms_vs_log10_energy"]["summary"] == 0.0  # identical constants: 0, not NaN
    assert len(out["curves"]) == len(M.RESPONSE_FEATURES) * len(M.RESPONSE_LABELS)


def test_decade_response_known_values():
    """Per true-energy decade: generated minus simulated mean log10 npe and the hit-DOM ratio; the decades are
    [10^d, 10^(d+1)) (1e4 GeV falls in the second); a decade with no events is left out."""
    gen_labels, ref_labels = np.zeros((4, 6)), np.zeros((3, 6))
    gen_labels[:, 0] = [2e3, 5e3, 1e4, 3e4]
    ref_labels[:, 0] = [3e3, 2e4, 5e4]
    gen = {"log10_total_npe": np.array([1.0, 2.0, 3.0, 4.0]), "n_hit_doms": np.array([10.0, 20, 30, 50])}
    ref = {"log10_total_npe": np.array([1.0, 2.0, 4.0]), "n_hit_doms": np.array([20.0, 40, 40])}
    out = M.decade_response(gen, gen_labels, ref, ref_labels)
    assert out == pytest.approx({"eval/decade3_log10_npe_diff": 0.5, "eval/decade3_hit_doms_ratio": 0.75,
                                 "eval/decade4_log10_npe_diff": 0.5, "eval/decade4_hit_doms_ratio": 1.0})


def test_charge_energy_slope_known_values():
    labels = np.zeros((3, 6))
    labels[:, 0] = [1e3, 1e4, 1e5]
    assert M.charge_energy_slope({"log10_total_npe": np.array([1.0, 1.8, 2.6])}, labels) == pytest.approx(0.8)
    assert np.isnan(M.charge_energy_slope({"log10_total_npe": np.ones(3)}, np.full((3, 6), 10.0)))


def test_response_summary_small_for_the_simulator_large_when_charge_ignores_energy():
    labels = _toy_labels(600, seed=11)
    npe, time, pos, string = _toy_at(labels, seed=2)
    ref = M.event_features(npe, time, pos, string)
    same = M.event_features(*_toy_at(labels, seed=3))
    flat = M.event_features(*_toy_at(labels, seed=3, energy_power=0.0))
    good = M.response_curves(same, labels, ref, labels)
    bad = M.response_curves(flat, labels, ref, labels)
    assert good["summary"] < 1.5 and max(c["summary"] for c in good["curves"].values()) < 3, good["summary"]
    assert bad["curves"]["log10_total_npe_vs_log10_energy"]["summary"] > 10
    assert bad["summary"] > 5 * good["summary"]


# ------------------------------------------------------------------------------ conditional checks
def test_npe_vs_energy_and_angular_summary():
    energy = np.array([10.0, 20.0, 200.0, 2000.0, 3000.0])
    npe = np.array([9.0, 99.0, 999.0, 0.0, 9999.0])
    out = M.npe_vs_energy(npe, energy, np.array([1.0, 100.0, 1e3, 1e4, 1e5]))
    assert out["count"].tolist() == [2, 1, 2, 0]
    np.testing.assert_allclose(out["mean_log10_npe"][:3], [1.5, 3.0, 2.0])
    assert np.isnan(out["mean_log10_npe"][3])
    np.testing.assert_allclose(out["bin_centers"], [10.0, np.sqrt(1e5), np.sqrt(1e7), np.sqrt(1e9)])
    assert M.npe_vs_energy(npe, energy, 3)["count"].sum() == 5
    s = M.angular_error_summary(np.radians(np.arange(1.0, 101.0)), np.arange(100) < 50)
    assert s["median_deg"] == pytest.approx(25.5) and s["n"] == 50
    assert s["p68_deg"] == pytest.approx(np.percentile(np.arange(1.0, 51.0), 68))


# ------------------------------------------------------------------------------------------ report
def test_compare_sets_identical_and_distorted():
    npe, time, pos, string, labels = _toy_sim(400, seed=3)
    rep = M.compare_sets(npe, time, npe, time, pos, string, labels)
    json.dumps(rep, allow_nan=False)
    assert all(v["w1"] == 0.0 and v["jsd"] == 0.0 for v in rep["features"].values())
    assert rep["maps"]["occupancy_corr"] == pytest.approx(1.0)
    assert rep["linefit"]["median_angle_ratio"] == pytest.approx(1.0)
    assert abs(rep["classifier"]["auc"] - 0.5) < 0.1 and abs(rep["classifier_conditional"]["auc"] - 0.5) < 0.1
    assert rep["classifier"]["n_test"] == rep["classifier_conditional"]["n_test"] == 400  # one split of 400 rows
    sc = rep["scalars"]
    assert {"eval/auc", "eval/auc_se", "eval/auc_conditional", "eval/auc_conditional_se", "eval/w1_time_span",
            "eval/w1_time_span_se", "eval/response_summary", "eval/response_n_hit_doms_vs_cos_zenith",
            "eval/linefit_median_angle_ratio", "eval/occupancy_corr",
            "eval/mean_npe_corr"} <= set(sc) and all(isinstance(v, float) for v in sc.values())
    assert 0 < sc["eval/auc_se"] < 0.05 and sc["eval/response_summary"] == 0.0

    gnpe, gtime, *_ = _toy_sim(400, seed=4, time_shift=300.0, npe_scale=3.0)
    bad = M.compare_sets(gnpe, gtime, npe, time, pos, string, labels)
    json.dumps(bad, allow_nan=False)
    assert bad["scalars"]["eval/auc"] > 0.9
    assert bad["scalars"]["eval/w1_time_mean"] > 1.0
    assert bad["scalars"]["eval/npe_vs_energy_mean_abs_diff"] > 0.1
    assert bad["scalars"]["eval/response_summary"] > 3  # 3x the charge, other labels: ~5 SE
    assert bad["features"]["time_mean"]["w1_norm_se"] > 0


def test_compare_sets_few_events_and_p_mismatch():
    npe, time, pos, string, labels = _toy_sim(50, seed=5)
    labels[:, 0] = np.where(np.arange(50) % 2, 1e3, 1e5)  # middle energy bins empty: NaN means
    rep = M.compare_sets(npe, time, npe, time, pos, string, labels)
    json.dumps(rep, allow_nan=False)
    assert None in rep["npe_vs_energy"]["gen"]["mean_log10_npe"]  # NaN written as null
    assert rep["classifier"]["auc"] is None and str(M.MIN_EVENTS_FOR_AUC) in rep["classifier"]["note"]
    assert rep["classifier_conditional"]["auc"] is None
    assert "eval/auc" not in rep["scalars"] and "eval/auc_conditional" not in rep["scalars"]
    with pytest.raises(ValueError, match="same number of DOMs"):
        M.compare_sets(npe[:, :-1], time[:, :-1], npe, time, pos, string, labels)
