"""Per-channel normalization of signal, geometry and labels, and its metadata.

x_n = (T(x) - offset) / scale for 5 signal/geometry channels [npe, time, x, y, z] and 6 label channels
[energy, zenith, azimuth, x, y, z]. T is the identity except for:
- time: 'ln' = ln(1 + t) (default), 'log10' = log10(1 + t), 'none', or 'asinh' = asinh((t - c) / w) with
  c = time_center_ns and w = time_width_ns: linear within ~w of c, logarithmic beyond on both sides;
- npe: 'none' (default, as in the original GENESIS) or 'log1p';
- energy: 'none' (default) or 'log10'.
Negative times are clipped to 0 before a log transform (no-hit DOMs carry time 0).

Representation (what the models see per DOM):
- 'legacy': 2 channels [npe_n, time_n]; a DOM without a hit carries the normalized value of npe 0 and
  time 0 (a far-away sentinel for linear times). Whether a sample hit a DOM is decided from npe alone.
- 'hit': 3 channels [hit, npe_n, time_n]: hit = +1 / -1; npe_n and time_n as above where the DOM is hit
  and 0 (a neutral, in-distribution value) where it is not. A sample hits a DOM where hit > 0, so its
  time and npe can never disagree with it; losses on npe_n and time_n count hit DOMs only.

Time reference ('hit' representation only):
- 'none': the time channel is the first-hit time t itself;
- 'arrival': it is t - t_direct, where t_direct is the expected arrival of direct Cherenkov light at the DOM
  for the event's labels (genesis.physics.arrival_time_ns, ns after the vertex time, for the refractive
  index `refractive_index`: the data's simulator setting; checkpoints from before it read 1.32). Models then
  learn the delay (scattering, ~0..2 us), not the whole geometry of the light front. Normalizing and
  denormalizing such events needs their physical labels and the DOM positions (events without any hit do
  not, since only hit DOMs carry a time).
  With 'asinh' and c at the vertex time, the delay's long scattering tail (median ~400 ns, 99th percentile
  ~2.7 us in the simulator) and its early noise hits become about symmetric, so a model that predicts near
  the conditional mean is no longer biased late; linear delays within ~w ns stay resolved.

Npe reference ('hit' representation with npe 'log1p' only):
- 'none': the npe channel is log1p(npe);
- 'expected': it is log1p(npe) - log1p(m), where m is the mean charge of a hit DOM expected for the event's
  labels at that DOM (genesis.physics.hit_npe_reference: about 1 pe for dark DOMs, the expected light for
  bright ones). Models then learn how much brighter or darker a DOM is than the light path predicts,
  whose spread on the simulator's events is 0.49 against 1.63 for log1p(npe) and whose mean moves 0.3
  across four decades of energy against 1.4; a model that under-learns the energy dependence of the charge
  errs by a fraction of that. Needs the labels and positions as the time reference does.

Every model stores this as metadata (buffers + extra state) so a checkpoint alone can denormalize.
Functions accept numpy arrays or torch tensors and return the same type.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from genesis.errors import ConfigError
from genesis.physics import DEFAULT_REFRACTIVE_INDEX, arrival_time_ns, hit_npe_reference

TIME_TRANSFORMS = ("ln", "log10", "none", "asinh")
NPE_TRANSFORMS = ("none", "log1p")
ENERGY_TRANSFORMS = ("none", "log10")
REPRESENTATIONS = ("legacy", "hit")
TIME_REFERENCES = ("none", "arrival")
NPE_REFERENCES = ("none", "expected")

ORIGINAL_AFFINE_OFFSETS = (0.0, 0.0, -600.0, -550.0, -550.0)
ORIGINAL_AFFINE_SCALES = (200.0, 10.0, 1200.0, 1100.0, 1100.0)
ORIGINAL_LABEL_OFFSETS = (0.0, 0.0, 0.0, -600.0, -550.0, -550.0)
ORIGINAL_LABEL_SCALES = (1e8, math.pi, 2 * math.pi, 1200.0, 1100.0, 1100.0)

Array = Any  # np.ndarray | torch.Tensor


def _lib(x: Array):
    return torch if isinstance(x, torch.Tensor) else np


def _stack(parts: list, axis: int, squeeze: bool = False) -> Array:
    """np.stack / torch.stack (or concatenate when the parts keep their axis: squeeze=True)."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, axis) if squeeze else torch.stack(parts, axis)
    return np.concatenate(parts, axis) if squeeze else np.stack(parts, axis)


