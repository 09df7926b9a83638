"""Live view of a training run that costs (almost) nothing: read only what the trainer appended to its log.

The trainer writes one line per logged step ("step 40/200 epoch 1 train/nll -3.9e4 lr 1.00e-03 410 ev/s")
and one per validation ("epoch 1 step 40 val/nll -3.8e4"), with the same metric names and values it sends
to MLflow (genesis.train). A watcher keeps a `LiveState` (file offset + points so far); `update()` stats
the file and, only when it grew, reads the new bytes. So a refresh while nothing changed is one stat()
call and no store query, and a refresh after new steps reads a few hundred bytes, never the whole history.
Runs without a local log (started elsewhere against a remote server) fall back to `mlflow_points`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd

from genesis import tracking

_TIME = r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
# train lines; "loss" is how logs before the naming by kind spelled train/loss
STEP_LINE = re.compile(_TIME + r" \w+ step (?P<step>\d+)/(?P<total>\d+) epoch \d+ (?P<key>train/\w+|loss) "
                       r"(?P<value>\S+) lr \S+ (?P<rate>\S+) ev/s")
VAL_LINE = re.compile(_TIME + r" \w+ epoch \d+ step (?P<step>\d+) (?P<key>val/\w+) (?P<value>\S+)")
RATE_WINDOW = 10  # logged steps the ETA's rate is measured over: recent enough to follow, long enough to be calm


@dataclass(frozen=True)
class Point:
    key: str  # metric name, e.g. train/loss, val/nll
    step: int
    value: float
    time: float  # seconds (the log's clock)


@dataclass(frozen=True)
class LiveState:
    """What a watcher knows of one run's log: read up to `offset`; the points found so far."""

    path: str
    offset: int = 0
    points: tuple[Point, ...] = ()
    total_steps: int = 0
    events_per_s: float = math.nan

    @property
    def step(self) -> int:
        return max((p.step for p in self.points if p.key.startswith("train/")), default=0)


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parse_lines(text: str) -> tuple[list[Point], int, float]:
    """Points in complete log lines, the last total step count seen (0: none) and the last events/s (NaN)."""
    points, total, rate = [], 0, math.nan
    for line in text.splitlines():
        if m := STEP_LINE.search(line):
            key = "train/loss" if m["key"] == "loss" else m["key"]
            total, rate = int(m["total"]), float(m["rate"])
        elif not (m := VAL_LINE.search(line)):
            continue
        else:
            key = m["key"]
        try:
            points.append(Point(key, int(m["step"]), float(m["value"]), _seconds(m["time"])))
        except ValueError:  # a value such as 'nan' parses; a torn line does not: skip it
            continue
    return points, total, rate


def update(state: LiveState, max_bytes: int = 8 << 20) -> tuple[LiveState, bool]:
    """The state after reading what was appended to its log since `state.offset`, and whether it changed.

    Only whole lines are consumed (a line being written is read next time). A log that shrank (rewritten)
    is read again from the start. At most `max_bytes` are read per call, so a huge log catches up in parts."""
    try:
        size = os.stat(state.path).st_size
    except OSError:
        return state, False
    if size == state.offset:
        return state, False
    if size < state.offset:
        state = LiveState(state.path)
    with open(state.path, "rb") as f:
        f.seek(state.offset)
        chunk = f.read(min(size - state.offset, max_bytes))
    end = chunk.rfind(b"\n") + 1
    if end == 0:
        return state, False
    points, total, rate = parse_lines(chunk[:end].decode(errors="replace"))
    new = replace(state, offset=state.offset + end, points=state.points + tuple(points),
                  total_steps=total or state.total_steps, events_per_s=rate if not math.isnan(rate) else state.events_per_s)
    return new, bool(points) or total != state.total_steps


def frame(state: LiveState) -> pd.DataFrame:
    """Long frame key, step, value, time of the points (one per key and step: DDP ranks log the same line)."""
    df = pd.DataFrame([p.__dict__ for p in state.points], columns=["key", "step", "value", "time"])
    return df.drop_duplicates(["key", "step"], keep="last").reset_index(drop=True)


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    events_per_s: float
    eta_s: float | None  # None until two logged steps give a rate

    @property
    def fraction(self) -> float:
        return min(self.step / self.total, 1.0) if self.total else 0.0

    def text(self) -> str:
        if not self.total:
            return "starting"
        parts = [f"step {self.step:,}/{self.total:,}"]
        if not math.isnan(self.events_per_s):
            parts.append(f"{self.events_per_s:,.0f} events/s")
        parts.append("ETA " + (format_duration(self.eta_s) if self.eta_s is not None else "…"))
        return " · ".join(parts)


def format_duration(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s} s"


def progress(state: LiveState, window: int = RATE_WINDOW) -> Progress:
    """Step, total, last events/s and the ETA from the rate over the last `window` logged steps (not since
    the start: start-up and validation pauses would distort it; not the last step alone: it would jump)."""
    train = sorted({p.step: p for p in state.points if p.key.startswith("train/")}.values(), key=lambda p: p.step)
    step, eta = (train[-1].step if train else 0), None
    recent = train[-(window + 1):]
    if len(recent) >= 2 and state.total_steps:
        dt, ds = recent[-1].time - recent[0].time, recent[-1].step - recent[0].step
        if dt > 0 and ds > 0:
            eta = (state.total_steps - step) * dt / ds
    return Progress(step, state.total_steps, state.events_per_s, eta)


def mlflow_points(store: tracking.Store, run_id: str, kind: str | None) -> pd.DataFrame:
    """The loss curves from MLflow (runs without a local log): same columns as `frame`."""
    parts = []
    for split in ("train", "val"):
        keys = [tracking.LOSS_KEYS[kind][split]] if kind in tracking.LOSS_KEYS else []
        for key in keys + [tracking.LEGACY_LOSS_KEYS[split]]:
            hist = store.metric_history(run_id, key)
            if not hist.empty:
                parts.append(hist.rename(columns={"timestamp": "time"}).assign(key=key))
                break
    if not parts:
        return pd.DataFrame(columns=["key", "step", "value", "time"])
    return pd.concat(parts)[["key", "step", "value", "time"]].reset_index(drop=True)


REFRESH_ENV = "GENESIS_LIVE_REFRESH_S"
REFRESH_CHOICES = (5.0, 10.0, 30.0)


def default_refresh_s() -> float:
    """Seconds between live refreshes: $GENESIS_LIVE_REFRESH_S, else 5 (clamped to 1..600)."""
    try:
        value = float(os.environ.get(REFRESH_ENV, "5"))
    except ValueError:
        value = 5.0
    return min(max(value, 1.0), 600.0)
