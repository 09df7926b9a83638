"""Train: choose a preset, edit its fields in a generated form, launch; watch active runs live, stop them."""


import uuid
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from genesis import config, launcher, live, paths, tracking, viz
from genesis.errors import GenesisError
from views._shared import data_files, device_options, ready_store, rel, user_errors

# CPU-sized presets first: a fresh clone on a laptop should start from something that trains there.
PRESETS = sorted((paths.PACKAGE_ROOT / "configs").glob("*.yaml"), key=lambda p: ("tiny" not in p.name, p.name))

st.title("Train")
store = ready_store()


class BadYaml(str):
    """A text field's YAML parse error (reported when the form is submitted)."""


def field_widget(spec: dict, value, key: str, cuda: bool):
    """One input widget for a config leaf field, chosen from its type and metadata."""
    label, help_text, tp = launcher.form_label(spec["key"]), spec["help"], spec["type"]
    if spec.get("choices"):
        options = list(spec["choices"])
        return st.selectbox(label, options, index=options.index(value) if value in options else 0, help=help_text, key=key)
    if spec["key"] == "train.amp":  # bf16 autocast does nothing on a CPU: unchecked there, not a false promise
        return st.checkbox(label, value=bool(value) and cuda, help=help_text, key=key, disabled=not cuda)
    if tp is bool:
        return st.checkbox(label, value=bool(value), help=help_text, key=key)
    if tp is int:
        return int(st.number_input(label, value=int(value), step=1, min_value=spec.get("minimum"), help=help_text, key=key))
    if tp is float:
        return float(st.number_input(label, value=float(value), min_value=spec.get("minimum"), format="%g",
                                     help=help_text, key=key))
    if spec["key"] == "data.normalization":
        text = st.text_area(label, yaml.safe_dump(value if isinstance(value, dict) else value.to_dict()),
                            help=help_text, key=key, height=180)
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            return BadYaml(config.yaml_reason(exc))
    return st.text_input(label, value=str(value), help=help_text, key=key)


KINDS = {"diffusion": "Diffusion transformer", "flow": "Normalizing flow", "distill": "Distill a checkpoint"}


def launch_form() -> None:
    kind = st.radio("Model", list(KINDS), horizontal=True, format_func=KINDS.get)
    if kind == "distill":
        distill_form()
        return
    presets = [p for p in PRESETS if config.load(p).kind == kind and not launcher.is_distill_preset(p)]
    preset = st.selectbox("Preset", presets, format_func=launcher.preset_label)
    if launcher.is_smoke_test(preset):
        st.caption(":material/science: **Smoke test**: checks that training runs end to end on a CPU in minutes; "
                   "its samples are not physical events. Use a full preset on a GPU for a usable model.")
    base = config.to_dict(config.load(preset))
    files = data_files()
    if not files:
        st.warning("No dataset in data/: create the demo dataset on the Home page first.")
        return
    # The preset's own dataset (or the demo), never "the newest file": an upload must not train unasked.
    default = launcher.default_dataset(base["data"]["path"], files)
    devices = device_options()
    with st.form("launch"):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Run name", base["name"])
        data_path = c2.selectbox("Dataset", files, index=files.index(default), format_func=rel,
                                 key=f"dataset:{preset.name}", help=f"Preset default: {base['data']['path']}")
        device = c3.selectbox("Device", devices)
        gpus = c3.number_input("GPUs (torchrun when > 1)", 1, 8, 1) if device == "cuda" else 1
        values = {}
        sections = launcher.form_specs(kind)
        for tab, (section, fields) in zip(st.tabs([s.title() for s in sections]), sections.items()):
            cols = tab.columns(3)
            for i, spec in enumerate(fields):
                current = base
                for part in spec["key"].split("."):
                    current = current[part]
                with cols[i % 3]:
                    values[spec["key"]] = field_widget(spec, current, f"{preset.name}:{spec['key']}", "cuda" in devices)
        submitted = st.form_submit_button("Launch", type="primary", icon=":material/rocket_launch:")
    if submitted:
        submit(kind, name, base, values, data_path, device, int(gpus))


