"""Checkpoints page and genesis.checkpoints_index against real checkpoints of two tiny training runs."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from genesis import checkpoint, config, demo, tracking
from genesis import checkpoints_index as ci
from genesis import inspect as gi
from genesis.data import schema
from genesis.data.normalization import Normalization, suggest
from genesis.errors import CheckpointError
from imported_events import oscnext_h5

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.max_steps=3", "train.batch_size=8", "train.device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project home with a simulated dataset, one diffusion and one flow run (3 steps each)."""
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like
    from genesis.train import train

    home = tmp_path_factory.mktemp("ckpt_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENESIS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        (home / "data").mkdir()
        data = simulate_to_file(home / "data" / "demo.h5", 200, icecube86_like(), seed=1)
        dit = train(config.load(ROOT / "configs" / "tiny.yaml", [
            f"data.path={data}", "model.hidden_size=32", "model.depth=1", "model.time_embed_dim=32", *SMALL]))
        flow = train(config.load(ROOT / "configs" / "flow_tiny.yaml", [
            f"data.path={data}", "flow.num_couplings=2", "flow.hidden_size=32", *SMALL]))
        yield {"home": home, "data": data, "diffusion": dit, "flow": flow}


@pytest.fixture()
def home(trained, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(trained["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return trained["home"]


def ckpt(trained, kind: str, name: str = "best.pt") -> str:
    return str(Path(trained[kind]["checkpoint_dir"]) / name)


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / "checkpoints.py"), default_timeout=120)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def rescaled_copy(trained, name: str = "rescaled.pt") -> Path:
    """The diffusion best.pt with npe scale 7 instead of 5, kept as an upload."""
    state = checkpoint.load(ckpt(trained, "diffusion"))
    state["normalization"]["affine_scales"][0] = 7.0
    state["model"]["affine_scales"][0] = 7.0
    return checkpoint.save(state, ci.uploads_dir() / name)


# --- package side ---------------------------------------------------------------------------------------
def test_list_checkpoints_finds_both_runs_with_steps(home, trained):
    everything = ci.list_checkpoints(tracking.Store.default())
    table = everything[~everything["demo"]]
    assert len(table) == 4
    assert set(table["path"]) == {ckpt(trained, k, f) for k in ("diffusion", "flow") for f in ("best.pt", "last.pt")}
    demos = everything.iloc[4:]  # the shipped demo models come last, diffusion first
    assert demos["path"].tolist() == [str(p) for p in demo.demo_checkpoints()] and demos["demo"].all()
    assert demos["kind"].tolist() == ["diffusion", "flow"]
    assert demos["label"].tolist() == ["demo · demo-diffusion.pt (configs/tiny.yaml, shipped)",
                                       "demo · demo-flow.pt (configs/flow_tiny.yaml, shipped)"]
    for kind in ("diffusion", "flow"):
        rows = table[table["run_id"] == trained[kind]["run_id"]].set_index("file")
        assert set(rows.index) == {"best.pt", "last.pt"} and set(rows["kind"]) == {kind}
        assert rows.loc["best.pt", "step"] == trained[kind]["step"] == 3 and rows.loc["last.pt", "step"] == 3
        assert math.isclose(rows.loc["best.pt", "val_loss"], trained[kind]["best_val_loss"], rel_tol=1e-6)
        name = "tiny-dit" if kind == "diffusion" else "tiny-flow"
        best = trained[kind]["best_val_loss"]
        assert rows.loc["best.pt", "label"] == f"{name} · best.pt · step 3 · val {best:.4g}"
    for run_id in set(table["run_id"]):  # best.pt first within a run, though last.pt is written later
        assert table[table["run_id"] == run_id]["file"].tolist() == ["best.pt", "last.pt"]
    newest_first = table.groupby("run_id", sort=False)["mtime"].max().tolist()
    assert newest_first == sorted(newest_first, reverse=True)
    upload = rescaled_copy(trained, "listed.pt")
    try:
        with_upload = ci.list_checkpoints(tracking.Store.default())
        row = ci.checkpoint_row(with_upload, str(upload))
        assert len(with_upload) == 5 + len(demos) and row["label"] == "upload · listed.pt" and row["run_id"] is None
        assert with_upload["path"].iloc[0] == str(upload)  # newest first
    finally:
        upload.unlink()


def test_normalization_tables_and_dataset_diff(home, trained):
    report = gi.inspect_checkpoint(ckpt(trained, "diffusion"), 4)
    affine, labels = ci.normalization_tables(report)
    assert affine.set_index("channel").loc["npe"].tolist() == ["log1p", "ln(1 + npe/pe)", 1.0, 2.0]
    assert affine.set_index("channel").loc["time"].tolist() == ["asinh", "asinh((t - 10000 ns) / 200 ns)", 1.0, 1.5]
    assert affine.set_index("channel").loc["x"].tolist() == ["none", "m", -600.0, 1200.0]
    assert labels.set_index("channel").loc["energy"].tolist() == ["log10", "log10(E/GeV)", 3.0, 4.0]
    assert labels.set_index("channel")["unit"].tolist()[1:] == ["rad", "rad", "m", "m", "m"]
    assert ci.transformed_unit("time", "ln") == "ln(1 + t/ns)"
    diffs = ci.suggested_normalization_diff(report, trained["data"])
    assert "affine_scales" in {d.split(":")[0] for d in diffs}
    # ... but the shipped preset fits the demo data: no warning (the cause of issue 15's false alarm)
    assert ci.normalization_fit(report, trained["data"]) == []
    # a checkpoint whose normalization is what the data suggests: no warning
    signal, lab, _ = schema.read_events(trained["data"], 0, 2000)
    same = suggest(signal, lab, schema.read_geometry(trained["data"]).positions,
                   Normalization(npe_transform="log1p", energy_transform="log10"))
    assert ci.suggested_normalization_diff({**report, "normalization": same.to_dict()}, trained["data"]) == []
    other_doms = {**report, "normalization": same.to_dict(), "model": {**report["model"], "n_doms": 60}}
    assert ci.suggested_normalization_diff(other_doms, trained["data"])[0].startswith("n_doms: checkpoint 60")


def test_normalization_fit_flags_data_the_model_never_saw(home, trained):
    report = gi.inspect_checkpoint(ckpt(trained, "diffusion"), 4)
    original = {**report, "normalization": Normalization().to_dict()}  # npe scale 200 on raw npe
    problems = ci.normalization_fit(original, trained["data"])
    assert problems and problems[0].startswith("npe: the data spans") and "beyond +-10" in problems[0]
    squeezed = {**report, "normalization": {**report["normalization"], "affine_scales": [2.0, 2e7, 1200.0, 1100.0,
                                                                                          1100.0]}}
    assert any(p.startswith("time: the data is squeezed") for p in ci.normalization_fit(squeezed, trained["data"]))
    other = {**report, "model": {**report["model"], "n_doms": 60}}
    assert ci.normalization_fit(other, trained["data"])[0].startswith("n_doms: checkpoint 60")


def test_asinh_centre_far_from_the_light_is_flagged(home, trained):
    """The presets' asinh of the delay after direct light is centred on the simulator's vertex time (10 us),
    where `genesis stats` would put it too; a centre far from the light squeezes the channel: flagged."""
    report = gi.inspect_checkpoint(ckpt(trained, "diffusion"), 4)
    assert report["normalization"]["time_center_ns"] == 10000.0
    diffs = ci.suggested_normalization_diff(report, trained["data"])
    assert not any(d.startswith("time_center_ns") for d in diffs), diffs
    far = {**report["normalization"], "time_center_ns": -1e9}  # every delay ~1e9 ns after it: asinh ~ 16 +- 1e-6
    problems = ci.normalization_fit({**report, "normalization": far}, trained["data"])
    assert any(p.startswith("time: the data") for p in problems), problems


def test_upload_check_refuses_non_checkpoints(home, trained, tmp_path):
    random_file = tmp_path / "random.pt"
    random_file.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        ci.check_uploaded_checkpoint(random_file)
    plain = tmp_path / "plain.pt"
    torch.save({"answer": 42}, plain)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        ci.check_uploaded_checkpoint(plain)
    assert ci.check_uploaded_checkpoint(ckpt(trained, "flow"), 2)["source"]["kind"] == "flow"
    target = ci.uploads_dir() / "bad.pt"
    with pytest.raises(CheckpointError) as err:
        ci.keep_upload(os.urandom(1000), target)
    assert str(err.value).startswith("bad.pt: not a PyTorch checkpoint") and not target.exists()


def test_data_flow_figure_draws_every_stage(home, trained):
    report = gi.inspect_checkpoint(ckpt(trained, "diffusion"), 4)
    fig = ci.data_flow_figure(report)
    stages = report["data_flow"]
    assert len(fig.layout.shapes) == len(stages) >= 8
    texts = [a.text for a in fig.layout.annotations if a.text]
    assert all(f"<b>{s['stage']}</b><br>{s['shape']}" in texts for s in stages)
    arrows = [a for a in fig.layout.annotations if a.showarrow]
    assert len(arrows) == 4 + (len(stages) - 4) - 1  # 4 inputs into the first stage, then a chain
    assert list(fig.data[0].hovertext)[0].startswith("input x_t")
    empty = ci.data_flow_figure({"data_flow": [], "data_flow_method": "unknown without the model code"})
    assert not empty.layout.shapes and empty.layout.annotations[0].text == "unknown without the model code"


def test_compare_table_marks_differences(home, trained):
    a = gi.inspect_checkpoint(ckpt(trained, "diffusion"), 4)
    rows = ci.compare_table(a, gi.inspect_checkpoint(ckpt(trained, "flow"), 4))
    assert rows.set_index(["section", "key"]).loc[("model", "kind"), ["A", "B", "differs"]].tolist() == [
        "diffusion", "flow", True]
    b = gi.inspect_checkpoint(ckpt(trained, "flow"), 4)
    differing = {k for k in a["normalization"] if str(a["normalization"][k]) != str(b["normalization"][k])}
    assert "representation" in differing  # hit (tiny.yaml) vs legacy (flows)
    assert {d.split(":")[0] for d in ci.normalization_differences(rows)} == differing
    assert not ci.compare_table(a, a)["differs"].any()
    css = ci.highlight_differences(rows).to_html().split("</style>")[0]
    shaded = {int(i) for i in re.findall(r"_row(\d+)_col0\b", css)}
    assert shaded == set(rows.index[rows["differs"]]) and shaded


# --- page -------------------------------------------------------------------------------------------------
def test_fresh_home_lists_the_shipped_demo_models(tmp_path, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = page().run()
    assert_clean(at)
    box = at.selectbox(key="ckpt_pick")
    assert box.options == ["demo · demo-diffusion.pt (configs/tiny.yaml, shipped)",
                           "demo · demo-flow.pt (configs/flow_tiny.yaml, shipped)"]
    assert {m.label: m.value for m in at.metric}["Kind"] == "diffusion"


def test_imported_real_events_are_reported_outside_the_demo_ranges(tmp_path, monkeypatch):
    """Compare with a dataset: the oscNext events (1.5-4.7 GeV) against the demo model trained from 1,000 GeV."""
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    oscnext_h5(tmp_path / "data" / "oscnext.h5")
    at = page().run()
    assert_clean(at)
    assert at.selectbox(key="ckpt_pick").value == str(demo.demo_checkpoints()[0])
    assert next(s for s in at.selectbox if s.label == "Compare with a dataset").value.name == "oscnext.h5"
    report = next(w.value for w in at.warning if w.value.startswith("**Training ranges.**"))
    assert "All 5 events of data/oscnext.h5 lie outside the ranges this checkpoint was trained on" in report
    assert "energy (100%: data 1.51 to 4.65 GeV, training 1,000 to 9.99e+06 GeV)" in report
    table = next(f for f in frames(at) if "events outside" in f.columns).set_index("quantity")
    assert table.loc["energy", "events below"] == 5 and table.loc["zenith", "events outside"] == 0
    assert not any(s.value.startswith("Normalization:") for s in at.success)  # readable, not "fits"


def test_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GENESIS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "no-demo-models")
    table = ci.list_checkpoints(tracking.Store.default())
    assert table.empty and list(table.columns[:8]) == ["label", "path", "run_id", "run_name", "file", "step",
                                                       "val_loss", "modified"]
    at = page().run()
    assert_clean(at)
    assert any("No checkpoints yet" in i.value for i in at.info)
    assert not at.selectbox


def test_page_shows_checkpoint_and_dataset_warning(home, trained):
    at = page().run()
    assert_clean(at)
    at.selectbox(key="ckpt_pick").set_value(ckpt(trained, "diffusion")).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Kind"] == "diffusion" and metrics["Model"] == "PMTDiT"
    assert metrics["Total fp32"].endswith("MB")
    tables = frames(at)
    columns = ["channel", "transform", "unit", "offset", "scale"]
    affine = next(f for f in tables if list(f.columns) == columns and f["channel"].iloc[0] == "npe")
    assert affine["scale"].tolist() == [2.0, 1.5, 1200.0, 1100.0, 1100.0] and affine["transform"][0] == "log1p"
    assert affine["unit"].tolist() == ["ln(1 + npe/pe)", "asinh((t - 10000 ns) / 200 ns)", "m", "m", "m"]
    assert any(list(f.columns) == columns and f["offset"].iloc[0] == 3.0
               and f["channel"].iloc[0] == "energy" for f in tables)
    # the shipped preset on its demo data: no normalization warning, the suggestions only as information
    assert not any("normalization" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any("of data/demo.h5 lies within ±10 after normalization" in m.value for m in [*at.success, *at.caption])
    in_range = next(m.value for m in [*at.success, *at.warning] if m.value.startswith("**Training ranges.**"))
    assert "of data/demo.h5" in in_range  # the run trained on most of these events: few or none outside
    assert any("genesis stats" in e.label for e in at.expander)
    assert len(at.get("plotly_chart")) == 3  # parameters by type, the data-flow diagram, the noise model (tiny.yaml)
    batch = next(n for n in at.number_input if n.label == "Batch size")
    assert batch.value == 8  # the run's training batch
    fp32 = metrics["Total fp32"]
    batch.set_value(256).run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Total fp32"] != fp32


def test_page_compares_two_checkpoints(home, trained):
    rescaled = rescaled_copy(trained)
    try:
        at = page().run()
        at.selectbox(key="ckpt_pick").set_value(ckpt(trained, "diffusion")).run()
        at.selectbox(key="ckpt_other").set_value(ckpt(trained, "flow")).run()
        assert_clean(at)
        compared = next(f for f in frames(at) if "differs" in f.columns)
        differing = compared[compared["differs"]]
        assert ("model", "kind") in set(zip(differing["section"], differing["key"]))
        assert any("representation" in w.value for w in at.warning if w.value.startswith("Normalization differs"))
        at.toggle[0].set_value(True).run()
        only = next(f for f in frames(at) if "differs" in f.columns)
        assert only["differs"].all() and len(only) == len(differing)

        at.selectbox(key="ckpt_other").set_value(ckpt(trained, "diffusion", "last.pt")).run()
        assert any(s.value == "Same normalization." for s in at.success)

        at.selectbox(key="ckpt_other").set_value(str(rescaled)).run()
        assert_clean(at)
        warning = next(w.value for w in at.warning if w.value.startswith("Normalization differs"))
        assert "affine_scales: [2.0, 1.5, 1200.0, 1100.0, 1100.0] vs [7.0, 1.5" in warning
    finally:
        rescaled.unlink()


def test_page_upload(home, trained):
    at = page().run()
    at.file_uploader[0].set_value(("random.pt", os.urandom(4096), "application/octet-stream")).run()
    next(b for b in at.button if b.label == "Inspect and keep").click().run()
    assert_clean(at)
    assert any("Not kept: random.pt: not a PyTorch checkpoint" in e.value for e in at.error), [
        e.value for e in at.error]
    assert not (ci.uploads_dir() / "random.pt").exists()
    assert at.selectbox(key="ckpt_pick").value != str(ci.uploads_dir() / "random.pt")

    good = Path(ckpt(trained, "flow", "last.pt")).read_bytes()
    at.file_uploader[0].set_value(("mine.pt", good, "application/octet-stream")).run()
    next(b for b in at.button if b.label == "Inspect and keep").click().run()
    kept = ci.uploads_dir() / "mine.pt"
    try:
        assert_clean(at)
        assert any(s.value == "Kept mlruns/uploads/mine.pt" for s in at.success)
        assert kept.read_bytes() == good
        assert at.selectbox(key="ckpt_pick").value == str(kept)
        assert {m.label: m.value for m in at.metric}["Kind"] == "flow"
    finally:
        kept.unlink(missing_ok=True)


def test_page_renders_a_legacy_checkpoint(home, trained):
    """A plain-data file of another trainer: shown with the inspector's notes, unknown parts as such."""
    legacy = ci.uploads_dir() / "legacy.pt"
    torch.save({"model_state_dict": {"net.weight": torch.zeros(4, 3), "affine_scale": torch.ones(5)},
                "config": {"train": {"batch_size": "big", "lr": 1e-3}}, "epoch": 7}, legacy)
    try:
        at = page().run()
        at.selectbox(key="ckpt_pick").set_value(str(legacy)).run()
        assert_clean(at)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Kind"] == "legacy" and metrics["Parameters"] == "12" and metrics["Total fp32"] == "unknown"
        assert any("cannot be loaded for sampling" in w.value for w in at.warning)
        assert next(n for n in at.number_input if n.label == "Batch size").value == 64
    finally:
        legacy.unlink()
