"""Train: choose a preset, edit its fields in a generated form, launch; watch active runs live, stop them."""


import uuid


import pandas as pd
import streamlit as st
import yaml

from genesis import config, launcher, paths, tracking, viz
from genesis.errors import GenesisError
from pages._shared import data_files, device_options, ready_store, rel, user_errors

SECTIONS = {"diffusion": ("model", "diffusion", "data", "train"), "flow": ("flow", "data", "train")}
# CPU-sized presets first: a fresh clone on a laptop should start from something that trains there.
PRESETS = sorted((paths.PACKAGE_ROOT / "configs").glob("*.yaml"), key=lambda p: ("tiny" not in p.name, p.name))

st.title("Train")
store = ready_store()


class BadYaml(str):
    """A text field's YAML parse error (reported when the form is submitted)."""


def field_widget(spec: dict, value, key: str):
    """One input widget for a config leaf field, chosen from its type and metadata."""
    label, help_text, tp = spec["key"].split(".")[-1], spec["help"], spec["type"]
    if spec.get("choices"):
        options = list(spec["choices"])
        return st.selectbox(label, options, index=options.index(value) if value in options else 0, help=help_text, key=key)
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


def set_nested(d: dict, dotted: str, value) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        set_nested(d.setdefault(head, {}), rest, value)
    else:
        d[head] = value


def launch_form() -> None:
    kind = st.radio("Model", ["diffusion", "flow"], horizontal=True,
                    format_func=lambda k: "Diffusion transformer" if k == "diffusion" else "Normalizing flow")
    presets = [p for p in PRESETS if config.load(p).kind == kind]
    preset = st.selectbox("Preset", presets, format_func=lambda p: p.name)
    base = config.to_dict(config.load(preset))
    files = data_files()
    if not files:
        st.warning("No dataset in data/: create the demo dataset on the Home page first.")
        return
    devices = device_options()
    with st.form("launch"):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Run name", base["name"])
        data_path = c2.selectbox("Dataset", files, format_func=rel)
        device = c3.selectbox("Device", devices)
        gpus = c3.number_input("GPUs (torchrun when > 1)", 1, 8, 1) if device == "cuda" else 1
        values = {}
        tabs = st.tabs([s.title() for s in SECTIONS[kind]])
        specs = config.field_specs(config.RunConfig)
        for tab, section in zip(tabs, SECTIONS[kind]):
            cols = tab.columns(3)
            fields = [s for s in specs if s["key"].startswith(section + ".") and s["key"] not in ("data.path", "train.device")]
            for i, spec in enumerate(fields):
                current = base
                for part in spec["key"].split("."):
                    current = current[part]
                with cols[i % 3]:
                    values[spec["key"]] = field_widget(spec, current, f"{kind}:{spec['key']}")
        submitted = st.form_submit_button("Launch", type="primary", icon=":material/rocket_launch:")
    if not submitted:
        return
    bad = [f"{key} is not valid YAML ({value})" for key, value in values.items() if isinstance(value, BadYaml)]
    if bad:
        st.error("Not launched: " + "; ".join(bad), icon=":material/error:")
        return
    data = {"kind": kind, "name": name, "experiment": base["experiment"]}
    for key, value in values.items():
        set_nested(data, key, value)
    set_nested(data, "data.path", rel(data_path))
    set_nested(data, "train.device", device)
    try:
        cfg = config.from_dict(config.RunConfig, data)
        run_id = launcher.launch(cfg, request_id=st.session_state.setdefault("request_id", uuid.uuid4().hex),
                                 gpus=int(gpus), store=store)
    except GenesisError as exc:
        st.error(f"Not launched: {exc}", icon=":material/error:")
        return
    st.session_state["launched"] = run_id
    st.rerun()



def progress_of(run) -> tuple[float, str]:
    tags, metrics = run.data.tags, run.data.metrics
    total = int(tags.get("genesis.total_steps", 0) or 0)
    hist = store.metric_history(run.info.run_id, "train/loss")
    step = int(hist["step"].max()) if not hist.empty else 0
    if not total or hist.empty:
        return 0.0, "starting"
    elapsed = hist["timestamp"].max() - run.info.start_time / 1000
    eta = elapsed / max(step, 1) * (total - step)
    rate = metrics.get("train/events_per_s", 0.0)
    return min(step / total, 1.0), f"step {step}/{total} · {rate:,.0f} events/s · ETA {eta:,.0f} s"


@st.fragment(run_every=2)
def active_runs() -> None:
    with user_errors():
        tracking.reconcile(store)
        frame, _ = store.search(filter_string="attributes.status = 'RUNNING'", max_results=20)
    if frame.empty:
        st.caption("No active runs.")
        return
    for _, row in frame.iterrows():
        run = store.run(row["run_id"])
        with st.container(border=True):
            head, stop_col = st.columns([5, 1])
            head.markdown(f"**{row['name']}** · `{row['run_id'][:8]}` · {row.get('tags.genesis.kind', '')}")
            if stop_col.button("Stop", key=f"stop-{row['run_id']}", icon=":material/stop_circle:"):
                launcher.stop(row["run_id"], timeout=20, store=store)
                st.rerun()
            fraction, text = progress_of(run)
            st.progress(fraction, text=text)
            curves = pd.concat([store.metric_history(row["run_id"], k).assign(run=k) for k in ("train/loss", "val/loss")])
            if not curves.empty:
                st.plotly_chart(viz.metric_curves(curves, color="run", log_y=True), key=f"curve-{row['run_id']}")
            st.code(launcher.log_tail(store, row["run_id"], 8) or "(no log yet)", language=None)


def recent_runs() -> None:
    frame, _ = store.search(filter_string="attributes.status != 'RUNNING'", max_results=10)
    if frame.empty:
        return
    st.subheader("Recent runs")
    for _, row in frame.iterrows():
        status = row["status"]
        icon = {"FINISHED": ":material/check_circle:", "FAILED": ":material/error:", "KILLED": ":material/cancel:"}.get(status)
        with st.expander(f"{row['name']} · {status}", icon=icon, expanded=status == "FAILED" and row is frame.iloc[0]):
            reason = row.get(f"tags.{tracking.TAG_ERROR}")
            if isinstance(reason, str) and reason:
                st.error(reason)
            loss = row.get("metrics.val/loss")
            st.write(f"run `{row['run_id']}` · val loss {loss:.4g}" if pd.notna(loss) else f"run `{row['run_id']}`")
            st.code(launcher.log_tail(store, row["run_id"], 12) or "(no log)", language=None)


if "launched" in st.session_state:
    run_id = st.session_state["launched"]
    st.success(f"Launched run `{run_id}`: it keeps going if you close the dashboard.")
    if st.button("Launch another run", icon=":material/add:"):
        del st.session_state["launched"]
        st.session_state["request_id"] = uuid.uuid4().hex
        st.rerun()
else:
    launch_form()

st.subheader("Active runs")
active_runs()
with user_errors():
    recent_runs()

