"""Inpainting of masked or dead DOMs: masks, flow MAP inpainting, baselines and metrics.

Masks are boolean numpy arrays (P,), True = masked (unknown, to be filled). Events are normalized
tensors x (B, 2, P) (channel 0 = npe, 1 = time; no-hit DOMs are exact zeros).

Methods (see `run_inpainting`):
- "flow-map": maximise the flow's log p(x | labels, geometry) over the masked values only (Adam in a
  logit space), observed DOMs fixed exactly, from several restarts; the fill is the best restart or,
  with flow.inpaint_fill 'vote', a per-DOM vote of the restarts (`vote_fill`). A flow with a hit head
  (flow.hit_head) decides hit / no hit of every masked DOM with it and optimises only the hit DOMs'
  values, under the flow's density times the head's (`_hit_head_split`);
- "repaint": RePaint sampling with a diffusion model (`genesis.diffusion.repaint_sample`);
- "neighbours": mean of the nearest unmasked DOMs above and below on the same string;
- "zero": masked DOMs left empty (what a dead DOM records).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from genesis.data.normalization import Normalization
from genesis.errors import CheckpointError, ConfigError, DataError
from genesis.geometry import Geometry
from genesis.models.flow import ConditionalFlow, HitPrediction

MASK_FORMS = (
    "strings:S1,S2,... (string ids)",
    "random:FRACTION (0 < FRACTION < 1)",
    "deepcore",
    "sphere:X,Y,Z,RADIUS (metres)",
    "dead:PATH (CSV with header string,dom, or one DOM index per line)",
)
METHODS = ("flow-map", "repaint", "neighbours", "zero")
METHOD_KIND = {"flow-map": "flow", "repaint": "diffusion"}  # the checkpoint kind a method needs; baselines need none
MAP_TEMPERATURE = 0.7  # conditional samples at lower temperature are more typical starting points
MAP_LR = 0.1  # Adam step in the unconstrained (logit) space of flow MAP
LR_FLOOR = 0.01  # final learning rate of MAP inpainting, as a fraction of lr
MIN_SPAN, HEADROOM, BOX_EPS = 1.0, 0.5, 1e-6  # flow MAP box: see map_bounds / to_unconstrained
# RePaint (Lugmayr et al. 2022) re-noises and redoes every `jump_length` steps `resample` times in all:
# steps * resample network evaluations in total, see repaint_evaluations.
REPAINT_STEPS, REPAINT_JUMP_LENGTH, REPAINT_RESAMPLE = 50, 5, 3
MAX_MAP_STEPS, MAX_RESTARTS = 100_000, 100  # larger requests are refused, not attempted
FILLS = ("best", "vote")  # how flow MAP turns its restarts into one fill (FlowConfig.inpaint_fill)
VOTE_SHARE = 0.5  # vote: a masked DOM is hit when at least this share of the restarts hit it
HIT_PROBABILITY = 0.5  # flows with a hit head: a masked DOM is hit when the head gives it at least this
START_MARGIN = 0.05  # hit-head MAP starts this far (box fraction) inside its box


# --- masks ------------------------------------------------------------------------------------------
def _checked(mask: np.ndarray, what: str) -> np.ndarray:
    """Reject masks that leave nothing to fill or nothing to condition on."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise DataError(f"{what} selects no DOM; nothing would be inpainted")
    if mask.all():
        raise DataError(f"{what} selects every DOM ({mask.size}); at least one DOM must stay observed")
    return mask


def random_mask(geometry: Geometry, fraction: float, seed: int = 0) -> np.ndarray:
    """(P,) mask of round(fraction * P) DOMs (at least one) drawn without replacement."""
    if not 0 < fraction < 1:
        raise DataError(f"random mask fraction must be between 0 and 1 (exclusive), got {fraction}")
    n = max(1, round(fraction * geometry.n_doms))
    mask = np.zeros(geometry.n_doms, dtype=bool)
    mask[np.random.default_rng(seed).choice(geometry.n_doms, n, replace=False)] = True
    return _checked(mask, f"random mask (fraction {fraction})")


def strings_mask(geometry: Geometry, strings: list[int]) -> np.ndarray:
    """(P,) mask of every DOM on the given strings; unknown string ids raise DataError."""
    if len(strings) == 0:
        raise DataError("strings mask needs at least one string id")
    return _checked(geometry.indices_of_strings(list(strings)), f"strings mask {list(strings)}")


