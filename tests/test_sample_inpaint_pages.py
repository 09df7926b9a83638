"""Sample and Inpaint pages (AppTest) and their package helpers (genesis.sample_session).

The session's trained project home (conftest.trained): simulated events in data/demo.h5 and two tiny
checkpoints (diffusion, flow) trained for a few steps on CPU, shared with other test modules.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from genesis import sample_session as ss
from genesis.errors import CheckpointError, DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(trained):
    """GENESIS_HOME = the session's trained home (conftest.trained): data/demo.h5 and the tiny diffusion and
    flow runs, for every test of this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENESIS_HOME", str(trained.root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield SimpleNamespace(root=trained.root, data=trained.data, n=trained.n_events, diffusion=trained.diffusion,
                              flow=trained.flow)


@pytest.fixture(scope="module")
def models(home):
    from genesis.checkpoint import load_model

    return SimpleNamespace(diffusion=load_model(home.diffusion), flow=load_model(home.flow))


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=180)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def checkbox(at: AppTest, label: str):
    return next(c for c in at.checkbox if c.label == label)


def choose_checkpoint(at: AppTest, run_name: str) -> AppTest:
    box = next(s for s in at.selectbox if s.label == "Checkpoint")
    index = next(i for i, o in enumerate(box.options) if o.startswith(run_name) and "last.pt" in o)
    return box.select_index(index).run()


def choose_data(at: AppTest, name: str, label: str = "Event from dataset") -> AppTest:
    box = next(s for s in at.selectbox if s.label == label)
    return box.select_index(next(i for i, o in enumerate(box.options) if o.endswith(name))).run()


def set_number(at: AppTest, label: str, value) -> None:
    next(n for n in at.number_input if n.label == label).set_value(value)


def other_errors(at) -> list[str]:
    """Error messages other than the Sample page's quality banner."""
    return [e.value for e in at.error if not e.value.startswith("Generated events are far from simulated")]


def scenes(chart) -> int:
    layout = json.loads(chart.proto.spec)["layout"]
    return sum(1 for k in layout if k.startswith("scene"))


# ------------------------------------------------------------------------------------------ pages
def test_pages_without_checkpoints(tmp_path, monkeypatch):
    from genesis import demo

    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "no-demo-models")
    for name in ("sample", "inpaint"):
        at = page(name).run()
        assert_clean(at)
        assert any("No checkpoints yet" in i.value for i in at.info), name


