"""Sample: generate events from a diffusion or flow checkpoint, compare them with simulator events at the
same labels, and download them as HDF5 in the training-data schema."""

import time

import numpy as np
import streamlit as st

from genesis import diffusion, metrics, ranges, sampling, viz
from genesis import sample_session as ss
from genesis.errors import DataError
from views._shared import (MAX_UPLOAD_MB, cuda_device_count, mtime, pick_checkpoint, pick_data_file, ready_store, rel,
                           user_errors)

ENERGIES = [float(f"{e:.3g}") for e in np.logspace(0, 8, 33)]  # GeV, quarter decades: a log slider
ENERGY_RANGE = (0.1, 1e9)  # GeV, the typed entry
KINDS = {"diffusion": "Diffusion transformer (DDPM/DDIM)", "flow": "Normalizing flow (one pass)"}

st.title("Sample")
store = ready_store()


def pick_model():
    """Model kind, checkpoint (only of that kind; the shipped demo first) and device -> (info, device, loaded)."""
    kind = st.radio("Model", list(KINDS), format_func=KINDS.get, horizontal=True)
    ckpt, device, loaded = pick_checkpoint(
        store, kind, f"No checkpoints yet: train a {kind} model on the **Train** page (the tiny presets take minutes "
                     "on a CPU).", kinds=(kind,))
    with user_errors():
        ss.check_kind(loaded, kind)
    st.caption(f"{rel(ckpt.path)} · step {loaded.state.get('step')} · P = {loaded.geometry.n_doms} DOMs")
    return ckpt, device, loaded


def _energy_from_slider() -> None:
    st.session_state["energy_gev"] = st.session_state["energy_slider"]


def _energy_from_box() -> None:
    st.session_state["energy_slider"] = min(ENERGIES, key=lambda e: abs(np.log(e / st.session_state["energy_gev"])))


def energy_widgets(col) -> float:
    """A log slider (quarter decades) and a typed entry in GeV, kept in sync; the typed value is used."""
    st.session_state.setdefault("energy_gev", 1e5)
    st.session_state.setdefault("energy_slider", 1e5)
    left, right = col.columns([3, 2])
    left.select_slider("Energy [GeV], log scale", ENERGIES, format_func=lambda e: f"{e:.3g}", key="energy_slider",
                       on_change=_energy_from_slider)
    return float(right.number_input("Energy [GeV]", *ENERGY_RANGE, format="%.4g", key="energy_gev",
                                    on_change=_energy_from_box, help="type any energy; the slider follows"))


def pick_labels() -> tuple[np.ndarray, str]:
    """(N, 6) physical labels from widgets, a dataset or an uploaded CSV, and a description of the source."""
    source = st.radio("Labels from", ["widgets", "a dataset", "a CSV file"], horizontal=True)
    if source == "widgets":
        c = st.columns([1, 3, 1, 1])
        n = int(c[0].number_input("Number of events", 0, sampling.MAX_EVENTS_PER_CALL, 8))
        energy = energy_widgets(c[1])
        zenith = c[2].slider("Zenith [°]", 0.0, 180.0, 90.0)
        azimuth = c[3].slider("Azimuth [°]", 0.0, 360.0, 90.0)
        c = st.columns(3)
        xyz = [c[i].number_input(f"Vertex {a} [m]", -2000.0, 2000.0, 0.0) for i, a in enumerate("xyz")]
        with user_errors():
            return ss.widget_labels(n, energy, zenith, azimuth, *xyz), f"widgets E={energy:.3g} zen={zenith} az={azimuth}"
    if source == "a dataset":
        path = pick_data_file("Labels of events in", key="labels_file")
        if path is None:
            st.stop()
        c = st.columns(2)
        start = int(c[0].number_input("First event", 0, None, 0))
        n = int(c[1].number_input("Number of events", 0, sampling.MAX_EVENTS_PER_CALL, 8))
        with user_errors():
            return ss.dataset_labels(path, n, start), f"{rel(path)} events {start}..{start + n - 1}"
    c = st.columns([3, 1])
    upload = c[0].file_uploader(f"CSV with header energy,zenith,azimuth,x,y,z (GeV, rad, m; at most {MAX_UPLOAD_MB} MB)",
                                type=["csv"])
    per_row = int(c[1].number_input("Events per row", 0, sampling.MAX_EVENTS_PER_CALL, 1))
    if upload is None:
        st.info("Upload a labels CSV to continue.")
        st.stop()
    with user_errors():
        if upload.size > MAX_UPLOAD_MB * 2**20:
            raise DataError(f"upload is {upload.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB")
        return ss.csv_labels(upload.getvalue(), upload.name, per_row), f"upload {upload.name}"


