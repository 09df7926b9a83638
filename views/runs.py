"""Runs: filter and page through MLflow runs; compare the selected ones; rename, tag or delete them."""

import streamlit as st

from genesis import runs, tracking, viz
from genesis.errors import GenesisError
from views._shared import ready_store, user_errors

PAGE_SIZES = [10, 25, 50, 100, 200]
ANY = "any"

st.title("Runs")
store = ready_store()

with user_errors():
    experiments = store.list_experiments()
c1, c2, c3, c4 = st.columns([2, 1, 1, 2])
default = [e for e in experiments if e == tracking.DEFAULT_EXPERIMENT] or experiments[:1]
chosen = c1.multiselect("Experiments", experiments, default=default)
status = c2.selectbox("Status", [ANY, *runs.STATUSES])
name = c3.text_input("Name contains")
param_filter = c4.text_input("Filter", placeholder="params.kind = 'flow'",
                             help="An MLflow filter, e.g. params.kind = 'flow' and metrics.`val/loss` < 0.5")
with st.expander("Display"):
    page_size = st.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(50))
    ui_url = st.text_input("MLflow UI URL", value=runs.ui_url_from_env(), placeholder="http://127.0.0.1:5000",
                           help=f"Adds a link to each run; default from ${runs.UI_URL_ENV}").strip()
try:
    if ui_url:
        runs.mlflow_ui_link(ui_url, "0", "0")
except GenesisError as exc:
    st.warning(f"{exc}. Showing runs without MLflow links.")
    ui_url = ""
if not chosen:
    st.info("Choose at least one experiment.")
    st.stop()

with user_errors():
    tracking.reconcile(store, chosen)  # runs whose training process died show as FAILED

# Paging: MLflow page tokens, reset whenever the filters change.
signature = (tuple(chosen), status, name, param_filter, ui_url, page_size)
if st.session_state.get("runs_filter") != signature:
    st.session_state.runs_filter = signature
    st.session_state.runs_tokens = [None]
    st.session_state.runs_view = st.session_state.get("runs_view", 0) + 1
tokens = st.session_state.runs_tokens
with user_errors():
    table, next_token = runs.runs_table(store, chosen, None if status == ANY else status, name, param_filter,
                                        page_size, tokens[-1], ui_url or None)

if table.empty:
    filtered = status != ANY or name or param_filter or len(tokens) > 1
    st.info("No runs match these filters." if filtered else "No runs yet: launch one on the **Train** page.")
    st.stop()

first = (len(tokens) - 1) * page_size
hidden = {"run_id", "experiment_id"}
event = st.dataframe(
    table, key=f"runs_table_{st.session_state.runs_view}", on_select="rerun", selection_mode="multi-row",
    hide_index=True, column_order=[c for c in table.columns if c not in hidden],
    column_config={"mlflow": st.column_config.LinkColumn("MLflow", display_text="open"),
                   "reason": st.column_config.TextColumn("failure reason", width="large"),
                   "start": st.column_config.DatetimeColumn("start (UTC)", format="YYYY-MM-DD HH:mm:ss")})
# Paging under the table: above it, the table's hover toolbar (search, download, full screen) covered Next.
prev, where, nxt = st.columns([1, 4, 1])
where.caption(f"Page {len(tokens)}: runs {first + 1}-{first + len(table)}. Select rows to compare them.")
if prev.button("Previous", icon=":material/chevron_left:", disabled=len(tokens) == 1):
    tokens.pop()
    st.session_state.runs_view += 1
    st.rerun()
if nxt.button("Next", icon=":material/chevron_right:", disabled=not next_token):
    tokens.append(next_token)
    st.session_state.runs_view += 1
    st.rerun()
picked = [table["run_id"].iloc[i] for i in event.selection.rows if i < len(table)]
# A failure's reason in red, not folded away: the selected failed runs, else the newest run if it failed.
explain = picked or (table["run_id"].iloc[:1].tolist() if len(tokens) == 1 else [])
for _, row in table[table["run_id"].isin(explain) & (table["status"] == "FAILED")].iterrows():
    st.error(f"**{row['name']}** failed: {row['reason']}", icon=":material/error:")