def test_fresh_clone_offers_the_shipped_demo_models(tmp_path, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, first in (("sample", "demo-diffusion.pt"), ("inpaint", "demo-flow.pt")):
        at = page(name).run()
        assert_clean(at)
        options = next(s for s in at.selectbox if s.label == "Checkpoint").options
        assert first in options[0] and all("demo · " in o for o in options), options


def test_sample_page_generates_and_keeps_results(home):
    at = page("sample").run()
    assert_clean(at)
    at = choose_checkpoint(at, "tiny-dit")
    set_number(at, "Number of events", ss.sampling.COMPILE_FROM_EVENTS)  # a large request compiles by default
    at = at.run()
    native = ss.sampling.native_bf16(torch.device("cpu"))
    assert checkbox(at, "compile").value is True and checkbox(at, "bfloat16").value is native
    set_number(at, "Number of events", 3)
    set_number(at, "Steps", 4)
    next(s for s in at.selectbox if s.label == "Sampler").set_value("ddim")
    at = at.run()
    assert_clean(at)
    assert checkbox(at, "compile").value is False
    at = next(b for b in at.button if b.label == "Generate").click().run()
    assert_clean(at)
    assert not other_errors(at), other_errors(at)  # the quality banner may fire: these models are untrained
    assert [scenes(c) for c in at.get("plotly_chart")][0] == 2  # generated | simulated
    assert len(at.download_button) == 1
    # next to the 3D views: this event and the median event, generated vs simulated
    tables = [t.value for t in at.table if "generated / simulated" in t.value.columns]
    assert [t.index.name for t in tables] == ["event 0", "median per event"]
    assert list(tables[0].index) == ["hit DOMs", "total charge [pe]", "time span [ns]"]
    generated = next((home.root / "data" / "generated").glob("sample-diffusion-*.h5"))
    from genesis.data import schema as _schema

    gen_signal = _schema.read_events(generated)[0]
    assert tables[0].loc["hit DOMs", "generated"] == (gen_signal[0, 0] > 0).sum()
    banner = [m.value for m in [*at.warning, *at.error] if "far from simulated" in m.value]
    ratio = tables[1].loc[["hit DOMs", "total charge [pe]"], "generated / simulated"]
    assert bool(banner) == bool(((ratio > ss.QUALITY_FACTOR) | (ratio < 1 / ss.QUALITY_FACTOR)).any()), (banner, ratio)
    # each 3D view its own colour range: the simulated view has its own colourbar and range
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    hits = [t for t in spec["data"] if t.get("name") == "hits"]
    assert [h["marker"]["showscale"] for h in hits] == [True, True]
    files = list((home.root / "data" / "generated").glob("sample-diffusion-*.h5"))
    assert len(files) == 1
    from genesis.data import schema

    summary = schema.validate(files[0])
    assert summary.n_events == 3 and summary.n_doms == 5160
    producer = json.loads(schema.read_attrs(files[0])["producer"])
    assert producer["kind"] == "diffusion" and producer["sampler"] == "ddim" and producer["steps"] == 4
    assert producer["checkpoint"] == str(home.diffusion)
    assert producer.get("precision") == ("bf16" if native else None) and "compiled" not in producer
    # a rerun from another widget keeps the last results on the page
    at = next(n for n in at.number_input if n.label == "Event").set_value(2).run()
    assert_clean(at)
    assert len(at.download_button) == 1 and any("3 events written" in s.value for s in at.success)


def test_sample_page_flow_with_dataset_labels(home):
    at = page("sample").run()
    at.radio[0].set_value("flow").run()
    at.radio[1].set_value("a dataset").run()
    at = choose_data(at, "demo.h5", "Labels of events in")
    set_number(at, "First event", 10)
    set_number(at, "Number of events", 4)
    assert "compile" not in [c.label for c in at.checkbox]  # a flow samples in one pass
    at = checkbox(at, "bfloat16").check().run()  # the flow under autocast too
    at = next(b for b in at.button if b.label == "Generate").click().run()
    assert_clean(at)
    assert not other_errors(at), other_errors(at)  # the quality banner may fire: these models are untrained
    assert any("4 events written" in s.value for s in at.success)
    (path,) = (home.root / "data" / "generated").glob("sample-flow-*.h5")
    with h5py.File(path, "r") as out, h5py.File(home.data, "r") as src:
        np.testing.assert_array_equal(out["label"][()], src["label"][10:14])
        assert out["input"].dtype == np.float32 and np.isfinite(out["input"][()]).all()
        producer = json.loads(out.attrs["producer"])
        assert producer["sampler"] == "flow" and producer["precision"] == "bf16"


def test_sample_page_bad_requests(home):
    at = choose_checkpoint(page("sample").run(), "tiny-dit")
    set_number(at, "Number of events", 0)
    at = at.run()
    assert_clean(at)
    assert any("0 events requested" in e.value for e in at.error)

    set_number(at, "Number of events", ss.CONFIRM_ABOVE + 1)
    at = at.run()
    assert any("large request" in w.value for w in at.warning)
    before = sorted((home.root / "data").rglob("*.h5"))
    at = next(b for b in at.button if b.label == "Generate").click().run()
    assert_clean(at)
    assert any("tick the confirmation box" in e.value for e in at.error)
    assert sorted((home.root / "data").rglob("*.h5")) == before  # nothing generated



def test_sample_lists_only_the_chosen_kind_and_starts_on_the_demo(home):
    """With lab checkpoints of both kinds present, each model choice lists only its kind, starting on the
    shipped demo model, and keeps the user's pick over reruns."""
    at = page("sample").run()
    assert_clean(at)
    for kind, other in (("diffusion", "flow"), ("flow", "diffusion")):
        at.radio[0].set_value(kind).run()
        box = next(s for s in at.selectbox if s.label == "Checkpoint")
        assert all(o.endswith(f" · {kind}") for o in box.options) and len(box.options) == 3, box.options
        assert Path(box.value).name == f"demo-{kind}.pt"
    at.radio[0].set_value("diffusion").run()
    at = choose_checkpoint(at, "tiny-dit")
    at = next(n for n in at.number_input if n.label == "Seed").set_value(1).run()  # any rerun
    assert Path(next(s for s in at.selectbox if s.label == "Checkpoint").value) == home.diffusion
    assert not at.error, [e.value for e in at.error]


def test_sample_page_at_10_gev_warns_in_words_and_still_samples(home):
    """10 GeV is below the demo model's training energies (from 1,000 GeV): a warning in words, then the
    events are generated all the same. The typed energy moves the slider to the nearest quarter decade."""
    at = page("sample").run()
    set_number(at, "Number of events", 1)
    at = at.run()
    at = at.number_input(key="energy_gev").set_value(10.0).run()
    assert at.select_slider(key="energy_slider").value == 10.0
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("The requested energy 10 GeV lies below the range this checkpoint was trained on "
                              "(1,000 to 9.99e+06 GeV)") and "extrapolates" in warning
    expected = next(c.value for c in at.caption if c.value.startswith("Expected time"))
    assert re.search(rf"\*\*[\d.,e-]+ s to [\d.,e-]+ s\*\* on cpu \(from {ss.WARMUP_REPEATS} timed warm-up runs", expected)
    set_number(at, "Steps", 3)
    at = next(b for b in at.button if b.label == "Generate").click().run()
    assert_clean(at)
    assert any("1 events written" in s.value for s in at.success), [s.value for s in at.success]
    assert any(w.value == warning for w in at.warning)  # still said next to the results
    at = at.run()  # the estimate above the button now also rests on the call that just ran
    assert "the last call's speed" in next(c.value for c in at.caption if c.value.startswith("Expected time"))
    at = at.select_slider(key="energy_slider").set_value(1e5).run()  # the slider moves the typed value
    assert at.number_input(key="energy_gev").value == 1e5
    assert not [w.value for w in at.warning if "range this checkpoint was trained on" in w.value]


def test_time_estimate_range():
    estimate = ss.estimate_time("diffusion", 10, 50, [0.01, 0.02], last=0.03)
    assert estimate.low_s == pytest.approx(0.01 * 500 * ss.LOAD_MARGIN[0])
    assert estimate.high_s == pytest.approx(0.02 * 500 * ss.LOAD_MARGIN[1])  # the median rate: robust to a spike
    flow = ss.estimate_time("flow", 10, 50, [0.5])
    assert flow.low_s == pytest.approx(5 * ss.LOAD_MARGIN[0]) and "one pass" in flow.basis
    assert estimate.text("cpu").startswith("Expected time: **4 s to 20 s** on cpu (from 2 timed warm-up runs")


def test_warmup_rates_time_the_sampler(models):
    rates = ss.warmup_rates(models.diffusion, 3, "ddim")
    assert len(rates) == ss.WARMUP_REPEATS and all(r > 0 for r in rates)


def test_inpaint_page_flow_map(home):
    at = page("inpaint").run()
    assert_clean(at)
    assert not at.warning, [w.value for w in at.warning]  # nothing chosen yet: a hint, no "selects no DOM"
    assert any("Choose what to mask" in c.value for c in at.caption)
    assert [n.label for n in at.number_input].count("Seed") == 1 and "Method seed" not in [n.label for n in at.number_input]
    assert next(b for b in at.button if b.label == "Inpaint").disabled
    at = choose_data(choose_checkpoint(at, "tiny-flow"), "demo.h5")
    # CPU-sized defaults
    assert [next(n for n in at.number_input if n.label == lab).value for lab in ("Optimisation steps", "Restarts")] \
        == list(ss.map_defaults("cpu"))
    at.multiselect[0].set_value([36, 79])
    set_number(at, "Optimisation steps", 10)
    set_number(at, "Restarts", 1)
    at = at.run()
    assert any("120 of 5,160 DOMs masked" in c.value for c in at.caption)
    expected = next(c.value for c in at.caption if c.value.startswith("Expected time"))
    assert "on cpu for 120 masked DOMs (10 steps x 1 restarts = 10 flow evaluations" in expected
    at = next(b for b in at.button if b.label == "Inpaint").click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    verdict = next(m.value for m in [*at.success, *at.warning] if m.value.startswith("Verdict: flow-map "))
    assert "zero fill" in verdict and "neighbour mean" in verdict
    assert 3 in [scenes(c) for c in at.get("plotly_chart")]  # masked | inpainted | true
    table = at.dataframe[0].value
    assert list(table.index) == ["flow-map", "zero", "neighbours"]
    assert len(at.download_button) == 1


def test_inpaint_page_wrong_kind_and_detector(home):
    at = choose_checkpoint(page("inpaint").run(), "tiny-dit")
    assert next(s for s in at.selectbox if s.label == "Method").value == "repaint"  # the checkpoint's own method
    at = next(s for s in at.selectbox if s.label == "Method").set_value("flow-map").run()  # then the wrong one
    assert_clean(at)
    assert any("needs a flow checkpoint" in e.value and "is a diffusion checkpoint" in e.value for e in at.error)
    assert not [b for b in at.button if b.label == "Inpaint"]

    from genesis.data import schema
    from genesis.geometry import Geometry

    geo = schema.read_geometry(home.data)
    small = Geometry(geo.positions[:120], geo.string[:120], geo.dom[:120], "small")
    other = home.root / "data" / "other.h5"
    signal = np.zeros((2, 2, 120), np.float32)
    signal[:, 0, :5], signal[:, 1, :5] = 2.0, 10000.0
    schema.write_events(other, signal, schema.read_events(home.data, 0, 2)[1], small)
    try:
        at = choose_data(choose_checkpoint(page("inpaint").run(), "tiny-flow"), "other.h5")
        assert_clean(at)
        assert any("trained on P = 5160 DOMs but the dataset has P = 120" in e.value for e in at.error)
    finally:
        other.unlink()


# ----------------------------------------------------------------------------------------- helpers
def test_list_checkpoints(home):
    from genesis import tracking

    everything = ss.list_checkpoints(tracking.Store.default())
    found = [c for c in everything if c.run_id is not None]
    assert everything[len(found):] == ss.demo_checkpoints()  # the shipped demo models come last
    assert {(c.kind, c.path.name) for c in found} == {
        (k, f) for k in ("diffusion", "flow") for f in ("last.pt", "best.pt")}
    assert {c.path for c in found} >= {home.diffusion, home.flow}
    for c in found:
        assert c.run_id in str(c.path) and c.label.startswith("tiny-") and c.label.endswith(f" · {c.kind}")
    for run_id in {c.run_id for c in found}:  # best.pt before last.pt within a run
        assert [c.path.name for c in found if c.run_id == run_id] == ["best.pt", "last.pt"]


def test_run_sampling_streams_to_file(home, models):
    from genesis.data import schema

    labels = ss.widget_labels(5, 1e5, 90.0, 90.0, 0.0, 0.0, 0.0)
    calls = []
    out = home.root / "data" / "generated" / "stream.h5"
    result = ss.run_sampling(models.flow, labels, seed=3, out=out, batch_size=2, keep=3,
                             progress=lambda d, t: calls.append((d, t)))
    assert result.path == out and result.n_events == 5
    assert result.signal.shape == (3, 2, 5160) and result.labels.shape == (3, 6)
    assert calls[-1] == (5, 5)
    assert schema.validate(out).n_events == 5
    assert json.loads(schema.read_attrs(out)["producer"])["seed"] == 3
    signal, _, _ = schema.read_events(out, 0, 3)
    np.testing.assert_allclose(signal, result.signal)
    with pytest.raises(DataError, match="file exists"):
        ss.run_sampling(models.flow, labels, out=out)
    with pytest.raises(Exception, match="steps must be in 1.."):
        ss.run_sampling(models.diffusion, labels, steps=0)


def test_counts_labels_and_progress_text(home):
    with pytest.raises(DataError, match="0 events requested"):
        ss.check_count(0)
    with pytest.raises(DataError, match="large request"):
        ss.check_count(ss.CONFIRM_ABOVE + 1, confirmed=False)
    ss.check_count(ss.CONFIRM_ABOVE + 1, confirmed=True)
    lab = ss.widget_labels(2, 1e4, 90.0, 180.0, 1.0, 2.0, 3.0)
    np.testing.assert_allclose(lab, [[1e4, math.pi / 2, math.pi, 1, 2, 3]] * 2, rtol=1e-6)
    with h5py.File(home.data, "r") as f:
        np.testing.assert_array_equal(ss.dataset_labels(home.data, 4, 10), f["label"][10:14])
    with pytest.raises(DataError, match="run past the end"):
        ss.dataset_labels(home.data, 5, home.n - 2)
    csv = b"energy,zenith,azimuth,x,y,z\n1000,1,2,0,0,0\n2000,0.5,1,10,20,30\n"
    assert ss.csv_labels(csv, "mine.csv", 3).shape == (6, 6)
    with pytest.raises(DataError, match="mine.csv: labels CSV needs a header"):
        ss.csv_labels(b"a,b\n1,2\n", "mine.csv", 1)
    assert ss.progress_text(25, 100, 10.0) == "25/100 events · 10 s elapsed · ETA 30 s"
    assert "ETA …" in ss.progress_text(0, 100, 0.0)


def test_reference_and_compare(home, models):
    from genesis.data import schema

    signal, labels, _ = schema.read_events(home.data)
    geo = models.flow.geometry
    ref = ss.reference_events(labels[:40], models.flow, seed=5)
    np.testing.assert_array_equal(ref, ss.reference_events(labels[:40], models.flow, seed=5))
    from genesis.evaluate import simulate_triggered_at, training_sim_config  # one simulation for page and CLI
    np.testing.assert_array_equal(ref, simulate_triggered_at(labels[:40], geo, 5, training_sim_config(models.flow)[0]))
    assert ref.shape == (40, 2, 5160) and (ref[:, 0] > 0).sum() > 0
    small = ss.compare(signal[:40], ref, labels[:40], geo)
    assert small.auc is None and "at least 200" in small.note
    assert set(small.features) == {"generated", "simulated"} and "total_npe" in small.distances.index
    reference = ss.reference_events(labels, models.flow, seed=5)
    full = ss.compare(signal, reference, labels, geo)
    assert abs(full.auc - 0.5) < 0.12, full.auc  # the simulator against a re-simulation: indistinguishable
    from genesis.sampling import generate

    generated = generate(models.flow, labels, seed=0)  # a 4-step flow is told apart from the simulator
    assert ss.compare(generated, reference, labels, geo).auc > 0.9


def test_masks_and_selection(models):
    geo = models.flow.geometry
    mask, spec = ss.build_mask(geo, strings=[79, 36])
    assert spec == "strings:36,79" and mask.sum() == 120
    mask2, spec2 = ss.build_mask(geo, strings=[36], random_fraction=0.01, deepcore=True)
    assert spec2 == "strings:36+random:0.01+deepcore" and mask2.sum() > 60
    with pytest.raises(DataError, match="selects no DOM"):
        ss.build_mask(geo)
    with pytest.raises(DataError, match="selects no DOM"):
        ss.build_mask(geo, sphere=(5000.0, 0.0, 0.0, 10.0))
    dead, _ = ss.build_mask(geo, dead=("dead.txt", b"# dead\n3\n7\n"))
    assert np.flatnonzero(dead).tolist() == [3, 7]
    with pytest.raises(DataError, match="dead.txt: DOM indices out of range"):
        ss.build_mask(geo, dead=("dead.txt", b"999999\n"))
    points = [{"customdata": [36]}, {"customdata": 79}, {"x": 1.0}, {"customdata": [36]}]
    assert ss.strings_from_selection(points) == [36, 79]
    assert ss.strings_from_selection(None) == []


def test_inpaint_checks_and_hdf5(home, models):
    from genesis.data import schema
    from genesis.geometry import Geometry

    geo = schema.read_geometry(home.data)
    with pytest.raises(CheckpointError, match="needs a flow checkpoint"):
        ss.check_inpaint_inputs(models.diffusion, geo, "flow-map")
    with pytest.raises(CheckpointError, match="needs a diffusion checkpoint"):
        ss.check_inpaint_inputs(models.flow, geo, "repaint")
    small = Geometry(geo.positions[:100], geo.string[:100], geo.dom[:100], "small")
    with pytest.raises(DataError, match="P = 5160 DOMs but the dataset has P = 100"):
        ss.check_inpaint_inputs(models.flow, small, "zero")
    mask, _ = ss.build_mask(geo, strings=[36])
    result = ss.run_inpaint(models.flow, home.data, 7, geo, mask, "neighbours")
    table = ss.metrics_table(result)
    assert list(table.index) == ["neighbours", "zero"] and table.loc["neighbours", "mse ratio vs neighbours"] == 1.0
    err = ss.per_dom_error(result)
    assert err.shape == (5160,) and np.all(err[~mask] == 0)
    data = ss.inpaint_hdf5_bytes(result, geo, {"producer": "genesis inpaint", "method": "neighbours"})
    path = home.root / "inpainted.h5"
    path.write_bytes(data)
    assert schema.validate(path).n_events == 1
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["mask"][()], mask)
        np.testing.assert_allclose(f["input_true"][()], schema.read_events(home.data, 7, 8)[0])
        assert json.loads(f.attrs["producer"])["method"] == "neighbours"
    with pytest.raises(DataError, match=f"outside 0..{home.n - 1}"):
        ss.run_inpaint(models.flow, home.data, home.n, geo, mask, "zero")