def deepcore_mask(geometry: Geometry) -> np.ndarray:
    """(P,) mask of the densely instrumented (DeepCore) strings."""
    dense = geometry.deepcore_strings()
    if len(dense) == 0:
        raise DataError(f"geometry '{geometry.name}' has no DeepCore (densely instrumented) strings")
    return _checked(geometry.indices_of_strings(dense.tolist()), "deepcore mask")


def sphere_mask(geometry: Geometry, center: Any, radius_m: float) -> np.ndarray:
    """(P,) mask of DOMs within radius_m metres of center (3,)."""
    center = np.asarray(center, dtype=np.float64).reshape(-1)
    if center.shape != (3,) or not np.isfinite(center).all():
        raise DataError(f"sphere centre must be 3 finite numbers x,y,z in metres, got {center.tolist()}")
    if not radius_m > 0:
        raise DataError(f"sphere radius must be positive (metres), got {radius_m}")
    dist = np.linalg.norm(geometry.positions - center, axis=1)
    return _checked(dist <= radius_m, f"sphere mask (centre {center.tolist()}, radius {radius_m} m)")


def dead_doms_mask(geometry: Geometry, path: str | Path) -> np.ndarray:
    """(P,) mask from a file: CSV with header `string,dom`, or one integer DOM index (0-based) per line.

    Blank lines and lines starting with '#' are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dead-DOM file not found")
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the dead-DOM file as text ({exc})") from exc
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"{path}: dead-DOM file lists no DOM")
    is_csv = any(c.isalpha() for c in lines[0])  # a header line means CSV with string,dom columns
    mask = np.zeros(geometry.n_doms, dtype=bool)
    mask[_dead_from_csv(geometry, path, lines) if is_csv else _dead_indices(geometry, path, lines)] = True
    return _checked(mask, f"dead-DOM file {path}")


def _dead_from_csv(geometry: Geometry, path: Path, lines: list[str]) -> list[int]:
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = [h.strip().lower() for h in rows[0]]
    if "string" not in header or "dom" not in header:
        raise DataError(f"{path}: CSV header must contain 'string' and 'dom', got {rows[0]}")
    lookup = {(int(s), int(d)): i for i, (s, d) in enumerate(zip(geometry.string, geometry.dom))}
    si, di = header.index("string"), header.index("dom")
    out, unknown = [], []
    for n, row in enumerate(rows[1:], start=2):
        try:
            key = (int(row[si]), int(row[di]))
        except (ValueError, IndexError) as exc:
            raise DataError(f"{path}: row {n} {row} needs integer string and dom ids") from exc
        if key in lookup:
            out.append(lookup[key])
        else:
            unknown.append(key)
    if unknown:
        raise DataError(f"{path}: (string, dom) pairs not in geometry '{geometry.name}': {unknown[:5]}"
                        + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    return out


def _dead_indices(geometry: Geometry, path: Path, lines: list[str]) -> list[int]:
    try:
        idx = [int(ln) for ln in lines]
    except ValueError as exc:
        raise DataError(f"{path}: expected one integer DOM index per line "
                        f"or a CSV with header string,dom ({exc})") from exc
    bad = [i for i in idx if not 0 <= i < geometry.n_doms]
    if bad:
        raise DataError(f"{path}: DOM indices out of range 0..{geometry.n_doms - 1}: {bad[:5]}")
    return idx


def combine(*masks: np.ndarray) -> np.ndarray:
    """Logical or of (P,) masks of equal length."""
    if not masks:
        raise DataError("combine needs at least one mask")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise DataError(f"masks to combine have different shapes {sorted(shapes)}")
    return np.logical_or.reduce([np.asarray(m, dtype=bool) for m in masks])


def parse_mask(spec: str, geometry: Geometry, seed: int = 0) -> np.ndarray:
    """(P,) mask from a CLI string such as "strings:36,79", "random:0.1", "deepcore",
    "sphere:0,0,-300,100", "dead:path.csv", or several joined by '+' ("strings:36+random:0.05")."""
    parts = [p.strip() for p in spec.split("+")]
    if not spec.strip() or not all(parts):
        raise DataError(f"malformed mask spec {spec!r}; accepted forms: {', '.join(MASK_FORMS)}, joined by '+'")
    masks = [_parse_one(part, geometry, seed + i) for i, part in enumerate(parts)]
    return _checked(combine(*masks), f"mask {spec!r}")


def _parse_one(part: str, geometry: Geometry, seed: int) -> np.ndarray:
    name, _, arg = part.partition(":")
    name, arg = name.strip().lower(), arg.strip()
    try:
        if name == "strings" and arg:
            return strings_mask(geometry, [int(s) for s in arg.split(",")])
        if name == "random" and arg:
            return random_mask(geometry, float(arg), seed)
        if name == "deepcore" and not arg:
            return deepcore_mask(geometry)
        if name == "sphere" and len(arg.split(",")) == 4:
            *center, radius = (float(v) for v in arg.split(","))
            return sphere_mask(geometry, center, radius)
        if name == "dead" and arg:
            return dead_doms_mask(geometry, arg)
    except ValueError as exc:
        raise DataError(f"malformed mask {part!r} ({exc}); accepted forms: {', '.join(MASK_FORMS)}") from exc
    raise DataError(f"malformed mask {part!r}; accepted forms: {', '.join(MASK_FORMS)}, joined by '+'")


def _mask_tensor(mask: Any, x: torch.Tensor) -> torch.Tensor:
    """(P,) bool mask -> tensor (P,) on x's device, checked against x (B, 2, P)."""
    m = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool))
    if m.shape != (x.shape[-1],):
        raise DataError(f"mask has shape {tuple(m.shape)} but events have {x.shape[-1]} DOMs")
    return m.to(x.device)


