"""`genesis import`: real IceCube events (../shared/data/icecube86) in graphnet's SQLite and Parquet layouts.

The databases are built here from the reference arrays; the converted files are checked against a direct
per-DOM computation (sum of charges, earliest time) and the truth labels, exactly.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import SHARED_ICECUBE, require_or_skip, run_cli
from genesis import geometry as geometry_mod
from genesis.data import schema
from genesis.data import importer
from genesis.data.importer import aggregate, import_pulses, parse_column_overrides
from genesis.errors import DataError

PULSE_COLUMNS = ("event_no", "dom_x", "dom_y", "dom_z", "dom_time", "charge", "string", "dom_number")
TRUTH_COLUMNS = ("event_no", "energy", "zenith", "azimuth", "position_x", "position_y", "position_z")
EVENT_NO_BASE = 1000  # non-zero, non-contiguous event numbers: event i -> 1000 + 7 i


def _events(name: str) -> dict[str, np.ndarray]:
    path = SHARED_ICECUBE / f"events_{name}.npz"
    if not path.exists():
        require_or_skip(f"real IceCube events not present: {path}")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def geo() -> geometry_mod.Geometry:
    path = SHARED_ICECUBE / "icecube86_geometry.csv"
    if not path.exists():
        require_or_skip(f"real IceCube-86 geometry not present: {path}")
    return geometry_mod.from_csv(path)


def graphnet_tables(ev: dict[str, np.ndarray], extra_truth: int = 0) -> tuple[dict, dict]:
    """Pulse and truth columns in graphnet's layout; `extra_truth` adds events without pulses."""
    event_no = EVENT_NO_BASE + 7 * ev["pulse_event_index"]
    pulses = {"event_no": event_no, "dom_x": ev["dom_x"], "dom_y": ev["dom_y"], "dom_z": ev["dom_z"],
              "dom_time": ev["time"], "charge": ev["charge"], "string": ev["string"].astype(float),
              "dom_number": ev["dom"].astype(float)}
    n = len(ev["truth_energy"]) + extra_truth
    truth = {"event_no": EVENT_NO_BASE + 7 * np.arange(n)}
    for key in TRUTH_COLUMNS[1:]:
        values = ev[f"truth_{key}"]
        truth[key] = np.concatenate([values, np.full(extra_truth, values[0])])
    return pulses, truth


def write_sqlite(path: Path, pulses: dict, truth: dict, pulse_table: str = "SRTInIcePulses") -> Path:
    """An SQLite database as graphnet writes it (truth keyed by event_no, pulses indexed on event_no)."""
    con = sqlite3.connect(path)
    unique = len(set(truth["event_no"])) == len(truth["event_no"])  # else a bad-input test: no primary key
    for table, cols, key in ((pulse_table, pulses, "INTEGER NOT NULL"),
                             ("truth", truth, "INTEGER PRIMARY KEY NOT NULL" if unique else "INTEGER")):
        names = list(cols)
        con.execute(f'CREATE TABLE "{table}" ({", ".join(n + (" " + key if n == "event_no" else " REAL") for n in names)})')
        rows = zip(*[[int(v) if n == "event_no" else float(v) for v in cols[n]] for n in names])
        con.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(names))})', rows)
    con.execute(f'CREATE INDEX "event_no_{pulse_table}" ON "{pulse_table}" (event_no)')
    con.commit()
    con.close()
    return path


def write_parquet(path: Path, cols: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: np.asarray(v) for k, v in cols.items()}), path, row_group_size=64)
    return path


def expected_signal(ev: dict[str, np.ndarray], geo: geometry_mod.Geometry, keep: np.ndarray | None = None
                    ) -> np.ndarray:
    """(N, 2, P) by a direct loop over pulses: per DOM, sum of charges and the earliest time."""
    n = len(ev["truth_energy"])
    out = np.zeros((n, 2, geo.n_doms), dtype=np.float64)
    first = np.full((n, geo.n_doms), np.inf)
    index = {(int(s), int(d)): i for i, (s, d) in enumerate(zip(geo.string, geo.dom))}
    for p in range(len(ev["charge"])):
        if keep is not None and not keep[p]:
            continue
        e, dom = int(ev["pulse_event_index"][p]), index[(int(ev["string"][p]), int(ev["dom"][p]))]
        out[e, 0, dom] += ev["charge"][p]
        first[e, dom] = min(first[e, dom], ev["time"][p])
    out[:, 1] = np.where(np.isfinite(first), first, 0.0)
    return out.astype(np.float32)


