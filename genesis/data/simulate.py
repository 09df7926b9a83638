"""Physics-inspired simulator of muon-neutrino events, vectorized and deterministic by seed.

Model (all constants in `SimConfig`):
- Labels: energy log-uniform in [energy_min, energy_max] GeV; direction isotropic (cos zenith uniform,
  azimuth uniform); the zenith/azimuth give the direction the neutrino comes FROM, so the muon travels
  along d = -(sin z cos a, sin z sin a, cos z). Vertex uniform in a cylinder (radius, half-height)
  around the detector centre.
- Light sources: a muon track starting at the vertex, of length min(range(E_mu), max_track_m) with
  range = ln(1 + E b / a) / b (a = 0.24 GeV/m, b = 3.3e-4 /m), and a hadronic cascade at the vertex
  carrying a fraction y ~ U(0.1, 0.5) of the energy. The muon carries the rest.
- Track light (the light geometry is `genesis.physics`, shared with the models and the normalization):
  Cherenkov cone at theta_c = arccos(1/n), n = refractive_index (1.32). For a DOM at perpendicular distance
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

Implementation (same physics as the original `genesis.data.simulate_reference`, which the tests and
`bench/simulator.py` compare against): the expected light of a batch is computed on (n, P) float32 planes
with in-place operations; which DOMs are hit is drawn exactly (P(hit) = 1 - exp(-mu)) with a uniform per
bright DOM and by thinning for the faint majority, a hit DOM's npe from Poisson(mu) given npe >= 1, and
times, delays and noise only where there are hits. Batch k of a simulation draws from a generator seeded
by (seed, k), so batches run on a thread pool and the events depend on the seed only.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from genesis.errors import DataError
from genesis.geometry import Geometry
from genesis.physics import (C_VACUUM, DEFAULT_REFRACTIVE_INDEX, Cherenkov, track_arrival_ns, travel_direction,
                             vertex_arrival_ns)

__all__ = ["C_VACUUM", "SimConfig", "draw_labels", "simulate", "simulate_at_labels", "simulate_to_file",
           "travel_direction"]
MAX_EVENTS = 10_000_000  # per call (~400 GB uncompressed at P = 5160): larger requests are refused, not attempted
MAX_ENERGY_GEV = 1e12  # above the highest cosmic-ray energies; far beyond it the Poisson charges overflow
A_DEDX, B_DEDX = 0.24, 3.3e-4  # muon energy loss dE/dx = a + b E: GeV/m, 1/m
THIN_MU = 0.01  # DOMs with a lower expected charge are hit-tested by thinning (see draw_hits)
MAX_PHOTONS = 8  # the first-hit delay is the earliest of min(npe, MAX_PHOTONS) photons
BATCH_EVENTS = 16  # events simulated together: (16, P) float32 temporaries stay in cache (16 beat 32 and 64)
SIM_WORKERS = 2  # threads simulating batches in parallel
WRITE_EVENTS = 1024  # events per append to the HDF5 writer (a multiple of its chunk of 64 events)


@dataclass(frozen=True)
class SimConfig:
    energy_min: float = 1e3
    energy_max: float = 1e7
    radius: float = 550.0
    half_height: float = 550.0
    refractive_index: float = DEFAULT_REFRACTIVE_INDEX
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
        if not (math.isfinite(self.refractive_index) and self.refractive_index > 1.0):
            raise DataError(f"simulator: refractive_index must be above 1 (no Cherenkov light otherwise), "
                            f"got {self.refractive_index}")


def draw_labels(n: int, rng: np.random.Generator, cfg: SimConfig = SimConfig()) -> np.ndarray:
    """(n, 6) labels: energy GeV (log-uniform), zenith, azimuth rad (isotropic), vertex x, y, z m."""
    energy = 10 ** rng.uniform(math.log10(cfg.energy_min), math.log10(cfg.energy_max), n)
    zenith = np.arccos(rng.uniform(-1.0, 1.0, n))
    azimuth = rng.uniform(0.0, 2 * math.pi, n)
    r = cfg.radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    phi = rng.uniform(0.0, 2 * math.pi, n)
    z = rng.uniform(-cfg.half_height, cfg.half_height, n)
    return np.stack([energy, zenith, azimuth, r * np.cos(phi), r * np.sin(phi), z], -1).astype(np.float32)


def _col(values: np.ndarray) -> np.ndarray:
    """(n,) per-event values -> (n, 1) float32 column that broadcasts against (n, P)."""
    return np.asarray(values, dtype=np.float32)[:, None]


@dataclass(frozen=True)
class Light:
    """Expected light of n events on P DOMs; every field is (n, P) float32.

    mu_track, mu_cascade: expected photoelectrons from the muon track and the cascade.
    s_emit: where along the track (m from the vertex) the track's photon is emitted.
    dist_track, dist_cascade: photon path length (m) from the emission point / from the vertex.
    """

    mu_track: np.ndarray
    mu_cascade: np.ndarray
    s_emit: np.ndarray
    dist_track: np.ndarray
    dist_cascade: np.ndarray


def expected_light(labels: np.ndarray, y: np.ndarray, geometry: Geometry, cfg: SimConfig = SimConfig()) -> Light:
    """Expected charges of the track and the cascade (see the module doc) for labels (n, 6) and the
    cascade energy fractions y (n,), on every DOM of the geometry: (n, P) float32 arrays.

    Works on separate x, y, z planes in float32 with in-place operations, so that the temporaries of a
    batch stay in cache; the perpendicular distance comes from the perpendicular vector itself (no
    r^2 - s^2 cancellation), and the photon path from the identity |path|^2 = rho^2 + (s - s_emit)^2.
    """
    labels = np.asarray(labels, dtype=np.float64)
    energy, vertex = labels[:, 0], labels[:, 3:6]
    e_mu, e_casc = energy * (1.0 - y), energy * y
    d = travel_direction(labels[:, 1], labels[:, 2])
    planes = np.ascontiguousarray(geometry.positions.T)  # (3, P): contiguous x, y, z rows
    rx, ry, rz = (planes[k] - _col(vertex[:, k]) for k in range(3))
    dx, dy, dz = (_col(d[:, k]) for k in range(3))
    s = rx * dx
    s += ry * dy
    s += rz * dz
    px, py = rx - s * dx, ry - s * dy
    pz = rz - s * dz
    rho2 = px * px
    rho2 += py * py
    rho2 += pz * pz
    mu_c, r = _cascade_light(rz, s, rho2, e_casc, cfg)
    mu_t, s_emit, dist = _track_light(s, rho2, pz, dz, e_mu, cfg)
    return Light(mu_t, mu_c, s_emit, dist, r)


def _cascade_light(rz: np.ndarray, s: np.ndarray, rho2: np.ndarray, e_casc: np.ndarray, cfg: SimConfig):
    """(mu, r) of the cascade at the vertex, (n, P) float32; rz, s, rho2 (n, P) are left unchanged.

    mu = yield E (0.3 + 0.7 (1 + rz / r) / 2) exp(-r / att) / max((r / 10)^2, 0.25)
       = [35 yield E] (rz / r + 0.65 / 0.35) exp(-r / att) / max(r^2, 25): constants folded per event.
    """
    f32 = np.float32
    r2 = s * s
    r2 += rho2
    r = np.sqrt(r2)
    np.maximum(r, f32(1e-3), out=r)
    mu = np.divide(rz, r)
    mu += f32(0.65 / 0.35)
    arg = np.multiply(r, f32(-1.0 / cfg.att_len))
    mu *= np.exp(arg, out=arg)
    np.maximum(r2, f32(25.0), out=r2)
    mu /= r2
    mu *= _col(35.0 * cfg.cascade_yield * e_casc)
    return mu, r


def _track_light(s: np.ndarray, rho2: np.ndarray, pz: np.ndarray, dz: np.ndarray, e_mu: np.ndarray,
                 cfg: SimConfig):
    """(mu, s_emit, dist) of the muon track, (n, P) float32. Consumes s and pz (overwritten).

    The photon path from the emission point is the perpendicular offset plus d (s - s_emit), so
    dist^2 = rho^2 + (s - s_emit)^2 and its vertical component is pz + dz (s - s_emit). As for the
    cascade, 0.35 and 1 / max(dist / 10, 0.5) = 10 / max(dist, 5) are folded into a per-event factor.
    """
    f32 = np.float32
    length = _col(np.minimum(np.log1p(e_mu * B_DEDX / A_DEDX) / B_DEDX, cfg.max_track_m))
    s_c = np.maximum(rho2, f32(1e-6))
    np.sqrt(s_c, out=s_c)
    s_c *= f32(-1.0 / Cherenkov(cfg.refractive_index).tan)
    s_c += s
    # Emission points outside [0, length] see no direct Cherenkov light: fade over a scattering length.
    s_emit = np.maximum(s_c, f32(0.0))
    np.minimum(s_emit, length, out=s_emit)
    outside = s_c
    outside -= s_emit
    np.abs(outside, out=outside)
    behind = s
    behind -= s_emit
    pz += behind * dz
    dist = np.multiply(behind, behind, out=behind)
    dist += rho2
    np.sqrt(dist, out=dist)
    np.maximum(dist, f32(1e-3), out=dist)
    mu = np.divide(pz, dist, out=pz)
    mu += f32(0.65 / 0.35)
    arg = np.multiply(dist, f32(-1.0 / cfg.att_len))
    outside *= f32(-1.0 / cfg.scatter_len)
    arg += outside
    mu *= np.exp(arg, out=arg)
    mu /= np.maximum(dist, f32(5.0), out=outside)
    mu *= _col(3.5 * cfg.track_yield * (A_DEDX + B_DEDX * e_mu) / A_DEDX)
    return mu, s_emit, dist


def direct_times(light: Light, index: tuple[np.ndarray, np.ndarray], cfg: SimConfig = SimConfig()):
    """Direct arrival time after the vertex (ns) and photon path (m) of the brighter source at the DOMs
    light.*[index] (index = (event ids, DOM ids), each (h,)) -> two (h,) float64 arrays."""
    mu_t, mu_c = light.mu_track[index], light.mu_cascade[index]
    dist_t = light.dist_track[index].astype(np.float64)
    dist_c = light.dist_cascade[index].astype(np.float64)
    t_t = track_arrival_ns(light.s_emit[index], dist_t, cfg.refractive_index)
    t_c = vertex_arrival_ns(dist_c, cfg.refractive_index)
    track_wins = mu_t >= mu_c
    return np.where(track_wins, t_t, t_c), np.where(track_wins, dist_t, dist_c)


def hit_probability(lam: np.ndarray) -> np.ndarray:
    """P(Poisson(lam) > 0) = 1 - exp(-lam), float64, accurate for small lam; lam (...,) -> (...,)."""
    p = np.negative(lam, dtype=np.float64)
    np.expm1(p, out=p)
    return np.negative(p, out=p)


def draw_hits(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat indices (sorted) of the entries of lam (n, P) where Poisson(lam) > 0, (h,) int64.

    Exact, at a cost that scales with the bright DOMs rather than all n * P: entries with lam >= THIN_MU
    each get a uniform; the rest are thinned: candidates are Bernoulli(q) trials over all entries
    (q = 1 - exp(-THIN_MU), drawn as geometric gaps), and a candidate with lam < THIN_MU is kept with
    probability (1 - exp(-lam)) / q, so that it is hit with probability exactly 1 - exp(-lam).
    """
    flat = lam.reshape(-1)
    bright = np.flatnonzero(flat >= THIN_MU)
    bright = bright[rng.random(len(bright)) < hit_probability(flat[bright])]
    q = -math.expm1(-THIN_MU)
    cand = bernoulli_positions(flat.size, q, rng)
    cand = cand[flat[cand] < THIN_MU]
    faint = cand[rng.random(len(cand)) * q < hit_probability(flat[cand])]
    return np.union1d(bright, faint)


