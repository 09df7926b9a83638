"""Import pulse-level tables (SQLite or Parquet, graphnet layout by default) into the HDF5 event schema.

A pulse table has one row per pulse: event number, DOM position and/or string/DOM ids, time, charge.
A truth table has one row per event: event number, energy, zenith, azimuth, vertex x/y/z. Per DOM the
importer writes npe = sum of the pulse charges and first-hit time = the earliest pulse time; events of the
truth table without pulses become events with no hit. Hit/no-hit is npe > 0 as everywhere, so a DOM whose
pulses carry zero charge in all has no hit; negative charges are refused.

Defaults follow graphnet: pulse columns `event_no, dom_x, dom_y, dom_z, dom_time, charge` (plus
`string, dom_number` when present), truth columns `event_no, energy, zenith, azimuth, position_x,
position_y, position_z`. Any column can be renamed with `columns={"dom_time": "t", ...}`.

Sources:
- SQLite (`.db`, `.sqlite`, `.sqlite3`): table `truth` and the pulse table (found by itself when it is
  the only other table; else name it).
- Parquet: a pulse file `X.parquet` with its truth in `truth.parquet` next to it (or given explicitly),
  or a folder in graphnet's Parquet layout (`truth/` or `truth.parquet`, and one pulse folder or file).

Events are read in chunks over event_no ranges (SQL range queries; Parquet filtered scans that skip row
groups outside the range), so files larger than memory convert. The output appears only when complete.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from genesis.errors import DataError
from genesis.geometry import Geometry

PULSE_KEYS = ("event_no", "dom_x", "dom_y", "dom_z", "dom_time", "charge", "string", "dom_number")
TRUTH_KEYS = ("energy", "zenith", "azimuth", "position_x", "position_y", "position_z")
POSITION_KEYS = ("dom_x", "dom_y", "dom_z")
ID_KEYS = ("string", "dom_number")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
MATCH_MODES = ("auto", "ids", "position")
DEFAULT_TOLERANCE_M = 0.5
DEFAULT_CHUNK_EVENTS = 1024
FETCH_ROWS = 65536

Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    """What an import did."""

    out: str
    source: str
    format: str
    pulse_table: str
    truth_table: str
    n_events: int
    n_pulses: int
    n_dropped: int
    n_empty_events: int
    geometry: str
    match: str

    def line(self) -> str:
        dropped = f", dropped {self.n_dropped} pulses on modules not in the geometry" if self.n_dropped else ""
        return (f"wrote {self.n_events} events ({self.n_pulses} pulses, {self.n_empty_events} events without "
                f"pulses{dropped}) from {self.source} [{self.pulse_table}, {self.truth_table}] on "
                f"{self.geometry} to {self.out}")


# --- column names -------------------------------------------------------------------------------
def column_map(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Logical key -> column name: graphnet's names, with `overrides` (unknown keys raise DataError)."""
    names = {key: key for key in PULSE_KEYS + TRUTH_KEYS}
    for key, value in (overrides or {}).items():
        if key not in names:
            raise DataError(f"unknown column key '{key}'; known keys: {', '.join(names)}")
        if not value:
            raise DataError(f"column key '{key}' needs a column name")
        names[key] = value
    return names


