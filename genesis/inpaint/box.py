"""The box of flow MAP: every masked value is optimised as u = logit((x - lo) / (hi - lo)) over a per-event,
per-channel box (lo, hi), the whole range a fill may take (`map_bounds`), or for DOMs a hit head calls hit the
range of a hit (`hit_bounds`)."""

from __future__ import annotations

import math

import torch

from genesis.models.flow import ConditionalFlow

MIN_SPAN, HEADROOM, BOX_EPS = 1.0, 0.5, 1e-6  # see map_bounds / to_unconstrained


def map_bounds(flow: ConditionalFlow, x_obs: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-event, per-channel box (lo, hi), each (B, 2, 1), of the unconstrained MAP parametrisation.

    lo sits one dequantization width below the no-hit value (the bottom of the no-hit region the flow
    learned; lower observed values widen it); hi is the brightest / latest observed value (at least
    MIN_SPAN above the no-hit value) plus HEADROOM of the span, so a masked DOM may be brighter or later
    than every observed one."""
    v = flow.nohit_value().to(x_obs).reshape(1, 2, 1)
    w = max(flow.config.dequant_noise, 1e-3)
    observed = x_obs[:, :, ~m] if bool((~m).any()) else v.expand(x_obs.shape[0], 2, 1)
    lo = torch.minimum(observed.amin(-1, keepdim=True), v) - w
    top = torch.maximum(observed.amax(-1, keepdim=True), v + MIN_SPAN)
    return lo, top + HEADROOM * (top - lo)


def hit_bounds(flow: ConditionalFlow, x_obs: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box (lo, hi), each (B, 2, 1), for masked DOMs the hit head calls hit: npe from the hit threshold
    (flow.config.hit_threshold pe) up to `map_bounds`' top, time within HEADROOM of the span of the event's
    observed hit times (`map_bounds`' time box when it has none), so a hit is never filled as a no-hit."""
    lo, hi = map_bounds(flow, x_obs, m)
    threshold = torch.tensor(flow.config.hit_threshold, dtype=torch.float64, device=x_obs.device)
    npe_lo = flow._npe_normalized(threshold).to(x_obs.dtype).expand(x_obs.shape[0], 1)
    seen_hit = ~m & (x_obs[:, 0] >= npe_lo)  # (B, P)
    t = x_obs[:, 1]
    t_min = torch.where(seen_hit, t, math.inf).amin(-1, keepdim=True)
    t_max = torch.where(seen_hit, t, -math.inf).amax(-1, keepdim=True)
    has = seen_hit.any(-1, keepdim=True)
    span = torch.where(has, t_max - t_min, 0.0).clamp_min(MIN_SPAN)
    t_lo = torch.where(has, t_min - HEADROOM * span, lo[:, 1])
    t_hi = torch.where(has, t_max + HEADROOM * span, hi[:, 1])
    return torch.stack([npe_lo, t_lo], 1), torch.stack([hi[:, 0], t_hi], 1)


def to_unconstrained(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Logit of x scaled to the box: u = logit((x - lo) / (hi - lo)), x clamped just inside (lo, hi)."""
    frac = ((x - lo) / (hi - lo)).clamp(BOX_EPS, 1 - BOX_EPS)
    return torch.log(frac) - torch.log1p(-frac)


def from_unconstrained(u: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x = lo + (hi - lo) * sigmoid(u) and log|dx/du| elementwise, both shaped like u (B, 2, P)."""
    log_jac = torch.log(hi - lo) + torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)
    return lo + (hi - lo) * torch.sigmoid(u), log_jac

