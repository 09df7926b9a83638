"""Detector noise kept apart from the physics: isolated hits out of the training events, a noise model in.

A DOM's dark-noise hit lands on a random DOM at a random time, independent of the event: in IceCube's
simulation chain noise is added by its own module (vuvuzela) after the photon propagation, and analyses
take it out again with a space-time cleaning. A generative model that has to learn these ~5 scattered 1-pe
hits per event among 5160 DOMs learns them badly and seed by seed differently (too many, on too many
strings, too late: the diffusion preset's worse training seeds, README). With `data.noise_radius_m` set:

- training removes every *isolated* hit (no other hit DOM within the radius) from each event (`clean`);
  the model learns the cleaned events;
- the checkpoint's data record carries a noise model fitted on the same training events (`fit`): the rate of
  noise hits per *free* DOM (no hit itself, none within the radius: where an isolated hit could have been
  seen) that gives the isolated hits seen, and the empirical npe and time of those hits;
- sampling cleans the generated event the same way and draws noise on its free DOMs (`add`).

The radius is a spatial cleaning only (no time window), so "free" has the same meaning in all three.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from genesis.errors import DataError

TIME_QUANTILES = 201  # the noise hits' time distribution is stored as this many quantiles
MAX_NPE_VALUES = 32  # the npe distribution: the most frequent values (whole-pe data has a handful)


@lru_cache(maxsize=8)
def _adjacency_cached(key: bytes, shape: tuple[int, int], radius: float) -> sparse.csr_matrix:
    positions = np.frombuffer(key, dtype=np.float64).reshape(shape)
    pairs = cKDTree(positions).query_pairs(radius, output_type="ndarray")
    p = len(positions)
    ones = np.ones(2 * len(pairs), dtype=np.float32)
    rows, cols = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    return sparse.csr_matrix((ones, (rows, cols)), shape=(p, p))


def adjacency(positions: np.ndarray, radius: float) -> sparse.csr_matrix:
    """(P, P) sparse 0/1 matrix: DOMs i != j within `radius` metres of each other (cached per geometry)."""
    if not radius > 0:
        raise DataError(f"noise cleaning radius must be > 0 m, got {radius}")
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    return _adjacency_cached(pos.tobytes(), pos.shape, float(radius))


def hit_neighbours(hit: np.ndarray, adj: sparse.csr_matrix) -> np.ndarray:
    """(N, P) number of hit DOMs within the radius of each DOM, for a hit mask (N, P)."""
    return np.rint(adj @ hit.T.astype(np.float32)).T.astype(np.int32)  # adj is symmetric


def isolated_hits(signal: np.ndarray, adj: sparse.csr_matrix) -> np.ndarray:
    """(N, P) bool: the hit DOMs (npe > 0) of physical events (N, 2, P) with no other hit DOM in the radius."""
    hit = signal[:, 0] > 0
    return hit & (hit_neighbours(hit, adj) == 0)


def clean(signal: np.ndarray, adj: sparse.csr_matrix, isolated: np.ndarray | None = None) -> np.ndarray:
    """Physical events (N, 2, P) without their isolated hits (npe and time 0 there; `isolated` if already
    known, else isolated_hits); a new array."""
    iso = isolated_hits(signal, adj) if isolated is None else isolated
    return np.where(iso[:, None, :], 0, signal).astype(signal.dtype, copy=False)


def free_doms(signal: np.ndarray, adj: sparse.csr_matrix) -> np.ndarray:
    """(N, P) bool: DOMs of events (N, 2, P) without a hit and with no hit DOM in the radius."""
    hit = signal[:, 0] > 0
    return ~hit & (hit_neighbours(hit, adj) == 0)


class NoiseFit:
    """Accumulates the noise model over chunks of training events: `update` each chunk, then `record`."""

    def __init__(self, adj: sparse.csr_matrix, radius: float, seed: int = 0, keep_times: int = 200_000) -> None:
        self.adj, self.radius, self.keep_times = adj, radius, keep_times
        self.rng = np.random.default_rng(seed)
        self.n_isolated = self.n_free = self.n_events = self.free_pairs = 0
        self.times: list[np.ndarray] = []
        self.npe: list[np.ndarray] = []

    def update(self, signal: np.ndarray) -> np.ndarray:
        """Count one chunk of physical events (n, 2, P); return it cleaned (what the model learns)."""
        iso = isolated_hits(signal, self.adj)
        cleaned = clean(signal, self.adj, iso)
        self.n_isolated += int(iso.sum())
        free = free_doms(cleaned, self.adj)
        self.n_free += int(free.sum())
        self.free_pairs += int(hit_neighbours(free, self.adj)[free].sum())
        self.n_events += len(signal)
        self.times.append(signal[:, 1][iso].astype(np.float64))
        self.npe.append(signal[:, 0][iso].astype(np.float64))
        return cleaned

    def record(self) -> dict[str, Any]:
        """The noise model as plain numbers (a checkpoint's data record stores it under 'noise')."""
        times, npe = np.concatenate(self.times or [np.zeros(0)]), np.concatenate(self.npe or [np.zeros(0)])
        if len(times) > self.keep_times:
            times = self.rng.choice(times, self.keep_times, replace=False)
        values, counts = np.unique(npe, return_counts=True)
        top = np.argsort(counts)[::-1][:MAX_NPE_VALUES]
        rate = self.n_isolated / self.n_free if self.n_free else 0.0
        # a noise hit is only seen isolated where none of the free DOMs around it has one too: solve
        # rate = r (1 - r)^k for r, k the mean free DOMs around a free DOM (at 3e-3, 15 per event, r is 17% more)
        k, r = self.free_pairs / max(self.n_free, 1), rate
        for _ in range(50):
            r = rate / (1 - min(r, 0.5)) ** k
        quantiles = np.quantile(times, np.linspace(0, 1, TIME_QUANTILES)) if len(times) else np.zeros(0)
        return {"radius_m": float(self.radius), "rate": float(r), "isolated_per_event":
                float(self.n_isolated / max(self.n_events, 1)), "time_quantiles_ns": quantiles.tolist(),
                "npe_values": values[top].tolist(), "npe_weights": (counts[top] / counts[top].sum()).tolist()
                if len(counts) else []}


def fit(chunks: Iterable[np.ndarray], positions: np.ndarray, radius: float) -> dict[str, Any]:
    """The noise model of physical events given in chunks (n, 2, P) (see NoiseFit.record)."""
    acc = NoiseFit(adjacency(positions, radius), radius)
    for chunk in chunks:
        acc.update(chunk)
    return acc.record()


def add(signal: np.ndarray, adj: sparse.csr_matrix, model: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Physical events (N, 2, P) with noise hits drawn on their free DOMs: each with probability model['rate'],
    its time from the stored quantiles, its npe from the stored values; a new array."""
    out = np.array(signal, copy=True)
    if not model.get("rate") or not model.get("time_quantiles_ns"):
        return out
    free = free_doms(out, adj)
    ev, dom = np.nonzero(free & (rng.random(free.shape) < model["rate"]))
    q = np.asarray(model["time_quantiles_ns"])
    out[ev, 1, dom] = np.interp(rng.random(len(ev)), np.linspace(0, 1, len(q)), q)
    out[ev, 0, dom] = rng.choice(np.asarray(model["npe_values"]), len(ev), p=np.asarray(model["npe_weights"]))
    return out


def resample(signal: np.ndarray, positions: np.ndarray, model: dict[str, Any], rng: np.random.Generator
             ) -> np.ndarray:
    """Generated physical events (N, 2, P) -> the same events cleaned, with noise from `model` (sampling)."""
    adj = adjacency(positions, model["radius_m"])
    return add(clean(signal, adj), adj, model, rng)
