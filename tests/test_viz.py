"""Tests for genesis.viz: figure structure, shared scales, JSON size and build time."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from genesis import viz
from genesis.errors import DataError
from genesis.geometry import icecube86_like


@pytest.fixture(scope="module")
def geom():
    return icecube86_like()


def make_event(geom, n_hits: int = 50, seed: int = 0, t0: float = 9000.0):
    """(npe, time) with n_hits random hit DOMs; unhit DOMs get npe 0 and time +inf as in real files."""
    rng = np.random.default_rng(seed)
    npe = np.zeros(geom.n_doms, np.float32)
    time_ = np.full(geom.n_doms, np.inf, np.float32)
    hit = rng.choice(geom.n_doms, n_hits, replace=False)
    npe[hit] = rng.exponential(5.0, n_hits).astype(np.float32) + 0.1
    time_[hit] = rng.uniform(t0, t0 + 3000.0, n_hits).astype(np.float32)
    return npe, time_


LABEL = np.array([1e5, 1.0, 2.0, 10.0, 20.0, -100.0])


def trace(fig: go.Figure, name: str, scene: str | None = None):
    found = [t for t in fig.data if t.name == name and (scene is None or t.scene == scene)]
    assert len(found) == 1, f"expected one trace named {name!r}, found {len(found)}"
    return found[0]


def test_direction_vector_points_away_from_origin_direction():
    assert np.allclose(viz.direction_vector(0.0, 0.3), [0, 0, -1])  # from straight above: goes down
    assert np.allclose(viz.direction_vector(np.pi / 2, 0.0), [-1, 0, 0])
    assert np.isclose(np.linalg.norm(viz.direction_vector(1.1, 4.0)), 1.0)


def test_event_figure_hits_and_all_doms(geom):
    npe, t = make_event(geom)
    npe[np.flatnonzero(npe)[:2]] = [1e5, 1e-3]  # extremes must stay inside the 3..18 size range
    fig = viz.event_figure(geom, npe, t)
    hits = trace(fig, "hits")
    assert len(hits.x) == int((npe > 0).sum()) == 50
    assert len(trace(fig, "DOMs").x) == 5160 == geom.n_doms
    assert np.allclose(hits.z, geom.positions[npe > 0, 2], atol=0.06)
    sizes = np.asarray(hits.marker.size)
    assert sizes.min() >= 3 and sizes.max() <= 18
    assert np.all(np.diff(sizes[np.argsort(npe[npe > 0])]) >= 0)  # bigger charge, bigger marker


def test_event_colours_are_hit_times_and_range(geom):
    npe, t = make_event(geom)
    fig = viz.event_figure(geom, npe, t)
    m = trace(fig, "hits").marker
    assert np.array_equal(np.asarray(m.color), t[npe > 0])
    assert (m.cmin, m.cmax) == (pytest.approx(t[npe > 0].min()), pytest.approx(t[npe > 0].max()))
    assert m.colorbar.title.text == "first-hit time [ns]"
    m2 = trace(viz.event_figure(geom, npe, t, time_range=(1000.0, 20000.0)), "hits").marker
    assert (m2.cmin, m2.cmax) == (1000.0, 20000.0)


def test_mask_overlay_and_strings_trace(geom):
    npe, t = make_event(geom)
    mask = np.zeros(geom.n_doms, bool)
    mask[geom.indices_of_strings([36, 37])] = True
    mask[7] = True
    fig = viz.event_figure(geom, npe, t, mask=mask)
    masked = trace(fig, "masked DOMs")
    assert len(masked.x) == mask.sum() == 121
    assert "open" in masked.marker.symbol
    strings = trace(fig, "strings")
    assert sum(v is None for v in strings.x) == len(geom.strings)  # one break per string, one trace
    assert sum(tr.name == "strings" for tr in fig.data) == 1
    plain = viz.event_figure(geom, npe, t, show_strings=False)
    assert "strings" not in {tr.name for tr in plain.data} and "masked DOMs" not in {tr.name for tr in plain.data}


def test_true_track_length_fits_the_event(geom):
    """A few-GeV event gets a short arrow, not a kilometre; a 100 TeV track ends at the detector's edge."""
    low = np.array([4.7, 2.0, 1.0, 40.0, -70.0, -400.0])  # an imported oscNext event's labels (DeepCore)
    start, end = viz.track_segment(low, geom)
    assert np.linalg.norm(end - start) == pytest.approx(viz.MIN_TRACK_M)  # muon range ~20 m, drawn at least 50 m
    assert viz.muon_range_m(4.7) == pytest.approx(4.7 / 0.24, rel=0.01)
    start, end = viz.track_segment(LABEL, geom)
    lo, hi = geom.positions.min(0) - viz.DETECTOR_MARGIN_M, geom.positions.max(0) + viz.DETECTOR_MARGIN_M
    assert np.all(end >= lo - 1e-6) and np.all(end <= hi + 1e-6)
    assert np.isclose(end, lo).any() or np.isclose(end, hi).any()  # ends on the box: the muon range is ~15 km
    straight_down = np.array([1e5, 0.0, 0.0, 0.0, 0.0, 0.0])  # comes from above: travels down the z axis
    start, end = viz.track_segment(straight_down, geom)
    assert end[2] == pytest.approx(geom.positions[:, 2].min() - viz.DETECTOR_MARGIN_M)


