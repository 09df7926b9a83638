"""The Train page's live view: incremental log reading, a steady ETA, negative losses drawn, no store reads
for curves, against a real launched flow run (trainer subprocess, real MLflow SQLite store)."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, TINY_FLOW, run_to_end
from genesis import config, launcher, live, tracking, viz

STEP = "2026-01-01 10:00:{s:02d},{ms:03d} INFO step {step}/{total} epoch 0 {key} {value} lr 1.00e-03 {rate} ev/s\n"
VAL = "2026-01-01 10:00:{s:02d},{ms:03d} INFO epoch 1 step {step} {key} {value}\n"


def step_line(step, value, s=0, total=100, key="train/nll", rate=400, ms=0):
    return STEP.format(s=s, ms=ms, step=step, total=total, key=key, value=value, rate=rate)


def trace_values(trace: dict) -> np.ndarray:
    """y of a Plotly trace in a chart's JSON (a list, or Plotly's base64 typed array)."""
    y = trace["y"]
    if isinstance(y, dict):
        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).astype(np.float64)
    return np.asarray(y, dtype=np.float64)


def test_update_reads_only_what_was_appended(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("2026-01-01 10:00:00,000 INFO training flow: 300 train / 30 val events\n" + step_line(5, -120.5, 1))
    state, changed = live.update(live.LiveState(str(log)))
    assert changed and [(p.key, p.step, p.value) for p in state.points] == [("train/nll", 5, -120.5)]
    assert state.offset == log.stat().st_size and state.total_steps == 100 and state.events_per_s == 400
    same, changed = live.update(state)
    assert not changed and same is state  # nothing new: one stat(), nothing read
    with open(log, "a") as f:  # a line still being written is left for the next look
        f.write(step_line(10, -3.9e4, 2) + VAL.format(s=3, ms=0, step=10, key="val/nll", value=-3.8e4)[:30])
    state, changed = live.update(state)
    assert changed and [p.step for p in state.points] == [5, 10] and state.offset < log.stat().st_size
    with open(log, "a") as f:
        f.write(VAL.format(s=3, ms=0, step=10, key="val/nll", value=-3.8e4)[30:])
    state, _ = live.update(state)
    assert [(p.key, p.value) for p in state.points][-1] == ("val/nll", -3.8e4)
    log.write_text(step_line(1, 0.9, key="train/loss"))  # rewritten log: read again from the start
    state, changed = live.update(state)
    assert changed and [(p.key, p.step) for p in state.points] == [("train/loss", 1)]


def test_old_log_lines_still_parse():
    points, total, rate = live.parse_lines("2025-05-05 10:00:00,000 INFO step 10/50 epoch 0 loss 0.53000 "
                                           "lr 3.00e-04 412 ev/s\n")
    assert [(p.key, p.step, p.value) for p in points] == [("train/loss", 10, 0.53)] and total == 50 and rate == 412


def test_eta_uses_the_recent_rate_and_does_not_jump(tmp_path):
    log = tmp_path / "run.log"
    # a slow start (compilation, first validation) then 10 steps per second, with jitter
    lines = [step_line(10, 1.0, s=0)] + [step_line(10 + 10 * i, 1.0, s=20 + i, ms=(97 * i) % 200) for i in range(1, 30)]
    etas = []
    for n in range(20, 30):
        points = tuple(live.parse_lines("".join(lines[:n + 1]))[0])
        etas.append(live.progress(live.LiveState(str(log), total_steps=1000, points=points)).eta_s)
    steps_left = [1000 - (10 + 10 * n) for n in range(20, 30)]
    expected = [s / 10 for s in steps_left]  # the steady rate, not the average since the slow start
    np.testing.assert_allclose(etas, expected, rtol=0.05)
    assert max(abs(a - b) for a, b in zip(etas, etas[1:])) < 3  # calm: about 1 s less per second
    assert live.format_duration(3725) == "1h 02m" and live.format_duration(75) == "1m 15s"
    assert live.progress(live.LiveState(str(log))).text() == "starting"


def test_loss_charts_draw_negative_values():
    import pandas as pd

    points = pd.DataFrame({"key": ["train/nll"] * 3 + ["val/nll"], "step": [5, 10, 15, 15],
                           "value": [-100.0, -3e4, -3.9e4, -3.8e4]})
    fig = viz.metric_curves(points, color="key", log_y=True, y_title="loss [nats per event]")
    assert fig.layout.yaxis.type == "linear" and fig.layout.yaxis.title.text == "loss [nats per event]"
    assert sum(len(t.y) for t in fig.data) == 4 and fig.layout.xaxis.title.text == "step"
    positive = points.assign(value=[0.9, 0.5, 0.3, 0.4])
    assert viz.metric_curves(positive, color="key", log_y=True).layout.yaxis.type == "log"


# ------------------------------------------------------------------------------------------ a real flow run


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, small_data):
    """A tiny flow trained to the end by a launched trainer subprocess: (home, run id, its log path)."""
    home = tmp_path_factory.mktemp("live-home")
    (home / "data").mkdir()
    (home / "data" / "demo.h5").write_bytes(small_data.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENESIS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = config.load(ROOT / "configs" / "flow_tiny.yaml", [f"data.path={home}/data/demo.h5", *TINY_FLOW,
                                                                 "train.max_steps=24", "train.log_every=4",
                                                                 "train.warmup_steps=2"])
        store = tracking.Store.default()
        run_id = launcher.launch(cfg, store=store)
        run = run_to_end(store, run_id)
        assert run.info.status == "FINISHED", launcher.log_tail(store, run_id, 40)
        return home, run_id, Path(run.data.tags[tracking.TAG_LOG])


def test_real_flow_log_matches_mlflow(flow_run, monkeypatch):
    home, run_id, log = flow_run
    monkeypatch.setenv("GENESIS_HOME", str(home))
    state, changed = live.update(live.LiveState(str(log)))
    points = live.frame(state)
    train = points[points["key"] == "train/nll"]
    # a flow's NLL per event falls below zero within these steps (its density of hit data is peaked)
    assert changed and list(train["step"]) == [4, 8, 12, 16, 20, 24] and (train["value"] < 0).any()
    assert list(points[points["key"] == "val/nll"]["step"])[-1] == 24
    assert live.progress(state).step == 24 and state.total_steps == 24
    history = tracking.Store.default().metric_history(run_id, "train/nll")
    np.testing.assert_allclose(train["value"].to_numpy(), history["value"].to_numpy(), rtol=1e-5)


def test_train_page_live_chart_reads_the_log_not_the_store(flow_run, monkeypatch):
    """A RUNNING run (this process stands in for its trainer) pointed at the real flow log: the page draws
    its negative NLL on a linear axis from the log; a refresh with nothing new parses nothing and queries
    no metric history."""
    home, _, log = flow_run
    monkeypatch.setenv("GENESIS_HOME", str(home))
    store = tracking.Store.default()
    watched = store.create_run("genesis", "watched-flow", {tracking.TAG_KIND: "flow", tracking.TAG_LOG: str(log),
                                                           tracking.TAG_PID: str(os.getpid()),
                                                           tracking.TAG_HOST: socket.gethostname()}, {})
    calls = {"history": 0, "parse": 0}
    original_history, original_parse = tracking.Store.metric_history, live.parse_lines
    monkeypatch.setattr(tracking.Store, "metric_history",
                        lambda self, *a: calls.__setitem__("history", calls["history"] + 1) or original_history(self, *a))
    monkeypatch.setattr(live, "parse_lines", lambda text: calls.__setitem__("parse", calls["parse"] + 1) or original_parse(text))
    try:
        at = AppTest.from_file(str(ROOT / "views" / "train.py"), default_timeout=900).run()
        assert not at.exception, [e.value for e in at.exception]
        charts = at.get("plotly_chart")
        assert len(charts) == 1
        spec = json.loads(charts[0].proto.spec)
        assert spec["layout"]["yaxis"]["type"] == "linear" and "nats" in spec["layout"]["yaxis"]["title"]["text"]
        assert len(spec["data"]) == 2 and calls["parse"] == 1 and calls["history"] == 0
        values = np.concatenate([trace_values(t) for t in spec["data"]])
        n_points = len(at.session_state["live_states"][watched].points)
        assert len(values) == n_points and (values < 0).any()  # every train/nll and val/nll point drawn
        assert any("step 24/24" in p.proto.text for p in at.get("progress"))
        at.run()  # the next refresh: the log did not grow
        assert calls["parse"] == 1 and calls["history"] == 0
        assert at.session_state["live_states"][watched].offset == log.stat().st_size
    finally:
        store.end_run(watched, "FINISHED")
