"""Flow MAP with a hit head (flow.hit_head): the head decides hit / no hit of every masked DOM, and only the
hit DOMs' values are optimised, under the flow's density times the head's normal density of the values."""

from __future__ import annotations

from typing import NamedTuple

import torch

from genesis.inpaint.box import hit_bounds
from genesis.models.flow import ConditionalFlow, HitPrediction

HIT_PROBABILITY = 0.5  # a masked DOM is hit when the head gives it at least this
START_MARGIN = 0.05  # hit-head MAP starts this far (box fraction) inside its box


class HeadSplit(NamedTuple):
    """Flow MAP with a hit head: p_hit (B, P) its P(hit) (0 at observed DOMs); free (B, 1, P) the masked DOMs
    with P(hit) >= HIT_PROBABILITY, the only ones optimised; x_fixed (B, 2, P) the observed values with the
    other masked DOMs set to no hit; bounds: `hit_bounds`; pred: the head's `HitPrediction`."""

    p_hit: torch.Tensor
    free: torch.Tensor
    x_fixed: torch.Tensor
    bounds: tuple[torch.Tensor, torch.Tensor]
    pred: HitPrediction


def hit_head_split(flow: ConditionalFlow, x_obs: torch.Tensor, m: torch.Tensor, labels: torch.Tensor,
                   geometry: torch.Tensor) -> HeadSplit | None:
    """The `HeadSplit` of a flow with a hit head; None without one (its own density decides hit or no hit)."""
    if flow.hit_head is None:
        return None
    with torch.no_grad():
        pred = flow.predict_hits(x_obs, ~m, labels, geometry)
    p_hit = torch.sigmoid(pred.logits) * m
    free = (p_hit >= HIT_PROBABILITY).unsqueeze(1)
    nohit = flow.nohit_value().to(x_obs).reshape(1, 2, 1)
    return HeadSplit(p_hit, free, torch.where(m & ~free, nohit, x_obs), hit_bounds(flow, x_obs, m), pred)