# --- baselines --------------------------------------------------------------------------------------
def nohit_value(normalization: Normalization | None, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, 1) normalized value of a DOM without a hit (npe 0, time 0); exactly 0 for the original
    defaults, e.g. (-0.5, -4.5) for an offset npe/linear-time normalization."""
    if normalization is None:
        return torch.zeros(1, 2, 1, dtype=like.dtype, device=like.device)
    return normalization.normalize_signal(torch.zeros(1, 2, 1, dtype=torch.float64)).to(like)


def zero_fill(x: torch.Tensor, mask: Any, normalization: Normalization | None = None) -> torch.Tensor:
    """Copy of x (B, 2, P) with masked DOMs set to 'no hit' (as a dead DOM records) in the given
    normalization (0 when None, right for the original defaults)."""
    m = _mask_tensor(mask, x)
    return torch.where(m, nohit_value(normalization, x).expand_as(x), x)


def _string_neighbours(geometry: Geometry, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every DOM, the index of the nearest unmasked DOM above and below on its string (-1: none)."""
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
    m = _mask_tensor(mask, x)
    if geometry.n_doms != x.shape[-1]:
        raise DataError(f"geometry '{geometry.name}' has {geometry.n_doms} DOMs but events have {x.shape[-1]}")
    above, below = (torch.as_tensor(a, device=x.device) for a in _string_neighbours(geometry, m.cpu().numpy()))
    has_a, has_b = (above >= 0).to(x.dtype), (below >= 0).to(x.dtype)
    total = x[..., above.clamp_min(0)] * has_a + x[..., below.clamp_min(0)] * has_b
    fill = torch.where((has_a + has_b) > 0, total / (has_a + has_b).clamp_min(1), nohit_value(normalization, x))
    return torch.where(m, fill, x)


# --- flow MAP inpainting ----------------------------------------------------------------------------
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


def flow_map_fill(flow: ConditionalFlow, x_observed: torch.Tensor, mask: Any, labels: torch.Tensor,
                  geometry: torch.Tensor, *, steps: int = 200, lr: float = MAP_LR, restarts: int = 3,
                  init: str = "sample", generator: torch.Generator | None = None,
                  progress: Callable[[int, int], None] | None = None, fill: str | None = None) -> MapFill:
    """MAP fill of masked DOMs with restarts; arguments and selection as in `flow_map_inpaint`, plus the
    fill of every restart (for the per-DOM uncertainty, `restart_spread`). fill: 'best' or 'vote'
    (`vote_fill`); None = the flow's own flow.inpaint_fill ('best' for flows from before it existed)."""
    _require_flow(flow, "flow-map")
    fill = fill or getattr(flow.config, "inpaint_fill", "best")
    if fill not in FILLS:
        raise ConfigError(f"flow-map fill must be one of {list(FILLS)}, got {fill!r}")
    if init not in ("sample", "zero"):
        raise ConfigError(f"flow-map init must be 'sample' or 'zero', got {init!r}")
    if not (0 <= steps <= MAX_MAP_STEPS and 1 <= restarts <= MAX_RESTARTS and lr > 0):
        raise ConfigError(f"flow-map needs 0 <= steps <= {MAX_MAP_STEPS}, 1 <= restarts <= {MAX_RESTARTS} and lr > 0 "
                          f"(got {steps}, {restarts}, {lr})")
    m = _mask_tensor(mask, x_observed)
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
        head = _hit_head_split(flow, x_obs, m, labels, geometry)
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
        combined["vote"] = torch.where(head.free, all_fills.mean(0), head.x_fixed)
    best_trace = max(traces, key=lambda t: t[-1])  # first of equal ones
    return MapFill(combined[fill], all_fills, all_objs.gather(0, best.view(1, -1))[0], best_trace, best,
                   None if head is None else head.p_hit, combined)