def _row_gaps_px(fig: go.Figure) -> list[float]:
    """Pixels between vertically stacked panels (distinct y-axis domains) of a figure."""
    domains = sorted({tuple(ax.domain) for name, ax in fig.layout.to_plotly_json().items() if name.startswith("yaxis")
                      for ax in [fig.layout[name]]}, reverse=True)
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    return [(upper[0] - lower[1]) * plot_px for upper, lower in zip(domains, domains[1:])]


def test_stacked_panels_leave_room_for_axis_and_panel_titles():
    """The title of a lower panel must not overlap the x-axis title of the panel above it."""
    rng = np.random.default_rng(0)
    feats = {"a": {f"f{i}": rng.normal(size=50) for i in range(9)}}
    curves = pd.DataFrame({"kind": ["diffusion", "flow"] * 3, "metric": ["val/loss", "val/nll"] * 3,
                           "run": ["a", "b"] * 3, "step": [1, 1, 2, 2, 3, 3], "value": rng.normal(size=6)})
    for fig in (viz.feature_histograms(feats, list(feats["a"])), viz.label_histograms(rng.uniform(1, 2, (30, 6))),
                viz.loss_panels(curves)):
        gaps = _row_gaps_px(fig)
        assert gaps and min(gaps) >= viz.PANEL_GAP_PX - 1, gaps


def test_true_track_follows_label(geom):
    npe, t = make_event(geom)
    fig = viz.event_figure(geom, npe, t, label=LABEL)
    vtx = trace(fig, "vertex")
    assert np.allclose([vtx.x[0], vtx.y[0], vtx.z[0]], LABEL[3:])
    line = trace(fig, "true track")
    start, end = np.array([line.x[0], line.y[0], line.z[0]]), np.array([line.x[1], line.y[1], line.z[1]])
    assert np.allclose(start, LABEL[3:])
    along = (end - start) / np.linalg.norm(end - start)
    assert np.allclose(along, viz.direction_vector(LABEL[1], LABEL[2]))
    assert "true track" not in {tr.name for tr in viz.event_figure(geom, npe, t).data}
    with pytest.raises(ValueError, match="label"):
        viz.event_figure(geom, npe, t, label=LABEL[:3])


def test_event_figure_is_fast_and_small(geom):
    npe, t = make_event(geom)
    viz.event_figure(geom, npe, t, label=LABEL)  # warm-up: first call pays plotly's lazy validator imports
    start = time.perf_counter()
    fig = viz.event_figure(geom, npe, t, label=LABEL, mask=npe > 0, camera=dict(eye=dict(x=1.5, y=1.5, z=0.8)))
    size = len(fig.to_json())
    assert time.perf_counter() - start < 2.0  # smoke bound; measured ~0.02 s
    assert size < 400_000
    assert fig.layout.scene.aspectmode == "data" and fig.layout.uirevision
    assert fig.layout.scene.camera.eye.x == 1.5


def test_event_shape_mismatch_raises(geom):
    with pytest.raises(ValueError, match="5160"):
        viz.event_figure(geom, np.zeros(10), np.zeros(10))


def test_linked_figures_share_scale_and_camera(geom):
    events = [(name, *make_event(geom, seed=i, t0=9000.0 + 2000 * i)) for i, name in enumerate("abc")]
    cam = dict(eye=dict(x=2.0, y=0.5, z=0.5))
    fig = viz.linked_event_figures(geom, events, label=LABEL, camera=cam)
    scenes = ["scene", "scene2", "scene3"]
    assert sorted(k for k in fig.layout.to_plotly_json() if k.startswith("scene")) == scenes
    assert len({tuple(fig.layout[s].domain.x) for s in scenes}) == 3  # side by side, not stacked
    hits = [trace(fig, "hits", s) for s in scenes]
    all_t = np.concatenate([t[n > 0] for _, n, t in events])
    for h in hits:
        assert (h.marker.cmin, h.marker.cmax) == (pytest.approx(all_t.min()), pytest.approx(all_t.max()))
    assert [h.marker.showscale for h in hits] == [True, False, False]  # a single colourbar
    assert all(fig.layout[s].camera.eye.x == 2.0 for s in scenes)
    with pytest.raises(ValueError):
        viz.linked_event_figures(geom, [])


def test_top_view_marks_selected(geom):
    fig = viz.top_view_figure(geom, selected_strings=[36, 79])
    sel, rest = trace(fig, "selected"), trace(fig, "strings")
    assert sorted(np.asarray(sel.customdata).tolist()) == [36, 79]
    assert len(rest.customdata) == len(geom.strings) - 2 and 36 not in np.asarray(rest.customdata)
    assert len(trace(viz.top_view_figure(geom), "selected").customdata) == 0
    with pytest.raises(DataError):
        viz.top_view_figure(geom, selected_strings=[999])