def parse_column_overrides(items: list[str]) -> dict[str, str]:
    """['dom_time=t', 'energy=E'] -> {'dom_time': 't', 'energy': 'E'} (DataError when malformed)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise DataError(f"--column expects KEY=NAME (e.g. dom_time=time), got '{item}'")
        out[key.strip()] = value.strip()
    column_map(out)
    return out


# --- sources ------------------------------------------------------------------------------------
class SQLiteSource:
    """Tables of an SQLite database, opened read-only."""

    format = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            rows = self.con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{path}: not a readable SQLite database ({exc})") from exc
        self.tables = sorted(r[0] for r in rows if not r[0].startswith("sqlite_"))

    def where(self, table: str) -> Path:
        """The file holding `table` (for error messages)."""
        return self.path

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.con.execute(f"PRAGMA table_info({_quote(table)})")]

    def read(self, table: str, columns: list[str], key: str, lo: int | None, hi: int | None) -> np.ndarray:
        """(rows, len(columns)) float64 of the rows with lo <= key < hi (None: unbounded); NULL -> NaN."""
        where, params = _range_clause(_quote(key), lo, hi)
        sql = f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(table)}{where}"
        cursor = self.con.execute(sql, params)
        parts = []
        while rows := cursor.fetchmany(FETCH_ROWS):
            parts.append(_as_float(rows, len(columns), self.path, table, columns))
        return np.concatenate(parts) if parts else np.empty((0, len(columns)))

    def close(self) -> None:
        self.con.close()


class ParquetSource:
    """A pulse Parquet file or folder and its truth Parquet file or folder (pyarrow datasets)."""

    format = "parquet"

    def __init__(self, path: Path, truth: Path | None, pulse_table: str | None, truth_table: str) -> None:
        import pyarrow.dataset as ds

        self.path = path
        if path.is_dir():
            truth = truth or _find_part(path, truth_table, "truth table")
            pulses = _find_part(path, pulse_table, "pulse table") if pulse_table else _only_other_part(path, truth)
        else:
            pulses, truth = path, truth or path.with_name(f"{truth_table}.parquet")
            if not truth.exists():
                raise DataError(f"{path}: no truth table; put {truth.name} next to it or pass --truth FILE")
        self.parts = {_part_name(pulses): pulses, _part_name(truth): truth}
        self.tables = list(self.parts)
        self.datasets = {}
        for name, part in self.parts.items():
            try:
                self.datasets[name] = ds.dataset(part, format="parquet")
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
                raise DataError(f"{part}: not a readable Parquet file ({exc})") from exc

    def where(self, table: str) -> Path:
        """The file or folder holding `table` (for error messages)."""
        return self.parts[table]

    def columns(self, table: str) -> list[str]:
        return list(self.datasets[table].schema.names)

    def read(self, table: str, columns: list[str], key: str, lo: int | None, hi: int | None) -> np.ndarray:
        """(rows, len(columns)) float64 of the rows with lo <= key < hi (None: unbounded); null -> NaN."""
        import pyarrow.compute as pc

        condition = None
        for bound, op in ((lo, "__ge__"), (hi, "__lt__")):
            if bound is not None:
                term = getattr(pc.field(key), op)(bound)
                condition = term if condition is None else condition & term
        parts = [np.column_stack([_arrow_float(batch.column(i), self.parts[table], c) for i, c in enumerate(columns)])
                 for batch in self.datasets[table].to_batches(columns=columns, filter=condition, batch_size=FETCH_ROWS)
                 if batch.num_rows]
        return np.concatenate(parts) if parts else np.empty((0, len(columns)))

    def close(self) -> None:
        pass


def _num(value: float) -> str:
    """An id as people write it: 1234567 rather than 1.23457e+06 (non-integers as they are)."""
    return str(int(value)) if np.isfinite(value) and value == int(value) else f"{value}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _range_clause(key: str, lo: int | None, hi: int | None) -> tuple[str, list[float]]:
    terms, params = [], []
    if lo is not None:
        terms.append(f"{key} >= ?")
        params.append(lo)
    if hi is not None:
        terms.append(f"{key} < ?")
        params.append(hi)
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def _as_float(rows: list[tuple], width: int, path: Path, table: str, columns: list[str]) -> np.ndarray:
    try:
        return np.array(rows, dtype=np.float64).reshape(-1, width)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: table '{table}' has non-numeric values in column(s) {columns} ({exc})") from exc


def _arrow_float(array: Any, path: Path, column: str) -> np.ndarray:
    try:
        return array.to_numpy(zero_copy_only=False).astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: column '{column}' is not numeric ({array.type})") from exc


def _part_name(part: Path) -> str:
    return part.stem if part.is_file() else part.name


def _find_part(folder: Path, name: str, what: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.parquet"):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: no {what} '{name}' (expected {name}/ or {name}.parquet in the folder)")


def _only_other_part(folder: Path, truth: Path) -> Path:
    others = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.resolve() != truth.resolve()
                    and (p.is_dir() or p.suffix == ".parquet"))
    if len(others) != 1:
        found = ", ".join(p.name for p in others) or "none"
        raise DataError(f"{folder}: cannot tell which is the pulse table (found: {found}); pass --pulse-table NAME")
    return others[0]


def open_source(path: str | Path, truth: str | Path | None = None, pulse_table: str | None = None,
                truth_table: str = "truth") -> SQLiteSource | ParquetSource:
    """Open an SQLite database, a Parquet pulse file or a graphnet Parquet folder (DataError if none)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return ParquetSource(path, Path(truth) if truth else None, pulse_table, truth_table)
    if path.suffix.lower() in SQLITE_SUFFIXES:
        if truth:
            raise DataError(f"{path}: an SQLite database holds its own truth table; --truth is for Parquet files")
        return SQLiteSource(path)
    raise DataError(f"{path}: unknown format; expected an SQLite database ({', '.join(SQLITE_SUFFIXES)}), "
                    f"a .parquet file or a folder of Parquet files")