def expected_labels(ev: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([ev[f"truth_{k}"] for k in TRUTH_COLUMNS[1:]], 1).astype(np.float32)


def assert_converted(out: Path, ev: dict, geo: geometry_mod.Geometry, keep: np.ndarray | None = None) -> None:
    schema.validate(out, geo)
    signal, labels, _ = schema.read_events(out)
    np.testing.assert_array_equal(signal, expected_signal(ev, geo, keep))
    np.testing.assert_array_equal(labels, expected_labels(ev))
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["event_no"][()], EVENT_NO_BASE + 7 * np.arange(len(labels)))
        np.testing.assert_array_equal(f["xpmt"][()], geo.positions[:, 0])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".h5" or p.name.endswith(".tmp"))


# --- good input ---------------------------------------------------------------------------------
def test_cli_converts_graphnet_sqlite_exactly(tmp_path, geo):
    ev = _events("oscnext_ic86")
    db = write_sqlite(tmp_path / "oscnext.db", *graphnet_tables(ev))
    out = tmp_path / "oscnext.h5"
    geo_csv = SHARED_ICECUBE / "icecube86_geometry.csv"
    result = run_cli("import", str(db), "--out", str(out), "--geometry", str(geo_csv))
    assert result.returncode == 0, result.stderr
    assert "wrote 5 events" in result.stdout
    assert_converted(out, ev, geo)
    attrs = schema.read_attrs(out)
    assert attrs["source"] == str(db.resolve())
    assert attrs["source_tables"] == "SRTInIcePulses,truth"
    assert '"producer": "genesis import"' in attrs["producer"]
    assert (schema.read_events(out)[0][:, 0] > 0).sum() == len({(e, s, d) for e, s, d in zip(
        ev["pulse_event_index"], ev["string"], ev["dom"])})  # several pulses share DOMs in this file


def test_cli_graphnet_database_needs_no_options(tmp_path, geo):
    """The built-in detector is the real IceCube-86: a graphnet database converts with no options at all."""
    ev = _events("oscnext_ic86")
    db = write_sqlite(tmp_path / "plain.db", *graphnet_tables(ev))
    result = run_cli("import", str(db), "--out", str(tmp_path / "plain.h5"))
    assert result.returncode == 0, result.stderr
    assert_converted(tmp_path / "plain.h5", ev, geo)
    np.testing.assert_array_equal(schema.read_geometry(tmp_path / "plain.h5").positions, geo.positions)


