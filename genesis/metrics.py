"""Physics-fidelity metrics: per-event features, LineFit, distances, classifier AUCs (with and without
the labels), response curves to the labels, standard errors.

Everything works on events in physical units, vectorized over events (chunks of events, never a Python
loop over single events):
    npe   (N, P) float, photoelectrons per DOM; a DOM is hit iff npe > 0 (negative npe = no hit)
    time  (N, P) float, first-hit time in ns; read only where npe > 0 (elsewhere it may be inf/NaN/0)
    positions (P, 3) metres, string (P,) int string id of each DOM
    labels (N, 6): energy GeV, zenith rad, azimuth rad, vertex x, y, z m. Zenith/azimuth give the
    direction the particle comes FROM; it travels along -(sin z cos a, sin z sin a, cos z).

Fill values for events where a feature is undefined (documented so the classifier sees constants,
never NaN): no hit -> total_npe, centroid, times, brightest_fraction = 0; fewer than 2 hits (or all
hits simultaneous / co-located) -> LineFit invalid: linefit_valid False, zenith 0 and azimuth 0 (the
vertical down-going fallback direction), speed 0, and linefit_angle is measured to that fallback.
Summaries of LineFit angles use only valid events.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata, wasserstein_distance

FEATURES: list[str] = [
    "total_npe", "log10_total_npe", "n_hit_doms", "n_hit_strings",
    "centroid_x", "centroid_y", "centroid_z",
    "time_mean", "time_std", "time_span", "brightest_fraction",
    "linefit_zenith", "linefit_azimuth", "linefit_speed",
]
"""The 14 high-level features for distances and the classifier two-sample test."""

MIN_EVENTS_FOR_AUC = 200
_CHUNK = 512  # events per chunk: bounds memory to a few (chunk, P) float64 temporaries (~20 MB each)


# ----------------------------------------------------------------------------------------- geometry
def direction_from_angles(zenith: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vector (..., 3) of the direction the particle comes FROM (IceCube convention)."""
    z, a = np.asarray(zenith, np.float64), np.asarray(azimuth, np.float64)
    return np.stack([np.sin(z) * np.cos(a), np.sin(z) * np.sin(a), np.cos(z)], axis=-1)


def angles_from_direction(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(zenith, azimuth in [0, 2pi)) of the unit 'comes from' vectors d (..., 3)."""
    zen = np.arccos(np.clip(d[..., 2], -1.0, 1.0))
    azi = np.mod(np.arctan2(d[..., 1], d[..., 0]), 2 * np.pi)
    return zen, azi


def opening_angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle in rad between vectors u, v (..., 3); atan2(|u x v|, u.v) stays accurate near 0 and pi."""
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.sum(u * v, axis=-1))


# ----------------------------------------------------------------------------------------- features
def _check_events(npe: np.ndarray, time: np.ndarray, positions: np.ndarray, string: np.ndarray,
                  labels: np.ndarray | None) -> None:
    n, p = npe.shape if npe.ndim == 2 else (None, None)
    if npe.ndim != 2 or time.shape != npe.shape:
        raise ValueError(f"npe and time must both have shape (N, P); got {npe.shape} and {time.shape}")
    if positions.shape != (p, 3) or string.shape != (p,):
        raise ValueError(f"positions must be ({p}, 3) and string ({p},) to match P={p} DOMs; "
                         f"got {positions.shape} and {string.shape}")
    if labels is not None and labels.shape != (n, 6):
        raise ValueError(f"labels must have shape ({n}, 6); got {labels.shape}")
    if not np.isfinite(npe).all():
        raise ValueError(f"npe contains {int((~np.isfinite(npe)).sum())} NaN/inf values; "
                         "no-hit DOMs must have npe 0")


def event_features(npe: np.ndarray, time: np.ndarray, positions: np.ndarray, string: np.ndarray,
                   labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """High-level features of each event.

    Args:
        npe: (N, P) photoelectrons; hit iff > 0. time: (N, P) ns, used only at hits (must be finite there).
        positions: (P, 3) m. string: (P,) string ids. labels: optional (N, 6), adds linefit_angle.
    Returns:
        dict of (N,) float64 arrays: every name in FEATURES, plus linefit_valid (bool) and, with labels,
        linefit_angle (rad, between the LineFit and the true travel directions). Fill values: module doc.
    LineFit (unweighted least squares r_i = r0 + v t_i over hit DOMs):
        v = sum (t_i - <t>)(r_i - <r>) / sum (t_i - <t>)^2; reconstructed 'comes from' direction = -v/|v|.
    """
    npe, time = np.asarray(npe), np.asarray(time)
    pos = np.asarray(positions, np.float64)
    string = np.asarray(string)
    labels = None if labels is None else np.asarray(labels, np.float64)
    _check_events(npe, time, pos, string, labels)
    bad_t = (npe > 0) & ~np.isfinite(time)
    if bad_t.any():
        raise ValueError(f"time is NaN/inf at {int(bad_t.sum())} hit DOMs (npe > 0); "
                         "hit times must be finite")
    # Sort DOMs by string once so 'any hit on the string' is one logical_or.reduceat per chunk.
    order = np.argsort(string, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(string[order]) != 0])
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(npe), _CHUNK):
        for k, v in _chunk_features(npe[s:s + _CHUNK], time[s:s + _CHUNK], pos, order, starts).items():
            out.setdefault(k, []).append(v)
    feats = {k: np.concatenate(v) for k, v in out.items()} if out else \
        {**{k: np.zeros(0) for k in FEATURES}, "linefit_valid": np.zeros(0, bool)}  # N = 0
    if labels is not None:
        fit_from = direction_from_angles(feats["linefit_zenith"], feats["linefit_azimuth"])
        true_from = direction_from_angles(labels[:, 1], labels[:, 2])
        feats["linefit_angle"] = opening_angle(fit_from, true_from)  # same angle for travel directions
    return feats