class HeadSplit(NamedTuple):
    """Flow MAP with a hit head: p_hit (B, P) its P(hit) (0 at observed DOMs); free (B, 1, P) the masked DOMs
    with P(hit) >= HIT_PROBABILITY, the only ones optimised; x_fixed (B, 2, P) the observed values with the
    other masked DOMs set to no hit; bounds: `hit_bounds`; pred: the head's `HitPrediction`."""

    p_hit: torch.Tensor
    free: torch.Tensor
    x_fixed: torch.Tensor
    bounds: tuple[torch.Tensor, torch.Tensor]
    pred: HitPrediction


def _hit_head_split(flow: ConditionalFlow, x_obs: torch.Tensor, m: torch.Tensor, labels: torch.Tensor,
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
    out[:, :, ~_mask_tensor(mask, out).cpu()] = 0.0
    return out.float().numpy()


# --- metrics ----------------------------------------------------------------------------------------
def inpaint_metrics(x_filled_norm: Any, x_true_norm: Any, mask: Any, normalization: Normalization,
                    hit_threshold_pe: float = 0.5, labels: Any = None, positions: Any = None) -> dict[str, float]:
    """Errors of a fill against the truth, on masked DOMs only (except the total charge).

    Both events (B, 2, P) are normalized; physical values come from normalization.denormalize_signal (with the
    physical labels (B, 6) and positions (P, 3), needed by a time reference).
    As in sampling, a DOM is hit when its npe > hit_threshold_pe; the npe of other DOMs counts as 0.
    Keys: mse_normalized (both channels), npe_abs_error (pe), time_abs_error_ns (DOMs hit in truth and
    fill; NaN if none), hit_accuracy, total_charge_error (mean over events with charge of
    |sum npe filled - sum npe true| / sum npe true, over all DOMs; NaN if none), n_masked_doms.
    """
    fill = torch.as_tensor(x_filled_norm).detach().cpu().double()
    true = torch.as_tensor(x_true_norm).detach().cpu().double()
    if fill.shape != true.shape:
        raise DataError(f"filled events {tuple(fill.shape)} and true events {tuple(true.shape)} differ in shape")
    m = _mask_tensor(mask, true)
    lab = None if labels is None else torch.as_tensor(labels).detach().cpu().double()
    phys_f, phys_t = (normalization.denormalize_signal(v, lab, positions) for v in (fill, true))
    hit_f, hit_t = phys_f[:, 0] > hit_threshold_pe, phys_t[:, 0] > hit_threshold_pe
    npe_f = torch.where(hit_f, phys_f[:, 0], torch.zeros_like(phys_f[:, 0]))
    npe_t = torch.where(hit_t, phys_t[:, 0], torch.zeros_like(phys_t[:, 0]))
    both = (hit_f & hit_t)[:, m]
    dt = (phys_f[:, 1] - phys_t[:, 1])[:, m].abs()
    charge_t, charge_f = npe_t.sum(1), npe_f.sum(1)
    has_charge = charge_t > 0
    rel = (charge_f - charge_t).abs()[has_charge] / charge_t[has_charge]
    return {
        "mse_normalized": float(((fill - true)[:, :, m] ** 2).mean()),
        "npe_abs_error": float((npe_f - npe_t)[:, m].abs().mean()),
        "time_abs_error_ns": float(dt[both].mean()) if both.any() else math.nan,
        "hit_accuracy": float((hit_f == hit_t)[:, m].double().mean()),
        "total_charge_error": float(rel.mean()) if has_charge.any() else math.nan,
        "n_masked_doms": int(m.sum()),
    }


def improvement_ratios(metrics_by_method: dict[str, dict], method: str) -> dict[str, float]:
    """{other method: mse_normalized(other) / mse_normalized(method)}; > 1 means `method` is better."""
    if method not in metrics_by_method:
        raise ConfigError(f"method {method!r} has no metrics; available: {sorted(metrics_by_method)}")
    ref = metrics_by_method[method]["mse_normalized"]
    return {name: (m["mse_normalized"] / ref if ref > 0 else math.inf)
            for name, m in metrics_by_method.items() if name != method}


# --- dispatch (CLI and dashboard) -------------------------------------------------------------------
def _require_flow(model: Any, method: str) -> None:
    if not isinstance(model, ConditionalFlow):
        raise CheckpointError(f"method '{method}' needs a flow checkpoint (ConditionalFlow), got "
                              f"{type(model).__name__}; use 'repaint' with a diffusion checkpoint")


_SETTINGS = {
    "flow-map": {"steps", "lr", "restarts", "init", "generator", "progress", "fill"},
    "repaint": {"diffusion", "steps", "jump_length", "resample", "generator", "clip_x0"},
    "neighbours": set(),
    "zero": set(),
}


def run_inpainting(method: str, model: nn.Module | None, x_true: torch.Tensor, mask: Any, labels: torch.Tensor,
                   geometry: Geometry, normalization: Normalization | None = None, **settings: Any
                   ) -> tuple[torch.Tensor, list[float]]:
    """Fill the masked DOMs of normalized events x_true (B, 2, P) with `method`; the method never sees
    the true values at masked DOMs (they are zeroed first).

    model: ConditionalFlow for "flow-map", the diffusion network for "repaint" (then pass
    diffusion=GaussianDiffusion(...)), ignored for the baselines. geometry: the physical detector;
    models get it normalized with their own normalization metadata. normalization: that of x_true
    (defaults to the model's, else the original defaults); it defines the 'no hit' value.
    Returns (x_filled (B, 2, P), trace), trace being the flow-map log-prob curve ([] otherwise).
    """
    filled, trace, _ = _inpaint(method, model, x_true, mask, labels, geometry, normalization, **settings)
    return filled, trace


def _inpaint(method: str, model: nn.Module | None, x_true: torch.Tensor, mask: Any, labels: torch.Tensor,
             geometry: Geometry, normalization: Normalization | None = None, **settings: Any
             ) -> tuple[torch.Tensor, list[float], MapFill | None]:
    """`run_inpainting`, plus the flow-map restarts (MapFill; None for the other methods)."""
    if method not in METHODS:
        raise ConfigError(f"unknown inpainting method {method!r}; choose one of {list(METHODS)}")
    unknown = sorted(set(settings) - _SETTINGS[method])
    if unknown:
        raise ConfigError(f"method '{method}' does not take setting(s) {unknown}; it takes {sorted(_SETTINGS[method])}")
    if normalization is None and hasattr(model, "get_normalization_params"):
        normalization = model.normalization
    x_known = zero_fill(x_true, mask, normalization)
    if method == "zero":
        return x_known, [], None
    if method == "neighbours":
        return neighbour_fill(x_known, mask, geometry, normalization), [], None
    if method == "flow-map":
        _require_flow(model, method)
    elif isinstance(model, ConditionalFlow) or not isinstance(model, nn.Module):
        raise CheckpointError(f"method 'repaint' needs a diffusion checkpoint, got {type(model).__name__}; "
                              "use 'flow-map' for flows")
    if not hasattr(model, "get_normalization_params"):
        raise CheckpointError(f"{type(model).__name__} carries no normalization metadata; load it from a checkpoint")
    geometry_n = model.normalization.normalize_geometry(torch.as_tensor(geometry.positions)).to(x_true)
    if method == "flow-map":
        out = flow_map_fill(model, x_known, mask, labels, geometry_n, **settings)
        return out.filled, out.trace, out
    return _run_repaint(model, x_known, mask, labels, geometry_n, **settings), [], None


def _run_repaint(model: nn.Module, x_known: torch.Tensor, mask: Any, labels: torch.Tensor,
                 geometry_n: torch.Tensor, diffusion: Any = None, **settings: Any) -> torch.Tensor:
    """RePaint with a diffusion model; known_mask passed as (P,) bool, True = observed DOM."""
    if diffusion is None:
        raise CheckpointError("method 'repaint' needs diffusion=GaussianDiffusion(...) built from the "
                              "checkpoint's diffusion config")
    from genesis.diffusion import repaint_sample  # lazy: diffusion.py is only needed for this method

    known = ~_mask_tensor(mask, x_known)
    return repaint_sample(diffusion, model, x_known, known, labels, geometry_n, **settings)


# --- whole jobs: events from a file, a checkpoint, a mask -> fills, metrics, HDF5 -------------------
@dataclass
class InpaintResult:
    """Physical events (B, 2, P): masked (masked DOMs zeroed), filled and true; labels (B, 6); mask (P,)."""

    masked: np.ndarray
    filled: np.ndarray
    true: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    method: str
    metrics: dict[str, dict[str, float]]
    ratios: dict[str, float]
    trace: list[float]
    seconds: float
    uncertainty: np.ndarray | None = None  # (B, 3, P) flow-map restarts: see restart_spread; None otherwise
    fills: dict[str, np.ndarray] | None = None  # flow-map: physical fill (B, 2, P) of every way to combine restarts


def _method_settings(method: str, loaded, steps: int, restarts: int, seed: int, device,
                     progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    generator = torch.Generator(device=device).manual_seed(seed)
    if method == "flow-map":
        return {"steps": steps, "restarts": restarts, "generator": generator, "progress": progress}
    if method == "repaint":
        from genesis.diffusion import GaussianDiffusion
        from genesis.sampling import clip_range

        diffusion_cfg = loaded.config.diffusion
        return {"diffusion": GaussianDiffusion(diffusion_cfg), "steps": min(steps, diffusion_cfg.timesteps),
                "jump_length": REPAINT_JUMP_LENGTH, "resample": REPAINT_RESAMPLE, "generator": generator,
                "clip_x0": clip_range(loaded.state.get("data"), device)}
    return {}


def repaint_evaluations(steps: int, jump_length: int = REPAINT_JUMP_LENGTH, resample: int = REPAINT_RESAMPLE) -> int:
    """Network evaluations of one RePaint run (its reverse steps, re-noising jumps included)."""
    from genesis.diffusion import repaint_schedule

    ks = repaint_schedule(steps, jump_length, resample)
    return sum(1 for k, k_next in zip(ks[:-1], ks[1:]) if k_next < k)


def estimate_repaint_seconds(loaded, n_events: int, steps: int, jump_length: int = REPAINT_JUMP_LENGTH,
                             resample: int = REPAINT_RESAMPLE) -> tuple[int, float]:
    """(network evaluations, expected seconds) of RePaint on n_events with this diffusion checkpoint, from
    one timed evaluation on this machine (so it includes the device and its current load)."""
    import time

    from genesis.diffusion import GaussianDiffusion, repaint_sample

    model = loaded.model
    device = next(model.parameters()).device
    shape = (n_events, getattr(model, "channels", 2), loaded.geometry.n_doms)
    geometry_n = loaded.normalization.normalize_geometry(torch.as_tensor(loaded.geometry.positions)).to(device).float()
    known = torch.zeros(shape[-1], dtype=torch.bool, device=device)
    known[0] = True
    args = (GaussianDiffusion(loaded.config.diffusion), model, torch.zeros(shape, device=device), known,
            torch.zeros(n_events, 6, device=device), geometry_n)
    repaint_sample(*args, steps=1, jump_length=1, resample=1)  # warm-up (first-call allocations)
    t0 = time.time()
    repaint_sample(*args, steps=1, jump_length=1, resample=1)
    evaluations = repaint_evaluations(steps, jump_length, resample)
    return evaluations, evaluations * (time.time() - t0)


def inpaint_events(loaded, signal: np.ndarray, labels: np.ndarray, mask: np.ndarray, method: str, geometry: Geometry,
                   *, steps: int = 200, restarts: int = 3, seed: int = 0, compare_baselines: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> InpaintResult:
    """Fill the masked DOMs of physical events with `method` (a checkpoint is needed for flow-map/repaint)
    and score it, and the zero/neighbour baselines when asked, on the masked DOMs."""
    import time

    from genesis.sampling import postprocess

    if method in ("flow-map", "repaint") and loaded is None:
        raise CheckpointError(f"method '{method}' needs a checkpoint (--checkpoint)")
    if loaded is not None and loaded.geometry.n_doms != geometry.n_doms:
        raise DataError(f"the data has P = {geometry.n_doms} DOMs but the checkpoint was trained on "
                        f"P = {loaded.geometry.n_doms}; use data on the checkpoint's detector")
    norm = loaded.normalization if loaded is not None else Normalization()
    model = loaded.model if loaded is not None else None
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    x_true = norm.normalize_signal(torch.from_numpy(signal).to(device), torch.from_numpy(labels).to(device),
                                   geometry.positions)
    lab = norm.normalize_labels(torch.from_numpy(labels).to(device))
    mask_t = torch.as_tensor(mask, device=device)
    methods = [method] + ([m for m in ("zero", "neighbours") if m != method] if compare_baselines else [])
    metrics, fills, trace, seconds, uncertainty, combined = {}, {}, [], 0.0, None, None
    for m in methods:
        t0 = time.time()
        settings = _method_settings(m, loaded, steps, restarts, seed, device, progress if m == method else None)
        filled, tr, map_fill = _inpaint(m, model if m in ("flow-map", "repaint") else None, x_true, mask_t, lab,
                                        geometry, normalization=norm, **settings)
        fills[m] = filled
        if m == method:
            trace = tr
            if map_fill is not None:  # both ways to combine the restarts, from the same restarts
                uncertainty = restart_spread(map_fill.restarts, mask, norm, map_fill.hit_probability)
                combined = map_fill.fills
        metrics[m] = inpaint_metrics(filled, x_true, mask_t, norm, labels=labels, positions=geometry.positions)
        if m == method:
            seconds = time.time() - t0
    true_phys = signal.astype(np.float32)

    def physical(filled_n: torch.Tensor) -> np.ndarray:
        filled_n = filled_n.float()
        if loaded is not None:  # like sampling: stay in the training range so the inverse transforms stay finite
            from genesis.sampling import clip_range

            lo, hi = clip_range(loaded.state.get("data"), filled_n.device)
            filled_n = torch.maximum(torch.minimum(filled_n, hi), lo)
        out = postprocess(norm.denormalize_signal(filled_n.cpu(), torch.from_numpy(labels), geometry.positions).numpy())
        out[:, :, ~mask] = true_phys[:, :, ~mask]  # observed DOMs stay exactly as recorded
        return out

    filled_phys = physical(fills[method])
    masked_phys = true_phys.copy()
    masked_phys[:, :, mask] = 0.0
    ratios = improvement_ratios(metrics, method) if len(metrics) > 1 else {}
    return InpaintResult(masked_phys, filled_phys, true_phys, labels, mask, method, metrics, ratios, trace, seconds,
                         uncertainty, None if combined is None else {k: physical(v) for k, v in combined.items()})


def parse_events(spec: str, n_events: int) -> np.ndarray:
    """'0,5,9' or '0-9' (inclusive) -> sorted unique indices; out of range -> DataError."""
    try:
        idx: list[int] = []
        bad: list[int] = []
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            outside = [i for i in ((first, last) if sep else (first,)) if not 0 <= i < n_events]
            if outside:  # checked before a range is expanded: '0-1000000000000' must not fill memory
                bad.extend(outside)
                continue
            idx.extend(range(first, last + 1))
    except ValueError:
        raise DataError(f"--events {spec!r}: use comma-separated indices or ranges, e.g. 0,5,9 or 0-9") from None
    if bad or not idx:
        raise DataError(f"--events {spec!r}: indices must be in 0..{n_events - 1} (bad: {bad[:5]})")
    return np.unique(idx)


def inpaint_to_file(checkpoint_path: str | None, data: str, events: str, mask_spec: str, method: str, out: str,
                    *, steps: int = 200, restarts: int = 3, seed: int = 0, device: str = "auto", force: bool = False,
                    compare_baselines: bool = True) -> dict[str, Any]:
    """The `genesis inpaint` command: writes filled (as `input`), input_masked, input_true and mask."""
    import json

    from genesis import checkpoint
    from genesis.data import schema

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if Path(out).exists() and not force:
        raise DataError(f"{out}: file exists; choose another name or pass --force to overwrite")
    n, _, _ = schema.file_info(data)
    geometry = schema.read_geometry(data)
    idx = parse_events(events, n)
    mask = parse_mask(mask_spec, geometry, seed=seed)
    loaded = None
    if checkpoint_path:
        expect = METHOD_KIND.get(method)
        loaded = checkpoint.load_model(checkpoint_path, device=checkpoint.resolve_device(device), expect_kind=expect)
    signal, labels, _ = schema.read_events(data, indices=idx)
    bad = ~np.isfinite(labels).all(1)
    if bad.any():  # the labels condition the models and are written to the output
        raise DataError(f"{data}: dataset 'label' has NaN/inf at event {idx[bad][0]}; choose other --events or fix the file")
    result = inpaint_events(loaded, signal, labels, mask, method, geometry, steps=steps, restarts=restarts, seed=seed,
                            compare_baselines=compare_baselines)
    report = {"method": method, "events": idx.tolist(), "masked_doms": int(mask.sum()), "seconds": result.seconds,
              "metrics": result.metrics, "improvement_over": result.ratios}
    producer = {"producer": "genesis inpaint", "checkpoint": checkpoint_path, "method": method, "mask": mask_spec,
                "data": str(data), "events": idx.tolist(), "seed": seed, "metrics": report["metrics"]}
    extra = {"input_masked": result.masked, "input_true": result.true, "mask": mask}
    if result.uncertainty is not None:  # (N, 3, P): hit probability, npe spread [pe], time spread [ns]
        extra["uncertainty"] = result.uncertainty
    schema.write_events(out, result.filled, labels, geometry, producer=producer, force=force, extra=extra)
    return json.loads(json.dumps(report, default=float), parse_constant=lambda _: None)  # NaN -> null


# --- for the dashboard: expected time before a run, and the result in words ---------------------------
def _time_map(loaded, steps: int, x: torch.Tensor, mask: np.ndarray, labels: torch.Tensor,
              geometry_n: torch.Tensor) -> float:
    import time

    t0 = time.perf_counter()
    flow_map_fill(loaded.model, x, mask, labels, geometry_n, steps=steps, restarts=1,
                  generator=torch.Generator(device=x.device).manual_seed(0))
    return time.perf_counter() - t0


def time_flow_map(loaded, n_events: int = 1) -> tuple[float, float]:
    """(seconds per restart outside the steps, seconds per optimisation step) of flow-MAP inpainting of
    n_events with this flow checkpoint, from short timed runs on this machine (0 and 5 steps, after a
    warm-up), so it includes the device. A step costs the same whatever the mask: the flow sees every DOM."""
    model = loaded.model
    device = next(model.parameters()).device
    p = loaded.geometry.n_doms
    x = torch.zeros(n_events, 2, p, device=device)
    mask = np.zeros(p, dtype=bool)
    mask[: max(1, p // 100)] = True
    labels = torch.zeros(n_events, 6, device=device)
    geometry_n = loaded.normalization.normalize_geometry(torch.as_tensor(loaded.geometry.positions)).to(device).float()
    for _ in range(2):  # warm-up: the first calls allocate and are several times slower
        _time_map(loaded, 1, x, mask, labels, geometry_n)
    # the fastest of two tries of each: load from other processes only ever adds time
    start = min(_time_map(loaded, 0, x, mask, labels, geometry_n) for _ in range(2))  # sample + one evaluation
    five = min(_time_map(loaded, 5, x, mask, labels, geometry_n) for _ in range(2))
    return start, max((five - start) / 5, 0.0)


def estimate_flow_map_seconds(timing: tuple[float, float], steps: int, restarts: int) -> tuple[int, float]:
    """(optimisation steps in all, expected seconds) of flow MAP with `time_flow_map`'s timing."""
    per_restart, per_step = timing
    return steps * restarts, restarts * (per_restart + steps * per_step)


VERDICT_BASELINES = {"zero": "zero fill (dead DOMs)", "neighbours": "the neighbour mean on the string"}
VERDICT_TIE = 0.05  # MSE ratios within 5% of 1 count as "no better": the fill is indistinguishable


def inpaint_verdict(metrics_by_method: dict[str, dict], method: str) -> tuple[bool, str]:
    """(beat every baseline, one sentence) comparing `method`'s normalized MSE on the masked DOMs with
    the zero-fill and neighbour-mean baselines present in metrics_by_method (see inpaint_metrics)."""
    ratios = improvement_ratios(metrics_by_method, method)
    parts, beat_all = [], True
    for name, words in VERDICT_BASELINES.items():
        if name == method or name not in ratios:
            continue
        r = ratios[name]
        if math.isnan(r):
            beat_all = False
            parts.append(f"could not be compared with {words} (no error defined)")
        elif r > 1 + VERDICT_TIE:
            parts.append(f"beat {words} ({f'{r:.2f}x lower error' if math.isfinite(r) else 'no error left'})")
        elif r >= 1 - VERDICT_TIE:
            beat_all = False
            parts.append(f"was no better than {words} (error ratio {r:.2f})")
        elif r == 0:
            beat_all = False
            parts.append(f"was worse than {words} (exact here" + (": the masked DOMs recorded nothing)"
                                                                  if name == "zero" else ")"))
        else:
            beat_all = False
            parts.append(f"was worse than {words} ({1 / r:.2f}x higher error)")
    if not parts:
        return True, f"{method}: no baseline to compare with."
    return beat_all, f"{method} " + " and ".join(parts) + " on the masked DOMs."