def distill_form() -> None:
    """Progressive distillation of a diffusion checkpoint into a few-step student (genesis.distill)."""
    teachers, files = launcher.teacher_choices(store), data_files()
    if not teachers or not files:
        st.warning("Distillation needs a diffusion checkpoint and a dataset in data/ (Home page: demo data).")
        return
    presets = [p for p in PRESETS if launcher.is_distill_preset(p)]
    preset = st.selectbox("Preset", presets, format_func=launcher.preset_label)
    base = config.to_dict(config.load(preset))
    st.caption("Each round teaches the student (the teacher's model) one DDIM step for two of its teacher's.")
    devices = device_options()
    with st.form("distill"):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Run name", base["name"])
        teacher = c2.selectbox("Teacher checkpoint", teachers, format_func=lambda t: t[0])
        data_path = c3.selectbox("Dataset", files, format_func=rel,
                                 index=files.index(launcher.default_dataset(base["data"]["path"], files)))
        device = c1.selectbox("Device", devices)
        values = config.flatten({"train": base["train"], "distill": base["distill"]})
        cols = st.columns(4)
        for i, spec in enumerate(launcher.distill_form_specs()):
            with cols[i % 4]:
                values[spec["key"]] = field_widget(spec, values[spec["key"]], f"distill:{spec['key']}", "cuda" in devices)
        submitted = st.form_submit_button("Distill", type="primary", icon=":material/rocket_launch:")
    if submitted:
        submit("diffusion", name, base, {**values, "distill.teacher": teacher[1]}, data_path, device, 1)


def submit(kind: str, name: str, base: dict, values: dict, data_path: Path, device: str, gpus: int) -> None:
    """Build the config, check it against the dataset, launch; every problem is said before any run exists."""
    bad = [f"{key} is not valid YAML ({value})" for key, value in values.items() if isinstance(value, BadYaml)]
    if bad:
        st.error("Not launched: " + "; ".join(bad), icon=":material/error:")
        return
    data = {"kind": kind, "name": name, "experiment": base["experiment"]}
    for key, value in {**values, "data.path": rel(data_path), "train.device": device}.items():
        data = config.set_in(data, key, value)
    try:
        cfg = config.from_dict(config.RunConfig, data)
        checked = launcher.preflight(cfg, gpus)
        if not checked.ok:
            st.error("Not launched: " + rel(data_path) + (f" ({checked.summary()})" if checked.n_events else "")
                     + "\n\n" + "\n".join(f"- {p}" for p in checked.problems), icon=":material/error:")
            return
        run_id = launcher.launch(cfg, request_id=st.session_state.setdefault("request_id", uuid.uuid4().hex),
                                 gpus=gpus, store=store)
    except GenesisError as exc:
        st.error(f"Not launched: {exc}", icon=":material/error:")
        return
    st.session_state["launched"] = run_id
    st.rerun()


def live_curves(row: pd.Series) -> tuple[pd.DataFrame, live.Progress | None]:
    """The run's loss points and progress: from its log, reading only what was appended since the last
    refresh (state kept per run id in the session); runs without a local log read MLflow."""
    path = row.get(f"tags.{tracking.TAG_LOG}")
    if not isinstance(path, str) or not Path(path).is_file():
        return live.mlflow_points(store, row["run_id"], row.get(f"tags.{tracking.TAG_KIND}")), None
    states = st.session_state.setdefault("live_states", {})
    state, _ = live.update(states.get(row["run_id"]) or live.LiveState(path))
    states[row["run_id"]] = state
    return live.frame(state), live.progress(state)


def live_figure(run_id: str, kind: str, points: pd.DataFrame):
    """The run's loss figure, rebuilt only when new points arrived (a quiet refresh does no plotting work)."""
    figures = st.session_state.setdefault("live_figures", {})
    cached = figures.get(run_id)
    if cached is None or cached[0] != len(points):
        unit = tracking.LOSS_UNITS.get(kind, "")
        fig = viz.metric_curves(points, color="key", log_y=True, y_title=f"loss [{unit}]" if unit else "loss")
        figures[run_id] = cached = (len(points), fig)
    return cached[1]


