"""Inpainting masks: which DOMs are unknown. A mask is a boolean numpy array (P,), True = masked (to be filled)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genesis.errors import DataError
from genesis.geometry import Geometry

MASK_FORMS = (
    "strings:S1,S2,... (string ids)",
    "random:FRACTION (0 < FRACTION < 1)",
    "deepcore",
    "sphere:X,Y,Z,RADIUS (metres)",
    "dead:PATH (CSV with header string,dom, or one DOM index per line)",
)


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



def mask_tensor(mask: Any, x: torch.Tensor) -> torch.Tensor:
    """(P,) bool mask -> tensor (P,) on x's device, checked against x (B, 2, P)."""
    m = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool))
    if m.shape != (x.shape[-1],):
        raise DataError(f"mask has shape {tuple(m.shape)} but events have {x.shape[-1]} DOMs")
    return m.to(x.device)