def resolve_tables(source: SQLiteSource | ParquetSource, pulse_table: str | None, truth_table: str) -> tuple[str, str]:
    """(pulse table, truth table): the pulse table is found by itself when it is the only other table."""
    if truth_table not in source.tables:
        raise DataError(f"{source.path}: no truth table '{truth_table}' (tables: {', '.join(source.tables)}); "
                        f"pass --truth-table NAME")
    if pulse_table is None:
        others = [t for t in source.tables if t != truth_table]
        if len(others) != 1:
            raise DataError(f"{source.path}: cannot tell which is the pulse table (tables: "
                            f"{', '.join(others) or 'none'}); pass --pulse-table NAME")
        pulse_table = others[0]
    if pulse_table not in source.tables:
        raise DataError(f"{source.path}: no pulse table '{pulse_table}' (tables: {', '.join(source.tables)})")
    return pulse_table, truth_table


# --- columns and matching -----------------------------------------------------------------------
def require_columns(source: SQLiteSource | ParquetSource, table: str, names: dict[str, str], keys: tuple[str, ...],
                    hint: str = "") -> None:
    """DataError naming the file, table and missing column(s)."""
    present = set(source.columns(table))
    missing = [names[k] for k in keys if names[k] not in present]
    if missing:
        raise DataError(f"{source.where(table)}: table '{table}' lacks column(s) {missing} "
                        f"(has: {', '.join(sorted(present))})"
                        f"{hint}; rename with --column KEY=NAME")


def choose_match(source: SQLiteSource | ParquetSource, table: str, names: dict[str, str], match: str
                 ) -> tuple[str, bool]:
    """(match mode 'ids' | 'position', whether positions are also checked) for the pulse table."""
    if match not in MATCH_MODES:
        raise DataError(f"match must be one of {', '.join(MATCH_MODES)}, got '{match}'")
    present = set(source.columns(table))
    has_ids = all(names[k] in present for k in ID_KEYS)
    has_pos = all(names[k] in present for k in POSITION_KEYS)
    if match == "ids" or (match == "auto" and has_ids):
        require_columns(source, table, names, ID_KEYS, " needed to match pulses by string/DOM ids")
        return "ids", match == "auto" and has_pos
    require_columns(source, table, names, POSITION_KEYS, " needed to match pulses to DOMs by position "
                    f"(or give '{names['string']}' and '{names['dom_number']}' ids)")
    return "position", False


