"""Checkpoints: pick a run's checkpoint or upload one; inspect it as tables and a diagram; compare two."""

import streamlit as st

from genesis import checkpoints_index as ci
from genesis import inspect as gi
from genesis import paths, ranges, runs, viz
from genesis.errors import GenesisError
from views._shared import MAX_UPLOAD_MB, data_files, mtime, ready_store, rel, save_upload, user_errors

REPORT_BATCH = 64  # batch of the data-flow shapes; the Memory tab has its own


@st.cache_data(show_spinner="Inspecting the checkpoint...", max_entries=16)
def inspect(path: str, modified: float, batch: int) -> dict:
    return gi.inspect_checkpoint(path, batch)


@st.cache_data(show_spinner="Reading the dataset...", max_entries=8)
def dataset_diff(path: str, modified: float, data: str, data_modified: float) -> list[str]:
    return ci.suggested_normalization_diff(inspect(path, modified, REPORT_BATCH), data)


@st.cache_data(show_spinner="Reading the dataset...", max_entries=8)
def dataset_fit(path: str, modified: float, data: str, data_modified: float) -> list[str]:
    return ci.normalization_fit(inspect(path, modified, REPORT_BATCH), data)


@st.cache_data(show_spinner="Comparing the dataset with the training ranges...", max_entries=8)
def dataset_ranges(path: str, modified: float, data: str, data_modified: float) -> ranges.RangeReport:
    return ranges.dataset_report(ranges.record_of(inspect(path, modified, REPORT_BATCH)), data)


def show_ranges(report: ranges.RangeReport, name: str) -> None:
    """The share of the dataset's events outside the checkpoint's training ranges, and which."""
    if not report.recorded:
        st.info(report.summary(name), icon=":material/info:")
        return
    (st.warning if report.n_outside else st.success)(f"**Training ranges.** {report.summary(name)}",
                                                     icon=":material/warning:" if report.n_outside else None)
    with st.expander("Every label and signal against the training ranges", expanded=bool(report.n_outside)):
        st.dataframe(report.table.drop(columns="unit"), hide_index=True,
                     column_config={"share outside": st.column_config.NumberColumn(format="percent")})
        st.caption("Signals: npe and first-hit time of hit DOMs; an event counts when any of its hits lies outside. "
                   f"Values within {ranges.TOLERANCE:.0%} of a range's span (energy and npe on a log scale) count as inside.")


def shown(fn, *args):
    """fn(*args), or None after showing a GenesisError as a message (the rest of the page still renders)."""
    try:
        return fn(*args)
    except GenesisError as exc:
        st.error(str(exc), icon=":material/error:")
        return None


st.title("Checkpoints")
store = ready_store()

with st.expander(f"Upload a checkpoint (.pt, at most {MAX_UPLOAD_MB} MB)", icon=":material/upload:"):
    upload = st.file_uploader("PyTorch checkpoint", type=["pt"], max_upload_size=MAX_UPLOAD_MB)
    if upload is not None and st.button("Inspect and keep", icon=":material/fact_check:"):
        try:
            target = save_upload(upload, ci.uploads_dir(), (".pt",))
            ci.keep_upload(upload.getvalue(), target)  # raises CheckpointError: nothing is kept
            st.session_state.ckpt_pick = str(target)
            st.success(f"Kept {rel(target)}")
        except GenesisError as exc:
            st.error(f"Not kept: {exc}", icon=":material/error:")

with user_errors():
    table = ci.list_checkpoints(store)
if table.empty:
    st.info("No checkpoints yet: train a model on the **Train** page, or upload a .pt file above.")
    st.stop()
labels, mtimes = dict(zip(table["path"], table["label"])), dict(zip(table["path"], table["mtime"]))
options = list(table["path"])
if st.session_state.get("ckpt_pick") not in options:
    st.session_state.pop("ckpt_pick", None)
path = st.selectbox("Checkpoint", options, format_func=labels.get, key="ckpt_pick")
row = ci.checkpoint_row(table, path)
with user_errors():
    report = inspect(path, mtimes[path], REPORT_BATCH)
src, model, params, norm = (report[k] for k in ("source", "model", "parameters", "normalization"))
for note in src.get("notes", []):
    st.warning(note, icon=":material/warning:")

tabs = st.tabs(["Overview", "Normalization", "Parameters", "Data flow", "Memory", "Provenance", "Compare"])
with tabs[0]:
    c = st.columns(4)
    c[0].metric("Kind", src["kind"])
    c[1].metric("Model", model["type"])
    c[2].metric("Parameters", f"{params['total']:,}")
    c[3].metric("File size", f"{src['size_mb']:.2f} MB")
    st.caption(f"{rel(path)} · {'loadable for sampling' if src['loadable'] else 'not loadable for sampling'}"
               + f" · modified {row['modified']:%Y-%m-%d %H:%M} UTC")
    left, right = st.columns(2)
    left.markdown("**Model**")
    left.dataframe(ci.kv_table({k: v for k, v in model.items() if k not in ("type", "kind")}), hide_index=True)
    right.markdown("**Config**")
    right.dataframe(ci.kv_table(report["config"]), hide_index=True)

