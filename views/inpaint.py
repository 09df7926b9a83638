"""Inpaint: fill masked or dead DOMs of a dataset event with a flow (MAP) or diffusion (RePaint) checkpoint,
compare with the true event and with simple baselines, and download the result as HDF5."""

import time

import numpy as np
import streamlit as st

from genesis import inpaint, ranges, viz
from genesis import sample_session as ss
from genesis.errors import GenesisError
from views._shared import (MAX_UPLOAD_MB, data_files, file_summary, geometry_of, mtime, pick_checkpoint, pick_data_file,
                           ready_store, rel, user_errors)

METHODS = {"flow-map": "Flow MAP (flow checkpoint; with a hit head the best fill measured but for a sphere)",
           "repaint": "RePaint (diffusion checkpoint; slower; the best fill measured for a sphere)",
           "neighbours": "Neighbours on the string (baseline)", "zero": "Zero: dead DOM (baseline)"}

UNCERTAINTY = {"hit probability": 0, "npe spread over restarts [pe]": 1,
               "time spread over restarts [ns]": 2}

st.title("Inpaint")
store = ready_store()
WARMUP_TTL_S = 120  # a warm-up measures the machine now: measured again after this (its load changes)


@st.cache_data(show_spinner="Timing the method on this machine", ttl=WARMUP_TTL_S)
def warmup_tries(method: str, path: str, stamp: float, device: str, _loaded) -> list:
    """Timed tries of flow MAP ((s per restart, s per step)) or RePaint (s per evaluation) on one event."""
    return (inpaint.time_flow_map_tries if method == "flow-map" else inpaint.time_repaint_tries)(_loaded, 1)


def _add_clicked_strings() -> None:
    """on_select of the top view: add the clicked/boxed strings to the strings list."""
    points = st.session_state["top_view"].selection.points
    picked = ss.strings_from_selection(points)
    st.session_state["mask_strings"] = sorted(set(st.session_state.get("mask_strings", [])) | set(picked))


def mask_widgets(geometry, seed: int) -> tuple[np.ndarray | None, str]:
    """Mask parts from widgets and the clickable top view -> (mask (P,) or None with a message shown, spec)."""
    valid = [int(s) for s in geometry.strings]
    st.session_state["mask_strings"] = [s for s in st.session_state.get("mask_strings", []) if s in valid]
    left, right = st.columns([2, 3])
    with left:
        strings = st.multiselect("Strings (or click / box-select them in the top view)", valid, key="mask_strings")
        fraction = st.slider("Random DOMs [%]", 0.0, 50.0, 0.0, step=0.5) / 100
        deepcore = st.checkbox("DeepCore strings")
        sphere = None
        if st.checkbox("Sphere"):
            c = st.columns(4)
            sphere = tuple(float(c[i].number_input(f"{a} [m]", value=v, key=f"sphere_{a}"))
                           for i, (a, v) in enumerate(zip(("x", "y", "z", "radius"), (0.0, 0.0, -300.0, 100.0))))
        upload = st.file_uploader(f"Dead-DOM list (CSV string,dom or one DOM index per line; ≤ {MAX_UPLOAD_MB} MB)",
                                  type=["csv", "txt"])
    with right:
        st.plotly_chart(viz.top_view_figure(geometry, strings), key="top_view", on_select=_add_clicked_strings,
                        selection_mode=("points", "box", "lasso"))
    if not (strings or fraction or deepcore or sphere or upload):  # nothing chosen yet: a hint, not a warning
        st.caption("Choose what to mask: strings (list or top view), random DOMs, DeepCore, a sphere or a "
                   "dead-DOM file.")
        return None, ""
    try:
        if upload is not None and upload.size > MAX_UPLOAD_MB * 2**20:
            raise GenesisError(f"upload is {upload.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB")
        dead = (upload.name, upload.getvalue()) if upload is not None else None
        mask, spec = ss.build_mask(geometry, strings, fraction, deepcore, sphere, dead, seed)
    except GenesisError as exc:
        st.warning(str(exc), icon=":material/warning:")
        return None, ""
    st.caption(f"{int(mask.sum()):,} of {mask.size:,} DOMs masked · `{spec}`")
    return mask, spec