def run_panel(row: pd.Series) -> None:
    kind = row.get(f"tags.{tracking.TAG_KIND}") or ""
    with st.container(border=True):
        head, stop_col = st.columns([5, 1])
        head.markdown(f"**{row['name']}** · `{row['run_id'][:8]}` · {kind}")
        if stop_col.button("Stop", key=f"stop-{row['run_id']}", icon=":material/stop_circle:"):
            launcher.stop(row["run_id"], timeout=20, store=store)
            st.rerun()
        points, prog = live_curves(row)
        if prog is not None:
            st.progress(prog.fraction, text=prog.text())
        if not points.empty:
            st.plotly_chart(live_figure(row["run_id"], kind, points), key=f"curve-{row['run_id']}")
        st.code(launcher.tail_file(row.get(f"tags.{tracking.TAG_LOG}"), 8) or "(no log yet)", language=None)


def active_runs() -> None:
    """One store query per refresh (the RUNNING runs, reused for reconciliation); curves come from logs."""
    with user_errors():
        frame, _ = store.search(filter_string="attributes.status = 'RUNNING'", max_results=20)
        tracking.reconcile(store, frame=frame)
    running = set(frame["run_id"]) if not frame.empty else set()
    ended = st.session_state.get("live_running", set()) - running
    st.session_state["live_running"] = running
    if ended:  # a run finished or failed: redraw the whole page so its status and reason show below
        st.rerun()
    if frame.empty:
        st.caption("No active runs.")
        return
    for _, row in frame.iterrows():
        run_panel(row)


def recent_runs() -> None:
    frame, _ = store.search(filter_string="attributes.status != 'RUNNING'", max_results=10)
    if frame.empty:
        return
    st.subheader("Recent runs")
    for i, row in frame.iterrows():
        status = row["status"]
        icon = {"FINISHED": ":material/check_circle:", "FAILED": ":material/error:", "KILLED": ":material/cancel:"}.get(status)
        if status == "FAILED":  # the reason in red, never folded away
            reason = row.get(f"tags.{tracking.TAG_ERROR}")
            st.error(f"**{row['name']}** failed: {reason if isinstance(reason, str) and reason else 'no reason recorded'}",
                     icon=":material/error:")
        with st.expander(f"{row['name']} · {status}", icon=icon, expanded=status == "FAILED" and i == 0):
            val_key = tracking.loss_key_of(row.get(f"tags.{tracking.TAG_KIND}"), "val",
                                           {c[len("metrics."):] for c in row.index if c.startswith("metrics.") and pd.notna(row[c])})
            loss = row.get(f"metrics.{val_key}") if val_key else None
            st.write(f"run `{row['run_id']}` · {val_key} {loss:.4g}" if loss is not None and pd.notna(loss) else f"run `{row['run_id']}`")
            st.code(launcher.tail_file(row.get(f"tags.{tracking.TAG_LOG}"), 12) or "(no log)", language=None)


if "launched" in st.session_state:
    run_id = st.session_state["launched"]
    with user_errors():
        launched = store.run(run_id)  # once per full rerun; the live view reruns the page when a run ends
    if launched.info.status == "FAILED":
        st.error(f"Run `{run_id}` failed: {launched.data.tags.get(tracking.TAG_ERROR) or 'no reason recorded'}",
                 icon=":material/error:")
    else:
        st.success(f"Launched run `{run_id}`: it keeps going if you close the dashboard.")
    if st.button("Launch another run", icon=":material/add:"):
        del st.session_state["launched"]
        st.session_state["request_id"] = uuid.uuid4().hex
        st.rerun()
else:
    launch_form()

head, every = st.columns([4, 1])
head.subheader("Active runs")
choices = sorted({*live.REFRESH_CHOICES, live.default_refresh_s()}) + [0.0]
refresh = every.selectbox("Refresh", choices, index=choices.index(live.default_refresh_s()),
                          format_func=lambda s: f"every {s:g} s" if s else "off",
                          help=f"How often the live view looks for new points (default: ${live.REFRESH_ENV} or 5 s)")
st.fragment(run_every=refresh or None)(active_runs)()
with user_errors():
    recent_runs()