# ----------------------------------------------------------------------------------------- issue 15
def test_inpaint_page_defaults_to_the_demo_dataset(home):
    """A newer file in data/ (e.g. a 5-event upload) is not the default: the checkpoint's training file is."""
    from genesis.data import schema

    newer = home.root / "data" / "a-newer-upload.h5"
    signal, labels, _ = schema.read_events(home.data, 0, 5)
    schema.write_events(newer, signal, labels, schema.read_geometry(home.data))
    try:
        at = choose_checkpoint(page("inpaint").run(), "tiny-flow")
        assert_clean(at)
        assert next(s for s in at.selectbox if s.label == "Event from dataset").value == home.data
    finally:
        newer.unlink()


def test_preferred_data_file(home, tmp_path):
    demo, other, trained = home.data, home.root / "data" / "x.h5", home.root / "data" / "y.h5"
    assert ss.preferred_data_file([other, demo, trained], str(trained)) == trained
    assert ss.preferred_data_file([other, demo], "/elsewhere/gone.h5") == demo
    assert ss.preferred_data_file([other, demo], None) == demo
    assert ss.preferred_data_file([other], None) == other and ss.preferred_data_file([], None) is None


def test_legacy_uploads_not_offered_for_sampling(home):
    import torch

    from genesis import checkpoints_index as ci
    from genesis import tracking

    legacy = ci.uploads_dir() / "legacy.pt"
    torch.save({"model_state_dict": {"w": torch.zeros(3)}, "epoch": 1}, legacy)
    usable = ci.uploads_dir() / "usable.pt"
    usable.write_bytes(home.flow.read_bytes())
    try:
        found = {c.path.name: c for c in ss.list_checkpoints(tracking.Store.default())}
        assert "legacy.pt" not in found and found["usable.pt"].kind == "flow"
        at = page("sample").run()
        assert_clean(at)
        assert not any("legacy.pt" in o for o in next(s for s in at.selectbox if s.label == "Checkpoint").options)
    finally:
        legacy.unlink()
        usable.unlink()


