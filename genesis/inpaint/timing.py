"""Expected time of an inpainting run, before it starts: from a short timed warm-up on this machine now (its
device and its present load), widened by the rate of the last run of the same method and checkpoint, and
shown as a range (a shared machine's speed changes from one minute to the next)."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch

from genesis.inpaint.flow_map import flow_map_fill
from genesis.inpaint.repaint import REPAINT_JUMP_LENGTH, REPAINT_RESAMPLE, repaint_evaluations

TRIES = 3  # timed tries of each warm-up measurement; their spread is the spread of the estimate
LOAD_MARGIN = (0.8, 2.0)  # estimates widened for a machine whose load changes (2 shared cores swing 2x); Sample too
SLOW_SECONDS = 60.0  # expected times above this come with a hint to lower the steps


class TimeRange(NamedTuple):
    """Expected seconds of a run: low (the fastest try of the warm-up) and high (the slowest, or the last run)."""

    low: float
    high: float

    def widened(self, rate: float | None, units: int) -> "TimeRange":
        """The range stretched to hold `units` of work at `rate` seconds per unit (the last run's; None: as is)."""
        if rate is None or not rate > 0:
            return self
        return TimeRange(min(self.low, rate * units), max(self.high, rate * units))

    def with_margin(self, margin: tuple[float, float] = LOAD_MARGIN) -> "TimeRange":
        return TimeRange(self.low * margin[0], self.high * margin[1])

    def text(self) -> str:
        return " to ".join(f"{v:,.0f} s" if v >= 10 else f"{v:.2g} s" for v in self)


def _time_map(loaded, steps: int, x: torch.Tensor, mask: np.ndarray, labels: torch.Tensor,
              geometry_n: torch.Tensor) -> float:
    t0 = time.perf_counter()
    flow_map_fill(loaded.model, x, mask, labels, geometry_n, steps=steps, restarts=1,
                  generator=torch.Generator(device=x.device).manual_seed(0))
    return time.perf_counter() - t0


def time_flow_map_tries(loaded, n_events: int = 1, tries: int = TRIES) -> list[tuple[float, float]]:
    """[(seconds per restart outside the steps, seconds per optimisation step)] of flow-MAP inpainting of
    n_events with this flow checkpoint, one pair per timed try (0 and 5 steps, after a warm-up). A step costs
    the same whatever the mask: the flow sees every DOM."""
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
    out = []
    for _ in range(tries):
        start = _time_map(loaded, 0, x, mask, labels, geometry_n)  # sample + one evaluation
        five = _time_map(loaded, 5, x, mask, labels, geometry_n)
        out.append((start, max((five - start) / 5, 0.0)))
    return out


def time_flow_map(loaded, n_events: int = 1) -> tuple[float, float]:
    """(seconds per restart outside the steps, seconds per step) of the fastest of two tries of
    `time_flow_map_tries` (load from other processes only ever adds time)."""
    tries = time_flow_map_tries(loaded, n_events, tries=2)
    return min(t[0] for t in tries), min(t[1] for t in tries)


def estimate_flow_map_seconds(timing: tuple[float, float], steps: int, restarts: int) -> tuple[int, float]:
    """(optimisation steps in all, expected seconds) of flow MAP with one (per restart, per step) timing."""
    per_restart, per_step = timing
    return steps * restarts, restarts * (per_restart + steps * per_step)


def flow_map_range(tries: list[tuple[float, float]], steps: int, restarts: int) -> tuple[int, TimeRange]:
    """(optimisation steps in all, expected seconds from the fastest to the slowest try of the warm-up)."""
    seconds = [estimate_flow_map_seconds(t, steps, restarts)[1] for t in tries]
    return steps * restarts, TimeRange(min(seconds), max(seconds))


def time_repaint_tries(loaded, n_events: int = 1, tries: int = TRIES) -> list[float]:
    """Seconds of one RePaint network evaluation on n_events with this diffusion checkpoint, one per timed try
    (after a warm-up), so it includes the device and its present load."""
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
    out = []
    for _ in range(tries):
        t0 = time.perf_counter()
        repaint_sample(*args, steps=1, jump_length=1, resample=1)
        out.append(time.perf_counter() - t0)
    return out


def estimate_repaint_seconds(loaded, n_events: int, steps: int, jump_length: int = REPAINT_JUMP_LENGTH,
                             resample: int = REPAINT_RESAMPLE) -> tuple[int, float]:
    """(network evaluations, expected seconds) of RePaint on n_events with this diffusion checkpoint, from
    one timed evaluation on this machine."""
    evaluations = repaint_evaluations(steps, jump_length, resample)
    return evaluations, evaluations * time_repaint_tries(loaded, n_events, tries=1)[0]


def repaint_range(tries: list[float], steps: int, jump_length: int = REPAINT_JUMP_LENGTH,
                  resample: int = REPAINT_RESAMPLE) -> tuple[int, TimeRange]:
    """(network evaluations, expected seconds from the fastest to the slowest timed evaluation)."""
    evaluations = repaint_evaluations(steps, jump_length, resample)
    return evaluations, TimeRange(evaluations * min(tries), evaluations * max(tries))


def expected_time_text(device: str, n_masked: int, expected: TimeRange, work: str, last_rate: bool = False) -> str:
    """One line shown before inpainting starts: the expected time range and what it is made of."""
    source = "a timed warm-up on this machine now" + (" and the last run's speed" if last_rate else "")
    text = (f"Expected time: **{expected.text()}** on {device} for {n_masked:,} masked DOMs ({work}; from {source}; "
            "the zero and neighbour baselines add well under a second).")
    if expected.high > SLOW_SECONDS:
        text += " Lower the steps or restarts for a quicker first look."
    return text


def work_units(method: str, steps: int, restarts: int = 1) -> tuple[int, str]:
    """(units of work, in words) of a model method's run: flow-MAP steps x restarts, or RePaint network evaluations."""
    if method == "flow-map":
        total = steps * restarts
        return total, f"{steps} steps x {restarts} restarts = {total:,} flow evaluations"
    total = repaint_evaluations(steps)
    return total, f"{total:,} network evaluations"


def expected_seconds(method: str, tries: list, steps: int, restarts: int = 1, last_rate: float | None = None
                     ) -> TimeRange:
    """Expected seconds of a flow-MAP or RePaint run from its warm-up tries (`time_flow_map_tries`,
    `time_repaint_tries`), widened by the rate (seconds per unit of `work_units`) of the last run, if any, and by
    LOAD_MARGIN for a machine whose load changes."""
    units = work_units(method, steps, restarts)[0]
    expected = flow_map_range(tries, steps, restarts)[1] if method == "flow-map" else repaint_range(tries, steps)[1]
    return expected.widened(last_rate, units).with_margin()
