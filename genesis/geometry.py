"""Detector geometry: DOM positions with string and DOM ids.

A `Geometry` holds P modules in the order of the data's DOM axis. The built-in default is the real
IceCube-86 detector (`icecube86()`: the public geometry table shipped in genesis/resources/, 86 strings
x 60 DOMs, DeepCore strings 79-86 dense below the dust layer). The procedural IceCube-86-like grid
(`icecube86_grid()`) stays available by name for tests and other detectors. Lab geometries come from a
CSV (`string,dom,x,y,z`) or from an HDF5 file's xpmt/ypmt/zpmt. `load()` accepts a path or a built-in
name (`BUILTIN`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from genesis.errors import DataError

DOMS_PER_STRING = 60
ICECUBE_STRINGS = 86
ICECUBE_P = ICECUBE_STRINGS * DOMS_PER_STRING
GRID_SPACING_M = 125.0
DOM_SPACING_M = 17.0
ICECUBE86_CSV = Path(__file__).resolve().parent / "resources" / "icecube86_geometry.csv"


@dataclass(frozen=True, eq=False)
class Geometry:
    """DOM positions and ids.

    Attributes:
        positions: (P, 3) float32, metres (x, y, z).
        string: (P,) int64 string id of each DOM.
        dom: (P,) int64 DOM number along its string (1 = top).
        name: where the geometry came from.
    """

    positions: np.ndarray
    string: np.ndarray
    dom: np.ndarray
    name: str = "custom"

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions, dtype=np.float32)
        if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) == 0:
            raise DataError(f"geometry '{self.name}': positions must have shape (P, 3), got {pos.shape}")
        if not np.isfinite(pos).all():
            raise DataError(f"geometry '{self.name}': positions contain NaN or inf")
        string = np.asarray(self.string, dtype=np.int64)
        dom = np.asarray(self.dom, dtype=np.int64)
        if string.shape != (len(pos),) or dom.shape != (len(pos),):
            raise DataError(f"geometry '{self.name}': string/dom ids must have shape ({len(pos)},)")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "string", string)
        object.__setattr__(self, "dom", dom)

    @property
    def n_doms(self) -> int:
        return len(self.positions)

    @property
    def strings(self) -> np.ndarray:
        """Sorted unique string ids, (S,)."""
        return np.unique(self.string)

    def string_xy(self) -> np.ndarray:
        """(S, 2) mean horizontal position of each string, in the order of `strings`."""
        return np.stack([self.positions[self.string == s, :2].mean(0) for s in self.strings])

    def string_top_bottom(self) -> np.ndarray:
        """(S, 2, 3): for each string, the position of its highest and lowest DOM (for drawing lines)."""
        ends = []
        for s in self.strings:
            p = self.positions[self.string == s]
            ends.append([p[p[:, 2].argmax()], p[p[:, 2].argmin()]])
        return np.asarray(ends, dtype=np.float32)

    def outline(self) -> np.ndarray:
        """(K, 2) convex hull of the string positions, counter-clockwise, first point not repeated."""
        return convex_hull(self.string_xy())

    def indices_of_strings(self, strings: list[int]) -> np.ndarray:
        """Boolean (P,) selecting the DOMs on the given strings; unknown ids raise DataError."""
        unknown = sorted(set(int(s) for s in strings) - set(self.strings.tolist()))
        if unknown:
            raise DataError(
                f"geometry '{self.name}': unknown string ids {unknown}; "
                f"valid ids are {int(self.strings.min())}..{int(self.strings.max())}"
            )
        return np.isin(self.string, strings)

    def deepcore_strings(self) -> np.ndarray:
        """Ids of densely instrumented strings (median vertical DOM spacing below 12 m)."""
        dense = []
        for s in self.strings:
            z = np.sort(self.positions[self.string == s, 2])
            if len(z) > 2 and np.median(np.diff(z)) < 12.0:
                dense.append(s)
        return np.asarray(dense, dtype=np.int64)

    def fingerprint(self) -> str:
        """Short hash of positions and ids, to check that data and checkpoints share a geometry."""
        h = hashlib.sha256(np.round(self.positions, 2).astype(np.float32).tobytes())
        h.update(self.string.tobytes())
        h.update(self.dom.tobytes())
        return h.hexdigest()[:16]

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["string", "dom", "x", "y", "z"])
            for s, d, (x, y, z) in zip(self.string, self.dom, self.positions):
                w.writerow([int(s), int(d), f"{x:.3f}", f"{y:.3f}", f"{z:.3f}"])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """(K, 2) convex hull of (N, 2) points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(set(map(tuple, np.round(np.asarray(points, dtype=np.float64), 6))))
    if len(pts) < 3:
        return np.asarray(pts, dtype=np.float32)

    def half(seq: list) -> list:
        chain: list = []
        for p in seq:
            while len(chain) >= 2 and _cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.asarray(half(pts) + half(pts[::-1]), dtype=np.float32)


