"""Physics-informed conditioning: label and per-DOM inputs computed from the labels and the geometry.

A string-patch transformer squeezes 60 DOMs into one token, so learning from scratch which DOMs of a
string light up, and when, is hard. These inputs hand it the geometry of the Cherenkov light instead,
so it learns residuals: for every DOM, the distance to the track and to the vertex, the position along
the track, and the expected arrival time of direct light, for a muon track that starts at the vertex
(Cherenkov angle for n = 1.32) with light from the vertex where the cone does not reach.

Computed from normalized labels and geometry with the model's own normalization metadata (plain tensor
arithmetic on the device, no host sync), so every caller of the model keeps passing what it passes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

C_VACUUM = 0.299792458  # m/ns
REFRACTIVE_INDEX = 1.32
COS_CHERENKOV = 1.0 / REFRACTIVE_INDEX
SIN_CHERENKOV = math.sqrt(1.0 - COS_CHERENKOV**2)
TAN_CHERENKOV = SIN_CHERENKOV / COS_CHERENKOV
LABEL_FEATURES = 7  # energy (normalized), travel direction (3), vertex (3, normalized)
DOM_FEATURES = 5
TIME_SCALE_NS = 1000.0
LENGTH_SCALE_M = 500.0


def travel_direction(zenith: Tensor, azimuth: Tensor) -> Tensor:
    """(B,) angles of the direction the particle comes from -> (B, 3) unit vector it travels along."""
    return -torch.stack([zenith.sin() * azimuth.cos(), zenith.sin() * azimuth.sin(), zenith.cos()], -1)


def physical_labels(labels_n: Tensor, offsets: Tensor, scales: Tensor, energy_log10: bool) -> Tensor:
    """Normalized labels (B, 6) -> physical (B, 6) (energy GeV, angles rad, vertex m)."""
    y = labels_n.float() * scales.float() + offsets.float()
    energy = 10 ** y[:, :1] if energy_log10 else y[:, :1]
    return torch.cat([energy, y[:, 1:]], 1)


def label_features(labels_n: Tensor, labels_phys: Tensor) -> Tensor:
    """(B, 7): the normalized energy, the travel direction as a unit vector (no jump at azimuth 0 / 2 pi)
    and the normalized vertex."""
    d = travel_direction(labels_phys[:, 1], labels_phys[:, 2]).to(labels_n.dtype)
    return torch.cat([labels_n[:, :1], d, labels_n[:, 3:]], 1)


def _light_paths(labels_phys: Tensor, positions: Tensor) -> tuple[Tensor, ...]:
    """For physical labels (B, 6) and DOM positions (P, 3) or (B, P, 3) in metres, each (B, P): position
    along the track s, distance to the vertex, whether the Cherenkov cone reaches the DOM, the light path
    length and the expected direct arrival time [ns after the vertex time]."""
    d = travel_direction(labels_phys[:, 1], labels_phys[:, 2])
    r = (positions if positions.dim() == 3 else positions.unsqueeze(0)) - labels_phys[:, None, 3:6]
    s = (r * d[:, None]).sum(-1)
    rho = (r - s[..., None] * d[:, None]).norm(dim=-1)
    dist = r.norm(dim=-1)
    s_emit = s - rho / TAN_CHERENKOV
    on_cone = s_emit > 0
    path = torch.where(on_cone, rho / SIN_CHERENKOV, dist)
    arrival = torch.where(on_cone, s_emit / C_VACUUM + path * REFRACTIVE_INDEX / C_VACUUM,
                          dist * REFRACTIVE_INDEX / C_VACUUM)
    return s, dist, on_cone, path, arrival


def arrival_time_ns(labels_phys: Tensor, positions: Tensor) -> Tensor:
    """Expected direct-light arrival time (B, P) in ns after the vertex time, for physical labels (B, 6)
    and positions (P, 3) in metres (the time reference of `normalization.time_reference: arrival`)."""
    return _light_paths(labels_phys, positions)[4]


def dom_features(labels_phys: Tensor, positions: Tensor) -> Tensor:
    """Per-DOM light geometry for physical labels (B, 6) and DOM positions (P, 3) or (B, P, 3) in metres
    -> (B, DOM_FEATURES, P), each of order 1:
    log distance of the light path, log distance to the vertex, position along the track, expected
    direct arrival time after the vertex time, and +1 / -1 for track / vertex light."""
    s, dist, on_cone, path, arrival = _light_paths(labels_phys, positions)
    feats = [torch.log1p(path / 10.0) / 3.0, torch.log1p(dist / 10.0) / 3.0, s / LENGTH_SCALE_M,
             arrival / TIME_SCALE_NS, on_cone.float() * 2 - 1]
    return torch.stack(feats, 1)
