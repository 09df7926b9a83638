"""Physics-inspired simulator of muon-neutrino events, vectorized and deterministic by seed.

Model (all constants in `SimConfig`):
- Labels: energy log-uniform in [energy_min, energy_max] GeV; direction isotropic (cos zenith uniform,
  azimuth uniform); the zenith/azimuth give the direction the neutrino comes FROM, so the muon travels
  along d = -(sin z cos a, sin z sin a, cos z). Vertex uniform in a cylinder (radius, half-height)
  around the detector centre.
- Light sources: a muon track starting at the vertex, of length min(range(E_mu), max_track_m) with
  range = ln(1 + E b / a) / b (a = 0.24 GeV/m, b = 3.3e-4 /m), and a hadronic cascade at the vertex
  carrying a fraction y ~ U(0.1, 0.5) of the energy. The muon carries the rest.
- Track light: Cherenkov cone at theta_c = arccos(1/n), n = 1.32. For a DOM at perpendicular distance
  rho from the track, the photon is emitted at s_c = s - rho / tan(theta_c) along the track and
  travels d = rho / sin(theta_c). Direct arrival time t = s_c / c + d n / c. Expected charge
  mu = track_yield * (dE/dx / dE/dx_min) * acc * exp(-d / att_len) / max(d / 10 m, 0.5), with
  dE/dx = a + b E_mu, suppressed smoothly where the emission point would lie outside the track.
- Cascade light: mu = cascade_yield * E_casc * acc * exp(-r / att_len) / max((r / 10 m)^2, 0.25),
  arriving at r n / c after the vertex time.
- Angular acceptance acc = 0.3 + 0.7 (1 + u_z) / 2 where u_z is the vertical component of the photon
  direction: DOMs look down, so upgoing photons are seen best.
- Charge: npe ~ Poisson(mu_track + mu_cascade); time of the brighter source.
- Scattering delay (Pandel-like): the delay of one photon is Gamma(shape = d / scatter_len,
  rate = 1/tau + c_ice / abs_len); the first-hit delay is the minimum over min(npe, 8) photons, so
  far DOMs get later and broader first hits and bright DOMs earlier ones.
- Noise: each DOM has probability noise_rate of a noise hit with 1 pe at a uniform time in the
  readout window; PMT jitter of jitter_ns (Gaussian) on every hit.
- Trigger: times are given from the readout start; the vertex time is trigger_time + U(-50, 50) ns.
  Events with fewer than min_hits hit DOMs do not trigger and are drawn again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from genesis.errors import DataError
from genesis.geometry import Geometry

C_VACUUM = 0.299792458  # m/ns
MAX_EVENTS = 10_000_000  # per call (~400 GB uncompressed at P = 5160): larger requests are refused, not attempted
MAX_ENERGY_GEV = 1e12  # above the highest cosmic-ray energies; far beyond it the Poisson charges overflow


@dataclass(frozen=True)
class SimConfig:
    energy_min: float = 1e3
    energy_max: float = 1e7
    radius: float = 550.0
    half_height: float = 550.0
    refractive_index: float = 1.32
    att_len: float = 30.0
    scatter_len: float = 33.3
    abs_len: float = 98.0
    pandel_tau: float = 557.0
    track_yield: float = 6.0
    cascade_yield: float = 0.02
    noise_rate: float = 1e-3
    jitter_ns: float = 2.0
    trigger_time: float = 10000.0
    window_before: float = 1000.0
    window_after: float = 5000.0
    max_track_m: float = 3000.0
    min_hits: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.energy_min < self.energy_max <= MAX_ENERGY_GEV:
            raise DataError(f"simulator: need 0 < energy_min < energy_max <= {MAX_ENERGY_GEV:g} GeV, "
                            f"got {self.energy_min}, {self.energy_max}")
        if self.min_hits < 0 or self.noise_rate < 0 or self.noise_rate >= 1:
            raise DataError(f"simulator: min_hits must be >= 0 and noise_rate in [0, 1), got min_hits {self.min_hits}, "
                            f"noise_rate {self.noise_rate}")


def travel_direction(zenith: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """(n,) angles of the direction the particle comes from -> (n, 3) unit vector it travels along."""
    return -np.stack([np.sin(zenith) * np.cos(azimuth), np.sin(zenith) * np.sin(azimuth), np.cos(zenith)], -1)


def draw_labels(n: int, rng: np.random.Generator, cfg: SimConfig = SimConfig()) -> np.ndarray:
    """(n, 6) labels: energy GeV (log-uniform), zenith, azimuth rad (isotropic), vertex x, y, z m."""
    energy = 10 ** rng.uniform(math.log10(cfg.energy_min), math.log10(cfg.energy_max), n)
    zenith = np.arccos(rng.uniform(-1.0, 1.0, n))
    azimuth = rng.uniform(0.0, 2 * math.pi, n)
    r = cfg.radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    phi = rng.uniform(0.0, 2 * math.pi, n)
    z = rng.uniform(-cfg.half_height, cfg.half_height, n)
    return np.stack([energy, zenith, azimuth, r * np.cos(phi), r * np.sin(phi), z], -1).astype(np.float32)


def _acceptance(photon_dir_z: np.ndarray) -> np.ndarray:
    return 0.3 + 0.7 * (1.0 + photon_dir_z) / 2.0


def _track_light(rel: np.ndarray, d: np.ndarray, e_mu: np.ndarray, cfg: SimConfig):
    """Expected charge and direct time (after the vertex) of the muon track. rel (n, P, 3)."""
    a, b = 0.24, 3.3e-4
    length = np.minimum(np.log1p(e_mu * b / a) / b, cfg.max_track_m)[:, None]
    theta_c = math.acos(1.0 / cfg.refractive_index)
    s = np.einsum("npk,nk->np", rel, d)
    rho = np.sqrt(np.maximum((rel ** 2).sum(-1) - s ** 2, 1e-6))
    s_c = s - rho / math.tan(theta_c)
    dist = rho / math.sin(theta_c)
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


def _cascade_light(rel: np.ndarray, e_casc: np.ndarray, cfg: SimConfig):
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


def simulate_at_labels(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                       cfg: SimConfig = SimConfig()) -> np.ndarray:
    """Simulate one event per label row. labels (n, 6) -> signal (n, 2, P) [npe, time ns], time 0 = no hit."""
    labels = np.asarray(labels, dtype=np.float64)
    n = len(labels)
    pos = geometry.positions.astype(np.float64)
    energy, vertex = labels[:, 0], labels[:, 3:6]
    d = travel_direction(labels[:, 1], labels[:, 2])
    y = rng.uniform(0.1, 0.5, n)
    rel = pos[None, :, :] - vertex[:, None, :]
    mu_t, t_t, dist_t = _track_light(rel, d, energy * (1 - y), cfg)
    mu_c, t_c, dist_c = _cascade_light(rel, energy * y, cfg)
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


def check_request(n: int, geometry: Geometry, cfg: SimConfig = SimConfig()) -> None:
    """DataError for a request that cannot be met: n outside 1..MAX_EVENTS, or a trigger above the DOM count."""
    if n <= 0:
        raise DataError(f"simulator: number of events must be positive, got {n}")
    if n > MAX_EVENTS:
        raise DataError(f"simulator: {n} events requested; at most {MAX_EVENTS} per call (write several files)")
    if cfg.min_hits > geometry.n_doms:
        raise DataError(f"simulator: min_hits {cfg.min_hits} exceeds the {geometry.n_doms} DOMs of geometry "
                        f"'{geometry.name}'; no event could ever trigger")


def simulate(n: int, geometry: Geometry, seed: int = 0, cfg: SimConfig = SimConfig(), batch: int = 32,
             progress: Callable[[int, int], None] | None = None):
    """Yield (signal (b, 2, P), labels (b, 6)) batches of triggered events until n are produced.

    Small batches keep the (batch, P, 3) temporaries in cache: 32 is ~2x faster than 256 here.
    """
    check_request(n, geometry, cfg)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        labels = draw_labels(batch, rng, cfg)
        signal = simulate_at_labels(labels, geometry, rng, cfg)
        keep = (signal[:, 0] > 0).sum(1) >= cfg.min_hits
        signal, labels = signal[keep][: n - done], labels[keep][: n - done]
        done += len(signal)
        if len(signal):
            yield signal, labels
        if progress:
            progress(done, n)


def simulate_to_file(path: str | Path, n: int, geometry: Geometry, seed: int = 0, cfg: SimConfig = SimConfig(),
                     force: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
    """Simulate n events into an HDF5 file in the training schema, written in chunks."""
    from dataclasses import asdict

    from genesis.data.schema import EventWriter

    check_request(n, geometry, cfg)  # before the writer opens a temporary file
    producer = {"producer": "genesis simulator", "seed": seed, "geometry": geometry.name, **asdict(cfg)}
    with EventWriter(path, geometry, producer=producer, force=force) as writer:
        for signal, labels in simulate(n, geometry, seed, cfg, progress=progress):
            writer.append(signal, labels)
    return Path(path)
