"""Physics-informed conditioning: label and per-DOM inputs computed from the labels and the geometry.

A string-patch transformer squeezes 60 DOMs into one token, so learning from scratch which DOMs of a
string light up, and when, is hard. These inputs hand it the geometry of the Cherenkov light instead,
so it learns residuals: for every DOM, the distance to the track and to the vertex, the position along
the track, and the expected arrival time of direct light, for a muon track that starts at the vertex
with light from the vertex where the cone does not reach. The light geometry itself (travel direction,
Cherenkov angle for a refractive index, arrival times) is `genesis.physics`, shared with the simulator
and the normalization's time reference; this module keeps only the model-specific feature builders.

Computed from normalized labels and geometry with the model's own normalization metadata (plain tensor
arithmetic on the device, no host sync), so every caller of the model keeps passing what it passes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genesis.physics import (C_VACUUM, DEFAULT_REFRACTIVE_INDEX, Cherenkov, LightPaths, arrival_time_ns, expected_npe,
                             light_paths, travel_direction)

REFRACTIVE_INDEX = DEFAULT_REFRACTIVE_INDEX  # the index of models that do not name one
SIN_CHERENKOV = Cherenkov(REFRACTIVE_INDEX).sin
TAN_CHERENKOV = Cherenkov(REFRACTIVE_INDEX).tan
LABEL_FEATURES = 7  # energy (normalized), travel direction (3), vertex (3, normalized)
DOM_FEATURES = 5
LIGHT_FEATURES = 1  # expected_light, with model.light_feature
TIME_SCALE_NS = 1000.0
LENGTH_SCALE_M = 500.0

__all__ = ["C_VACUUM", "REFRACTIVE_INDEX", "arrival_time_ns", "dom_features", "label_features", "physical_labels",
           "travel_direction"]


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


def dom_features(labels_phys: Tensor, positions: Tensor, refractive_index: float = REFRACTIVE_INDEX,
                 light: bool = False) -> Tensor:
    """Per-DOM light geometry for physical labels (B, 6) and DOM positions (P, 3) or (B, P, 3) in metres
    -> (B, DOM_FEATURES [+ LIGHT_FEATURES with light], P), each of order 1:
    log distance of the light path, log distance to the vertex, position along the track, expected
    direct arrival time after the vertex time, +1 / -1 for track / vertex light [and the expected charge,
    `expected_light`]."""
    paths = light_paths(labels_phys, positions, refractive_index)
    s, dist, on_cone, path, arrival = paths
    feats = [torch.log1p(path / 10.0) / 3.0, torch.log1p(dist / 10.0) / 3.0, s / LENGTH_SCALE_M,
             arrival / TIME_SCALE_NS, on_cone.float() * 2 - 1]
    if light:
        feats.append(expected_light(labels_phys[:, 0], paths))
    return torch.stack(feats, 1)


def expected_light(energy: Tensor, paths: LightPaths) -> Tensor:
    """log10 of an order-of-magnitude expected charge per DOM (`genesis.physics.expected_npe`), divided by 3:
    (B,) energies in GeV and (B, P) light paths -> (B, P), about -0.7 (dark) to 2 (100k pe).

    Why: the charge of a DOM is the energy times how much light survives the path; a string token cannot
    tell its 60 DOMs apart by energy, so a per-DOM output that must multiply the two learns it slowly (the
    tiny preset's light grew 4x too slowly with energy). Handing it the product as one number leaves the
    network a residual.
    """
    return torch.log10(expected_npe(energy, paths)) / 3.0