def method_settings(method: str, loaded, ckpt, device: str) -> dict:
    """Widgets of the chosen method's settings (CPU-sized defaults on the CPU)."""
    c = st.columns(3)
    if method == "flow-map":
        steps, restarts = ss.map_defaults(device)
        return {"steps": int(c[0].number_input("Optimisation steps", 1, 5000, steps)),
                "restarts": int(c[1].number_input("Restarts", 1, 10, restarts,
                                                  help="MAP runs from different samples (of the flow, or of its hit "
                                                       "head's values): combined as the checkpoint's "
                                                       "flow.inpaint_fill says; their spread is the per-DOM uncertainty"))}
    if method == "repaint":
        t = loaded.config.diffusion.timesteps
        steps = int(c[0].number_input("RePaint steps", 1, t, min(inpaint.REPAINT_STEPS, t)))
        c[1].caption(f"Slow, high-quality option (jump length {inpaint.REPAINT_JUMP_LENGTH}, "
                     f"{inpaint.REPAINT_RESAMPLE} passes).")
        return {"steps": steps}
    c[0].caption("Baselines have no settings.")
    return {}


def expected_time(method: str, loaded, ckpt, device: str, settings: dict, n_masked: int) -> None:
    """The expected time of a run as a range, shown before it starts: from a short timed warm-up on this machine
    now, widened by the rate of the last run of the same method and checkpoint."""
    if method not in inpaint.METHOD_KIND:
        st.caption("Expected time: well under a second (a baseline).")
        return
    tries = warmup_tries(method, str(ckpt.path), mtime(ckpt.path), device, loaded)
    rate = st.session_state.get("inpaint_rates", {}).get((method, str(ckpt.path)))  # of the last run, s per unit
    expected = inpaint.expected_seconds(method, tries, settings["steps"], settings.get("restarts", 1), rate)
    work = inpaint.work_units(method, settings["steps"], settings.get("restarts", 1))[1]
    st.caption(inpaint.expected_time_text(device, n_masked, expected, work, last_rate=rate is not None))


def run(loaded, path, index: int, geometry, mask, spec: str, method: str, settings: dict) -> None:
    with user_errors():
        with st.status(f"Inpainting event {index} with {method}", expanded=True) as status:
            bar, t0 = st.progress(0.0, text="starting"), time.time()

            def progress(done: int, total: int) -> None:
                eta = (time.time() - t0) / max(done, 1) * (total - done)
                bar.progress(min(done / max(total, 1), 1.0), text=f"step {done}/{total} · ETA {eta:,.0f} s")

            result = ss.run_inpaint(loaded, path, index, geometry, mask, method, progress=progress, **settings)
            producer = {"producer": "genesis inpaint", "interface": "dashboard", "checkpoint": str(loaded.path),
                        "method": method, "mask": spec, "data": rel(path), "events": [index], **settings,
                        "metrics": result.metrics}
            data = ss.inpaint_hdf5_bytes(result, geometry, producer)
            status.update(label=f"Inpainted {int(mask.sum())} DOMs in {result.seconds:.1f} s", state="complete",
                          expanded=False)
    if method in inpaint.METHOD_KIND:  # the rate of this run widens the next estimate
        units = inpaint.work_units(method, settings["steps"], settings.get("restarts", 1))[0]
        st.session_state.setdefault("inpaint_rates", {})[(method, str(loaded.path))] = result.seconds / units
    st.session_state["inpaint"] = {"result": result, "geometry": geometry, "hdf5": data, "index": index,
                                   "name": ss.safe_name(f"inpaint-{path.stem}-{index}-{method}") + ".h5"}


def _number(value, spec: str) -> str:
    return "n/a" if value is None or np.isnan(value) else format(value, spec)


