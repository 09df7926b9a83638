"""The real oscNext events (../shared/data/icecube86) imported as the project imports them: graphnet's SQLite
layout -> `genesis.data.importer.import_pulses` on the built-in IceCube-86 geometry. Skips (or fails under
GENESIS_REQUIRE_SHARED=1) when the reference files are absent."""

from __future__ import annotations

from pathlib import Path

from conftest import SHARED_ICECUBE, require_or_skip


def oscnext_h5(out: Path) -> Path:
    """Write the 5 oscNext events (1.5-4.7 GeV) to `out` (HDF5, training-data schema) and return it."""
    from test_importer import _events, graphnet_tables, write_sqlite

    from genesis import geometry
    from genesis.data.importer import import_pulses

    geo_csv = SHARED_ICECUBE / "icecube86_geometry.csv"
    if not geo_csv.exists():
        require_or_skip(f"real IceCube-86 geometry not present: {geo_csv}")
    events = _events("oscnext_ic86")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    db = write_sqlite(out.with_suffix(".db"), *graphnet_tables(events))
    import_pulses(db, out, geometry.from_csv(geo_csv))
    db.unlink()
    return out