def zero_truncated_poisson(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws of Poisson(lam) given >= 1, (h,) int64 for lam (h,) > 0.

    lam < 1: inversion of the conditional CDF (a few steps); lam >= 1: Poisson(lam) redrawn until > 0
    (acceptance >= 63%).
    """
    lam = np.asarray(lam, dtype=np.float64)
    out = np.ones(len(lam), dtype=np.int64)
    big = np.flatnonzero(lam >= 1.0)
    while big.size:
        draw = rng.poisson(lam[big])
        ok = draw > 0
        out[big[ok]] = draw[ok]
        big = big[~ok]
    small = np.flatnonzero(lam < 1.0)
    lam_s = lam[small]
    u = rng.random(len(small)) * hit_probability(lam_s)  # U(0, P(N >= 1))
    term = lam_s * np.exp(-lam_s)  # P(N = 1)
    cdf = term.copy()
    todo = np.flatnonzero(cdf < u)
    k = 1
    while todo.size and k < 100:
        k += 1
        term[todo] *= lam_s[todo] / k
        cdf[todo] += term[todo]
        out[small[todo]] = k
        todo = todo[cdf[todo] < u[todo]]
    return out


def first_photon_delay(dist: np.ndarray, npe: np.ndarray, rng: np.random.Generator,
                       cfg: SimConfig = SimConfig()) -> np.ndarray:
    """Pandel-like scattering delay (ns) of the first of min(npe, 8) photons; dist, npe (h,) -> (h,).

    Draws exactly min(npe, 8) gamma variates per DOM (not 8), then takes the minimum per DOM.
    """
    shape = np.maximum(np.asarray(dist, dtype=np.float64) / cfg.scatter_len, 0.05)
    rate = 1.0 / cfg.pandel_tau + (C_VACUUM / cfg.refractive_index) / cfg.abs_len
    k = np.minimum(np.asarray(npe), MAX_PHOTONS).astype(np.int64)
    if not len(k):
        return np.zeros(0)
    draws = rng.gamma(np.repeat(shape, k), 1.0 / rate)
    return np.minimum.reduceat(draws, np.concatenate([[0], np.cumsum(k)[:-1]]))


def bernoulli_positions(size: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted flat indices in range(size) where independent Bernoulli(p) trials succeed, drawn as
    geometric gaps (cost ~ the number of successes, not size)."""
    if p <= 0.0 or size <= 0:
        return np.zeros(0, dtype=np.int64)
    chunks, last = [], -1
    while last < size - 1:
        expect = (size - 1 - last) * p
        gaps = rng.geometric(p, int(expect + 6.0 * math.sqrt(expect) + 16))
        pos = last + np.cumsum(gaps)
        chunks.append(pos[pos < size])
        last = int(pos[-1])
    return np.concatenate(chunks)


def simulate_at_labels(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                       cfg: SimConfig = SimConfig()) -> np.ndarray:
    """Simulate one event per label row. labels (n, 6) -> signal (n, 2, P) [npe, time ns], time 0 = no hit."""
    return _simulate_events(labels, geometry, rng, cfg)[0]


def _simulate_events(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                     cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """labels (n, 6) -> (signal (n, 2, P), number of hit DOMs per event (n,)); see simulate_at_labels.

    Charges are exactly Poisson(mu): which DOMs are hit comes from `draw_hits`, and a hit DOM's npe from
    Poisson(mu) given npe >= 1. Times and delays are computed for hit DOMs only.
    """
    labels = np.asarray(labels, dtype=np.float64)
    n, p = len(labels), geometry.n_doms
    y = rng.uniform(0.1, 0.5, n)
    light = expected_light(labels, y, geometry, cfg)
    lam = light.mu_track + light.mu_cascade
    hits = draw_hits(lam, rng)
    index = np.divmod(hits, p)
    npe = zero_truncated_poisson(lam[index], rng)
    direct, dist = direct_times(light, index, cfg)
    t0 = cfg.trigger_time + rng.uniform(-50.0, 50.0, n)
    delay = first_photon_delay(dist, npe, rng, cfg)
    time = t0[index[0]] + direct + delay + rng.normal(0.0, cfg.jitter_ns, len(npe))
    out = np.zeros((n, 2, p), dtype=np.float32)
    out[index[0], 0, index[1]] = npe
    out[index[0], 1, index[1]] = time
    # Noise hits land on DOMs without a physics hit, 1 pe at a uniform time in the readout window.
    noise = bernoulli_positions(n * p, cfg.noise_rate, rng)
    noise = noise[~np.isin(noise, hits, assume_unique=True)]
    ev, dom = np.divmod(noise, p)
    out[ev, 0, dom] = 1.0
    out[ev, 1, dom] = rng.uniform(cfg.trigger_time - cfg.window_before, cfg.trigger_time + cfg.window_after, len(noise))
    return out, np.bincount(index[0], minlength=n) + np.bincount(ev, minlength=n)


def check_request(n: int, geometry: Geometry, cfg: SimConfig = SimConfig()) -> None:
    """DataError for a request that cannot be met: n outside 1..MAX_EVENTS, or a trigger above the DOM count."""
    if n <= 0:
        raise DataError(f"simulator: number of events must be positive, got {n}")
    if n > MAX_EVENTS:
        raise DataError(f"simulator: {n} events requested; at most {MAX_EVENTS} per call (write several files)")
    if cfg.min_hits > geometry.n_doms:
        raise DataError(f"simulator: min_hits {cfg.min_hits} exceeds the {geometry.n_doms} DOMs of geometry "
                        f"'{geometry.name}'; no event could ever trigger")


def _triggered_batch(seed: int, k: int, batch: int, geometry: Geometry, cfg: SimConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Batch number k of a simulation: (signal (b, 2, P), labels (b, 6)) of its triggered events, b <= batch.

    Its generator is seeded by (seed, k), so batches can run in any order or thread with the same result.
    """
    rng = np.random.default_rng([seed, k])
    labels = draw_labels(batch, rng, cfg)
    signal, n_hit = _simulate_events(labels, geometry, rng, cfg)
    keep = n_hit >= cfg.min_hits
    return (signal, labels) if keep.all() else (signal[keep], labels[keep])


def simulate(n: int, geometry: Geometry, seed: int = 0, cfg: SimConfig = SimConfig(), batch: int = BATCH_EVENTS,
             progress: Callable[[int, int], None] | None = None, workers: int = SIM_WORKERS
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (signal (b, 2, P), labels (b, 6)) batches of triggered events until n are produced.

    Batches run on `workers` threads (numpy releases the GIL in its array loops) and are yielded in
    order, so the events depend only on the seed, not on the number of workers.
    """
    check_request(n, geometry, cfg)
    done, k = 0, 0
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        try:
            while done < n:
                while len(pending) < 2 * max(1, workers):
                    pending.append(pool.submit(_triggered_batch, seed, k, batch, geometry, cfg))
                    k += 1
                signal, labels = pending.popleft().result()
                signal, labels = signal[: n - done], labels[: n - done]
                done += len(signal)
                if len(signal):
                    yield signal, labels
                if progress:
                    progress(done, n)
        finally:
            for future in pending:
                future.cancel()


def rebatch(batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int = WRITE_EVENTS, reuse: int = 0
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Regroup (signal (b, 2, P), labels (b, 6)) batches into batches of exactly `size` events (the last
    one smaller), copying each event once.

    reuse = 0: every yielded batch is a new array. reuse = k >= 2: batches are views into k buffers used
    in turn (no allocation per batch); each stays valid until k - 1 further batches have been requested.
    """
    pool: list[tuple[np.ndarray, np.ndarray]] = []
    turn = 0

    def next_buffer(sig: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal turn
        if reuse and len(pool) == reuse:
            buf = pool[turn % reuse]
        else:
            buf = (np.empty((size, *sig.shape[1:]), sig.dtype), np.empty((size, *lab.shape[1:]), lab.dtype))
            if reuse:
                pool.append(buf)
        turn += 1
        return buf

    current, fill = None, 0
    for sig, lab in batches:
        start = 0
        while start < len(sig):
            if current is None:
                current = next_buffer(sig, lab)
            take = min(size - fill, len(sig) - start)
            current[0][fill:fill + take] = sig[start:start + take]
            current[1][fill:fill + take] = lab[start:start + take]
            fill, start = fill + take, start + take
            if fill == size:
                yield current
                current, fill = None, 0
    if current is not None:
        yield current[0][:fill], current[1][:fill]


def simulate_to_file(path: str | Path, n: int, geometry: Geometry, seed: int = 0, cfg: SimConfig = SimConfig(),
                     force: bool = False, progress: Callable[[int, int], None] | None = None,
                     write_events: int = WRITE_EVENTS) -> Path:
    """Simulate n events into an HDF5 file in the training schema.

    Events go to the writer in appends of `write_events` (aligned with its 64-event chunks), so memory
    holds about 2 * write_events events whatever n is; the file appears at `path` only when complete.
    """
    from dataclasses import asdict

    from genesis.data.schema import EventWriter

    check_request(n, geometry, cfg)  # before the writer opens a temporary file
    producer = {"producer": "genesis simulator", "seed": seed, "geometry": geometry.name, **asdict(cfg)}
    # One append in flight on a writer thread: h5py releases the GIL while HDF5 compresses and writes.
    with EventWriter(path, geometry, producer=producer, force=force) as writer, ThreadPoolExecutor(1) as io:
        pending: Future | None = None
        # Two buffers in turn: the one being filled is never the one the writer thread is appending.
        for signal, labels in rebatch(simulate(n, geometry, seed, cfg, progress=progress), write_events, reuse=2):
            if pending is not None:
                pending.result()
            pending = io.submit(writer.append, signal, labels)
        if pending is not None:
            pending.result()
    return Path(path)


def settings_from_record(data_record: dict | None) -> tuple[SimConfig, str | None]:
    """The simulator settings a checkpoint's training data was made with, and None; or the defaults and the
    reason they had to be used (the reference simulation then falls back to them: say so where it is shown).

    Looks first at the record's `source` (copied from the file's attributes when training read it, so it
    holds on any machine), then at the training file itself when it is here (checkpoints from before `source`).
    """
    record = data_record or {}
    producer = record.get("source") or {}
    if producer.get("producer") == "genesis simulator" and isinstance(producer.get("simulator"), dict):
        settings, where = producer["simulator"], "the checkpoint's record of its training data"
    else:
        path = record.get("path")
        if producer.get("producer") not in (None, "genesis simulator"):
            return SimConfig(), f"simulator defaults (the training data came from {producer['producer']!r})"
        if not path or not Path(path).is_file():
            return SimConfig(), "simulator defaults (the checkpoint records no simulator settings and its training " \
                                f"file {path or '(none)'} is not here)"
        from genesis.data.schema import read_producer

        settings, where = read_producer(path), f"the attributes of {path}"
        if settings.get("producer") != "genesis simulator":
            return SimConfig(), f"simulator defaults ({path} was not simulated by genesis)"
    known = set(SimConfig.__dataclass_fields__)
    try:
        return SimConfig(**{k: v for k, v in settings.items() if k in known}), None
    except (DataError, TypeError) as exc:
        return SimConfig(), f"simulator defaults (the settings in {where} are unusable: {exc})"