if not picked:
    st.stop()

# ---------------------------------------------------------------------------------------------- compare
with user_errors():  # a distilled student is compared with its teacher (tag genesis.teacher_run_id)
    teachers = runs.teacher_runs(store, picked)
compared = picked + teachers if teachers and st.toggle(
    "Include the teacher run" + ("s" if len(teachers) > 1 else ""), value=True,
    help="The selection holds distilled students: compare them with the runs of their teachers") else picked
with user_errors():
    frame = runs.selected_runs(store, compared)
labels = runs.run_labels(frame).tolist()
st.subheader(f"Compare {len(compared)} run{'s' if len(compared) > 1 else ''}")
options = runs.compare_options(frame)
if not options:
    st.info("The selected runs have not logged any metrics yet.")
else:
    m1, m2, m3, m4 = st.columns([2, 1, 2, 1])
    metric = m1.selectbox("Metric", options, index=runs.shared_option(frame, options),
                          help="A loss is each run's own: MSE for diffusion, NLL (nats per event) for flows, drawn "
                               "in one panel per model kind. Starts on a metric every selected run has logged.")
    x = m2.radio("x axis", ["step", "wall time"], horizontal=True)
    smoothing = m3.slider("Smoothing", 0.0, 0.99, 0.0, 0.01)
    log_y = m4.toggle("Log scale", value=False, help="Panels with values ≤ 0 (a flow's NLL) stay linear")
    with user_errors():
        curves = runs.compare_curves(store, compared, metric, x)
    lacking = runs.runs_without(frame, metric)
    if lacking:  # e.g. a short diffusion run has no val loss yet, a flow logs val/nll and no val/loss
        st.caption(f"Not in this chart (no {metric} logged): {', '.join(lacking)}")
    st.plotly_chart(viz.loss_panels(curves, x=runs.X_AXES[x], log_y=log_y, smoothing=smoothing),
                    key="compare_curves")
    if len(compared) > 1:
        diff = runs.differing_params(frame)
        st.markdown("**Params that differ**")
        st.caption(f"Each model kind's own params are compared among runs of that kind ({runs.NOT_APPLICABLE}: "
                   "does not apply).")
        if diff.columns.empty:
            st.caption("All params are equal.")
        else:
            st.dataframe(diff)
        kind = runs.single_kind(frame)
        key = curves["metric"].iloc[0] if len(curves) and curves["metric"].nunique() == 1 else None
        if kind and key:  # one kind, one metric: the parallel plot's colour means the same for every line
            numeric = runs.numeric_params_vs_metric(frame, key)
            if len(numeric.columns) > 1:
                st.plotly_chart(viz.parallel_coordinates(numeric, key), key="parallel_coordinates")
if ui_url:
    with user_errors():
        st.markdown("  \n".join(f"[{label}]({runs.mlflow_ui_link(ui_url, e, r)})" for label, e, r
                                in zip(labels, frame["experiment_id"], frame["run_id"])))

# ---------------------------------------------------------------------------------------------- actions
st.subheader("Actions")
a1, a2, a3 = st.columns(3)
with a1:
    if len(picked) == 1:
        new_name = st.text_input("New name", value=labels[0])
        if st.button("Rename", icon=":material/edit:"):
            with user_errors():
                runs.rename_run(store, picked[0], new_name)
            st.rerun()
    else:
        st.caption("Select one run to rename it.")
with a2:
    tag_key = st.text_input("Tag key")
    tag_value = st.text_input("Tag value")
    if st.button("Add tag", icon=":material/sell:", disabled=not tag_key):
        with user_errors():
            for run_id in picked:
                runs.tag_run(store, run_id, tag_key, tag_value)
        st.success(f"Tagged {len(picked)} run(s) {tag_key}={tag_value}")
with a3:
    sure = st.checkbox(f"Yes, delete {len(picked)} run(s)")
    if st.button("Delete", icon=":material/delete:", type="primary", disabled=not sure):
        with user_errors():
            runs.delete_runs(store, picked)
        st.session_state.runs_view += 1
        st.rerun()