def synthetic(n_hits: int, npe: float, t0: float, t1: float, n: int = 3, p: int = 5160) -> np.ndarray:
    x = np.zeros((n, 2, p), np.float32)
    x[:, 0, :n_hits] = npe
    x[:, 1, :n_hits] = np.linspace(t0, t1, n_hits)
    return x


def test_quality_check_levels_and_table():
    sim = synthetic(60, 50.0, 1000.0, 2000.0)
    ok = ss.quality_check(synthetic(100, 40.0, 1000.0, 2500.0), sim)
    assert ok.level == "ok" and ok.message == "" and ok.far == ()
    assert ok.table.loc["hit DOMs"].tolist() == [100.0, 60.0, pytest.approx(100 / 60)]
    assert ok.table.loc["time span [ns]", "simulated"] == pytest.approx(1000.0)
    warn = ss.quality_check(synthetic(240, 50.0, 0.0, 10.0), sim)  # 4x the hits, 4x the charge
    assert warn.level == "warning" and warn.far == ("n_hit_doms", "total_npe")
    assert "hit DOMs 240 generated vs 60 simulated (4x higher)" in warn.message
    bad = ss.quality_check(synthetic(3000, 1e5, 0.0, 5e4), sim)
    assert bad.level == "error" and "total charge [pe] 3e+08 generated vs 3,000 simulated" in bad.message
    empty = ss.quality_check(np.zeros_like(sim), sim)  # 0 hits vs 60: 60x, not a division by zero
    assert empty.level == "error" and "60x lower" in empty.message
    one = ss.quality_check(synthetic(60, 50.0, 0.0, 1.0), sim, event=2)
    assert one.level == "ok" and one.table.index.name == "event 2"
    assert ss.fold(0, 0) == 1.0 and ss.fold(10, 2) == 5.0


