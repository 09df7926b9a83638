"""Baseline fills: zero fill (what a dead DOM records) and the mean of the nearest unmasked DOMs above and
below on the same string. `zero_fill` / `neighbour_fill` work on normalized tensors in any normalization;
`baseline_fill` fills physical events in the scoring space (`metrics.SCORING`), so a baseline is the same
fill whatever checkpoint it is compared with."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genesis.data.normalization import Normalization
from genesis.errors import ConfigError, DataError
from genesis.geometry import Geometry
from genesis.inpaint.masks import mask_tensor
from genesis.inpaint.metrics import SCORING

BASELINES = ("neighbours", "zero")


def nohit_value(normalization: Normalization | None, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, 1) normalized value of a DOM without a hit (npe 0, time 0); exactly 0 for the original
    defaults, e.g. (-0.5, -4.5) for an offset npe/linear-time normalization."""
    if normalization is None:
        return torch.zeros(1, 2, 1, dtype=like.dtype, device=like.device)
    return normalization.normalize_signal(torch.zeros(1, 2, 1, dtype=torch.float64)).to(like)


def zero_fill(x: torch.Tensor, mask: Any, normalization: Normalization | None = None) -> torch.Tensor:
    """Copy of x (B, 2, P) with masked DOMs set to 'no hit' (as a dead DOM records) in the given
    normalization (0 when None, right for the original defaults)."""
    m = mask_tensor(mask, x)
    return torch.where(m, nohit_value(normalization, x).expand_as(x), x)


def nearest_unmasked_above_below(geometry: Geometry, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every DOM (P,), the index of the nearest unmasked DOM above and below it on its own string, by
    depth (-1: none); mask (P,) True = masked. (Not the flow's index-adjacent DOMs: masked DOMs are skipped.)"""
    above = np.full(geometry.n_doms, -1)
    below = np.full(geometry.n_doms, -1)
    for s in geometry.strings:
        members = np.flatnonzero(geometry.string == s)
        order = members[np.argsort(-geometry.positions[members, 2], kind="stable")]  # top first
        known, idx, n = ~mask[order], np.arange(len(order)), len(order)
        prev = np.maximum.accumulate(np.where(known, idx, -1))
        nxt = np.minimum.accumulate(np.where(known, idx, n)[::-1])[::-1]
        above[order] = np.where(prev >= 0, order[np.clip(prev, 0, n - 1)], -1)
        below[order] = np.where(nxt < n, order[np.clip(nxt, 0, n - 1)], -1)
    return above, below


def neighbour_fill(x: torch.Tensor, mask: Any, geometry: Geometry, normalization: Normalization | None = None
                   ) -> torch.Tensor:
    """Copy of x (B, 2, P) with each masked DOM set to the mean of the nearest unmasked DOMs above and
    below on the same string (by z), per channel; 'no hit' when the string has no unmasked DOM."""
    m = mask_tensor(mask, x)
    if geometry.n_doms != x.shape[-1]:
        raise DataError(f"geometry '{geometry.name}' has {geometry.n_doms} DOMs but events have {x.shape[-1]}")
    above, below = (torch.as_tensor(a, device=x.device)
                    for a in nearest_unmasked_above_below(geometry, m.cpu().numpy()))
    has_a, has_b = (above >= 0).to(x.dtype), (below >= 0).to(x.dtype)
    total = x[..., above.clamp_min(0)] * has_a + x[..., below.clamp_min(0)] * has_b
    fill = torch.where((has_a + has_b) > 0, total / (has_a + has_b).clamp_min(1), nohit_value(normalization, x))
    return torch.where(m, fill, x)


def baseline_fill(method: str, signal: np.ndarray, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Zero or neighbour fill of physical events signal (B, 2, P) done in the scoring space, as physical
    events (B, 2, P) (hits below the sampling threshold dropped); observed DOMs exactly as given."""
    from genesis.sampling import postprocess

    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; choose one of {list(BASELINES)}")
    signal, mask = np.asarray(signal, dtype=np.float32), np.asarray(mask, dtype=bool)
    x = SCORING.normalize_signal(torch.from_numpy(signal))
    filled = zero_fill(x, mask, SCORING)
    if method == "neighbours":
        filled = neighbour_fill(filled, mask, geometry, SCORING)
    out = postprocess(SCORING.denormalize_signal(filled).numpy())
    out[:, :, ~mask] = signal[:, :, ~mask]
    return out