def _chunk_features(npe: np.ndarray, time: np.ndarray, pos: np.ndarray, order: np.ndarray,
                    starts: np.ndarray) -> dict[str, np.ndarray]:
    """event_features for one chunk (n, P) of events; see there."""
    hit = npe > 0
    q = np.where(hit, npe, 0.0).astype(np.float64)
    t = np.where(hit, time, 0.0).astype(np.float64)  # np.where: inf/NaN at no-hit DOMs never propagate
    nh = hit.sum(1)
    qtot = q.sum(1)
    qs = np.where(qtot > 0, qtot, 1.0)  # safe divisor; numerators are 0 when there is no charge
    tmean = (q * t).sum(1) / qs
    dt = np.where(hit, t - tmean[:, None], 0.0)  # two-pass spread: t ~ 1e4 ns would cancel in E[t^2]-E[t]^2
    span = np.where(nh > 0, np.where(hit, t, -np.inf).max(1) - np.where(hit, t, np.inf).min(1), 0.0)
    cen = (q @ pos) / qs[:, None]
    # LineFit on centred times and positions (avoids cancellation with large absolute times).
    nsafe = np.maximum(nh, 1)
    tc = np.where(hit, t - (t.sum(1) / nsafe)[:, None], 0.0)
    rbar = (hit.astype(np.float64) @ pos) / nsafe[:, None]
    denom = (tc ** 2).sum(1)
    vel = (tc @ pos - tc.sum(1)[:, None] * rbar) / np.where(denom > 0, denom, 1.0)[:, None]
    speed = np.linalg.norm(vel, axis=1)
    valid = (nh >= 2) & (denom > 0) & (speed > 0)
    from_dir = np.where(valid[:, None], -vel / np.where(speed > 0, speed, 1.0)[:, None], [0.0, 0.0, 1.0])
    zen, azi = angles_from_direction(from_dir)
    return {
        "total_npe": qtot,
        "log10_total_npe": np.log10(1.0 + qtot),
        "n_hit_doms": nh.astype(np.float64),
        "n_hit_strings": np.logical_or.reduceat(hit[:, order], starts, axis=1).sum(1).astype(np.float64),
        "centroid_x": cen[:, 0], "centroid_y": cen[:, 1], "centroid_z": cen[:, 2],
        "time_mean": tmean,
        "time_std": np.sqrt((q * dt ** 2).sum(1) / qs),
        "time_span": span,
        "brightest_fraction": q.max(1, initial=0.0) / qs,
        "linefit_zenith": zen, "linefit_azimuth": azi,
        "linefit_speed": speed,  # already 0 when invalid: vel = 0 when denom = 0
        "linefit_valid": valid,
    }


def feature_matrix(feats: dict[str, np.ndarray], names: list[str] | None = None) -> np.ndarray:
    """Stack features into an (N, F) float64 matrix in the order of names (default FEATURES)."""
    names = FEATURES if names is None else names
    missing = [k for k in names if k not in feats]
    if missing:
        raise ValueError(f"features missing: {missing}; compute them with event_features()")
    return np.stack([np.asarray(feats[k], np.float64) for k in names], axis=1)


# ---------------------------------------------------------------------------------------- distances
def _finite_1d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty; distances need at least one value")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(x)).sum())} NaN/inf values")
    return x


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between the 1-D samples a (Na,) and b (Nb,), in their units."""
    return float(wasserstein_distance(_finite_1d(a, "a"), _finite_1d(b, "b")))


def normalized_w1(a: np.ndarray, b_ref: np.ndarray) -> float:
    """W1(a, ref) / std(ref): distance in units of the reference spread. A constant reference
    (std 0) gives the raw W1 (scale 1) so the value stays finite."""
    ref = _finite_1d(b_ref, "b_ref")
    sd = float(ref.std())
    return wasserstein1(a, ref) / (sd if sd > 0 else 1.0)


def histogram_jsd(a: np.ndarray, b: np.ndarray, bins: int = 50) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of the histograms of a and b on `bins` common bins
    over the pooled range. Identical constants give 0."""
    a, b = _finite_1d(a, "a"), _finite_1d(b, "b")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 0.0
    p = np.histogram(a, bins=bins, range=(lo, hi))[0] / a.size
    q = np.histogram(b, bins=bins, range=(lo, hi))[0] / b.size
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:  # terms with x = 0 contribute 0; m > 0 wherever x > 0
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0))


