"""The original simulator implementation (float64, all (n, P, 3) temporaries), kept as the reference.

`genesis.data.simulate` is the fast implementation used everywhere; this module is the baseline it is
measured against (`bench/simulator.py` prints new/old events/s in one run) and the physics it must
reproduce (`tests/test_simulate.py` compares expected charges and feature distributions). Same model,
same constants (`SimConfig`); see the docstring of `genesis.data.simulate` for the physics.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from genesis.data.simulate import C_VACUUM, SimConfig, check_request, draw_labels, travel_direction
from genesis.geometry import Geometry


def _acceptance(photon_dir_z: np.ndarray) -> np.ndarray:
    return 0.3 + 0.7 * (1.0 + photon_dir_z) / 2.0


def track_light(rel: np.ndarray, d: np.ndarray, e_mu: np.ndarray, cfg: SimConfig):
    """Expected charge, direct time (after the vertex) and photon path of the muon track.

    rel (n, P, 3) DOM minus vertex, d (n, 3) travel direction, e_mu (n,) GeV -> three (n, P) arrays.
    """
    a, b = 0.24, 3.3e-4
    length = np.minimum(np.log1p(e_mu * b / a) / b, cfg.max_track_m)[:, None]
    theta_c = math.acos(1.0 / cfg.refractive_index)
    s = np.einsum("npk,nk->np", rel, d)
    rho = np.sqrt(np.maximum((rel ** 2).sum(-1) - s ** 2, 1e-6))
    s_c = s - rho / math.tan(theta_c)
    # Emission points outside [0, length] see no direct Cherenkov light: fade over a scattering length.
    outside = np.maximum(-s_c, 0.0) + np.maximum(s_c - length, 0.0)
    s_emit = np.clip(s_c, 0.0, length)
    emit = d[:, None, :] * s_emit[..., None]
    path = rel - emit
    dist = np.maximum(np.sqrt((path ** 2).sum(-1)), 1e-3)
    photon_z = path[..., 2] / dist
    dedx = (a + b * e_mu[:, None]) / a
    mu = cfg.track_yield * dedx * _acceptance(photon_z) * np.exp(-dist / cfg.att_len - outside / cfg.scatter_len)
    mu = mu / np.maximum(dist / 10.0, 0.5)
    t = s_emit / C_VACUUM + dist * cfg.refractive_index / C_VACUUM
    return mu, t, dist


def cascade_light(rel: np.ndarray, e_casc: np.ndarray, cfg: SimConfig):
    """Expected charge, direct time and distance of the cascade at the vertex; rel (n, P, 3) -> (n, P) x 3."""
    r = np.maximum(np.sqrt((rel ** 2).sum(-1)), 1e-3)
    mu = cfg.cascade_yield * e_casc[:, None] * _acceptance(rel[..., 2] / r) * np.exp(-r / cfg.att_len)
    mu = mu / np.maximum((r / 10.0) ** 2, 0.25)
    return mu, r * cfg.refractive_index / C_VACUUM, r


def _first_photon_delay(dist: np.ndarray, npe: np.ndarray, rng: np.random.Generator, cfg: SimConfig) -> np.ndarray:
    """Pandel-like scattering delay (ns) of the first of min(npe, 8) photons; dist, npe (h,)."""
    shape = np.maximum(dist / cfg.scatter_len, 0.05)
    rate = 1.0 / cfg.pandel_tau + (C_VACUUM / cfg.refractive_index) / cfg.abs_len
    k = np.minimum(npe, 8).astype(int)
    draws = rng.gamma(shape[:, None], 1.0 / rate, size=(len(dist), 8))
    draws = np.where(np.arange(8)[None, :] < k[:, None], draws, np.inf)
    return draws.min(1)


def simulate_at_labels_reference(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                                 cfg: SimConfig = SimConfig()) -> np.ndarray:
    """Simulate one event per label row. labels (n, 6) -> signal (n, 2, P) [npe, time ns], time 0 = no hit."""
    labels = np.asarray(labels, dtype=np.float64)
    n = len(labels)
    pos = geometry.positions.astype(np.float64)
    energy, vertex = labels[:, 0], labels[:, 3:6]
    d = travel_direction(labels[:, 1], labels[:, 2])
    y = rng.uniform(0.1, 0.5, n)
    rel = pos[None, :, :] - vertex[:, None, :]
    mu_t, t_t, dist_t = track_light(rel, d, energy * (1 - y), cfg)
    mu_c, t_c, dist_c = cascade_light(rel, energy * y, cfg)
    npe = rng.poisson(mu_t + mu_c).astype(np.float64)
    track_wins = mu_t >= mu_c
    direct = np.where(track_wins, t_t, t_c)
    dist = np.where(track_wins, dist_t, dist_c)
    t0 = cfg.trigger_time + rng.uniform(-50.0, 50.0, n)
    time = np.zeros_like(npe)
    hit = npe > 0
    delay = _first_photon_delay(dist[hit], npe[hit], rng, cfg)
    time[hit] = (t0[:, None] + direct)[hit] + delay + rng.normal(0.0, cfg.jitter_ns, hit.sum())
    # Noise hits land on DOMs without a physics hit, 1 pe at a uniform time in the readout window.
    noise = (rng.random(npe.shape) < cfg.noise_rate) & ~hit
    npe[noise] = 1.0
    time[noise] = rng.uniform(cfg.trigger_time - cfg.window_before, cfg.trigger_time + cfg.window_after, noise.sum())
    return np.stack([npe, time], 1).astype(np.float32)


def simulate_reference(n: int, geometry: Geometry, seed: int = 0, cfg: SimConfig = SimConfig(),
                       batch: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (signal (b, 2, P), labels (b, 6)) batches of triggered events until n are produced."""
    check_request(n, geometry, cfg)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        labels = draw_labels(batch, rng, cfg)
        signal = simulate_at_labels_reference(labels, geometry, rng, cfg)
        keep = (signal[:, 0] > 0).sum(1) >= cfg.min_hits
        signal, labels = signal[keep][: n - done], labels[keep][: n - done]
        done += len(signal)
        if len(signal):
            yield signal, labels