def test_charge_time_histograms_with_empty_events(geom):
    npe, t = make_event(geom)
    batch_npe = np.stack([npe, np.zeros_like(npe)])
    batch_t = np.stack([t, np.full_like(t, np.inf)])
    fig = viz.charge_time_histograms({"sim": (batch_npe, batch_t), "empty": (np.zeros(5160), np.zeros(5160))})
    assert len(fig.data) == 4
    sim_charge = fig.data[0]
    assert np.isclose(np.sum(sim_charge.y[:-1]), 1.0)
    logq, rel = viz._hits_and_relative_times(batch_npe, batch_t)
    assert len(rel) == 50 and rel.min() == 0.0 and np.allclose(logq, np.log10(npe[npe > 0]), atol=1e-6)


def test_feature_and_label_histograms(geom):
    rng = np.random.default_rng(1)
    sets = {"a": {"q": rng.normal(0, 1, 500), "n": rng.poisson(4, 500)},
            "b": {"q": rng.normal(3, 1, 300), "n": np.zeros(0)}}
    fig = viz.feature_histograms(sets, ["q", "n"])
    qa, qb = [tr for tr in fig.data if tr.xaxis == "x"]
    assert np.array_equal(qa.x, qb.x)  # shared bins per feature
    assert qa.x[0] <= -2 and qb.x[-1] >= 5  # range covers both sets
    assert np.isclose(np.sum(qa.y[:-1]), 1.0)
    with pytest.raises(ValueError, match="lacks"):
        viz.feature_histograms(sets, ["q", "missing"])
    labels = np.column_stack([10 ** rng.uniform(2, 7, 100), rng.uniform(0, np.pi, 100), rng.uniform(0, 6, 100),
                              rng.normal(0, 300, (100, 3))])
    lf = viz.label_histograms(labels)
    assert len(lf.data) == 6 and lf.layout.xaxis.type == "log"
    assert lf.data[0].x[0] <= labels[:, 0].min() * 1.0001 and lf.data[0].x[-1] >= labels[:, 0].max() * 0.9999


def metric_df() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = [dict(run=run, step=s, value=float(0.3 + np.exp(-s / 30) + rng.normal(0, 0.05)))
            for run in ("r1", "r2") for s in range(100)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # unsorted on purpose


def test_metric_curves_smoothing():
    df = metric_df()
    raw = viz.metric_curves(df)
    assert [tr.name for tr in raw.data] == ["r1", "r2"]
    r1 = df[df.run == "r1"].sort_values("step")
    assert np.array_equal(raw.data[0].x, r1.step.to_numpy())  # sorted by step
    assert np.allclose(raw.data[0].y, r1.value.to_numpy())
    smooth = viz.metric_curves(df, smoothing=0.9, log_y=True)
    line = trace(smooth, "r1")
    assert len(line.y) == 100 and not np.allclose(line.y, r1.value.to_numpy())
    assert np.std(np.diff(line.y)) < np.std(np.diff(r1.value.to_numpy()))
    assert smooth.layout.yaxis.type == "log"
    assert len(viz.loss_curve_figure(df).data) == 4  # smoothed + faint raw per run
    with pytest.raises(ValueError):
        viz.metric_curves(df, smoothing=1.0)
    with pytest.raises(ValueError, match="columns|column"):
        viz.metric_curves(df, y="loss")


def test_parallel_coordinates_categorical():
    df = pd.DataFrame({"model": ["dit", "flow", "dit"], "lr": ["0.001", "0.0003", "0.001"],
                       "layers": [4, 8, 6], "val_loss": [0.3, 0.2, 0.25]})
    fig = viz.parallel_coordinates(df, color_col="val_loss")
    dims = {d.label: d for d in fig.data[0].dimensions}
    assert list(dims["model"].ticktext) == ["dit", "flow"]
    assert list(dims["model"].values) == [0, 1, 0]
    assert dims["lr"].ticktext is None and np.allclose(dims["lr"].values, [0.001, 0.0003, 0.001])  # MLflow strings
    assert np.allclose(fig.data[0].line.color, df.val_loss)
    with pytest.raises(ValueError):
        viz.parallel_coordinates(df, color_col="nope")


def test_per_dom_error_figure(geom):
    rng = np.random.default_rng(3)
    err = rng.normal(0, 2, geom.n_doms)
    mask = np.zeros(geom.n_doms, bool)
    mask[geom.indices_of_strings([5])] = True
    fig = viz.per_dom_error_figure(err, mask, geom, x="z")
    pts = fig.data[0]
    assert len(pts.y) == mask.sum() == 60
    assert np.allclose(pts.y, np.abs(err[mask])) and np.allclose(pts.x, geom.positions[mask, 2], atol=0.06)
    assert np.array_equal(np.asarray(pts.customdata)[:, 0], geom.string[mask])