with tabs[1]:
    affine, label_table = ci.normalization_tables(report)
    st.caption("x_n = (T(x) - offset) / scale per channel, dimensionless; offset and scale are in the unit of "
               "T(x) shown. Samples are denormalized with these values.")
    left, right = st.columns(2)
    left.markdown("**Signal and geometry**")
    left.dataframe(affine, hide_index=True)
    right.markdown("**Labels**")
    right.dataframe(label_table, hide_index=True)
    noise_model = ((report.get("provenance") or {}).get("data") or {}).get("noise")
    # data.noise_radius_m: isolated hits were kept apart in training and are drawn again at sampling
    if noise_model and noise_model.get("time_quantiles_ns"):
        st.markdown("**Detector noise**: taken out of the training events, drawn at sampling from this model")
        st.plotly_chart(viz.noise_model_figure(noise_model), key="noise_model")
    files = data_files()
    if not files:
        st.info("No datasets in data/ to compare with.")
    else:
        trained_on = str((report.get("provenance") or {}).get("data", {}).get("path", ""))
        names = [str(f) for f in files]
        data = st.selectbox("Compare with a dataset", files, format_func=rel,
                            index=names.index(trained_on) if trained_on in names else 0,
                            help="Offsets and scales that `genesis stats` would suggest for it, with the "
                                 "checkpoint's transforms")
        with user_errors():
            data = paths.inside(data, paths.data_dir())
        in_range = shown(dataset_ranges, path, mtimes[path], str(data), mtime(data))
        if in_range is not None:
            show_ranges(in_range, rel(data))
        problems = shown(dataset_fit, path, mtimes[path], str(data), mtime(data))
        if problems:
            st.warning(f"{rel(data)} does not fit the checkpoint's normalization:\n\n"
                       + "\n".join(f"- {d}" for d in problems), icon=":material/warning:")
        elif problems is not None:  # readable is not the same as trained on: the ranges above say that
            (st.caption if in_range is not None and in_range.n_outside else st.success)(
                f"Normalization: the bulk of every channel of {rel(data)} lies within ±{ci.FIT_LIMIT:g} after "
                "normalization, so the model can read the file.")
        diffs = shown(dataset_diff, path, mtimes[path], str(data), mtime(data)) if problems is not None else None
        if diffs:  # information, not a warning: hand-chosen preset values differ from these and still fit
            with st.expander("What `genesis stats` would suggest for this dataset"):
                st.markdown("\n".join(f"- {d}" for d in diffs))

with tabs[2]:
    st.caption(f"{params['total']:,} parameters ({params.get('trainable') or 0:,} trainable), "
               f"{params.get('buffers') or 0:,} buffer values, {params['size_mb']:.2f} MB in fp32; "
               f"grouped by {params.get('grouping', 'module class')}")
    left, right = st.columns(2)
    left.dataframe(params["by_type"], hide_index=True,
                   column_config={"share_pct": st.column_config.NumberColumn("share %", format="%.1f")})
    right.plotly_chart(ci.by_type_figure(report), key="by_type")
    with st.expander(f"All {len(params['modules'])} modules"):
        st.dataframe(params["modules"], hide_index=True)

with tabs[3]:
    st.plotly_chart(ci.data_flow_figure(report), key="data_flow")
    st.caption(f"Shapes at batch {REPORT_BATCH}; {report.get('data_flow_method', '')}")
    if report["data_flow"]:
        st.dataframe(report["data_flow"], hide_index=True)

with tabs[4]:
    trained_batch = ci.training_batch(report, REPORT_BATCH)
    batch = st.number_input("Batch size", 1, 1 << 16, trained_batch, help=f"the run trained at {trained_batch}")
    at_batch = shown(inspect, path, mtimes[path], int(batch))
    if at_batch:
        mem = at_batch["memory"]
        c = st.columns(3)
        for col, key, name in zip(c, ("total_fp32_mb", "total_bf16_mb", "activations_mb"),
                                  ("Total fp32", "Total bf16 autocast", "Activations")):
            col.metric(name, "unknown" if mem.get(key) is None else f"{mem[key]:,.1f} MB")
        st.dataframe(ci.memory_table(mem), hide_index=True,
                     column_config={"MB": st.column_config.NumberColumn(format="%.2f")})
        st.caption(mem.get("method", ""))

with tabs[5]:
    prov = report.get("provenance") or {}
    st.dataframe(ci.kv_table(prov), hide_index=True)
    run_id, ui_url = row["run_id"] or prov.get("run_id"), runs.ui_url_from_env()
    if run_id and ui_url and row["experiment_id"]:
        try:
            st.markdown(f"[Open run {row['run_name']} in MLflow]"
                        f"({runs.mlflow_ui_link(ui_url, row['experiment_id'], run_id)})")
        except GenesisError as exc:
            st.warning(str(exc))
    elif run_id:
        st.caption(f"MLflow run {run_id}: see the **Runs** page (set ${runs.UI_URL_ENV} for a link to the MLflow UI).")

with tabs[6]:
    runs_of = dict(zip(table["path"], table["run_id"].fillna("")))
    others = sorted((p for p in options if p != path), key=lambda p: runs_of[p] == runs_of[path])  # other runs first
    if not others:
        st.info("Only one checkpoint: train or upload another one to compare.")
    else:
        if st.session_state.get("ckpt_other") not in others:
            st.session_state.pop("ckpt_other", None)
        other = st.selectbox("Compare with", others, format_func=labels.get, key="ckpt_other")
        b = shown(inspect, other, mtimes[other], REPORT_BATCH)
        if b:
            rows = ci.compare_table(report, b)
            st.caption(f"A = {labels[path]} · B = {labels[other]} · "
                       f"{int(rows['differs'].sum())} of {len(rows)} values differ")
            if norm_diffs := ci.normalization_differences(rows):
                st.warning("Normalization differs: samples of one model denormalized with the other's metadata "
                           "would be wrong.\n\n" + "\n".join(f"- {d}" for d in norm_diffs), icon=":material/warning:")
            else:
                st.success("Same normalization.")
            only = st.toggle("Only differences", value=False)
            view = rows[rows["differs"]] if only else rows
            st.dataframe(ci.highlight_differences(view), hide_index=True,
                         column_config={"differs": st.column_config.CheckboxColumn("differs")})
