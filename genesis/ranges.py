"""Training ranges a checkpoint records, and how labels and datasets compare with them.

Every checkpoint since the hit representation carries, in its `data` record (genesis.data.dataset.value_ranges),
the physical ranges of its training events: label_min / label_max (6 labels: energy GeV, zenith rad, azimuth
rad, vertex x, y, z m) and hit_npe_min / hit_npe_max (pe), hit_time_min / hit_time_max (ns) of the hit DOMs.
A model is only known to work inside them: outside, it extrapolates. This module is the one place that says so:

- `label_warnings(labels, record)`: plain-words warnings for labels outside the ranges (Sample page, the
  sampler and the CLI; they warn, never refuse);
- `event_warnings(loaded, data_path, index)`: the same for one dataset event, labels and hits (Inpaint page);
- `dataset_report(record, data_path)`: the share of a dataset's events whose labels or hits fall outside,
  per label and per signal channel (Checkpoints > Compare with a dataset).

A value counts as outside when it lies beyond the range by more than TOLERANCE of the range's span (energy
and hit npe on a log10 scale), so zenith 0 against a training minimum of 0.009 rad does not raise a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOLERANCE = 0.01  # share of a range's span (log10 span for energy) a value may lie beyond it unremarked
READ_CHUNK = 512  # events read at a time by dataset_report
MAX_REPORT_EVENTS = 20_000  # dataset_report looks at the first this many events of a file
LABELS = (("energy", "GeV"), ("zenith", "rad"), ("azimuth", "rad"), ("vertex x", "m"), ("vertex y", "m"),
          ("vertex z", "m"))
SIGNALS = (("hit npe", "pe", "hit_npe"), ("hit time", "ns", "hit_time"))  # (name, unit, record key prefix)
LOG_SCALE = {"energy", "hit npe"}  # heavy-tailed: compared on a log10 scale


@dataclass(frozen=True)
class Range:
    """One quantity's training range [lo, hi] in `unit`; `log`: compared on a log10 scale."""

    name: str
    unit: str
    lo: float
    hi: float
    log: bool = False

    def _scaled(self, values: np.ndarray) -> tuple[np.ndarray, float, float]:
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log10(np.maximum(values, 1e-30)), math.log10(max(self.lo, 1e-30)), math.log10(max(self.hi, 1e-30))
        return values, self.lo, self.hi

    def below_above(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean arrays (like values): below the range, above it (beyond TOLERANCE of its span)."""
        v, lo, hi = self._scaled(np.asarray(values, np.float64))
        slack = TOLERANCE * max(hi - lo, 1e-12)
        return v < lo - slack, v > hi + slack

    def text(self) -> str:
        """'1,000 to 9.99e+06 GeV'."""
        return f"{fmt(self.lo)} to {fmt(self.hi)} {self.unit}"


def fmt(x: float) -> str:
    """A number as people read it: 1,000 / 3.5 / 0.0085 / 9.99e+06."""
    x = float(x)
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


@dataclass(frozen=True)
class TrainingRanges:
    """The ranges of a checkpoint's `data` record: 6 labels, and the hit npe / time when recorded."""

    labels: tuple[Range, ...]
    signals: tuple[Range, ...]

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> "TrainingRanges | None":
        """None when the record holds no label ranges (checkpoints from before they were recorded)."""
        record = record or {}
        lo, hi = record.get("label_min"), record.get("label_max")
        if lo is None or hi is None or len(lo) != len(LABELS) or len(hi) != len(LABELS):
            return None
        labels = tuple(Range(name, unit, float(a), float(b), name in LOG_SCALE)
                       for (name, unit), a, b in zip(LABELS, lo, hi))
        signals = tuple(Range(name, unit, float(record[f"{key}_min"]), float(record[f"{key}_max"]), name in LOG_SCALE)
                        for name, unit, key in SIGNALS if f"{key}_min" in record and f"{key}_max" in record)
        return cls(labels, signals)


def record_of(source: Any) -> dict[str, Any]:
    """The `data` record of a loaded checkpoint (checkpoint.LoadedModel), a checkpoint state dict or an
    inspect report (its provenance.data); {} when there is none."""
    state = getattr(source, "state", source)
    if not isinstance(state, dict):
        return {}
    if "provenance" in state and "format" not in state:  # an inspect report
        return dict((state.get("provenance") or {}).get("data") or {})
    return dict(state.get("data") or {})


# --------------------------------------------------------------------------------------------- labels
def label_warnings(labels: np.ndarray, record: dict[str, Any] | None) -> list[str]:
    """Plain-words warnings, one per label with values outside the training range; [] when all lie inside
    or the checkpoint records no ranges. labels: (N, 6) physical."""
    ranges = TrainingRanges.from_record(record)
    labels = np.asarray(labels, np.float64).reshape(-1, len(LABELS))
    if ranges is None or not len(labels):
        return []
    out = []
    for i, rng in enumerate(ranges.labels):
        below, above = rng.below_above(labels[:, i])
        if below.any() or above.any():
            out.append(_label_sentence(rng, labels[:, i], below, above))
    return out


def _label_sentence(rng: Range, values: np.ndarray, below: np.ndarray, above: np.ndarray) -> str:
    """'The requested energy 10 GeV lies below the range this checkpoint was trained on (1,000 to ...)'."""
    n, outside = len(values), int((below | above).sum())
    side = "below" if not above.any() else "above" if not below.any() else "outside"
    asked = values[below | above]
    value = f"{fmt(asked[0])} {rng.unit}" if np.ptp(asked) == 0 else f"{fmt(asked.min())} to {fmt(asked.max())} {rng.unit}"
    trained = f"the range this checkpoint was trained on ({rng.text()})"
    if outside == n == 1:
        what = f"The requested {rng.name} {value} lies {side} {trained}"
    elif outside == n:
        what = f"All {n:,} requested events have {rng.name} {value}, {side} {trained}"
    else:
        what = f"{outside:,} of {n:,} requested events have {rng.name} {side} {trained}: {value}"
    return f"{what}. The model has never seen such events and extrapolates there; treat the result with care."


# --------------------------------------------------------------------------------------------- signals
def _signal_outside(signal: np.ndarray, rng: Range, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """Per event (N,): any hit DOM below / above the range of signal channel `channel` (0 npe, 1 time)."""
    hit = signal[:, 0] > 0
    below, above = rng.below_above(signal[:, channel])
    return (below & hit).any(1), (above & hit).any(1)


def event_warnings(source: Any, data_path: str | Path, index: int) -> list[str]:
    """Plain-words warnings for event `index` of a dataset compared with a checkpoint (`source`: a loaded
    checkpoint, its state or an inspect report): labels outside the training ranges, and hit npe or times
    outside the training hits'. [] when everything lies inside or nothing is recorded."""
    from genesis.data import schema

    record = record_of(source)
    ranges = TrainingRanges.from_record(record)
    if ranges is None:
        return []
    signal, labels, _ = schema.read_events(data_path, indices=np.array([int(index)]))
    out = [m.replace("The requested", "This event's") for m in label_warnings(labels, record)]
    hit = signal[0, 0] > 0
    for channel, rng in enumerate(ranges.signals):
        values = signal[0, channel][hit]
        below, above = rng.below_above(values)
        if below.any() or above.any():
            side = "below" if not above.any() else "above" if not below.any() else "outside"
            out.append(f"{int((below | above).sum()):,} of this event's {int(hit.sum()):,} hit DOMs have {rng.name} "
                       f"{side} the range of the training hits ({rng.text()}; here "
                       f"{fmt(values[below | above].min())} to {fmt(values[below | above].max())} {rng.unit}): "
                       "the model extrapolates there.")
    return out


# --------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class RangeReport:
    """A dataset compared with a checkpoint's training ranges.

    table: one row per quantity (labels, then hit npe and time): training range, the data's range (over
    hit DOMs for the signals), events below / above / outside and their share. n_events: events looked at
    (the first MAX_REPORT_EVENTS); n_total: events in the file; n_outside: events with any label or hit
    outside; recorded: False when the checkpoint records no ranges (then the table is empty).
    """

    table: pd.DataFrame
    n_events: int
    n_total: int
    n_outside: int
    recorded: bool
    signals_recorded: bool

    @property
    def share(self) -> float:
        return self.n_outside / self.n_events if self.n_events else 0.0

    def outside(self) -> pd.DataFrame:
        """The rows of quantities with any event outside."""
        return self.table[self.table["events outside"] > 0]

    def summary(self, name: str = "the dataset") -> str:
        """One paragraph in words."""
        if not self.recorded:
            return ("This checkpoint records no training ranges (it predates them, or is not a GENESIS checkpoint): "
                    f"{name} cannot be compared with them.")
        scope = f"{self.n_events:,} events" if self.n_events == self.n_total else \
            f"the first {self.n_events:,} of {self.n_total:,} events"
        if not self.n_outside:
            return f"All {scope} of {name} lie within the ranges this checkpoint was trained on."
        which = "; ".join(f"{r['quantity']} ({r['share outside']:.0%}: data {r['data range']}, training "
                          f"{r['training range']})" for _, r in self.outside().iterrows())
        count = f"All {scope}" if self.n_outside == self.n_events else f"{self.n_outside:,} of {scope} ({self.share:.0%})"
        return (f"{count} of {name} lie outside the ranges this checkpoint "
                f"was trained on: {which}. The model has never seen such events; its samples, likelihoods and "
                "inpainting there are extrapolations.")


def dataset_report(record: dict[str, Any] | None, data_path: str | Path,
                   max_events: int = MAX_REPORT_EVENTS) -> RangeReport:
    """Compare the first `max_events` events of an HDF5 dataset with a checkpoint's `data` record (see
    record_of). Labels per event; signals per event over its hit DOMs (npe > 0). Reads in chunks."""
    from genesis.data import schema

    n_total, _, _ = schema.file_info(data_path)
    ranges = TrainingRanges.from_record(record)
    if ranges is None:
        return RangeReport(pd.DataFrame(), 0, n_total, 0, False, False)
    n = min(n_total, max_events)
    quantities = list(ranges.labels) + list(ranges.signals)
    below = {q.name: np.zeros(n, bool) for q in quantities}
    above = {q.name: np.zeros(n, bool) for q in quantities}
    seen = {q.name: [math.inf, -math.inf] for q in quantities}
    for start in range(0, n, READ_CHUNK):
        signal, labels, _ = schema.read_events(data_path, start, min(start + READ_CHUNK, n))
        part = slice(start, start + len(labels))
        for i, rng in enumerate(ranges.labels):
            below[rng.name][part], above[rng.name][part] = rng.below_above(labels[:, i])
            _widen(seen[rng.name], labels[:, i])
        for channel, rng in enumerate(ranges.signals):
            below[rng.name][part], above[rng.name][part] = _signal_outside(signal, rng, channel)
            _widen(seen[rng.name], signal[:, channel][signal[:, 0] > 0])
    rows = []
    for q in quantities:
        b, a = below[q.name], above[q.name]
        lo, hi = seen[q.name]
        rows.append({"quantity": q.name, "unit": q.unit, "training range": q.text(),
                     "data range": f"{fmt(lo)} to {fmt(hi)} {q.unit}" if lo <= hi else "no hits",
                     "events below": int(b.sum()), "events above": int(a.sum()), "events outside": int((b | a).sum()),
                     "share outside": float((b | a).mean()) if n else 0.0})
    any_outside = np.zeros(n, bool)
    for q in quantities:
        any_outside |= below[q.name] | above[q.name]
    return RangeReport(pd.DataFrame(rows), n, n_total, int(any_outside.sum()), True, bool(ranges.signals))


def _widen(seen: list[float], values: np.ndarray) -> None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size:
        seen[0], seen[1] = min(seen[0], float(values.min())), max(seen[1], float(values.max()))