def _const(values, like: Array) -> Array:
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype if like.dtype.kind == "f" else np.float32)


def forward_time(t: Array, transform: str, center: float = 0.0, width: float = 1.0) -> Array:
    """Time transform T(t) of the module doc; center and width (ns) are used by 'asinh' only."""
    lib = _lib(t)
    if transform == "none":
        return t
    if transform == "asinh":
        return lib.arcsinh((t - center) / width)
    t = lib.clip(t, 0, None) if lib is np else t.clamp_min(0)
    out = lib.log1p(t)
    return out / math.log(10) if transform == "log10" else out


def inverse_time(y: Array, transform: str, center: float = 0.0, width: float = 1.0) -> Array:
    """Inverse of forward_time (for 'ln'/'log10': of the times >= 0 it keeps)."""
    lib = _lib(y)
    if transform == "none":
        return y
    if transform == "asinh":
        return center + width * lib.sinh(y)
    y = y * math.log(10) if transform == "log10" else y
    return lib.expm1(y)


def forward_npe(q: Array, transform: str) -> Array:
    if transform == "none":
        return q
    lib = _lib(q)
    return lib.log1p(lib.clip(q, 0, None) if lib is np else q.clamp_min(0))


def inverse_npe(y: Array, transform: str) -> Array:
    return y if transform == "none" else _lib(y).expm1(y)


def denormalize_signal(
    x: Array,
    offsets: Array,
    scales: Array,
    time_transform: str = "ln",
    npe_transform: str = "none",
    time_center: float = 0.0,
    time_width: float = 1.0,
) -> Array:
    """Normalized signal (..., 2, P) -> physical npe and time (..., 2, P).

    offsets, scales: the first two of the 5 affine channels are used (npe, time); time_center and
    time_width: those of an 'asinh' time transform.
    """
    off = _const(offsets, x)[:2].reshape(2, 1)
    sc = _const(scales, x)[:2].reshape(2, 1)
    y = x * sc + off
    npe = inverse_npe(y[..., 0, :], npe_transform)
    time = inverse_time(y[..., 1, :], time_transform, time_center, time_width)
    return _lib(x).stack([npe, time], -2) if _lib(x) is np else torch.stack([npe, time], -2)