def _cross(o: tuple, a: tuple, b: tuple) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _triangular_grid_strings(n: int, spacing: float) -> np.ndarray:
    """The n points of a triangular lattice nearest the origin, (n, 2), deterministic order."""
    k = np.arange(-8, 9)
    i, j = np.meshgrid(k, k, indexing="ij")
    xy = np.stack([spacing * (i + 0.5 * j), spacing * (np.sqrt(3) / 2) * j], -1).reshape(-1, 2)
    # Break ties in distance by angle so the hexagon grows the same way on every machine.
    r = np.round(np.hypot(xy[:, 0], xy[:, 1]), 3)
    angle = np.round(np.arctan2(xy[:, 1], xy[:, 0]), 6)
    order = np.lexsort((angle, r))[:n]
    chosen = xy[order]
    # Number strings row by row (south to north, west to east) as IceCube does.
    rows = np.lexsort((chosen[:, 0], np.round(chosen[:, 1], 3)))
    return chosen[rows]


def icecube86_grid() -> Geometry:
    """Procedural IceCube-86-like detector ("icecube86-grid"): P = 5160, index = (string - 1) * 60 + (dom - 1).

    Strings 1-78 stand on a 125 m triangular grid with 60 DOMs 17 m apart from z = +500 m down to
    -503 m. Strings 79-86 (DeepCore) stand at the centres of the central grid triangles (~72 m from
    their neighbours) with 10 DOMs 10 m apart above the dust layer (z = +190..+100 m) and 50 DOMs 7 m
    apart in the clear deep ice (z = -155..-498 m).
    """
    standard_xy = _triangular_grid_strings(78, GRID_SPACING_M)
    r = GRID_SPACING_M / np.sqrt(3)
    angles = np.deg2rad(np.arange(30, 390, 60))
    deepcore_xy = np.concatenate(
        [np.stack([r * np.cos(angles), r * np.sin(angles)], -1), [[2 * r, 0.0], [-2 * r, 0.0]]]
    )
    z_standard = 500.0 - DOM_SPACING_M * np.arange(DOMS_PER_STRING)
    z_deepcore = np.concatenate([190.0 - 10.0 * np.arange(10), -155.0 - 7.0 * np.arange(50)])
    positions, strings, doms = [], [], []
    for s, xy in enumerate(np.concatenate([standard_xy, deepcore_xy]), start=1):
        z = z_standard if s <= 78 else z_deepcore
        positions.append(np.column_stack([np.full(60, xy[0]), np.full(60, xy[1]), z]))
        strings.append(np.full(60, s))
        doms.append(np.arange(1, 61))
    return Geometry(np.concatenate(positions), np.concatenate(strings), np.concatenate(doms), "icecube86-grid")


@functools.lru_cache(maxsize=1)
def _icecube86_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    geo = from_csv(ICECUBE86_CSV)
    return geo.positions, geo.string, geo.dom


def icecube86() -> Geometry:
    """The real IceCube-86 detector ("icecube86", the built-in default): P = 5160 DOMs ordered by string
    then DOM, index = (string - 1) * 60 + (dom - 1).

    Positions from the public geometry table in genesis/resources/icecube86_geometry.csv (its header
    names the source): strings 1-78 with DOMs ~17 m apart from z ~ +525 to -513 m; DeepCore strings
    79-86 with 10 DOMs ~10 m apart above the dust layer (z ~ +191..+96 m) and 50 DOMs ~7 m apart below
    it (z ~ -156..-505 m).
    """
    pos, string, dom = _icecube86_table()
    return Geometry(pos.copy(), string.copy(), dom.copy(), "icecube86")


def icecube86_like() -> Geometry:
    """The built-in default detector, under its historical name: now the real IceCube-86 (`icecube86()`).
    The procedural grid this name used to build is `icecube86_grid()`."""
    return icecube86()


BUILTIN: dict[str, Callable[[], Geometry]] = {"icecube86": icecube86, "icecube86-grid": icecube86_grid}
DEFAULT_NAME = "icecube86"