class DomMatcher:
    """Pulses -> DOM index of a geometry, by (string, dom) ids or by position within a tolerance."""

    def __init__(self, geometry: Geometry, mode: str, check_positions: bool, tolerance: float) -> None:
        from scipy.spatial import cKDTree

        if not tolerance > 0:
            raise DataError(f"position tolerance must be > 0 m, got {tolerance}")
        self.geometry, self.mode, self.check_positions, self.tolerance = geometry, mode, check_positions, tolerance
        self.dom_base = int(geometry.dom.max()) + 1
        keys = geometry.string * self.dom_base + geometry.dom
        self.order = np.argsort(keys)
        self.sorted_keys = keys[self.order]
        self.tree = cKDTree(geometry.positions.astype(np.float64))

    def by_ids(self, string: np.ndarray, dom: np.ndarray) -> np.ndarray:
        """(n,) DOM index per pulse, -1 where no DOM has these ids."""
        valid = (string >= 0) & (string == np.round(string)) & (dom == np.round(dom))
        valid &= (dom >= 0) & (dom < self.dom_base)
        keys = np.where(valid, string * self.dom_base + dom, -1).astype(np.int64)
        pos = np.clip(np.searchsorted(self.sorted_keys, keys), 0, len(self.sorted_keys) - 1)
        return np.where(valid & (self.sorted_keys[pos] == keys), self.order[pos], -1)

    def by_position(self, xyz: np.ndarray) -> np.ndarray:
        """(n,) index of the nearest DOM within the tolerance, -1 where none is that close."""
        if not len(xyz):
            return np.empty(0, dtype=np.int64)
        dist, index = self.tree.query(xyz, distance_upper_bound=self.tolerance)
        return np.where(np.isfinite(dist), index, -1).astype(np.int64)

    def position_mismatch(self, index: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """(n,) distance between each id-matched pulse's position and its DOM in the geometry."""
        return np.linalg.norm(self.geometry.positions[index].astype(np.float64) - xyz, axis=1)


# --- per-chunk conversion -----------------------------------------------------------------------
@dataclass
class Context:
    """Everything one chunk needs to be converted and to name the input in errors."""

    source: SQLiteSource | ParquetSource
    pulse_table: str
    truth_table: str
    names: dict[str, str]
    pulse_keys: list[str]
    matcher: DomMatcher
    drop_unmatched: bool

    def at(self, table: str) -> str:
        """'<file>: table '<name>'' for error messages."""
        return f"{self.source.where(table)}: table '{table}'"


def truth_event_numbers(ctx: Context) -> np.ndarray:
    """Sorted event numbers of the truth table; DataError on NaN, non-integers or duplicates."""
    key = ctx.names["event_no"]
    ids = ctx.source.read(ctx.truth_table, [key], key, None, None)[:, 0]
    where = f"{ctx.at(ctx.truth_table)} column '{key}'"
    if not len(ids):
        raise DataError(f"{where}: the truth table holds no events")
    if not np.isfinite(ids).all() or (ids != np.round(ids)).any():
        raise DataError(f"{where}: event numbers must be integers (found NaN or a fraction)")
    ids = np.sort(ids)
    dup = ids[1:][ids[1:] == ids[:-1]]
    if len(dup):
        raise DataError(f"{where}: event_no {int(dup[0])} appears {int((ids == dup[0]).sum())} times; "
                        "each event needs exactly one truth row")
    return ids


def check_finite(values: np.ndarray, names: list[str], ctx: Context, table: str, event_no: np.ndarray) -> None:
    """DataError naming the table, column and event of the first NaN/inf/NULL value."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{ctx.at(table)} column '{names[col]}' has NaN/inf/NULL "
                        f"(event_no {_num(event_no[row])}); fix or drop those rows")


def convert_labels(ctx: Context, event_ids: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    """(n, 6) float64 labels of the events `event_ids` (sorted) read over [lo, hi)."""
    cols = [ctx.names["event_no"]] + [ctx.names[k] for k in TRUTH_KEYS]
    rows = ctx.source.read(ctx.truth_table, cols, ctx.names["event_no"], lo, hi)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    if not np.array_equal(rows[:, 0], event_ids):
        raise DataError(f"{ctx.at(ctx.truth_table)} changed while it was read; try again")
    check_finite(rows[:, 1:], cols[1:], ctx, ctx.truth_table, rows[:, 0])
    return rows[:, 1:]


def match_pulses(ctx: Context, cols: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) DOM index per pulse, -1 for pulses dropped as unmatched; DataError for the rest."""
    m = ctx.matcher
    xyz = np.column_stack([cols[k] for k in POSITION_KEYS]) if "dom_x" in cols else None
    index = m.by_ids(cols["string"], cols["dom_number"]) if m.mode == "ids" else m.by_position(xyz)
    unmatched = index < 0
    if unmatched.any() and not ctx.drop_unmatched:
        i = int(np.flatnonzero(unmatched)[0])
        what = (_ids_of(cols, i) if m.mode == "ids" else
                f"position ({xyz[i, 0]:.2f}, {xyz[i, 1]:.2f}, {xyz[i, 2]:.2f}) m (no DOM within {m.tolerance} m)")
        raise DataError(f"{ctx.at(ctx.pulse_table)}: {int(unmatched.sum())} pulse(s) match no DOM "
                        f"of geometry '{m.geometry.name}', first at event_no {_num(cols['event_no'][i])}, {what}; "
                        "pass --geometry for the file's detector, or --drop-unmatched to skip modules it lacks "
                        "(e.g. IceCube Upgrade)")
    if m.check_positions:
        check_id_positions(ctx, cols, index, xyz)
    return index


def check_id_positions(ctx: Context, cols: dict[str, np.ndarray], index: np.ndarray, xyz: np.ndarray) -> None:
    """DataError when an id-matched pulse lies farther than the tolerance from its DOM in the geometry."""
    m = ctx.matcher
    ok = np.flatnonzero(index >= 0)
    off = m.position_mismatch(index[ok], xyz[ok])
    far = off > m.tolerance
    if far.any():
        j = int(np.argmax(far))
        raise DataError(f"{ctx.at(ctx.pulse_table)}: the pulse at event_no {_num(cols['event_no'][ok[j]])}, "
                        f"{_ids_of(cols, ok[j])} lies {off[j]:.2f} m from that DOM in geometry '{m.geometry.name}' "
                        f"(tolerance {m.tolerance} m); pass --geometry for the file's detector or --match ids")


def _ids_of(cols: dict[str, np.ndarray], i: int) -> str:
    return f"string {_num(cols['string'][i])} DOM {_num(cols['dom_number'][i])}"


def convert_pulses(ctx: Context, event_ids: np.ndarray, lo: int | None, hi: int | None
                   ) -> tuple[np.ndarray, int, int]:
    """Per-DOM (n, 2, P) signal [sum of charges, earliest time] of the events `event_ids` over [lo, hi).

    Returns (signal, pulses read, pulses dropped as unmatched).
    """
    names = [ctx.names[k] for k in ctx.pulse_keys]
    rows = ctx.source.read(ctx.pulse_table, names, ctx.names["event_no"], lo, hi)
    cols = dict(zip(ctx.pulse_keys, rows.T))
    check_finite(rows, names, ctx, ctx.pulse_table, rows[:, 0])
    event = np.searchsorted(event_ids, cols["event_no"])
    orphan = (event >= len(event_ids)) | (event_ids[np.minimum(event, len(event_ids) - 1)] != cols["event_no"])
    if orphan.any():
        raise DataError(f"{ctx.at(ctx.pulse_table)} has pulses of event_no "
                        f"{_num(cols['event_no'][orphan][0])}, which has no row in table '{ctx.truth_table}'; "
                        "every event needs its truth")
    if (cols["charge"] < 0).any():
        i = int(np.argmax(cols["charge"] < 0))
        raise DataError(f"{ctx.at(ctx.pulse_table)} column '{ctx.names['charge']}' has a negative "
                        f"charge ({cols['charge'][i]:g} at event_no {_num(cols['event_no'][i])})")
    dom = match_pulses(ctx, cols)
    keep = dom >= 0
    return aggregate(event[keep], dom[keep], cols["charge"][keep], cols["dom_time"][keep], len(event_ids),
                     ctx.matcher.geometry.n_doms), len(rows), int((~keep).sum())


def aggregate(event: np.ndarray, dom: np.ndarray, charge: np.ndarray, time: np.ndarray, n_events: int,
              n_doms: int) -> np.ndarray:
    """(n_events, 2, P) float32: per (event, DOM) the sum of charges and the earliest pulse time (0 if none)."""
    cells, inverse = np.unique(event.astype(np.int64) * n_doms + dom, return_inverse=True)
    npe = np.bincount(inverse, weights=charge, minlength=len(cells))
    first = np.full(len(cells), np.inf)
    np.minimum.at(first, inverse, time)
    out = np.zeros((n_events, 2, n_doms), dtype=np.float32)
    e, d = np.divmod(cells, n_doms)
    out[e, 0, d], out[e, 1, d] = npe, first
    return out


def chunk_bounds(event_ids: np.ndarray, chunk: int) -> Iterator[tuple[int, int, int | None, int | None]]:
    """(start, stop, lo, hi): events [start, stop) and the event_no range [lo, hi) that covers every row
    between them, the first chunk open below and the last open above, so no row is missed."""
    for start in range(0, len(event_ids), chunk):
        stop = min(start + chunk, len(event_ids))
        lo = None if start == 0 else int(event_ids[start])
        hi = None if stop == len(event_ids) else int(event_ids[stop])
        yield start, stop, lo, hi


# --- the whole import ---------------------------------------------------------------------------
def import_pulses(source: str | Path, out: str | Path, geometry: Geometry, *, truth: str | Path | None = None,
                  pulse_table: str | None = None, truth_table: str = "truth", columns: dict[str, str] | None = None,
                  match: str = "auto", tolerance: float = DEFAULT_TOLERANCE_M, drop_unmatched: bool = False,
                  chunk_events: int = DEFAULT_CHUNK_EVENTS, force: bool = False, progress: Progress | None = None,
                  source_label: str | None = None) -> ImportReport:
    """Convert a pulse table and its truth table into an HDF5 event file at `out` (see module docstring).

    `progress(done, total)` is called after each chunk of events; `source_label` is how the output
    records its source (default: the absolute path). Raises DataError for bad input; on any error
    nothing is left at `out` (an existing file is kept).
    """
    from genesis.data.schema import EventWriter

    out = Path(out)
    if out.exists() and not force and not out.is_dir():
        raise DataError(f"{out}: file exists; choose another name or pass --force to overwrite")
    if chunk_events < 1:
        raise DataError(f"chunk_events must be >= 1, got {chunk_events}")
    src = open_source(source, truth, pulse_table, truth_table)
    try:
        ctx = _context(src, pulse_table, truth_table, columns, geometry, match, tolerance, drop_unmatched)
        event_ids = truth_event_numbers(ctx)
        report = ImportReport(str(out), source_label or str(Path(source).resolve()), src.format,
                              ctx.pulse_table, ctx.truth_table, len(event_ids), 0, 0, 0, geometry.name,
                              ctx.matcher.mode)
        with EventWriter(out, geometry, producer=_producer(report, ctx, tolerance), force=force) as writer:
            _convert_chunks(ctx, event_ids, chunk_events, writer, report, progress)
            _finish(writer, report, ctx, tolerance, event_ids)
    finally:
        src.close()
    return report


def _convert_chunks(ctx: Context, event_ids: np.ndarray, chunk_events: int, writer: Any, report: ImportReport,
                    progress: Progress | None) -> None:
    """Convert and append the events chunk by chunk, counting pulses into `report`."""
    for start, stop, lo, hi in chunk_bounds(event_ids, chunk_events):
        labels = convert_labels(ctx, event_ids[start:stop], lo, hi)
        signal, n_pulses, n_dropped = convert_pulses(ctx, event_ids[start:stop], lo, hi)
        writer.append(signal, labels)
        report.n_pulses += n_pulses
        report.n_dropped += n_dropped
        report.n_empty_events += int(((signal[:, 0] > 0).sum(1) == 0).sum())
        if progress:
            progress(stop, len(event_ids))


def _context(src: SQLiteSource | ParquetSource, pulse_table: str | None, truth_table: str,
             columns: dict[str, str] | None, geometry: Geometry, match: str, tolerance: float,
             drop_unmatched: bool) -> Context:
    names = column_map(columns)
    pulses, truth = resolve_tables(src, pulse_table, truth_table)
    require_columns(src, pulses, names, ("event_no", "dom_time", "charge"))
    require_columns(src, truth, names, ("event_no",) + TRUTH_KEYS)
    mode, check_positions = choose_match(src, pulses, names, match)
    keys = ["event_no", "dom_time", "charge"] + (list(ID_KEYS) if mode == "ids" else [])
    keys += list(POSITION_KEYS) if mode == "position" or check_positions else []
    matcher = DomMatcher(geometry, mode, check_positions, tolerance)
    return Context(src, pulses, truth, names, keys, matcher, drop_unmatched)


def _producer(report: ImportReport, ctx: Context, tolerance: float) -> dict[str, Any]:
    used = {k: ctx.names[k] for k in ctx.pulse_keys + list(TRUTH_KEYS)}
    return {"producer": "genesis import", "source": report.source, "format": report.format,
            "pulse_table": report.pulse_table, "truth_table": report.truth_table, "columns": used,
            "match": report.match, "position_check": ctx.matcher.check_positions, "tolerance_m": tolerance,
            "drop_unmatched": ctx.drop_unmatched, "geometry": report.geometry,
            "geometry_fingerprint": ctx.matcher.geometry.fingerprint()}


def _finish(writer: Any, report: ImportReport, ctx: Context, tolerance: float, event_ids: np.ndarray) -> None:
    """Record provenance and the source event numbers in the file before it is moved into place."""
    producer = {**_producer(report, ctx, tolerance), "report": asdict(report)}
    writer.f.attrs.update({"producer": json.dumps(producer), "source": report.source,
                           "source_tables": f"{report.pulse_table},{report.truth_table}",
                           "source_format": report.format})
    writer.f.create_dataset("event_no", data=event_ids.astype(np.int64))


def import_upload(name: str, data: bytes, folder: str | Path, geometry: Geometry, *, truth: bytes | None = None,
                  truth_name: str = "truth.parquet", max_bytes: int | None = None, progress: Progress | None = None,
                  **options: Any) -> ImportReport:
    """Import an uploaded SQLite database or pulse Parquet file (with its truth Parquet file as `truth`)
    into `folder`/<name without suffix>.h5; an existing file there is refused. `options` go to
    import_pulses. Errors name the uploaded files, never the staging folder."""
    name = Path(name).name
    suffix = Path(name).suffix.lower()
    if not name or name.startswith(".") or suffix not in SQLITE_SUFFIXES + (".parquet",):
        raise DataError(f"upload '{name}' must be an SQLite database ({', '.join(SQLITE_SUFFIXES)}) or a .parquet file")
    for label, blob in ((name, data), (truth_name, truth)):
        if blob is not None and max_bytes is not None and len(blob) > max_bytes:
            raise DataError(f"upload '{label}' is {len(blob) / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    if suffix == ".parquet" and truth is None:
        raise DataError(f"upload '{name}' is a Parquet pulse file: upload its truth table (.parquet) too")
    out = Path(folder) / f"{Path(name).stem}.h5"
    if out.exists():
        raise DataError(f"{out.name} already exists; rename the upload or delete that file first")
    with tempfile.TemporaryDirectory() as tmp:
        staged, staged_truth = Path(tmp) / "pulses" / name, Path(tmp) / "truth.parquet"
        staged.parent.mkdir()
        staged.write_bytes(data)
        if truth is not None and suffix == ".parquet":
            staged_truth.write_bytes(truth)
        try:
            return import_pulses(staged, out, geometry, truth=staged_truth if suffix == ".parquet" else None,
                                 progress=progress, source_label=f"upload:{name}", **options)
        except DataError as exc:
            message = str(exc).replace(str(staged), name).replace(str(staged_truth), Path(truth_name).name)
            raise DataError(message) from None

