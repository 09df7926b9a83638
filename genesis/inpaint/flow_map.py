"""Flow MAP inpainting: maximise the flow's log p(x | labels, geometry) over the masked values only (Adam in
the logit space of a box, `genesis.inpaint.box`), observed DOMs fixed exactly, from several restarts that
`genesis.inpaint.restarts` combines into one fill. A flow with a hit head decides hit / no hit with it
(`genesis.inpaint.hit_head`)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from genesis.errors import CheckpointError, ConfigError
from genesis.inpaint.box import from_unconstrained, map_bounds, to_unconstrained
from genesis.inpaint.hit_head import START_MARGIN, hit_head_split
from genesis.inpaint.masks import mask_tensor
from genesis.inpaint.restarts import FILLS, MapFill, head_mean_fill, vote_fill
from genesis.models.flow import ConditionalFlow, HitPrediction

MAP_TEMPERATURE = 0.7  # conditional samples at lower temperature are more typical starting points
MAP_LR = 0.1  # Adam step in the unconstrained (logit) space of flow MAP
LR_FLOOR = 0.01  # final learning rate of MAP inpainting, as a fraction of lr
MAX_MAP_STEPS, MAX_RESTARTS = 100_000, 100  # larger requests are refused, not attempted


def require_flow(model: Any, method: str) -> None:
    if not isinstance(model, ConditionalFlow):
        raise CheckpointError(f"method '{method}' needs a flow checkpoint (ConditionalFlow), got "
                              f"{type(model).__name__}; use 'repaint' with a diffusion checkpoint")


def _map_restart(flow: ConditionalFlow, x_obs: torch.Tensor, m: torch.Tensor, labels: torch.Tensor,
                 geometry: torch.Tensor, start: torch.Tensor, steps: int, lr: float,
                 tick: Callable[[], None], bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
                 prior: HitPrediction | None = None) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """One Adam run in the unconstrained space from `start` (B, 2, P); m: the entries optimised (P,) or
    (B, 1, P), every other entry is x_obs exactly.

    Maximises the log density of u = logit of the boxed values (bounds, else `map_bounds`), i.e.
    log p(x(u)) plus log|dx/du| of the masked entries: in u the flow's no-hit spike counts by its
    probability mass (its density times its width), not by its peak density. prior: the hit head's
    normal density of the optimised entries, multiplied in (a product of the two models' densities).
    Returns the best iterate per event (observed entries copied exactly), its objective (B,) and the
    trace of the mean log p(x) of the iterates (steps + 1 values)."""
    lo, hi = bounds if bounds is not None else map_bounds(flow, x_obs, m)
    u = to_unconstrained(torch.where(m, start, x_obs), lo, hi).detach().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    # Cosine decay to LR_FLOOR * lr: large early steps move between modes, small late ones settle.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * k / max(steps, 1))))
    best_x, best_obj = x_obs.clone(), torch.full((x_obs.shape[0],), -math.inf, device=x_obs.device)
    trace: list[float] = []
    mf = m.to(x_obs.dtype).expand_as(x_obs)
    for step in range(steps + 1):
        x_u, log_jac = from_unconstrained(u, lo, hi)
        x = torch.where(m, x_u, x_obs)  # observed entries are copied, never optimised
        lp = flow.log_prob(x, labels, geometry)
        obj = lp + (log_jac * mf).sum((1, 2))
        if prior is not None:
            obj = obj - ((0.5 * ((x - prior.mean) * torch.exp(-prior.log_std)) ** 2 + prior.log_std) * mf).sum((1, 2))
        trace.append(float(lp.detach().mean()))
        with torch.no_grad():  # keep the best iterate so the result never scores below its start
            better = obj > best_obj
            best_x = torch.where(better[:, None, None], x, best_x)
            best_obj = torch.where(better, obj, best_obj)
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        (-obj.sum()).backward()
        opt.step()
        sched.step()
        tick()
    return best_x.detach(), best_obj.detach(), trace


def flow_map_fill(flow: ConditionalFlow, x_observed: torch.Tensor, mask: Any, labels: torch.Tensor,
                  geometry: torch.Tensor, *, steps: int = 200, lr: float = MAP_LR, restarts: int = 3,
                  init: str = "sample", generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None, fill: str | None = None) -> MapFill:
    """MAP fill of masked DOMs with restarts; arguments and selection as in `flow_map_inpaint`, plus the
    fill of every restart (for the per-DOM uncertainty, `restart_spread`). fill: 'best' or 'vote'
    (`vote_fill`); None = the flow's own flow.inpaint_fill ('best' for flows from before it existed)."""
    require_flow(flow, "flow-map")
    fill = fill or getattr(flow.config, "inpaint_fill", "best")
    if fill not in FILLS:
        raise ConfigError(f"flow-map fill must be one of {list(FILLS)}, got {fill!r}")
    if init not in ("sample", "zero"):
        raise ConfigError(f"flow-map init must be 'sample' or 'zero', got {init!r}")
    if not (0 <= steps <= MAX_MAP_STEPS and 1 <= restarts <= MAX_RESTARTS and lr > 0):
        raise ConfigError(f"flow-map needs 0 <= steps <= {MAX_MAP_STEPS}, 1 <= restarts <= {MAX_RESTARTS} and lr > 0 "
                          f"(got {steps}, {restarts}, {lr})")
    m = mask_tensor(mask, x_observed)
    x_obs = x_observed.detach()
    total, done = steps * restarts, [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    grads, was_training = [p.requires_grad for p in flow.parameters()], flow.training
    flow.requires_grad_(False)  # only the masked values are optimised
    flow.eval()
    try:
        head = hit_head_split(flow, x_obs, m, labels, geometry)
        fills, objs, traces = [], [], []
        for r in range(restarts):
            if r == 0 and init == "zero":
                start = torch.zeros_like(x_obs)
            elif head is None:
                start = flow.sample(labels, geometry, generator=generator, temperature=MAP_TEMPERATURE)
            else:  # a sample of the head's density of the hit values
                noise = torch.randn(x_obs.shape, generator=generator, device=x_obs.device, dtype=x_obs.dtype)
                start = head.pred.mean + MAP_TEMPERATURE * torch.exp(head.pred.log_std) * noise
            if head is None:
                x_r, obj_r, trace = _map_restart(flow, x_obs, m, labels, geometry, start, steps, lr, tick)
            else:  # inside the box, away from its edges where the logit's gradient vanishes
                lo, hi = head.bounds
                start = lo + (hi - lo) * ((start - lo) / (hi - lo)).clamp(START_MARGIN, 1 - START_MARGIN)
                x_r, obj_r, trace = _map_restart(flow, head.x_fixed, head.free, labels, geometry, start, steps, lr,
                                                 tick, bounds=head.bounds, prior=head.pred)
            fills.append(x_r)
            objs.append(obj_r)
            traces.append(trace)
    finally:
        for p, g in zip(flow.parameters(), grads):
            p.requires_grad_(g)
        flow.train(was_training)
    all_fills, all_objs = torch.stack(fills), torch.stack(objs)  # (R, B, 2, P), (R, B)
    best = all_objs.argmax(0)  # first restart wins ties
    combined = {"best": all_fills.gather(0, best.view(1, -1, 1, 1).expand(1, *x_obs.shape))[0]}
    if head is None:
        combined["vote"] = vote_fill(flow, all_fills, m, x_obs)
    else:  # hit / no hit is the head's; the restarts' values are averaged where it says hit
        combined["vote"] = head_mean_fill(all_fills, head.free, head.x_fixed)
    best_trace = max(traces, key=lambda t: t[-1])  # first of equal ones
    return MapFill(combined[fill], all_fills, all_objs.gather(0, best.view(1, -1))[0], best_trace, best,
                   None if head is None else head.p_hit, combined)


def flow_map_inpaint(flow: ConditionalFlow, x_observed: torch.Tensor, mask: Any, labels: torch.Tensor,
                     geometry: torch.Tensor, *, steps: int = 200, lr: float = MAP_LR, restarts: int = 3,
                     init: str = "sample", generator: torch.Generator | None = None,
                     progress: Callable[[int, int], None] | None = None, fill: str | None = None
                     ) -> tuple[torch.Tensor, list[float]]:
    """MAP fill of masked DOMs in the flow's unconstrained (logit) space, as the original GENESIS flow
    inpainting study did (RealNVP, Adam MAP in logit space).

    Each channel of a masked DOM is optimised as u = logit((x - lo) / (hi - lo)) over a per-event box
    (`map_bounds`), maximising log p(x(u) | labels, geometry) + log|dx/du|; hit or no hit is then the
    flow's own choice: which of its modes holds more probability, not a threshold on a value collapsed
    onto the no-hit spike. Each restart starts from a conditional flow sample (temperature
    MAP_TEMPERATURE); per event the restart with the highest objective wins.

    Args:
        x_observed: (B, 2, P) normalized; values at masked DOMs are ignored.
        mask: (P,) bool, True = unknown (both channels).
        labels: (B, 6) normalized; geometry: (3, P) or (B, 3, P) normalized.
        lr: Adam step size in the unconstrained space (cosine decay to LR_FLOOR * lr).
        init: start of the first restart, "sample" or "zero" (all-zero normalized values); later
            restarts always start from conditional samples (a second zero start would repeat).
        progress: called as progress(done, total) after every optimisation step.
        fill: 'best' (per event the restart with the highest objective) or 'vote' (per DOM, `vote_fill`);
            None = the flow's flow.inpaint_fill.
    Returns:
        x_filled (B, 2, P) with observed DOMs bit-identical to x_observed; trace: mean log p(x) over the
        batch after 0..steps steps (length steps + 1) of the restart with the highest final mean.
    """
    out = flow_map_fill(flow, x_observed, mask, labels, geometry, steps=steps, lr=lr, restarts=restarts,
                        init=init, generator=generator, progress=progress, fill=fill)
    return out.filled, out.trace

