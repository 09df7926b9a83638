"""Data: pick, upload or import (pulse tables) an HDF5 file, see its summary and label histograms, and look at
any event in 3D."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from genesis import paths, viz
from genesis.data import importer, schema
from genesis.errors import DataError
from genesis.geometry import load as load_geometry
from views._shared import (MAX_UPLOAD_MB, errors_shown, file_summary, geometry_of, mtime, pick_data_file, read_event, read_labels,
                           rel, save_upload, user_errors)

st.title("Data")

with st.expander("Upload an HDF5 file", icon=":material/upload:"):
    upload = st.file_uploader(f"HDF5 event file (at most {MAX_UPLOAD_MB} MB)", type=["h5", "hdf5"])
    if upload is not None and st.button("Validate and keep"):
        with errors_shown("Not kept: "):  # a rejected file leaves the picker and views below as they were
            target = save_upload(upload, paths.data_dir(), (".h5", ".hdf5"))
            with tempfile.TemporaryDirectory() as tmp:
                staged = Path(tmp) / target.name
                staged.write_bytes(upload.getvalue())
                try:
                    schema.validate(staged)  # raises DataError: nothing is kept
                except DataError as exc:  # name the upload, not the staging folder
                    raise DataError(str(exc).replace(str(staged), target.name)) from None
                shutil.move(staged, target)
            st.session_state["data_file"] = target  # the picker below moves to the new file
            st.success(f"Kept {rel(target)}")

with st.expander("Import pulse tables (SQLite or Parquet)", icon=":material/database:"):
    st.caption("graphnet layout: a pulse table `event_no, dom_x, dom_y, dom_z, dom_time, charge` (and `string, "
               "dom_number`) and a `truth` table `event_no, energy, zenith, azimuth, position_x/y/z`. A database "
               "holds both; for a Parquet pulse file upload its truth table as the second file. Per DOM: npe = sum "
               "of charges, time = first pulse. The result is written to data/<name>.h5.")
    pulses = st.file_uploader(f"SQLite database or pulse Parquet file (at most {MAX_UPLOAD_MB} MB)",
                              type=["db", "sqlite", "sqlite3", "parquet"], key="import_pulses")
    truth = st.file_uploader("Truth Parquet file (for a Parquet pulse file)", type=["parquet"], key="import_truth")
    detectors = [None] + paths.list_files(paths.data_dir(), (".csv",))
    detector = st.selectbox("Detector", detectors, format_func=lambda p: "built-in" if p is None else rel(p),
                            help="or a string,dom,x,y,z CSV in data/")
    pulse_table = st.text_input("Pulse table", placeholder="the only table besides truth")
    drop = st.checkbox("Drop pulses on modules the detector lacks (e.g. IceCube Upgrade)")
    if pulses is not None and st.button("Import"):
        bar = st.progress(0.0, text="Importing")
        with errors_shown("Not imported: "):
            report = importer.import_upload(
                pulses.name, pulses.getvalue(), paths.data_dir(), load_geometry(detector),
                truth=truth.getvalue() if truth else None, truth_name=truth.name if truth else "truth.parquet",
                max_bytes=MAX_UPLOAD_MB * 2**20, pulse_table=pulse_table.strip() or None, drop_unmatched=drop,
                progress=lambda done, total: bar.progress(done / total, text=f"Importing: {done}/{total} events"))
            st.session_state["data_file"] = Path(report.out)
            st.success(f"Kept {rel(Path(report.out))}: {report.n_events} events, {report.n_pulses} pulses"
                       + (f", {report.n_dropped} pulses dropped" if report.n_dropped else ""))

path = pick_data_file()
if path is None:
    st.stop()
key = str(path)
with user_errors():
    summary = file_summary(key, mtime(path))
    geometry = geometry_of(key, mtime(path))

cols = st.columns(5)
cols[0].metric("Events", f"{summary.n_events:,}")
cols[1].metric("DOMs", f"{summary.n_doms:,}")
cols[2].metric("Hit DOMs / event", f"{summary.mean_hits_per_event:.1f}")
cols[3].metric("Hit fraction", f"{summary.hit_fraction:.3%}")
cols[4].metric("Max npe", f"{summary.npe_max:,.0f}")
st.caption(f"Hit times {summary.time_min:.0f} .. {summary.time_max:.0f} ns · geometry {geometry.name} "
           f"({len(geometry.strings)} strings) · attributes below")
with st.expander(f"File attributes ({', '.join(summary.attrs) or 'none'})"):
    for name, value in summary.attrs.items():  # whole values: a producer JSON cut at 80 characters misled
        st.markdown(f"**{name}**")
        try:
            st.json(json.loads(value), expanded=1)
        except json.JSONDecodeError:  # plain text, e.g. units or a schema version
            st.code(value, language=None, wrap_lines=True)

tab_event, tab_labels = st.tabs(["Event in 3D", "Label distributions"])
with tab_event:
    index = st.number_input("Event index", 0, summary.n_events - 1, 0, step=1)
    with user_errors():
        signal, label = read_event(key, mtime(path), int(index))
    npe, time = signal
    st.write(f"E = {label[0]:.3g} GeV · zenith {np.degrees(label[1]):.1f}° · azimuth {np.degrees(label[2]):.1f}° · "
             f"vertex ({label[3]:.0f}, {label[4]:.0f}, {label[5]:.0f}) m · {int((npe > 0).sum())} hit DOMs · "
             f"{npe.sum():,.0f} pe")
    st.plotly_chart(viz.event_figure(geometry, npe, time, label=label))
    st.plotly_chart(viz.charge_time_histograms({"this event": (npe, time)}))
with tab_labels:
    st.plotly_chart(viz.label_histograms(read_labels(key, mtime(path))))
