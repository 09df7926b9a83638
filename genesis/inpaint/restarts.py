"""The restarts of flow MAP: how they become one fill (FlowConfig.inpaint_fill), and their spread (the per-DOM
uncertainty the Inpaint page shows).

inpaint_fill values (the names are kept so that every config and checkpoint keeps loading):
- 'best': per event the restart with the highest objective;
- 'vote': per DOM from all restarts. Without a hit head a majority vote decides hit / no hit and the hit
  restarts' values are averaged (`vote_fill`); with a hit head there is nothing to vote on (the head decides
  hit / no hit) and 'vote' is the mean of the restarts' values at the DOMs it calls hit (`head_mean_fill`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genesis.data.normalization import Normalization
from genesis.inpaint.masks import mask_tensor
from genesis.models.flow import ConditionalFlow

FILLS = ("best", "vote")  # how flow MAP turns its restarts into one fill (FlowConfig.inpaint_fill; module doc)
VOTE_SHARE = 0.5  # vote: a masked DOM is hit when at least this share of the restarts hit it


@dataclass
class MapFill:
    """Flow MAP result. filled (B, 2, P): per event the restart with the highest objective ('best') or
    the per-DOM vote of the restarts ('vote', `vote_fill`); restarts (R, B, 2, P): every restart's fill
    (all with the observed DOMs exactly as given); objective (B,): the best restart's log density in the
    unconstrained space; trace: see `flow_map_inpaint`."""

    filled: torch.Tensor
    restarts: torch.Tensor
    objective: torch.Tensor
    trace: list[float]
    best: torch.Tensor | None = None  # (B,) long: index of the restart with the highest objective per event
    hit_probability: torch.Tensor | None = None  # (B, P) the hit head's P(hit) (flows with one; 0 at observed DOMs)
    fills: dict[str, torch.Tensor] | None = None  # 'best' and 'vote': both ways to combine the same restarts


def vote_fill(flow: ConditionalFlow, restarts: torch.Tensor, m: torch.Tensor, x_obs: torch.Tensor,
              share: float = VOTE_SHARE) -> torch.Tensor:
    """One fill (B, 2, P) from the restarts' fills (R, B, 2, P), DOM by DOM: hit when at least `share` of
    the restarts hit it (npe >= flow.config.hit_threshold pe), then the mean normalized npe and time of
    the restarts that hit it (the squared-error optimum among them, not one restart's mode); else the
    no-hit value. Observed DOMs (m False) are x_obs exactly."""
    threshold = torch.tensor(flow.config.hit_threshold, dtype=torch.float64, device=restarts.device)
    hit = restarts[:, :, 0] >= flow._npe_normalized(threshold).to(restarts.dtype)  # (R, B, P)
    n_hit = hit.sum(0)
    mean = (restarts * hit[:, :, None]).sum(0) / n_hit.clamp_min(1)[:, None].to(restarts.dtype)
    nohit = flow.nohit_value().to(restarts).reshape(1, 2, 1)
    fill = torch.where((n_hit >= share * restarts.shape[0])[:, None], mean, nohit)
    return torch.where(m, fill, x_obs)



def head_mean_fill(restarts: torch.Tensor, free: torch.Tensor, x_fixed: torch.Tensor) -> torch.Tensor:
    """'vote' with a hit head: the mean of the restarts' fills (R, B, 2, P) at the DOMs the head calls hit
    (free (B, 1, P)); x_fixed (B, 2, P) elsewhere (observed values, and no hit where the head says so)."""
    return torch.where(free, restarts.mean(0), x_fixed)


def restart_spread(restarts: torch.Tensor, mask: Any, normalization: Normalization,
                   hit_probability: torch.Tensor | None = None, hit_threshold_pe: float = 0.5) -> np.ndarray:
    """Per-DOM uncertainty (B, 3, P) float32 from the restarts' fills (R, B, 2, P) normalized:
    [hit probability (the hit head's, (B, P), when given; else the share of restarts that hit the DOM),
    npe spread (std over restarts, pe, 0 for no hit), time spread (std over the restarts that hit the
    DOM, ns; 0 when fewer than 2 do)]; 0 everywhere at observed DOMs."""
    phys = normalization.denormalize_signal(restarts.detach().cpu().double())  # (R, B, 2, P)
    hit = phys[:, :, 0] >= hit_threshold_pe
    npe = torch.where(hit, phys[:, :, 0], torch.zeros_like(phys[:, :, 0]))
    n_hit = hit.sum(0)
    t = torch.where(hit, phys[:, :, 1], torch.zeros_like(phys[:, :, 1]))
    t_mean = t.sum(0) / n_hit.clamp_min(1)
    t_var = (torch.where(hit, t - t_mean, torch.zeros_like(t)) ** 2).sum(0) / (n_hit - 1).clamp_min(1)
    p_hit = hit.double().mean(0) if hit_probability is None else hit_probability.detach().cpu().double()
    out = torch.stack([p_hit, npe.std(0, unbiased=False),
                       torch.where(n_hit >= 2, t_var.sqrt(), torch.zeros_like(t_var))], 1)
    out[:, :, ~mask_tensor(mask, out).cpu()] = 0.0
    return out.float().numpy()

