"""The Cherenkov light geometry shared by the simulator, the models' physics conditioning and the time
reference of the normalization (one light model, below both `genesis.data` and `genesis.models`).

A muon starts at the vertex and travels along d = -(sin z cos a, sin z sin a, cos z) (zenith z and
azimuth a give the direction it comes FROM). Its Cherenkov light leaves the track at the angle
theta_c = arccos(1 / n) for refractive index n. For a DOM at position s along the track and
perpendicular distance rho from it, the photon is emitted at s_emit = s - rho / tan(theta_c) and travels
rho / sin(theta_c); it arrives s_emit / c + path n / c after the vertex time (the muon moves at c, the
light at c / n). Light from the vertex itself (a cascade, or a DOM the cone does not reach) arrives
r n / c after the vertex time for the distance r.

The expected charge of a DOM (`expected_npe`) is an order-of-magnitude light yield along those paths: the
models' expected-light input and the normalization's npe reference.

The refractive index is a parameter of every function (default: the simulator's, SimConfig's
`refractive_index`); a checkpoint records the index its time reference used (normalization).

Functions accept numpy arrays or torch tensors and return the same type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

C_VACUUM = 0.299792458  # m/ns
DEFAULT_REFRACTIVE_INDEX = 1.32  # ice (phase index); the simulator's default
# expected_npe: order-of-magnitude light yields (pe at 1 m-ish), muon energy loss dE/dx = a + b E with
# b / a = 3.3e-4 / 0.24 per GeV (minimum ionisation a), effective attenuation length of the ice
TRACK_YIELD, CASCADE_YIELD = 20.0, 0.7
DEDX_B_OVER_A = 3.3e-4 / 0.24
TRACK_SHARE = 0.7  # of the neutrino energy carried by the muon (the rest is the cascade at the vertex)
ATTENUATION_M, NEAR_M, MIN_LIGHT_PE = 30.0, 5.0, 1e-2

Array = Any  # np.ndarray | torch.Tensor


def _lib(x: Array):
    """numpy for numpy arrays and numbers, torch for tensors (imported only when a tensor comes in)."""
    if isinstance(x, (np.ndarray, np.generic, float, int)):
        return np
    import torch

    return torch


@dataclass(frozen=True)
class Cherenkov:
    """The Cherenkov cone for refractive index n: cos, sin and tan of theta_c = arccos(1 / n)."""

    n: float = DEFAULT_REFRACTIVE_INDEX

    def __post_init__(self) -> None:
        if not (math.isfinite(self.n) and self.n > 1.0):
            raise ValueError(f"refractive index must be a finite number above 1 (no Cherenkov light otherwise), "
                             f"got {self.n}")

    @property
    def cos(self) -> float:
        return 1.0 / self.n

    @property
    def sin(self) -> float:
        return math.sqrt(1.0 - self.cos**2)

    @property
    def tan(self) -> float:
        return self.sin / self.cos


def travel_direction(zenith: Array, azimuth: Array) -> Array:
    """(n,) angles of the direction the particle comes from -> (n, 3) unit vector it travels along."""
    lib = _lib(zenith)
    sin_z = lib.sin(zenith)
    return -lib.stack([sin_z * lib.cos(azimuth), sin_z * lib.sin(azimuth), lib.cos(zenith)], -1)


def track_arrival_ns(s_emit: Array, path: Array, refractive_index: float = DEFAULT_REFRACTIVE_INDEX) -> Array:
    """Arrival time (ns after the vertex time) of track light emitted s_emit m along the track that
    travels `path` m to the DOM: the muon at c, then the photon at c / n. Any matching shapes."""
    return s_emit / C_VACUUM + path * refractive_index / C_VACUUM


def vertex_arrival_ns(dist: Array, refractive_index: float = DEFAULT_REFRACTIVE_INDEX) -> Array:
    """Arrival time (ns after the vertex time) of light from the vertex at distance `dist` m. Any shape."""
    return dist * refractive_index / C_VACUUM


class LightPaths(NamedTuple):
    """Direct light of a track from the vertex at every DOM; each field (B, P).

    s: position of the DOM along the track (m from the vertex); dist: distance to the vertex (m);
    on_cone: whether the Cherenkov cone from the track (s_emit > 0) reaches the DOM; path: the light path
    (m; from the emission point on the cone, else from the vertex); arrival: its arrival time (ns after the
    vertex time).
    """

    s: Array
    dist: Array
    on_cone: Array
    path: Array
    arrival: Array


def light_paths(labels_phys: Array, positions: Array, refractive_index: float = DEFAULT_REFRACTIVE_INDEX
                ) -> LightPaths:
    """Light paths of an infinite-track muon from the vertex, with vertex light where the cone does not
    reach, for physical labels (B, 6) (energy GeV, zenith, azimuth rad, vertex m) and DOM positions (P, 3)
    or (B, P, 3) in metres -> `LightPaths` of (B, P) arrays (torch tensors)."""
    import torch

    cone = Cherenkov(refractive_index)
    d = travel_direction(labels_phys[:, 1], labels_phys[:, 2])
    r = (positions if positions.dim() == 3 else positions.unsqueeze(0)) - labels_phys[:, None, 3:6]
    s = (r * d[:, None]).sum(-1)
    rho = (r - s[..., None] * d[:, None]).norm(dim=-1)
    dist = r.norm(dim=-1)
    s_emit = s - rho / cone.tan
    on_cone = s_emit > 0
    path = torch.where(on_cone, rho / cone.sin, dist)
    arrival = torch.where(on_cone, track_arrival_ns(s_emit, path, cone.n), vertex_arrival_ns(dist, cone.n))
    return LightPaths(s, dist, on_cone, path, arrival)


def arrival_time_ns(labels_phys: Array, positions: Array, refractive_index: float = DEFAULT_REFRACTIVE_INDEX
                    ) -> Array:
    """Expected direct-light arrival time (B, P) in ns after the vertex time, for physical labels (B, 6)
    and positions (P, 3) in metres (the time reference of `normalization.time_reference: arrival`)."""
    return light_paths(labels_phys, positions, refractive_index).arrival


def expected_npe(energy: Array, paths: LightPaths) -> Array:
    """Order-of-magnitude expected charge (pe) per DOM, (B, P), for (B,) energies in GeV and (B, P) light
    paths (torch tensors); at least MIN_LIGHT_PE.

    Sources as in the simulator's physics (not its exact constants): the muon (TRACK_SHARE of the energy)
    shines in proportion to its energy loss dE/dx = a + b E, fading as exp(-path / ATTENUATION_M) / path
    along the Cherenkov cone; the cascade at the vertex in proportion to its energy, as
    exp(-r / ATTENUATION_M) / r^2. On the simulator's events it is about 2x below the mean charge of bright
    DOMs; what uses it learns or normalizes that offset."""
    import torch

    e = energy.float()[:, None]
    track = TRACK_YIELD * (1 + DEDX_B_OVER_A * TRACK_SHARE * e) * torch.exp(-paths.path / ATTENUATION_M) \
        / paths.path.clamp_min(NEAR_M)
    cascade = CASCADE_YIELD * (1 - TRACK_SHARE) * e * torch.exp(-paths.dist / ATTENUATION_M) \
        / paths.dist.clamp_min(NEAR_M) ** 2
    return torch.where(paths.on_cone, track, 0.0) + cascade + MIN_LIGHT_PE


def hit_npe_reference(labels_phys: Array, positions: Array, refractive_index: float = DEFAULT_REFRACTIVE_INDEX
                      ) -> Array:
    """log(1 + m) per DOM, (B, P) float64 tensor, where m = mu / (1 - exp(-mu)) is the mean charge of a hit
    DOM for a Poisson mean mu = `expected_npe` (about 1 pe for dark DOMs, mu for bright ones): the npe
    reference of `normalization.npe_reference: expected`, for physical labels (B, 6), positions (P, 3) m."""
    import torch

    paths = light_paths(labels_phys, positions, refractive_index)
    mu = expected_npe(labels_phys[:, 0], paths).double()
    return torch.log1p(mu / -torch.expm1(-mu))
