"""Home: where the store is, which datasets exist, runs by status, and a one-click demo dataset."""

import os

import streamlit as st

from genesis import paths, tracking
from views._shared import data_files, ready_store, rel, user_errors

DEMO_EVENTS = int(os.environ.get("GENESIS_DEMO_EVENTS", 3000))

st.title("GENESIS")
st.caption("Generative models of IceCube neutrino events: train, compare, inspect, sample and inpaint.")

store = ready_store()
left, right = st.columns(2)
left.metric("MLflow store", "local SQLite" if store.is_local else "remote server")
left.code(store.tracking_uri, language=None)
files = data_files(generated=False)  # generated samples are listed on the Data page, not counted as datasets
right.metric("Datasets in data/", len(files))
for f in files[:10]:
    right.write(f"`{rel(f)}`")
if n_generated := len(data_files()) - len(files):
    right.caption(f"and {n_generated:,} generated sample file{'s' if n_generated > 1 else ''} in data/generated/")

with user_errors():
    with st.spinner("Checking runs"):
        tracking.reconcile(store)
        frame, _ = store.search(max_results=500)
if frame.empty:
    st.info("No runs yet: launch one on the **Train** page.")
else:
    counts = frame["status"].value_counts()
    cols = st.columns(4)
    for col, status in zip(cols, ("RUNNING", "FINISHED", "FAILED", "KILLED")):
        col.metric(status.title(), int(counts.get(status, 0)))

if not files:
    st.subheader("Get started")
    st.write(f"Create a demo dataset of {DEMO_EVENTS} simulated events on the built-in IceCube-86-like geometry.")
    if st.button("Create demo dataset", type="primary", icon=":material/add:"):
        from genesis.data.simulate import simulate_to_file
        from genesis.geometry import icecube86_like

        bar = st.progress(0.0, text="Simulating events")
        with user_errors():
            simulate_to_file(paths.data_dir() / "demo.h5", DEMO_EVENTS, icecube86_like(), seed=0,
                             progress=lambda done, total: bar.progress(done / total, text=f"Simulated {done}/{total} events"))
        st.success("Created data/demo.h5")
        st.rerun()