def feature_distances(gen_feats: dict[str, np.ndarray], ref_feats: dict[str, np.ndarray],
                      names: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Per-feature {"w1", "w1_norm" (W1 / std of ref), "jsd"} for names (default FEATURES)."""
    names = FEATURES if names is None else names
    missing = [k for k in names if k not in gen_feats or k not in ref_feats]
    if missing:
        raise ValueError(f"features missing from gen or ref: {missing}")
    return {k: {"w1": wasserstein1(gen_feats[k], ref_feats[k]),
                "w1_norm": normalized_w1(gen_feats[k], ref_feats[k]),
                "jsd": histogram_jsd(gen_feats[k], ref_feats[k])} for k in names}


def _w1_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """W1 between the rows of a (B, na) and b (B, nb), each row sorted ascending -> (B,).

    The integral of |F_a^-1(u) - F_b^-1(u)| over u in (0, 1): both quantile functions are constant between
    the breakpoints k/na and j/nb, so the sum over those intervals is exact (it equals scipy's W1)."""
    na, nb = a.shape[1], b.shape[1]
    edges = np.r_[0.0, np.union1d(np.arange(1, na) / na, np.arange(1, nb) / nb), 1.0]
    mid, width = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
    ia, ib = np.minimum((mid * na).astype(np.int64), na - 1), np.minimum((mid * nb).astype(np.int64), nb - 1)
    return np.abs(a[:, ia] - b[:, ib]) @ width


BOOTSTRAP_ELEMENTS = 4_000_000  # values per bootstrap chunk (B_chunk x (Ng + Nr)): bounds memory to ~100 MB


def w1_norm_standard_errors(gen_feats: dict[str, np.ndarray], ref_feats: dict[str, np.ndarray],
                            names: list[str] | None = None, n_boot: int = 100,
                            seed: int = 0) -> dict[str, float]:
    """Bootstrap standard error of normalized_w1(gen, ref) per feature (default FEATURES).

    Events are resampled with replacement (gen and ref independently; the same event indices for every
    feature), n_boot times; the SE is the std (ddof 1) of W1(gen*, ref*) / std(ref*). Vectorized over the
    resamples in chunks of about BOOTSTRAP_ELEMENTS values, so 100 resamples of 2 x 5000 events and 14
    features take about a second. NaN when a set has fewer than 2 events.
    """
    names = FEATURES if names is None else names
    g = feature_matrix(gen_feats, names)
    r = feature_matrix(ref_feats, names)
    if len(g) < 2 or len(r) < 2 or n_boot < 2:
        return {k: math.nan for k in names}
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_ELEMENTS // (len(g) + len(r)))
    values: list[np.ndarray] = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        ig, ir = rng.integers(0, len(g), (b, len(g))), rng.integers(0, len(r), (b, len(r)))
        out = np.empty((b, len(names)))
        for j in range(len(names)):
            gs, rs = np.sort(g[ig, j], axis=1), np.sort(r[ir, j], axis=1)
            sd = rs.std(axis=1)
            out[:, j] = _w1_sorted(gs, rs) / np.where(sd > 0, sd, 1.0)  # as normalized_w1: constant ref -> raw W1
        values.append(out)
    se = np.concatenate(values).std(axis=0, ddof=1)
    return {k: float(v) for k, v in zip(names, se)}


# ----------------------------------------------------------------------------------------- DOM maps
def dom_maps(npe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-DOM occupancy (fraction of events with a hit) and mean npe per event (no-hit counts as 0),
    both (P,), from npe (N, P)."""
    npe = np.asarray(npe)
    hit = npe > 0
    return hit.mean(0), np.where(hit, npe, 0.0).mean(0)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; if either array is constant it is undefined: 1.0 when x == y, else 0.0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.std() == 0 or y.std() == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(np.corrcoef(x, y)[0, 1])


def map_correlation(gen_npe: np.ndarray, ref_npe: np.ndarray) -> dict[str, float]:
    """Pearson correlations of the per-DOM occupancy and mean-npe maps of gen (Ng, P) and ref (Nr, P)."""
    if np.shape(gen_npe)[1:] != np.shape(ref_npe)[1:]:
        raise ValueError(f"gen and ref have different DOM counts: {np.shape(gen_npe)} vs {np.shape(ref_npe)}")
    (go, gm), (ro, rm) = dom_maps(gen_npe), dom_maps(ref_npe)
    return {"occupancy_corr": _pearson(go, ro), "mean_npe_corr": _pearson(gm, rm)}


# ------------------------------------------------------------------------------ classifier two-sample
TEST_FRACTION = 0.5  # of the label rows: half for the test, so the AUC's standard error is small
VAL_FRACTION = 0.125  # of the label rows, taken from the training half (early stopping)
LABEL_FEATURES: list[str] = ["log10_energy", "dir_x", "dir_y", "dir_z", "vertex_x", "vertex_y", "vertex_z"]
"""The label inputs of the label-aware classifier (label_features)."""


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks, i.e. count 1/2).
    scores (n,), positive (n,) bool; needs both classes."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("roc_auc needs at least one positive and one negative example")
    r = rankdata(scores)
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_standard_error(scores: np.ndarray, positive: np.ndarray) -> float:
    """DeLong's standard error of the ROC AUC of scores (n,) for classes positive (n,) bool.

    With X the positives' scores (m) and Y the negatives' (k), V10_i = P(Y < X_i) (ties 1/2) and
    V01_j = P(Y_j < X); var(AUC) = var(V10) / m + var(V01) / k (DeLong et al. 1988, via midranks).
    It is the spread from the finite test set (not from the classifier's training); NaN with < 2 per class.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    x, y = scores[positive], scores[~positive]
    m, k = len(x), len(y)
    if m < 2 or k < 2:
        return math.nan
    rank_all = rankdata(np.r_[x, y])
    v10 = (rank_all[:m] - rankdata(x)) / k
    v01 = 1.0 - (rank_all[m:] - rankdata(y)) / m
    return float(math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / k))


def events_for_auc_se(target_se: float = 0.01, auc: float = 0.5, test_fraction: float = TEST_FRACTION) -> int:
    """Label rows (events per set) a classifier test needs for an AUC standard error <= target_se at the given
    AUC (Hanley & McNeil 1982, equal classes of test_fraction * N events each). The largest need is at 0.5:
    var = (A(1 - A) + (m - 1)(Q1 + Q2 - 2 A^2)) / m^2 with Q1 = A / (2 - A), Q2 = 2 A^2 / (1 + A)."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    m = 2
    while (auc * (1 - auc) + (m - 1) * (q1 + q2 - 2 * auc ** 2)) / m ** 2 > target_se ** 2:
        m += 1
    return int(math.ceil(m / test_fraction))


def row_split(n: int, seed: int = 0, test_fraction: float = TEST_FRACTION,
              val_fraction: float = VAL_FRACTION) -> dict[str, np.ndarray]:
    """Disjoint train/val/test row indices (each sorted) of n label rows, shuffled by seed.

    The generated and the reference event of one label row go to the same part (pass the split to
    classifier_auc for both sets), so the classifier is never tested at a label row it was trained on.
    """
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    if min(n_test, n_val, n - n_test - n_val) < 1:
        raise ValueError(f"{n} label rows cannot be split into train/val/test "
                         f"({1 - test_fraction - val_fraction:.3g}/{val_fraction:.3g}/{test_fraction:.3g})")
    perm = np.random.default_rng(seed).permutation(n)
    return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test])}


def label_features(labels: np.ndarray) -> np.ndarray:
    """(N, 7) label inputs of the label-aware classifier from labels (N, 6): log10 energy, the 'comes from'
    direction as a unit vector (no 2 pi wrap of the azimuth), vertex x, y, z (LABEL_FEATURES)."""
    lab = np.asarray(labels, np.float64)
    if lab.ndim != 2 or lab.shape[1] != 6:
        raise ValueError(f"labels must have shape (N, 6); got {lab.shape}")
    if (lab[:, 0] <= 0).any():
        raise ValueError("energies must be > 0 GeV (the classifier reads log10 energy)")
    return np.c_[np.log10(lab[:, 0]), direction_from_angles(lab[:, 1], lab[:, 2]), lab[:, 3:6]]


def classifier_auc(feats_a: np.ndarray, feats_b: np.ndarray, seed: int = 0, epochs: int = 200,
                   min_events: int = MIN_EVENTS_FOR_AUC, patience: int = 10, hidden: int = 64,
                   batch_size: int = 256, lr: float = 1e-3,
                   split: dict[str, np.ndarray] | None = None) -> dict[str, float | int]:
    """Classifier two-sample test: test-set ROC AUC of an MLP separating a (label 1) from b (label 0).

    feats_a (Na, F), feats_b (Nb, F). With Na == Nb the rows are paired (row i of a and of b belong to the
    same label row, as in an evaluation that generates one event per reference label): one split of the
    rows (`split`, default row_split(N, seed): train/val/test 37.5/12.5/50) serves both sets, so a label
    row never straddles train and test. With Na != Nb each set is first subsampled (independently) to the
    smaller size. Features are standardized on train; an MLP (F -> hidden -> hidden -> 1, ReLU) is trained
    with Adam + BCE, early-stopped on validation loss (patience epochs). AUC ~0.5 means the sets are
    indistinguishable to this classifier. Deterministic for a given seed.
    Returns dict(auc, auc_se (DeLong, over the test set), n_train, n_val, n_test) (counts over both classes).
    Raises ValueError if either set has fewer than min_events events or the inputs are malformed.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature matrices must be (N, F) with equal F; got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < min_events:
        raise ValueError(f"classifier AUC needs at least {min_events} events in each set; "
                         f"got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("feature matrices contain NaN/inf")
    rng = np.random.default_rng(seed)
    if len(a) != len(b):
        if split is not None:
            raise ValueError(f"a row split needs paired sets of equal size; got {len(a)} and {len(b)}")
        n = min(len(a), len(b))
        a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    split = row_split(len(a), seed) if split is None else split
    parts = [(np.concatenate([a[split[k]], b[split[k]]]), np.r_[np.ones(len(split[k])), np.zeros(len(split[k]))])
             for k in ("train", "val", "test")]
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    # Robust standardization (median, IQR) + clipping: a generator's rare far-off values (e.g. a huge
    # time span) must not inflate the scale and squash the bulk where the differences usually are.
    center = np.median(x_tr, axis=0)
    iqr = np.subtract(*np.percentile(x_tr, [75, 25], axis=0)) / 1.349
    scale = np.where(iqr > 0, iqr, np.where(x_tr.std(0) > 0, x_tr.std(0), 1.0))

    def prep(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.clip((x - center) / scale, -10.0, 10.0), dtype=torch.float32)

    xt, xv, xs = prep(x_tr), prep(x_va), prep(x_te)
    yt, yv = torch.as_tensor(y_tr, dtype=torch.float32), torch.as_tensor(y_va, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(a.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: intra-op threading costs ~10x more than it saves
    try:
        best_state = _train(net, opt, loss_fn, xt, yt, xv, yv, rng, epochs, batch_size, patience)
    finally:
        torch.set_num_threads(threads)
    if best_state is not None:
        net.load_state_dict(best_state)
    with torch.no_grad():
        scores = net(xs).squeeze(1).numpy()
    return {"auc": roc_auc(scores, y_te > 0.5), "auc_se": auc_standard_error(scores, y_te > 0.5),
            "n_train": len(x_tr), "n_val": len(x_va), "n_test": len(x_te)}


def conditional_classifier_auc(feats_a: np.ndarray, labels_a: np.ndarray, feats_b: np.ndarray,
                               labels_b: np.ndarray, seed: int = 0,
                               split: dict[str, np.ndarray] | None = None, **kwargs: Any) -> dict[str, float | int]:
    """Label-aware classifier two-sample test: classifier_auc on the event features (N, F) plus each event's
    label_features (N, 7). It sees whether events follow their labels: a generator whose events are right
    on the whole but at the wrong labels (e.g. charge that ignores energy) scores well above 0.5 here,
    while the unconditional classifier sees nothing. labels_a (Na, 6), labels_b (Nb, 6)."""
    fa, fb = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(labels_a) != len(fa) or len(labels_b) != len(fb):
        raise ValueError(f"one label row per event needed; got {len(fa)} events / {len(labels_a)} labels and "
                         f"{len(fb)} / {len(labels_b)}")
    return classifier_auc(np.c_[fa, label_features(labels_a)], np.c_[fb, label_features(labels_b)], seed=seed,
                          split=split, **kwargs)


def _train(net: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: torch.nn.Module, xt: torch.Tensor,
           yt: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, rng: np.random.Generator, epochs: int,
           batch_size: int, patience: int) -> dict[str, torch.Tensor] | None:
    """Minibatch training with early stopping on validation loss; returns the best state dict."""
    best, best_state, wait = math.inf, None, 0
    for _ in range(epochs):
        net.train()
        perm = torch.as_tensor(rng.permutation(len(xt)))
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss_fn(net(xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = float(loss_fn(net(xv).squeeze(1), yv))
        if val < best - 1e-4:
            best, wait = val, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            wait += 1
            if wait >= patience:
                break
    return best_state


# ------------------------------------------------------------------------------- conditional checks
def log_energy_edges(energy: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """(n_bins + 1,) log-spaced bin edges spanning the energies (GeV, > 0); pass the same edges to
    npe_vs_energy for gen and ref so their curves share bins."""
    e = _finite_1d(energy, "energy")
    if (e <= 0).any():
        raise ValueError("energies must be > 0 GeV for log-spaced bins")
    lo, hi = np.log10(e.min()), np.log10(e.max())
    return np.logspace(lo, hi if hi > lo else lo + 1e-6, n_bins + 1)


def npe_vs_energy(total_npe: np.ndarray, energy: np.ndarray,
                  bins: np.ndarray | int = 10) -> dict[str, np.ndarray]:
    """Mean log10(1 + total_npe) per energy bin.

    total_npe (N,), energy (N,) GeV; bins = edges (B + 1,) or a count of log-spaced bins over energy.
    Returns bin_edges (B+1,), bin_centers (B,) geometric, mean_log10_npe (B,) (NaN for empty bins),
    count (B,) int. Events outside the edges are ignored; the last bin includes its upper edge.
    """
    q, e = _finite_1d(total_npe, "total_npe"), _finite_1d(energy, "energy")
    if q.shape != e.shape:
        raise ValueError(f"total_npe and energy must have the same length; got {q.size} and {e.size}")
    edges = log_energy_edges(e, bins) if np.isscalar(bins) else np.asarray(bins, np.float64)
    if edges.ndim != 1 or len(edges) < 2 or (edges <= 0).any() or (np.diff(edges) <= 0).any():
        raise ValueError("energy bin edges must be a strictly increasing 1-D array of positive values")
    y = np.log10(1.0 + np.maximum(q, 0.0))
    count = np.histogram(e, bins=edges)[0]
    total = np.histogram(e, bins=edges, weights=y)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return {"bin_edges": edges, "bin_centers": np.sqrt(edges[:-1] * edges[1:]),
            "mean_log10_npe": mean, "count": count}


def angular_error_summary(angle: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Median and 68th percentile (degrees) of angles in rad (N,), over valid events (default all).
    With no events the values are NaN."""
    a = np.asarray(angle, np.float64)
    if valid is not None:
        a = a[np.asarray(valid, bool)]
    if a.size == 0:
        return {"median_deg": math.nan, "p68_deg": math.nan, "n": 0}
    d = np.degrees(a)
    return {"median_deg": float(np.median(d)), "p68_deg": float(np.percentile(d, 68)), "n": int(a.size)}


# ---------------------------------------------------------------------------------- response curves
RESPONSE_FEATURES: list[str] = ["log10_total_npe", "n_hit_doms", "n_hit_strings", "time_span"]
"""Event features whose response to the labels response_curves measures."""
RESPONSE_LABELS: dict[str, str] = {"log10_energy": "log10 energy [GeV]", "cos_zenith": "cos zenith",
                                   "vertex_z": "vertex depth z [m]", "vertex_r": "vertex radius sqrt(x^2+y^2) [m]"}
"""Label axes of the response curves -> axis titles (values from response_label_values)."""
RESPONSE_BINS = 8


def response_label_values(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The label axes of RESPONSE_LABELS, each (N,), from labels (N, 6)."""
    lab = np.asarray(labels, np.float64)
    if lab.ndim != 2 or lab.shape[1] != 6:
        raise ValueError(f"labels must have shape (N, 6); got {lab.shape}")
    if (lab[:, 0] <= 0).any():
        raise ValueError("energies must be > 0 GeV (the response curves bin log10 energy)")
    return {"log10_energy": np.log10(lab[:, 0]), "cos_zenith": np.cos(lab[:, 1]), "vertex_z": lab[:, 5],
            "vertex_r": np.hypot(lab[:, 3], lab[:, 4])}


def _quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of up to n_bins bins with about equal counts of values (fewer when values repeat)."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    return edges if len(edges) > 1 else np.r_[edges[0], edges[0]]


def _bin_stats(y: np.ndarray, idx: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """Per bin: count, mean, std (ddof 1) and standard error of the mean std / sqrt(n) of y (N,) in bins idx (N,).
    Mean is NaN in an empty bin; std and se are NaN with fewer than 2 events."""
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(idx, weights=y, minlength=n_bins) / count
        sq = np.bincount(idx, weights=(y - np.nan_to_num(mean)[idx]) ** 2, minlength=n_bins)  # two-pass spread
        std = np.where(count > 1, np.sqrt(sq / np.maximum(count - 1, 1)), np.nan)
        se = std / np.sqrt(count)
    return {"count": count, "mean": mean, "std": std, "se": se}


ENERGY_DECADES = (3, 4, 5, 6)  # log10 GeV of each decade's lower edge: 1e3-1e4 ... 1e6-1e7 GeV


def charge_energy_slope(feats: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """Least-squares slope of log10(1 + total npe) on log10 energy over the events (NaN with < 2 energies)."""
    log_e = np.log10(labels[:, 0])
    if len(np.unique(log_e)) < 2:
        return math.nan
    return float(np.polyfit(log_e, feats["log10_total_npe"], 1)[0])


def decade_response(gen_feats: dict[str, np.ndarray], gen_labels: np.ndarray, ref_feats: dict[str, np.ndarray],
                    ref_labels: np.ndarray) -> dict[str, float]:
    """Per decade d of true energy (ENERGY_DECADES; events with 10^d <= E < 10^(d+1) GeV): the mean log10(1 + total
    npe) generated minus simulated, eval/decade<d>_log10_npe_diff, and the ratio of the mean hit DOMs,
    eval/decade<d>_hit_doms_ratio. A decade with no events on either side is left out."""
    out: dict[str, float] = {}
    gen_decade, ref_decade = np.floor(np.log10(gen_labels[:, 0])), np.floor(np.log10(ref_labels[:, 0]))
    for d in ENERGY_DECADES:
        g, r = gen_decade == d, ref_decade == d
        if not g.any() or not r.any():
            continue
        out[f"eval/decade{d}_log10_npe_diff"] = float(gen_feats["log10_total_npe"][g].mean()
                                                      - ref_feats["log10_total_npe"][r].mean())
        ref_hits = ref_feats["n_hit_doms"][r].mean()
        if ref_hits > 0:
            out[f"eval/decade{d}_hit_doms_ratio"] = float(gen_feats["n_hit_doms"][g].mean() / ref_hits)
    return out


def response_curves(gen_feats: dict[str, np.ndarray], gen_labels: np.ndarray, ref_feats: dict[str, np.ndarray],
                    ref_labels: np.ndarray, n_bins: int = RESPONSE_BINS) -> dict[str, Any]:
    """How the events respond to their labels, generated against reference (simulated).

    For every label axis of RESPONSE_LABELS (log10 energy, cos zenith, vertex depth z, vertex radius) and
    every feature of RESPONSE_FEATURES (log10 total npe, hit DOMs, hit strings, time span): per bin of the
    label the count, mean, spread (std) and standard error of the mean (std / sqrt(n)) of the feature in
    each set. Bins hold about equal numbers of reference events (quantiles of the reference labels); events
    beyond the outer edges count in the outer bins.
    Summary of a curve, in units of the standard error: the mean over bins (with >= 2 events of each set)
    of z = |mean_gen - mean_ref| / sqrt(se_gen^2 + se_ref^2). Two samples of the same process at independent
    labels give about 0.8 (the mean of |N(0, 1)|); at the same labels less, as the spread that the labels
    cause cancels (the simulator against itself at 3400 shared labels: 0.29); a response off by k standard
    errors gives about k.
    The overall summary is the mean of the curve summaries.

    gen_feats / ref_feats: event_features dicts of Ng / Nr events; gen_labels (Ng, 6), ref_labels (Nr, 6).
    Returns {features, labels: {axis: title}, n_bins, bins: {axis: {edges, centers (mean reference label)}},
    curves: {"<feature>_vs_<axis>": {feature, label, gen: {count, mean, std, se}, ref: {...}, z, summary}},
    summary, definition} (numpy arrays; NaN where undefined).
    """
    gl, rl = response_label_values(gen_labels), response_label_values(ref_labels)
    for name, feats, n in (("gen", gen_feats, len(gl["vertex_z"])), ("ref", ref_feats, len(rl["vertex_z"]))):
        missing = [k for k in RESPONSE_FEATURES if k not in feats]
        if missing or any(len(feats[k]) != n for k in RESPONSE_FEATURES):
            raise ValueError(f"{name}: response curves need the features {RESPONSE_FEATURES} for each of its "
                             f"{n} label rows (missing: {missing})")
    if len(rl["vertex_z"]) == 0 or len(gl["vertex_z"]) == 0:
        raise ValueError("response curves need at least one generated and one reference event")
    bins, curves = {}, {}
    for axis in RESPONSE_LABELS:
        edges = _quantile_edges(rl[axis], n_bins)
        nb = len(edges) - 1
        ig = np.clip(np.searchsorted(edges[1:-1], gl[axis], side="right"), 0, nb - 1)
        ir = np.clip(np.searchsorted(edges[1:-1], rl[axis], side="right"), 0, nb - 1)
        bins[axis] = {"edges": edges, "centers": _bin_stats(rl[axis], ir, nb)["mean"]}
        for feat in RESPONSE_FEATURES:
            g = _bin_stats(np.asarray(gen_feats[feat], np.float64), ig, nb)
            r = _bin_stats(np.asarray(ref_feats[feat], np.float64), ir, nb)
            z = _standard_scores(g, r)
            curves[f"{feat}_vs_{axis}"] = {"feature": feat, "label": axis, "gen": g, "ref": r, "z": z,
                                           "summary": float(np.nanmean(z)) if np.isfinite(z).any() else math.nan}
    summaries = [c["summary"] for c in curves.values() if math.isfinite(c["summary"])]
    return {"features": list(RESPONSE_FEATURES), "labels": dict(RESPONSE_LABELS), "n_bins": n_bins, "bins": bins,
            "curves": curves, "summary": float(np.mean(summaries)) if summaries else math.nan,
            "definition": "per curve: mean over label bins of |mean_gen - mean_ref| / sqrt(se_gen^2 + se_ref^2) "
                          "(in units of the standard error of the difference; <= ~0.8 for two samples of one "
                          "process); overall: mean of the curve summaries"}


def _standard_scores(g: dict[str, np.ndarray], r: dict[str, np.ndarray]) -> np.ndarray:
    """|mean_gen - mean_ref| / sqrt(se_gen^2 + se_ref^2) per bin; NaN where a set has < 2 events, and where
    both spreads are 0 but the means differ (an infinite score would hide every other bin)."""
    ok = (g["count"] > 1) & (r["count"] > 1)
    diff = np.abs(g["mean"] - r["mean"])
    se = np.sqrt(np.nan_to_num(g["se"]) ** 2 + np.nan_to_num(r["se"]) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.nan))
    return np.where(ok, z, np.nan)


# ------------------------------------------------------------------------------------------- report
def _json(x: Any) -> Any:
    """Numpy -> plain Python for json.dumps; NaN/inf -> None (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_json(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _classifiers(gf: dict[str, np.ndarray], rf: dict[str, np.ndarray], gen_labels: np.ndarray,
                 labels: np.ndarray, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(unconditional, label-aware) classifier results, on one shared row split when gen and ref are paired
    by label row (equal counts), or a note each when there are too few events."""
    ng, nr = len(gen_labels), len(labels)
    if min(ng, nr) < MIN_EVENTS_FOR_AUC:
        note = {"auc": None, "auc_se": None,
                "note": f"classifier test skipped: it needs at least {MIN_EVENTS_FOR_AUC} events in each set, "
                        f"got {ng} gen and {nr} ref"}
        return dict(note), dict(note)
    split = row_split(ng, seed) if ng == nr else None
    clf = classifier_auc(feature_matrix(gf), feature_matrix(rf), seed=seed, split=split)
    cond = conditional_classifier_auc(feature_matrix(gf), gen_labels, feature_matrix(rf), labels, seed=seed,
                                      split=split)
    return clf, cond


def compare_sets(gen_npe: np.ndarray, gen_time: np.ndarray, ref_npe: np.ndarray, ref_time: np.ndarray,
                 positions: np.ndarray, string: np.ndarray, labels: np.ndarray, seed: int = 0,
                 gen_labels: np.ndarray | None = None, energy_bins: int = 10, n_boot: int = 100,
                 response_bins: int = RESPONSE_BINS) -> dict[str, Any]:
    """Compare generated events with reference (simulated) events; JSON-serialisable report.

    gen_npe/gen_time (Ng, P), ref_npe/ref_time (Nr, P), positions (P, 3), string (P,), labels (Nr, 6) of
    ref; gen_labels (Ng, 6) defaults to labels (gen sampled at the same labels, row by row).
    Returns dict with n_gen, n_ref, n_doms,
      features {name: {w1, w1_norm, w1_norm_se (bootstrap over events, n_boot resamples), jsd}},
      maps {occupancy_corr, mean_npe_corr},
      classifier {auc, auc_se, n_train, n_val, n_test} (event features only) and classifier_conditional
        (the same plus the labels, label_features), both on one split of the label rows (row_split) when
        Ng == Nr, else {auc: None, auc_se: None, note} below MIN_EVENTS_FOR_AUC events,
      response (response_curves: features against labels, with standard errors and summaries),
      npe_vs_energy {bin_edges, bin_centers, gen: {mean_log10_npe, count}, ref: {...}},
      linefit {gen, ref: {median_deg, p68_deg, n}, median_angle_ratio (gen/ref)},
      and scalars: flat {"eval/...": float} for MLflow (only finite values): eval/auc, eval/auc_se,
      eval/auc_conditional, eval/auc_conditional_se, eval/w1_<feature> and eval/w1_<feature>_se,
      eval/response_summary, eval/response_<feature>_vs_<label>, the per-decade charge and hit DOMs of
      decade_response, eval/npe_energy_slope_{gen,ref,ratio} (charge_energy_slope), ... NaN values elsewhere
      become None.
    """
    gen_npe, ref_npe = np.asarray(gen_npe), np.asarray(ref_npe)
    if gen_npe.ndim != 2 or ref_npe.ndim != 2 or gen_npe.shape[1] != ref_npe.shape[1]:
        raise ValueError(f"gen and ref must have the same number of DOMs P; got gen {gen_npe.shape} "
                         f"and ref {ref_npe.shape}")
    labels = np.asarray(labels)
    gen_labels = labels if gen_labels is None else np.asarray(gen_labels)
    gf = event_features(gen_npe, gen_time, positions, string, gen_labels)
    rf = event_features(ref_npe, ref_time, positions, string, labels)
    dists = feature_distances(gf, rf)
    for k, se in w1_norm_standard_errors(gf, rf, n_boot=n_boot, seed=seed).items():
        dists[k]["w1_norm_se"] = se
    maps = map_correlation(gen_npe, ref_npe)
    clf, cond = _classifiers(gf, rf, gen_labels, labels, seed)
    response = response_curves(gf, gen_labels, rf, labels, response_bins)
    edges = log_energy_edges(np.concatenate([gen_labels[:, 0], labels[:, 0]]), energy_bins)
    curve_g = npe_vs_energy(gf["total_npe"], gen_labels[:, 0], edges)
    curve_r = npe_vs_energy(rf["total_npe"], labels[:, 0], edges)
    lf_g = angular_error_summary(gf["linefit_angle"], gf["linefit_valid"])
    lf_r = angular_error_summary(rf["linefit_angle"], rf["linefit_valid"])
    ratio = lf_g["median_deg"] / lf_r["median_deg"] if lf_r["median_deg"] > 0 else math.nan
    both = (curve_g["count"] > 0) & (curve_r["count"] > 0)
    curve_mad = float(np.abs(curve_g["mean_log10_npe"] - curve_r["mean_log10_npe"])[both].mean()) \
        if both.any() else math.nan
    slope_g, slope_r = charge_energy_slope(gf, gen_labels), charge_energy_slope(rf, labels)
    nan = lambda v: math.nan if v is None else v  # noqa: E731
    scalars: dict[str, float] = {"eval/auc": nan(clf["auc"]), "eval/auc_se": nan(clf["auc_se"]),
                                 "eval/auc_conditional": nan(cond["auc"]),
                                 "eval/auc_conditional_se": nan(cond["auc_se"]),
                                 **{f"eval/w1_{k}": v["w1_norm"] for k, v in dists.items()},
                                 **{f"eval/w1_{k}_se": v["w1_norm_se"] for k, v in dists.items()},
                                 **{f"eval/jsd_{k}": v["jsd"] for k, v in dists.items()},
                                 "eval/occupancy_corr": maps["occupancy_corr"],
                                 "eval/mean_npe_corr": maps["mean_npe_corr"],
                                 "eval/linefit_median_deg_gen": lf_g["median_deg"],
                                 "eval/linefit_median_deg_ref": lf_r["median_deg"],
                                 "eval/linefit_median_angle_ratio": ratio,
                                 "eval/npe_vs_energy_mean_abs_diff": curve_mad,
                                 "eval/response_summary": response["summary"],
                                 **{f"eval/response_{k}": c["summary"] for k, c in response["curves"].items()},
                                 **decade_response(gf, gen_labels, rf, labels),
                                 "eval/npe_energy_slope_gen": slope_g, "eval/npe_energy_slope_ref": slope_r,
                                 "eval/npe_energy_slope_ratio": slope_g / slope_r if slope_r else math.nan}
    report = {
        "n_gen": len(gen_npe), "n_ref": len(ref_npe), "n_doms": ref_npe.shape[1],
        "features": dists, "maps": maps, "classifier": clf, "classifier_conditional": cond,
        "response": response,
        "npe_vs_energy": {"bin_edges": edges, "bin_centers": curve_r["bin_centers"],
                          "gen": {k: curve_g[k] for k in ("mean_log10_npe", "count")},
                          "ref": {k: curve_r[k] for k in ("mean_log10_npe", "count")},
                          "mean_abs_diff": curve_mad},
        "linefit": {"gen": lf_g, "ref": lf_r, "median_angle_ratio": ratio},
        "scalars": {k: float(v) for k, v in scalars.items() if math.isfinite(v)},
    }
    return _json(report)