def show_results(state: dict) -> None:
    result, geometry = state["result"], state["geometry"]
    beat, verdict = ss.inpaint_verdict(result)
    (st.success if beat else st.warning)(f"Verdict: {verdict}", icon=":material/verified:" if beat
                                         else ":material/warning:")
    chosen = result.metrics[result.method]
    c = st.columns(5)
    c[0].metric("Score (MSE)", f"{chosen['mse_all']:.3g}", help="mean squared error over the masked DOMs in one "
                "scoring space for every method and checkpoint (log1p npe, time / 2000 ns), ± its standard error "
                f"{chosen['mse_all_se']:.2g}; see genesis.inpaint.metrics")
    c[1].metric("npe |error| [pe]", f"{chosen['npe_abs_error']:.3g}", help="mean over the masked DOMs")
    c[2].metric("time |error| [ns]", _number(chosen["time_error_ns"], ".3g"),
                help="median over masked DOMs hit both in the truth and in the fill")
    c[3].metric("Hit precision", _number(chosen["precision"], ".0%"), help="share of filled hits that are true hits")
    c[4].metric("Hit recall", _number(chosen["recall"], ".0%"), help="share of the true hits that are filled")
    st.dataframe(ss.metrics_table(result), width="stretch")
    events = [("masked", result.masked[0, 0], result.masked[0, 1]),
              (f"inpainted ({result.method})", result.filled[0, 0], result.filled[0, 1]),
              ("true", result.true[0, 0], result.true[0, 1])]
    colour = "first-hit time"
    if result.uncertainty is not None:
        colour = st.radio("3D colour", ["first-hit time", *UNCERTAINTY], horizontal=True,
                          help="Uncertainty at each masked DOM: its hit probability (the flow's hit head, or for flows "
                               "without one the share of MAP restarts that hit it) and how the restarts' values spread")
    if colour == "first-hit time":
        st.plotly_chart(viz.linked_event_figures(geometry, events, label=result.labels[0], mask=result.mask),
                        key="inpaint_views")
    else:
        st.plotly_chart(viz.uncertainty_event_figure(geometry, result.filled[0, 0], result.filled[0, 1],
                                                     result.uncertainty[0, UNCERTAINTY[colour]], result.mask,
                                                     colour, label=result.labels[0]), key="inpaint_uncertainty")
    c = st.columns(2)
    quantity = c[0].radio("Error of", ["npe", "time"], horizontal=True)
    axis = c[1].radio("Against", ["index", "z"], horizontal=True, format_func={"index": "DOM index", "z": "depth"}.get)
    error = ss.per_dom_error(result, 0 if quantity == "npe" else 1)
    st.plotly_chart(viz.per_dom_error_figure(error, result.mask, geometry, x=axis, quantity=quantity),
                    key="inpaint_error")
    if result.trace:
        st.caption("Flow MAP: mean log-probability per optimisation step (best restart)")
        st.line_chart(result.trace, height=180)
    st.download_button("Download HDF5 (inpainted, masked, true, mask)", data=state["hdf5"], file_name=state["name"],
                       mime="application/x-hdf5", icon=":material/download:")


ckpt, device, loaded = pick_checkpoint(store, "flow", "No checkpoints yet: train a flow (or diffusion) model on the **Train** page.")
# the checkpoint's own training file, else the demo dataset: never merely the newest upload
path = pick_data_file("Event from dataset", default=ss.preferred_data_file(data_files(), ss.trained_on(loaded)))
if path is None:
    st.stop()
with user_errors():
    geometry = geometry_of(str(path), mtime(path))
    n_events = file_summary(str(path), mtime(path)).n_events
c = st.columns([1, 3, 1])
index = int(c[0].number_input("Event", 0, n_events - 1, 0))
# the method that uses the chosen checkpoint (keyed by its kind, so choosing another kind of checkpoint switches it)
method = c[1].selectbox("Method", list(METHODS), index=list(METHODS).index("repaint" if loaded.kind == "diffusion" else "flow-map"),
                        format_func=METHODS.get, key=f"method-{loaded.kind}")
seed = int(c[2].number_input("Seed", 0, 2**31 - 1, 0, help="for the random mask and the method's samples"))
with user_errors():
    ss.check_inpaint_inputs(loaded, geometry, method)
    for message in ranges.event_warnings(loaded, path, index):  # in words; inpainting goes ahead
        st.warning(message, icon=":material/warning:")
settings = method_settings(method, loaded, ckpt, device)
st.subheader("Mask")
mask, spec = mask_widgets(geometry, seed)
if mask is not None:
    expected_time(method, loaded, ckpt, device, settings, int(mask.sum()))
if st.button("Inpaint", type="primary", icon=":material/healing:", disabled=mask is None):
    run(loaded, path, index, geometry, mask, spec, method, {**settings, "seed": seed})
if "inpaint" in st.session_state:
    show_results(st.session_state["inpaint"])