def sampler_settings(loaded) -> tuple[str, int, float, int]:
    c = st.columns(4)
    if loaded.kind == "diffusion":
        diff = loaded.config.diffusion
        own = getattr(diff, "sampler", diffusion.SAMPLERS[0])  # the checkpoint's own sampler first
        sampler = c[0].selectbox("Sampler", diffusion.SAMPLERS, format_func=str.upper,
                                 index=diffusion.SAMPLERS.index(own) if own in diffusion.SAMPLERS else 0)
        steps = int(c[1].number_input("Steps", 1, diff.timesteps, min(diff.sampling_steps, diff.timesteps)))
        guidance = float(c[2].number_input("Guidance scale", 0.0, 20.0, 1.0, step=0.5))
    else:
        sampler, steps, guidance = "ddim", 1, 1.0  # ignored by flows (the producer records "flow")
        c[0].caption("A flow samples in one pass: no sampler, steps or guidance.")
    seed = int(c[3].number_input("Seed", 0, 2**31 - 1, 0))
    return sampler, steps, guidance, seed


def speed_settings(loaded, n: int) -> dict:
    """The bf16 and compile boxes, each checked by default as sampling.fast_settings says for n events (the
    widget keys follow the defaults, so a request that crosses the compile threshold gets the new default)."""
    fast_bf16, fast_compile = sampling.fast_settings(loaded, n)
    c = st.columns(2)
    bf16 = c[0].checkbox("bfloat16", fast_bf16, key=f"bf16-{fast_bf16}", help="the network in bfloat16: faster on "
                         "GPUs and on CPUs with AVX512-BF16 or AMX (1.3x on the demo model, same quality), slower on "
                         "other CPUs; on by default where the device has it; recorded in the file")
    compiled = loaded.kind == "diffusion" and c[1].checkbox(
        "compile", fast_compile, key=f"compile-{fast_compile}", help="the network through torch.compile: faster steps "
        "(1.4x on the demo model on a CPU) after a one-off compile of 20-60 s, so it pays for thousands of events (on "
        f"by default on a CPU from {sampling.COMPILE_FROM_EVENTS:,}); recorded in the file")
    return {"bf16": bf16, "compiled": compiled}


def several_gpus_hint(ckpt, device: str) -> None:
    """Where there are several GPUs: the page samples on one; a large request shares them through torchrun."""
    count = cuda_device_count()
    if count >= 2 and device.startswith("cuda"):
        st.caption(f"{count} GPUs here: this page samples on {device}. To share a large request among all of them: "
                   f"`{ss.SHARDED_COMMAND.format(gpus=count, checkpoint=rel(ckpt.path))}` (same events as one GPU).")


@st.cache_data(ttl=120, show_spinner="Timing a short warm-up on this machine")
def warmup(path: str, stamp: float, device: str, sampler: str, guidance: float, batch: int, bf16: bool,
           _loaded) -> list[float]:
    """Seconds per event and step of short timed runs, cached for two minutes per checkpoint and settings."""
    return ss.warmup_rates(_loaded, batch, sampler, guidance, bf16=bf16)


def rate_key(ckpt, device: str, loaded, sampler: str, guidance: float, speed: dict) -> tuple:
    return (str(ckpt.path), device, sampler if loaded.kind == "diffusion" else "flow", guidance != 1.0,
            *speed.values())


def expected_time(ckpt, device: str, loaded, n: int, sampler: str, steps: int, guidance: float, speed: dict) -> None:
    with user_errors():  # the warm-up runs eagerly: compiling it would take as long as a large request
        rates = warmup(str(ckpt.path), mtime(ckpt.path), device, sampler, guidance, min(n, ss.WARMUP_BATCH),
                       speed["bf16"], loaded)
    last = st.session_state.get("sample_rates", {}).get(rate_key(ckpt, device, loaded, sampler, guidance, speed))
    redraws = loaded.kind == "diffusion" and loaded.config.diffusion.redraw_untriggered
    text = ss.estimate_time(loaded.kind, n, steps, rates, last, redraws).text(device)
    if speed["compiled"] and last is None:
        text += " Compiling adds 20-60 s once; the compiled steps then run faster than this estimate."
    st.caption(text)


def generate(loaded, labels: np.ndarray, source: str, sampler: str, steps: int, guidance: float, seed: int,
             speed: dict, confirmed: bool, key: tuple) -> None:
    with user_errors():
        ss.check_count(len(labels), confirmed)
        with st.status(f"Generating {len(labels):,} events", expanded=True) as status:
            bar, t0 = st.progress(0.0, text="starting"), time.time()

            def progress(done: int, total: int) -> None:
                bar.progress(min(done / total, 1.0), text=ss.progress_text(done, total, time.time() - t0))

            result = ss.run_sampling(loaded, labels, sampler, steps, guidance, seed, labels_source=source,
                                     progress=progress, **speed)
            st.session_state.setdefault("sample_rates", {})[key] = ss.call_rate(result, loaded.kind, steps)
            status.update(label=f"Simulating {len(result.labels):,} reference events at the same labels")
            reference = ss.reference_events(result.labels, loaded, seed)
            status.update(label="Comparing features")
            comparison = ss.compare(result.signal, reference, result.labels, loaded.geometry, seed)
            status.update(label=f"Generated {result.n_events:,} events in {result.seconds:.1f} s", state="complete",
                          expanded=False)
    st.session_state["sample"] = {"result": result, "reference": reference, "comparison": comparison,
                                  "geometry": loaded.geometry, "fallback": ss.reference_fallback(loaded)}