def test_flow_map_timing_and_verdict(home, models):
    from genesis import inpaint

    per_restart, per_step = inpaint.time_flow_map(models.flow)
    assert per_restart > 0 and per_step > 0
    assert inpaint.estimate_flow_map_seconds((1.0, 0.1), 100, 2) == (200, pytest.approx(22.0))
    metrics = {"flow-map": {"mse_normalized": 1.0}, "zero": {"mse_normalized": 2.0},
               "neighbours": {"mse_normalized": 1.01}}
    beat, words = inpaint.inpaint_verdict(metrics, "flow-map")
    assert not beat and words == ("flow-map beat zero fill (dead DOMs) (2.00x lower error) and was no better than "
                                  "the neighbour mean on the string (error ratio 1.01) on the masked DOMs.")
    metrics["neighbours"]["mse_normalized"] = 3.0
    assert inpaint.inpaint_verdict(metrics, "flow-map")[0]
    metrics["zero"]["mse_normalized"] = 0.0
    assert "exact here: the masked DOMs recorded nothing" in inpaint.inpaint_verdict(metrics, "flow-map")[1]


def test_linked_views_colour_ranges_and_feature_axes():
    from genesis import viz
    from genesis.geometry import icecube86_like

    geo = icecube86_like()
    noisy, quiet = synthetic(3000, 1e5, 0.0, 5e4, n=1)[0], synthetic(60, 50.0, 10_000.0, 11_000.0, n=1)[0]
    events = [("generated", *noisy), ("simulated", *quiet)]

    def hit_markers(fig):
        return [t.marker for t in fig.data if t.name == "hits"]

    shared = hit_markers(viz.linked_event_figures(geo, events))
    assert [(m.cmin, m.cmax) for m in shared] == [(0.0, 5e4)] * 2 and [m.showscale for m in shared] == [True, False]
    each = hit_markers(viz.linked_event_figures(geo, events, colour_range="each"))
    assert [(m.cmin, m.cmax) for m in each] == [(0.0, 5e4), (10_000.0, 11_000.0)]
    assert [m.showscale for m in each] == [True, True] and each[0].colorbar.x < each[1].colorbar.x
    simulated = hit_markers(viz.linked_event_figures(geo, events, colour_range=1))
    assert [(m.cmin, m.cmax) for m in simulated] == [(10_000.0, 11_000.0)] * 2
    with pytest.raises(ValueError, match="colour_range"):
        viz.linked_event_figures(geo, events, colour_range=2)
    feats = {"a": {"time_span": np.arange(5.0), "n_hit_doms": np.arange(5.0)}}
    fig = viz.feature_histograms(feats, ["time_span", "n_hit_doms"])
    assert [fig.layout.xaxis.title.text, fig.layout.xaxis2.title.text] == ["time_span [ns]", "n_hit_doms [DOMs]"]
    assert fig.layout.yaxis.title.text == "fraction of events"