@pytest.mark.parametrize("chunk", [1, 2, 1024])
def test_sqlite_chunks_give_the_same_file(tmp_path, geo, chunk):
    ev = _events("oscnext_ic86")
    db = write_sqlite(tmp_path / "a.db", *graphnet_tables(ev))
    ticks = []
    report = import_pulses(db, tmp_path / "a.h5", geo, chunk_events=chunk, progress=lambda d, t: ticks.append((d, t)))
    assert ticks[-1] == (5, 5) and len(ticks) == -(-5 // chunk)
    assert report.n_events == 5 and report.n_pulses == len(ev["charge"]) and report.match == "ids"
    assert_converted(tmp_path / "a.h5", ev, geo)


def test_parquet_by_position_with_truth_next_to_it(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    del pulses["string"], pulses["dom_number"]  # positions only: matched within the tolerance
    write_parquet(tmp_path / "pulses.parquet", pulses)
    write_parquet(tmp_path / "truth.parquet", truth)
    report = import_pulses(tmp_path / "pulses.parquet", tmp_path / "out.h5", geo, chunk_events=2)
    assert report.match == "position" and report.format == "parquet"
    assert_converted(tmp_path / "out.h5", ev, geo)


def test_parquet_folder_in_graphnet_layout_via_cli(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    folder = tmp_path / "export"
    (folder / "truth").mkdir(parents=True)
    (folder / "SRTInIcePulses").mkdir()
    order = np.random.default_rng(0).permutation(len(pulses["charge"]))  # rows in any order
    write_parquet(folder / "SRTInIcePulses" / "SRTInIcePulses_0.parquet", {k: v[order] for k, v in pulses.items()})
    write_parquet(folder / "truth" / "truth_0.parquet", truth)
    out = tmp_path / "out.h5"
    result = run_cli("import", str(folder), "--out", str(out), "--geometry",
                     str(SHARED_ICECUBE / "icecube86_geometry.csv"), "--chunk-events", "2")
    assert result.returncode == 0, result.stderr
    assert_converted(out, ev, geo)


def test_renamed_columns_and_tables(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    pulses["t"] = pulses.pop("dom_time")
    truth["E"] = truth.pop("energy")
    db = write_sqlite(tmp_path / "r.db", pulses, truth, pulse_table="InIcePulses")
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE other (event_no INTEGER)")
    overrides = parse_column_overrides(["dom_time=t", "energy=E"])
    import_pulses(db, tmp_path / "r.h5", geo, pulse_table="InIcePulses", columns=overrides)
    assert_converted(tmp_path / "r.h5", ev, geo)


def test_truth_events_without_pulses_are_empty(tmp_path, geo):
    ev = _events("oscnext_ic86")
    db = write_sqlite(tmp_path / "e.db", *graphnet_tables(ev, extra_truth=2))
    report = import_pulses(db, tmp_path / "e.h5", geo, chunk_events=3)
    signal, labels, _ = schema.read_events(tmp_path / "e.h5")
    assert report.n_events == 7 and report.n_empty_events == 2
    np.testing.assert_array_equal(signal[:5], expected_signal(ev, geo))
    assert not signal[5:].any() and labels[5, 0] == np.float32(ev["truth_energy"][0])


def test_upgrade_modules_error_or_drop(tmp_path, geo):
    ev = _events("upgrade_step4")
    db = write_sqlite(tmp_path / "up.db", *graphnet_tables(ev))
    with pytest.raises(DataError, match=r"up\.db.*'SRTInIcePulses'.*match no DOM.*string (8[7-9]|9[0-3]) .*--drop-unmatched"):
        import_pulses(db, tmp_path / "up.h5", geo)
    assert leftovers(tmp_path) == []
    report = import_pulses(db, tmp_path / "up.h5", geo, drop_unmatched=True, chunk_events=2)
    assert report.n_dropped == int((~ev["is_ic86"]).sum()) > 0
    assert_converted(tmp_path / "up.h5", ev, geo, keep=ev["is_ic86"])


def test_aggregate_sums_and_earliest():
    signal = aggregate(np.array([0, 0, 1, 0]), np.array([2, 2, 0, 1]), np.array([1.0, 0.5, 2.0, 3.0]),
                       np.array([30.0, 10.0, 5.0, 7.0]), n_events=2, n_doms=3)
    np.testing.assert_array_equal(signal[0], [[0.0, 3.0, 1.5], [0.0, 7.0, 10.0]])
    np.testing.assert_array_equal(signal[1], [[2.0, 0.0, 0.0], [5.0, 0.0, 0.0]])


# --- bad input: a clear DataError naming file/table/column, and nothing written ----------------
def _bad_db(tmp_path: Path, edit) -> Path:
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    edit(pulses, truth)
    return write_sqlite(tmp_path / "bad.db", pulses, truth)


def _nan_charge(pulses: dict, truth: dict) -> None:
    pulses["charge"] = pulses["charge"].copy()
    pulses["charge"][3] = np.nan


def _orphan_pulses(pulses: dict, truth: dict) -> None:
    for key in truth:
        truth[key] = truth[key][1:]  # event 1000 loses its truth row


def _duplicate_truth(pulses: dict, truth: dict) -> None:
    for key in truth:
        truth[key] = np.concatenate([truth[key], truth[key][2:3]])


def _negative_charge(pulses: dict, truth: dict) -> None:
    pulses["charge"] = -pulses["charge"]


def _shifted_positions(pulses: dict, truth: dict) -> None:
    pulses["dom_x"] = pulses["dom_x"] + 5.0


@pytest.mark.parametrize("edit, pattern", [
    (lambda p, t: p.pop("charge"), r"bad\.db: table 'SRTInIcePulses' lacks column\(s\) \['charge'\]"),
    (lambda p, t: t.pop("zenith"), r"bad\.db: table 'truth' lacks column\(s\) \['zenith'\]"),
    (_nan_charge, r"bad\.db: table 'SRTInIcePulses' column 'charge' has NaN/inf/NULL \(event_no 1000\)"),
    (_orphan_pulses, r"bad\.db: table 'SRTInIcePulses' has pulses of event_no 1000, which has no row in table 'truth'"),
    (_duplicate_truth, r"bad\.db: table 'truth' column 'event_no': event_no 1014 appears 2 times"),
    (_negative_charge, r"bad\.db: table 'SRTInIcePulses' column 'charge' has a negative charge"),
    (_shifted_positions, r"bad\.db: table 'SRTInIcePulses': the pulse at event_no 1000.* 5\.00 m from that DOM"),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, geo, edit, pattern):
    db = _bad_db(tmp_path, edit)
    with pytest.raises(DataError, match=pattern):
        import_pulses(db, tmp_path / "out.h5", geo, chunk_events=2)
    assert leftovers(tmp_path) == []


def test_unmatched_position_is_refused(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    del pulses["string"], pulses["dom_number"]
    pulses["dom_z"] = pulses["dom_z"].copy()
    pulses["dom_z"][4] += 3.0
    db = write_sqlite(tmp_path / "pos.db", pulses, truth)
    with pytest.raises(DataError, match=r"1 pulse\(s\) match no DOM.*event_no 1000, position .*no DOM within 0\.5 m"):
        import_pulses(db, tmp_path / "out.h5", geo)
    assert leftovers(tmp_path) == []


def test_cli_bad_input_one_line_exit_2(tmp_path):
    _events("oscnext_ic86")
    db = _bad_db(tmp_path, _nan_charge)
    geo_csv = str(SHARED_ICECUBE / "icecube86_geometry.csv")
    result = run_cli("import", str(db), "--out", str(tmp_path / "out.h5"), "--geometry", geo_csv)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "column 'charge' has NaN" in result.stderr
    assert leftovers(tmp_path) == []
    (tmp_path / "taken.h5").write_bytes(b"keep me")
    result = run_cli("import", str(db), "--out", str(tmp_path / "taken.h5"), "--geometry", geo_csv)
    assert result.returncode == 2 and "file exists" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "taken.h5").read_bytes() == b"keep me"


def test_existing_output_is_kept_without_force(tmp_path, geo):
    ev = _events("oscnext_ic86")
    db = write_sqlite(tmp_path / "a.db", *graphnet_tables(ev))
    (tmp_path / "a.h5").write_bytes(b"old")
    with pytest.raises(DataError, match="file exists"):
        import_pulses(db, tmp_path / "a.h5", geo)
    assert (tmp_path / "a.h5").read_bytes() == b"old"
    import_pulses(db, tmp_path / "a.h5", geo, force=True)
    assert_converted(tmp_path / "a.h5", ev, geo)


def test_ambiguous_tables_and_formats(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    db = write_sqlite(tmp_path / "two.db", pulses, truth)
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE InIcePulses (event_no INTEGER)")
    with pytest.raises(DataError, match=r"cannot tell which is the pulse table.*InIcePulses, SRTInIcePulses.*--pulse-table"):
        import_pulses(db, tmp_path / "out.h5", geo)
    write_parquet(tmp_path / "lonely.parquet", pulses)
    with pytest.raises(DataError, match=r"lonely\.parquet: no truth table; put truth\.parquet next to it"):
        import_pulses(tmp_path / "lonely.parquet", tmp_path / "out.h5", geo)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        import_pulses(tmp_path / "notes.txt", tmp_path / "out.h5", geo)
    (tmp_path / "broken.db").write_text("not sqlite at all, just text" * 10)
    with pytest.raises(DataError, match=r"broken\.db: not a readable SQLite database"):
        import_pulses(tmp_path / "broken.db", tmp_path / "out.h5", geo)
    with pytest.raises(DataError, match="--column expects KEY=NAME"):
        parse_column_overrides(["dom_time"])
    with pytest.raises(DataError, match="unknown column key 'tme'"):
        parse_column_overrides(["tme=t"])
    assert leftovers(tmp_path) == []


# --- uploads and the Data page ------------------------------------------------------------------
def test_import_upload_names_the_upload_not_the_staging_folder(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    data = write_parquet(tmp_path / "pulses.parquet", pulses).read_bytes()
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(DataError, match=r"upload 'p\.parquet' is a Parquet pulse file: upload its truth table"):
        importer.import_upload("p.parquet", data, folder, geo)
    bad_truth = {k: v for k, v in truth.items() if k != "azimuth"}
    bad = write_parquet(tmp_path / "t.parquet", bad_truth).read_bytes()
    with pytest.raises(DataError, match=r"^mytruth\.parquet: table 'truth' lacks column\(s\) \['azimuth'\]") as info:
        importer.import_upload("p.parquet", data, folder, geo, truth=bad, truth_name="mytruth.parquet")
    assert "/tmp" not in str(info.value).replace(str(tmp_path), "")
    with pytest.raises(DataError, match="limit is 0 MB"):
        importer.import_upload("p.parquet", data, folder, geo, truth=bad, max_bytes=100)
    assert leftovers(folder) == []
    good = write_parquet(tmp_path / "t2.parquet", truth).read_bytes()
    report = importer.import_upload("../p.parquet", data, folder, geo, truth=good)
    assert report.out == str(folder / "p.h5") and schema.read_attrs(folder / "p.h5")["source"] == "upload:p.parquet"
    assert_converted(folder / "p.h5", ev, geo)
    with pytest.raises(DataError, match="p.h5 already exists"):
        importer.import_upload("p.parquet", data, folder, geo, truth=good)


@pytest.fixture()
def page_home(tmp_path, monkeypatch, geo) -> Path:
    """A project home whose data/ holds only the real IceCube-86 geometry CSV."""
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "icecube86.csv").write_bytes((SHARED_ICECUBE / "icecube86_geometry.csv").read_bytes())
    return tmp_path


def _data_page():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(Path(__file__).resolve().parents[1] / "views" / "data.py"), default_timeout=120)


def test_data_page_imports_an_uploaded_database(page_home, geo, tmp_path_factory):
    ev = _events("oscnext_ic86")
    db = write_sqlite(tmp_path_factory.mktemp("up") / "oscnext.db", *graphnet_tables(ev))
    at = _data_page().run()
    assert not at.exception
    at.file_uploader(key="import_pulses").set_value(("oscnext.db", db.read_bytes(), "application/octet-stream"))
    at.selectbox[0].set_value(page_home / "data" / "icecube86.csv")
    at = at.run()
    at = next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Kept data/oscnext.h5: 5 events" in s.value for s in at.success)
    assert_converted(page_home / "data" / "oscnext.h5", ev, geo)
    assert any(m.label == "Events" and m.value == "5" for m in at.metric)  # the new file is shown


def test_data_page_shows_bad_upload_errors(page_home, tmp_path_factory):
    ev = _events("oscnext_ic86")
    pulses, _ = graphnet_tables(ev)
    lone = write_parquet(tmp_path_factory.mktemp("up") / "lone.parquet", pulses)
    at = _data_page().run()
    at.file_uploader(key="import_pulses").set_value(("lone.parquet", lone.read_bytes(), "application/octet-stream"))
    at = at.run()
    at = next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    assert any("upload its truth table" in e.value for e in at.error)
    pulses.pop("charge")
    db = write_sqlite(tmp_path_factory.mktemp("up") / "nocharge.db", pulses, graphnet_tables(ev)[1])
    at.file_uploader(key="import_pulses").set_value(("nocharge.db", db.read_bytes(), "application/octet-stream"))
    at = next(b for b in at.run().button if b.label == "Import").click().run()
    errors = [e.value for e in at.error]
    assert any("nocharge.db: table 'SRTInIcePulses' lacks column(s) ['charge']" in e for e in errors), errors
    assert not any("/tmp" in e or str(page_home) in e for e in errors), ("staging path shown", errors)
    assert not at.success and leftovers(page_home / "data") == []


def test_parquet_nan_truth_names_the_truth_file(tmp_path, geo):
    ev = _events("oscnext_ic86")
    pulses, truth = graphnet_tables(ev)
    truth["energy"] = truth["energy"].copy()
    truth["energy"][1] = np.nan
    write_parquet(tmp_path / "pulses.parquet", pulses)
    write_parquet(tmp_path / "truth.parquet", truth)
    with pytest.raises(DataError, match=r"truth\.parquet: table 'truth' column 'energy' has NaN/inf/NULL \(event_no 1007\)"):
        import_pulses(tmp_path / "pulses.parquet", tmp_path / "out.h5", geo, chunk_events=1)
    assert leftovers(tmp_path) == []