def show_results(state: dict) -> None:
    result, ref, comp, geometry = state["result"], state["reference"], state["comparison"], state["geometry"]
    gen = result.signal
    st.success(f"{result.n_events:,} events written to `{rel(result.path)}` in {result.seconds:.1f} s "
               "(also listed on the **Data** page).")
    if result.path.is_file():
        st.download_button("Download HDF5", data=lambda p=result.path: p.read_bytes(), file_name=result.path.name,
                           mime="application/x-hdf5", icon=":material/download:")
    else:
        st.warning(f"{rel(result.path)} no longer exists; generate again to download.")
    if result.n_events > len(gen):
        st.caption(f"Showing and comparing the first {len(gen):,} of {result.n_events:,} events.")
    if state.get("fallback"):
        st.caption(f"The simulated events use the {state['fallback']}: they may differ from the training data.")
    quality = ss.quality_check(gen, ref)
    if quality.level != "ok":
        (st.error if quality.level == "error" else st.warning)(quality.message, icon=":material/warning:")
    browse, summary, features = st.tabs(["Event browser", "Summary histograms", "Feature comparison"])
    with browse:
        c = st.columns([1, 2])
        i = int(c[0].number_input("Event", 0, len(gen) - 1, 0, key="sample_event"))
        colours = c[1].radio("Colour range", ["each view its own", "from the simulated event"], horizontal=True,
                             help="time colour scale of the 3D views; one shared range let a noisy generated "
                                  "event wash out the simulated one")
        lab = result.labels[i]
        st.write(f"E = {lab[0]:.3g} GeV · zenith {np.degrees(lab[1]):.1f}° · azimuth {np.degrees(lab[2]):.1f}° · "
                 f"vertex ({lab[3]:.0f}, {lab[4]:.0f}, {lab[5]:.0f}) m")
        views, numbers = st.columns([2, 1])
        views.plotly_chart(viz.linked_event_figures(geometry, [("generated", gen[i, 0], gen[i, 1]),
                                                               ("simulated", ref[i, 0], ref[i, 1])], label=lab,
                                                    colour_range="each" if colours.startswith("each") else 1),
                           key="sample_events")
        # st.table: small static tables, readable as text (and by the browser test), unlike the canvas grid
        numbers.table(ss.quality_check(gen, ref, event=i).table.style.format("{:.3g}"))
        numbers.table(quality.table.style.format("{:.3g}"))
    with summary:
        st.plotly_chart(viz.feature_histograms(comp.features, ss.SUMMARY_FEATURES), key="sample_summary")
        st.plotly_chart(viz.charge_time_histograms({"generated": (gen[:, 0], gen[:, 1]),
                                                    "simulated": (ref[:, 0], ref[:, 1])}), key="sample_hits")
    with features:
        if comp.auc is not None:
            c = st.columns(3)
            c[0].metric("Classifier AUC (generated vs simulated)", f"{comp.auc:.3f} ± {comp.auc_se:.3f}")
            c[1].metric("with the labels", f"{comp.auc_conditional:.3f} ± {comp.auc_conditional_se:.3f}")
            summary = comp.response.get("summary")
            c[2].metric("Response to the labels", "-" if summary is None else f"{summary:.2f} SE",
                        help="mean |generated - simulated| of the response curves below, in standard errors")
        st.caption(comp.note)
        st.plotly_chart(viz.response_curves_figure(comp.response), key="sample_response")
        st.plotly_chart(viz.feature_histograms(comp.features, metrics.FEATURES), key="sample_features")
        st.dataframe(comp.distances, width="stretch")


ckpt, device, loaded = pick_model()
labels, source = pick_labels()
for message in ranges.label_warnings(labels, ranges.record_of(loaded)):  # words; sampling goes ahead
    st.warning(message, icon=":material/warning:")
sampler, steps, guidance, seed = sampler_settings(loaded)
speed = speed_settings(loaded, len(labels))
several_gpus_hint(ckpt, device)
expected_time(ckpt, device, loaded, len(labels), sampler, steps, guidance, speed)
confirmed = True
if len(labels) > ss.CONFIRM_ABOVE:
    st.warning(f"{len(labels):,} events is a large request: generation takes a while and the events are streamed "
               f"to disk; only the first {ss.KEEP_EVENTS:,} are shown and compared.")
    confirmed = st.checkbox(f"Yes, generate {len(labels):,} events")
if st.button("Generate", type="primary", icon=":material/play_arrow:"):
    generate(loaded, labels, source, sampler, steps, guidance, seed, speed, confirmed,
             rate_key(ckpt, device, loaded, sampler, guidance, speed))
if "sample" in st.session_state:
    show_results(st.session_state["sample"])