def require_string_order(geometry: Geometry, source: str) -> None:
    """DataError unless the DOM axis is ordered by string, then by DOM number along the string.

    Models group `patch_size` consecutive DOMs into one token (60 = one IceCube string), so a token holds
    one string's DOMs only in this order. source names the file or setting the geometry came from.
    """
    string, dom = geometry.string, geometry.dom
    bad = np.flatnonzero((np.diff(string) < 0) | ((np.diff(string) == 0) & (np.diff(dom) <= 0)))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{source}: DOMs are not ordered by string then DOM (index {i} is string {int(string[i])} DOM "
            f"{int(dom[i])}, index {i + 1} is string {int(string[i + 1])} DOM {int(dom[i + 1])}), so a token of "
            f"consecutive DOMs would mix strings; rewrite the file with its DOM axis (input[:, :, P], xpmt, ypmt, "
            f"zpmt, string, dom) sorted by string then DOM, e.g. order = numpy.lexsort((dom, string))"
        )


def default_ids(n_doms: int, xy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """String and DOM ids when a file has none: the IceCube rule for P = 5160, else group by (x, y)."""
    if n_doms == ICECUBE_P:
        idx = np.arange(n_doms)
        return idx // DOMS_PER_STRING + 1, idx % DOMS_PER_STRING + 1
    if xy is None:
        return np.ones(n_doms, dtype=np.int64), np.arange(1, n_doms + 1)
    _, first, inverse = np.unique(np.round(xy, 0), axis=0, return_index=True, return_inverse=True)
    # Number strings by first appearance so the ids follow the file's order.
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(1, len(first) + 1)
    string = rank[inverse.reshape(-1)]
    dom = np.zeros(n_doms, dtype=np.int64)
    for s in np.unique(string):
        members = np.flatnonzero(string == s)
        dom[members] = np.arange(1, len(members) + 1)
    return string, dom


def from_csv(path: str | Path) -> Geometry:
    """Read a `string,dom,x,y,z` CSV (header required; lines starting with '#' are comments), keeping the
    file's row order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: geometry file not found")
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if not (r and r[0].lstrip().startswith("#"))]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read geometry CSV ({exc})") from exc
    if not rows:
        raise DataError(f"{path}: geometry CSV is empty; expected a header 'string,dom,x,y,z'")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("string", "dom", "x", "y", "z") if c not in header]
    if missing:
        raise DataError(f"{path}: geometry CSV lacks column(s) {missing}; header must be string,dom,x,y,z")
    cols = {c: header.index(c) for c in ("string", "dom", "x", "y", "z")}
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise DataError(f"{path}: geometry CSV has a header but no DOM rows")
    try:
        table = np.array([[float(r[cols[c]]) for c in ("string", "dom", "x", "y", "z")] for r in body])
    except (ValueError, IndexError) as exc:
        raise DataError(f"{path}: geometry CSV has a malformed row ({exc}); every row needs 5 numbers") from exc
    if not np.isfinite(table).all():
        raise DataError(f"{path}: geometry CSV contains NaN or inf values")
    ids = table[:, :2].astype(np.int64)
    if len(np.unique(ids, axis=0)) != len(ids):
        raise DataError(f"{path}: geometry CSV has duplicate (string, dom) pairs")
    return Geometry(table[:, 2:], ids[:, 0], ids[:, 1], path.name)


def from_hdf5(path: str | Path) -> Geometry:
    """Read xpmt/ypmt/zpmt (and string/dom when present) from a data file."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            for key in ("xpmt", "ypmt", "zpmt"):
                if key not in f:
                    raise DataError(f"{path}: dataset '{key}' is missing; DOM positions are needed")
            pos = np.stack([np.asarray(f[k][()], dtype=np.float32).reshape(-1) for k in ("xpmt", "ypmt", "zpmt")], 1)
            string = np.asarray(f["string"][()]) if "string" in f else None
            dom = np.asarray(f["dom"][()]) if "dom" in f else None
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if string is None or dom is None:
        string, dom = default_ids(len(pos), pos[:, :2])
    return Geometry(pos, string, dom, path.name)


def load(path: str | Path | None) -> Geometry:
    """Geometry from a built-in name (`BUILTIN`: icecube86, icecube86-grid), a CSV or HDF5 path, or the
    built-in default (the real IceCube-86) when path is None or empty."""
    if path is None or str(path) == "":
        return BUILTIN[DEFAULT_NAME]()
    if str(path) in BUILTIN:
        return BUILTIN[str(path)]()
    if not Path(path).is_file():
        raise DataError(f"{path}: geometry file not found; give a CSV (string,dom,x,y,z) or HDF5 file, "
                        f"or a built-in name: {', '.join(BUILTIN)}")
    suffix = Path(path).suffix.lower()
    return from_hdf5(path) if suffix in (".h5", ".hdf5", ".hdf") else from_csv(path)