@dataclass(frozen=True)
class Normalization:
    """Offsets, scales and transforms for signal, geometry and labels (the original defaults)."""

    affine_offsets: tuple[float, ...] = ORIGINAL_AFFINE_OFFSETS
    affine_scales: tuple[float, ...] = ORIGINAL_AFFINE_SCALES
    label_offsets: tuple[float, ...] = ORIGINAL_LABEL_OFFSETS
    label_scales: tuple[float, ...] = ORIGINAL_LABEL_SCALES
    time_transform: str = "ln"
    npe_transform: str = "none"
    energy_transform: str = "none"
    representation: str = "legacy"
    time_reference: str = "none"
    npe_reference: str = "none"
    time_center_ns: float = 0.0  # 'asinh' time transform only: its centre and linear width (module doc)
    time_width_ns: float = 100.0
    refractive_index: float = DEFAULT_REFRACTIVE_INDEX  # of the direct light of time_reference 'arrival'

    def __post_init__(self) -> None:
        for name, n in (("affine_offsets", 5), ("affine_scales", 5), ("label_offsets", 6), ("label_scales", 6)):
            try:
                value = tuple(float(v) for v in getattr(self, name))
            except (TypeError, ValueError):
                raise ConfigError(f"normalization.{name} must be {n} finite numbers, got {getattr(self, name)!r}") from None
            if len(value) != n or not all(math.isfinite(v) for v in value):
                raise ConfigError(f"normalization.{name} must be {n} finite numbers, got {list(value)}")
            object.__setattr__(self, name, value)
        for name in ("time_center_ns", "time_width_ns", "refractive_index"):
            try:
                object.__setattr__(self, name, float(getattr(self, name)))
            except (TypeError, ValueError):
                raise ConfigError(f"normalization.{name} must be a number, got {getattr(self, name)!r}") from None
        if not (math.isfinite(self.time_center_ns) and math.isfinite(self.time_width_ns) and self.time_width_ns > 0):
            raise ConfigError(f"normalization.time_center_ns must be finite and time_width_ns positive, got "
                              f"{self.time_center_ns}, {self.time_width_ns}")
        if not (math.isfinite(self.refractive_index) and self.refractive_index > 1.0):
            raise ConfigError(f"normalization.refractive_index must be above 1 (no Cherenkov light otherwise), got "
                              f"{self.refractive_index}")
        if any(s == 0 for s in self.affine_scales + self.label_scales):
            raise ConfigError("normalization scales must be non-zero")
        for name, allowed in (
            ("time_transform", TIME_TRANSFORMS),
            ("npe_transform", NPE_TRANSFORMS),
            ("energy_transform", ENERGY_TRANSFORMS),
            ("representation", REPRESENTATIONS),
            ("time_reference", TIME_REFERENCES),
            ("npe_reference", NPE_REFERENCES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"normalization.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.time_reference != "none" and (self.representation != "hit" or self.time_transform not in ("none", "asinh")):
            raise ConfigError(f"normalization.time_reference '{self.time_reference}' needs representation 'hit' and "
                              f"time_transform 'none' or 'asinh' (got '{self.representation}', '{self.time_transform}')")
        if self.npe_reference != "none" and (self.representation != "hit" or self.npe_transform != "log1p"):
            raise ConfigError(f"normalization.npe_reference '{self.npe_reference}' needs representation 'hit' and "
                              f"npe_transform 'log1p' (got '{self.representation}', '{self.npe_transform}')")

    # --- signal ---------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Signal channels the models see: 2 ('legacy') or 3 ('hit')."""
        return 3 if self.representation == "hit" else 2

    def forward_time(self, t: Array) -> Array:
        """T(t) of hit times (after the time reference's shift), before the affine map."""
        return forward_time(t, self.time_transform, self.time_center_ns, self.time_width_ns)

    def time_shift(self, x: Array, labels: Array | None, positions: Array | None) -> Array | float:
        """What the time channel is measured from, (..., P) ns for events x (..., C, P) with physical
        labels (..., 6) and positions (P, 3) m: 0 for time_reference 'none', else the direct-light arrival."""
        if self.time_reference == "none":
            return 0.0
        return self._per_dom(arrival_time_ns, "time_reference 'arrival'", x, labels, positions)

    def npe_shift(self, x: Array, labels: Array | None, positions: Array | None) -> Array | float:
        """What the log1p npe channel is measured from, (..., P), for events x (..., C, P) with physical
        labels (..., 6) and positions (P, 3) m: 0 for npe_reference 'none', else log1p of the expected
        charge of a hit DOM (module doc)."""
        if self.npe_reference == "none":
            return 0.0
        return self._per_dom(hit_npe_reference, "npe_reference 'expected'", x, labels, positions)

    def _per_dom(self, reference, what: str, x: Array, labels: Array | None, positions: Array | None) -> Array:
        """reference(labels (B, 6), positions (P, 3), refractive index) -> (B, P), for labels (..., 6), in x's
        array type, device and float dtype: (..., P)."""
        if labels is None or positions is None:
            raise ValueError(f"normalization.{what} needs the events' physical labels and the DOM positions to "
                             "normalize or denormalize them")
        lab = torch.as_tensor(labels).double()
        shift = reference(lab.reshape(-1, 6), torch.as_tensor(positions).to(lab).double(), self.refractive_index)
        shift = shift.reshape(*lab.shape[:-1], -1)
        if isinstance(x, torch.Tensor):
            return shift.to(device=x.device, dtype=x.dtype)
        return shift.cpu().numpy().astype(x.dtype if x.dtype.kind == "f" else np.float32)

    def normalize_signal(self, x: Array, labels: Array | None = None, positions: Array | None = None) -> Array:
        """Physical (..., 2, P) npe/time -> normalized (..., C, P), C = self.channels.
        labels (..., 6) physical and positions (P, 3): needed for time_reference 'arrival' (module doc)."""
        lib = _lib(x)
        hit = x[..., 0:1, :] > 0
        t = x[..., 1, :]
        npe = forward_npe(x[..., 0, :], self.npe_transform)
        if bool(hit.any()):
            t = t - self.time_shift(x, labels, positions)
            npe = npe - self.npe_shift(x, labels, positions)
        time = self.forward_time(t)
        y = _stack([npe, time], -2)
        off = _const(self.affine_offsets[:2], y).reshape(2, 1)
        sc = _const(self.affine_scales[:2], y).reshape(2, 1)
        y = (y - off) / sc
        if self.representation == "legacy":
            return y
        zero = lib.zeros_like(y[..., :1, :])
        return _stack([lib.where(hit, zero + 1, zero - 1), *(lib.where(hit, y[..., c:c + 1, :], zero) for c in (0, 1))],
                      -2, squeeze=True)

    def denormalize_signal(self, x: Array, labels: Array | None = None, positions: Array | None = None) -> Array:
        """Normalized (..., C, P) -> physical npe/time (..., 2, P). 'hit': DOMs with hit <= 0 get npe 0 and
        time 0; no other clipping (see sampling). labels, positions: as for normalize_signal."""
        if self.representation == "legacy":
            return denormalize_signal(x, self.affine_offsets, self.affine_scales, self.time_transform, self.npe_transform,
                                      self.time_center_ns, self.time_width_ns)
        lib = _lib(x)
        phys = denormalize_signal(x[..., 1:, :], self.affine_offsets, self.affine_scales, self.time_transform,
                                  self.npe_transform, self.time_center_ns, self.time_width_ns)
        hit = x[..., 0:1, :] > 0
        if bool(hit.any()):
            npe = phys[..., 0, :]
            if self.npe_reference != "none":  # log1p(npe) = y + s, so 1 + npe = (1 + expm1(y)) exp(s)
                npe = (1 + npe) * lib.exp(self.npe_shift(phys, labels, positions)) - 1
            phys = _stack([npe, phys[..., 1, :] + self.time_shift(phys, labels, positions)], -2)
        return lib.where(hit, phys, lib.zeros_like(phys))

    def dequantize_npe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalized 'hit' events (B, 3, P) of whole-pe data -> the same with npe + u, u ~ U(0, 1), at every hit
        DOM (npe_reference 'none'): the floor of the dequantized npe gives back the count, so a model learns a
        density on [n, n + 1) instead of a point mass at n, which a smooth network blurs across the rounding
        boundaries (diffusion.dequantize_npe)."""
        hit = x[:, :1] > 0
        off, sc = self.affine_offsets[0], self.affine_scales[0]
        npe = inverse_npe(x[:, 1:2] * sc + off, self.npe_transform)
        u = torch.rand(npe.shape, generator=generator, device=x.device, dtype=x.dtype)
        y = (forward_npe(npe + u, self.npe_transform) - off) / sc
        return torch.cat([x[:, :1], torch.where(hit, y, x[:, 1:2]), x[:, 2:]], 1)

    # --- geometry -------------------------------------------------------------------------------
    def normalize_geometry(self, positions: Array) -> Array:
        """(P, 3) metres -> (3, P) normalized geometry channels."""
        off = _const(self.affine_offsets[2:], positions)
        sc = _const(self.affine_scales[2:], positions)
        return ((positions - off) / sc).T

    # --- labels ---------------------------------------------------------------------------------
    def normalize_labels(self, labels: Array) -> Array:
        """(..., 6) physical labels -> normalized (..., 6)."""
        lib = _lib(labels)
        energy = labels[..., :1]
        if self.energy_transform == "log10":
            energy = lib.log10(lib.clip(energy, 1e-9, None) if lib is np else energy.clamp_min(1e-9))
        y = lib.concatenate([energy, labels[..., 1:]], -1) if lib is np else torch.cat([energy, labels[..., 1:]], -1)
        return (y - _const(self.label_offsets, y)) / _const(self.label_scales, y)

    def denormalize_labels(self, labels_n: Array) -> Array:
        """Normalized (..., 6) -> physical labels (..., 6)."""
        lib = _lib(labels_n)
        y = labels_n * _const(self.label_scales, labels_n) + _const(self.label_offsets, labels_n)
        if self.energy_transform == "log10":
            energy = 10 ** y[..., :1]
            y = lib.concatenate([energy, y[..., 1:]], -1) if lib is np else torch.cat([energy, y[..., 1:]], -1)
        return y

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown normalization key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()})

    def differences(self, other: "Normalization", rtol: float = 1e-3) -> list[str]:
        """Human-readable list of fields where two normalizations disagree."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, tuple):
                if not np.allclose(a, b, rtol=rtol, atol=1e-6):
                    out.append(f"{f.name}: {list(a)} vs {list(b)}")
            elif a != b:
                out.append(f"{f.name}: {a} vs {b}")
        return out


def suggest(signal_sample: np.ndarray, labels: np.ndarray, positions: np.ndarray, base: Normalization) -> Normalization:
    """Offsets/scales from data: signal (N, 2, P) physical, labels (N, 6), positions (P, 3).

    Keeps base's transforms; maps hit npe/time to about [0, 1] (99.9th percentile) and geometry and
    vertices to [0, 1] over their range, like the original defaults.
    """
    npe = signal_sample[:, 0]
    hit = npe > 0
    t_npe = ((forward_npe(npe, base.npe_transform) - base.npe_shift(signal_sample, labels, positions))[hit]
             if hit.any() else np.ones(1))
    t = signal_sample[:, 1] - base.time_shift(signal_sample, labels, positions) if hit.any() else signal_sample[:, 1]
    center = base.time_center_ns
    if base.time_transform == "asinh" and hit.any():  # centre on the earliest bulk of light (10th percentile)
        center = float(np.floor(np.percentile(t[hit], 10) / 100.0) * 100.0)
    t_time = forward_time(t[hit], base.time_transform, center, base.time_width_ns) if hit.any() else np.ones(1)
    lo, hi = np.floor(positions.min(0)), np.ceil(positions.max(0))
    span = np.maximum(hi - lo, 1.0)
    energy = labels[:, 0]
    if base.energy_transform == "log10":
        e_lo, e_hi = np.log10(energy.min()), np.log10(energy.max())
        e_off, e_scale = float(np.floor(e_lo)), float(max(np.ceil(e_hi) - np.floor(e_lo), 1.0))
    else:
        e_off, e_scale = 0.0, float(_round_up(energy.max()))
    v_lo = np.floor(np.minimum(labels[:, 3:].min(0), lo))
    v_span = np.maximum(np.ceil(np.maximum(labels[:, 3:].max(0), hi)) - v_lo, 1.0)
    t_off, t_scale = 0.0, _round_up(t_time.max())
    if base.time_transform == "none":  # linear times: start near the earliest hits for ~10 ns resolution
        t_off = float(np.floor(np.percentile(t_time, 0.1) / 100.0) * 100.0)
        t_scale = _round_up(np.percentile(t_time, 99.9) - t_off)
    elif base.time_transform == "asinh":  # signed: from the earliest hits (0.1st percentile) in steps of 0.1
        t_off = float(np.floor(np.percentile(t_time, 0.1) * 10.0) / 10.0)
        t_scale = _round_up(np.percentile(t_time, 99.9) - t_off)
    n_off, n_scale = 0.0, _round_up(np.percentile(t_npe, 99.9))
    if base.npe_reference != "none":  # signed residuals: centred, about unit spread
        n_off = float(np.round(np.mean(t_npe), 1))
        n_scale = _round_up(2 * np.std(t_npe))
    return Normalization(
        affine_offsets=(n_off, t_off, *map(float, lo)),
        affine_scales=(n_scale, t_scale, *map(float, span)),
        label_offsets=(e_off, 0.0, 0.0, *map(float, v_lo)),
        label_scales=(e_scale, math.pi, 2 * math.pi, *map(float, v_span)),
        time_transform=base.time_transform,
        npe_transform=base.npe_transform,
        energy_transform=base.energy_transform,
        representation=base.representation,
        time_reference=base.time_reference,
        npe_reference=base.npe_reference,
        time_center_ns=center,
        time_width_ns=base.time_width_ns,
        refractive_index=base.refractive_index,
    )


def _round_up(x: float) -> float:
    """Round up to 2 significant digits so suggested scales read well."""
    x = float(x)
    if x <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(x) - 1)
    return float(math.ceil(x / mag) * mag)
