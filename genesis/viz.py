"""Plotly figures for events, distributions and training curves; pure functions returning go.Figure.

Nothing here touches Streamlit or files: pages call these functions and render the result, and the CLI
can write the same figures to HTML. Arrays are passed to Plotly as numpy arrays, which Plotly >= 6
serialises as compact base64 typed arrays, so a full 5160-DOM event stays well under 400 KB of JSON.

Event conventions: npe (P,) with 0 = no hit; time (P,) ns, valid where npe > 0; label (6,) = energy GeV,
zenith rad, azimuth rad (direction the particle comes FROM), vertex x, y, z m.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from genesis.geometry import Geometry

TIME_COLORSCALE = "Viridis"
TIME_COLORBAR_TITLE = "first-hit time [ns]"
UIREVISION = "genesis"  # constant, so Plotly keeps camera/zoom when Streamlit reruns a page
MIN_TRACK_M = 50.0  # the true track is drawn at least this long, so its direction shows at detector scale
DETECTOR_MARGIN_M = 60.0  # ... and ends at most this far outside the DOMs' bounding box
PANEL_GAP_PX = 95  # between stacked panels: the x-axis title above and the next panel's title both fit
LABEL_NAMES = ("energy [GeV]", "zenith [rad]", "azimuth [rad]", "vertex x [m]", "vertex y [m]", "vertex z [m]")
PALETTE = qualitative.Plotly


def direction_vector(zenith: float, azimuth: float) -> np.ndarray:
    """(3,) unit travel direction of a particle that comes from (zenith, azimuth) in radians."""
    sz = np.sin(zenith)
    return -np.array([sz * np.cos(azimuth), sz * np.sin(azimuth), np.cos(zenith)], dtype=np.float64)


# ----------------------------------------------------------------------------------------------- 3D event


def _r(a: np.ndarray) -> np.ndarray:
    """Round to 0.1 (m or ns) as float32: display precision, 4 bytes per value in the JSON."""
    return np.round(np.asarray(a, dtype=np.float64), 1).astype(np.float32)


def _check_event(geometry: Geometry, npe: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    npe, time = np.asarray(npe, dtype=np.float32), np.asarray(time, dtype=np.float32)
    p = geometry.n_doms
    if npe.shape != (p,) or time.shape != (p,):
        raise ValueError(f"npe and time must have shape ({p},) for geometry '{geometry.name}', "
                         f"got {npe.shape} and {time.shape}")
    return npe, time


def _hit_time_range(events: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(min, max) first-hit time over the hit DOMs of all events; (0, 1) when nothing is hit."""
    hits = [np.asarray(t)[np.asarray(n) > 0] for n, t in events]
    t = np.concatenate(hits) if hits else np.zeros(0)
    t = t[np.isfinite(t)]
    if t.size == 0:
        return 0.0, 1.0
    lo, hi = float(t.min()), float(t.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)  # a zero-width range would break the colourbar


def _detector_traces(geometry: Geometry, show_strings: bool, showlegend: bool) -> list:
    pos = _r(geometry.positions)
    # Background dots in whole metres as int16 (invisible difference at detector scale) halve the
    # largest block of the JSON, which matters when linked views repeat it per scene.
    dots = np.round(geometry.positions).astype(np.int16) if np.abs(geometry.positions).max() < 32000 else pos
    traces: list = [go.Scatter3d(
        x=dots[:, 0], y=dots[:, 1], z=dots[:, 2], mode="markers", name="DOMs", hoverinfo="skip",
        marker=dict(size=1.2, color="rgba(140,140,140,0.35)"), legendgroup="doms", showlegend=showlegend)]
    if show_strings:
        ends = _r(geometry.string_top_bottom())  # (S, 2, 3)
        # One trace for all strings: None between strings breaks the line (86 traces would bloat JSON).
        seg = np.full((len(ends), 3, 3), np.nan)
        seg[:, :2] = ends
        xyz = [[None if np.isnan(v) else float(v) for v in seg[..., k].ravel()] for k in range(3)]
        traces.append(go.Scatter3d(
            x=xyz[0], y=xyz[1], z=xyz[2], mode="lines", name="strings", hoverinfo="skip",
            line=dict(color="rgba(120,120,120,0.35)", width=1), legendgroup="strings", showlegend=showlegend))
    hull = _r(geometry.outline())
    if len(hull) >= 3:
        ring = np.vstack([hull, hull[:1]]).astype(float)
        ztop, zbot = float(pos[:, 2].max()), float(pos[:, 2].min())
        xs = ring[:, 0].tolist() + [None] + ring[:, 0].tolist()
        ys = ring[:, 1].tolist() + [None] + ring[:, 1].tolist()
        zs = [ztop] * len(ring) + [None] + [zbot] * len(ring)
        traces.append(go.Scatter3d(
            x=xs, y=ys, z=zs, mode="lines", name="detector outline", hoverinfo="skip",
            line=dict(color="rgba(60,60,60,0.6)", width=2), legendgroup="outline", showlegend=showlegend))
    return traces


def _hit_trace(geometry: Geometry, npe: np.ndarray, time: np.ndarray, cmin: float, cmax: float,
               showscale: bool, showlegend: bool, colorbar_x: float | None = None) -> go.Scatter3d:
    hit = npe > 0
    pos = _r(geometry.positions[hit])
    # Absolute (not per-event) size mapping so marker sizes compare across linked views.
    size = np.clip(3.0 + 3.0 * np.log1p(npe[hit]), 3.0, 18.0).astype(np.float32)
    custom = np.column_stack([geometry.string[hit], geometry.dom[hit], npe[hit], time[hit]]).astype(np.float32)
    return go.Scatter3d(
        x=pos[:, 0], y=pos[:, 1], z=pos[:, 2], mode="markers", name="hits", customdata=custom,
        hovertemplate="string %{customdata[0]:d}, DOM %{customdata[1]:d}<br>npe %{customdata[2]:.2f}"
                      "<br>t %{customdata[3]:.1f} ns<extra></extra>",
        marker=dict(size=size, color=time[hit], colorscale=TIME_COLORSCALE, cmin=cmin, cmax=cmax,
                    showscale=showscale, opacity=0.9, line=dict(width=0),
                    colorbar=dict(title=dict(text=TIME_COLORBAR_TITLE, side="right"), thickness=14, len=0.8,
                                  **({} if colorbar_x is None else {"x": colorbar_x, "xanchor": "right"}))),
        legendgroup="hits", showlegend=showlegend)


def _mask_trace(geometry: Geometry, mask: np.ndarray, showlegend: bool) -> go.Scatter3d:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (geometry.n_doms,):
        raise ValueError(f"mask must have shape ({geometry.n_doms},), got {mask.shape}")
    pos = _r(geometry.positions[mask])
    custom = np.column_stack([geometry.string[mask], geometry.dom[mask]]).astype(np.int32)
    return go.Scatter3d(
        x=pos[:, 0], y=pos[:, 1], z=pos[:, 2], mode="markers", name="masked DOMs", customdata=custom,
        hovertemplate="masked: string %{customdata[0]}, DOM %{customdata[1]}<extra></extra>",
        marker=dict(size=5, symbol="circle-open", color="crimson", line=dict(width=2, color="crimson")),
        legendgroup="masked", showlegend=showlegend)


def muon_range_m(energy_gev: float) -> float:
    """Range (m) of a muon of `energy_gev` in ice: ln(1 + E b / a) / b with the simulator's dE/dx = a + b E."""
    from genesis.data.simulate import A_DEDX, B_DEDX

    return float(np.log1p(max(energy_gev, 0.0) * B_DEDX / A_DEDX) / B_DEDX)


def _exit_distance(start: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance along unit d from start to where the ray leaves the box [lo, hi] (0 when it never is inside)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - start) / d, (hi - start) / d
    near = np.where(d == 0, np.where((start >= lo) & (start <= hi), -np.inf, np.inf), np.minimum(t1, t2))
    far = np.where(d == 0, np.where((start >= lo) & (start <= hi), np.inf, -np.inf), np.maximum(t1, t2))
    enter, leave = float(near.max()), float(far.min())
    return max(leave, 0.0) if enter <= leave else 0.0


def track_segment(label: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) (3,) m of the true track drawn for a label: from the vertex along the travel direction for
    the muon range of the label's energy, at least MIN_TRACK_M, ending where it leaves the detector (the DOMs'
    bounding box plus DETECTOR_MARGIN_M). A 5 GeV event gets a 50 m arrow, a 100 TeV one a line to the edge."""
    label = np.asarray(label, dtype=np.float64)
    vtx, d = label[3:], direction_vector(label[1], label[2])
    pos = geometry.positions.astype(np.float64)
    lo, hi = pos.min(0) - DETECTOR_MARGIN_M, pos.max(0) + DETECTOR_MARGIN_M
    length = max(min(muon_range_m(label[0]), _exit_distance(vtx, d, lo, hi)), MIN_TRACK_M)
    return vtx, vtx + length * d


def _track_traces(label: np.ndarray, geometry: Geometry, showlegend: bool) -> list:
    label = np.asarray(label, dtype=np.float64)
    if label.shape != (6,):
        raise ValueError(f"label must have shape (6,) = energy, zenith, azimuth, x, y, z; got {label.shape}")
    energy, zen, azi = label[:3]
    vtx = label[3:]
    d = direction_vector(zen, azi)
    a, b = track_segment(label, geometry)
    length = float(np.linalg.norm(b - a))
    info = (f"E = {energy:.3g} GeV<br>zenith {np.degrees(zen):.1f}°, azimuth {np.degrees(azi):.1f}°"
            f"<br>vertex ({vtx[0]:.1f}, {vtx[1]:.1f}, {vtx[2]:.1f}) m<br>muon range {muon_range_m(energy):,.0f} m, "
            f"drawn {length:,.0f} m")
    return [
        go.Scatter3d(x=[a[0], b[0]], y=[a[1], b[1]], z=[a[2], b[2]], mode="lines", name="true track",
                     line=dict(color="crimson", width=5), hoverinfo="skip", legendgroup="track",
                     showlegend=showlegend),
        # Arrow head at the downstream end shows the travel direction; sized to the drawn length.
        go.Cone(x=[b[0]], y=[b[1]], z=[b[2]], u=[d[0]], v=[d[1]], w=[d[2]], anchor="tip", sizemode="absolute",
                sizeref=float(np.clip(0.3 * length, 15.0, 80.0)), showscale=False,
                colorscale=[[0, "crimson"], [1, "crimson"]], hoverinfo="skip", name="direction",
                legendgroup="track", showlegend=False),
        go.Scatter3d(x=[vtx[0]], y=[vtx[1]], z=[vtx[2]], mode="markers", name="vertex", hovertext=[info],
                     hoverinfo="text", marker=dict(size=6, symbol="diamond", color="crimson"),
                     legendgroup="track", showlegend=showlegend),
    ]


def _event_traces(geometry: Geometry, npe: np.ndarray, time: np.ndarray, label: np.ndarray | None,
                  mask: np.ndarray | None, time_range: tuple[float, float], show_strings: bool,
                  showscale: bool = True, showlegend: bool = True, colorbar_x: float | None = None) -> list:
    npe, time = _check_event(geometry, npe, time)
    traces = _detector_traces(geometry, show_strings, showlegend)
    traces.append(_hit_trace(geometry, npe, time, *time_range, showscale=showscale, showlegend=showlegend,
                             colorbar_x=colorbar_x))
    if mask is not None:
        traces.append(_mask_trace(geometry, mask, showlegend))
    if label is not None:
        traces += _track_traces(label, geometry, showlegend)
    return traces


def _scene(camera: dict | None) -> dict:
    scene = dict(aspectmode="data", uirevision=UIREVISION, xaxis_title="x [m]", yaxis_title="y [m]",
                 zaxis_title="z [m]")
    if camera is not None:
        scene["camera"] = camera
    return scene


def event_figure(geometry: Geometry, npe: np.ndarray, time: np.ndarray, label: np.ndarray | None = None,
                 mask: np.ndarray | None = None, title: str = "",
                 time_range: tuple[float, float] | None = None, camera: dict | None = None,
                 show_strings: bool = True) -> go.Figure:
    """3D view of one event.

    Args:
        geometry: the detector (P DOMs).
        npe: (P,) photoelectrons, 0 = no hit. time: (P,) first-hit time ns, used where npe > 0.
        label: optional (6,) true labels; draws the vertex and the track (track_segment; arrow = travel direction).
        mask: optional (P,) bool; masked DOMs are drawn as open circles in the trace "masked DOMs".
        time_range: (cmin, cmax) of the time colour scale; pass the same range to compare figures.
        camera: Plotly scene camera dict (eye/center/up).
    """
    npe, time = _check_event(geometry, npe, time)
    tr = tuple(map(float, time_range)) if time_range is not None else _hit_time_range([(npe, time)])
    fig = go.Figure(_event_traces(geometry, npe, time, label, mask, tr, show_strings))
    fig.update_layout(title=title or None, scene=_scene(camera), uirevision=UIREVISION,
                      margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      legend=dict(x=0.0, y=1.0, bgcolor="rgba(255,255,255,0.6)"))
    return fig


COLOUR_RANGES = ("shared", "each")  # or an event index: its hit-time range for every view


def _time_ranges(events: Sequence[tuple[np.ndarray, np.ndarray]], colour_range: str | int) -> list[tuple[float, float]]:
    """One (cmin, cmax) per view: over all events ("shared"), per event ("each"), or event i's (an int)."""
    if colour_range == "each":
        return [_hit_time_range([e]) for e in events]
    if colour_range == "shared":
        return [_hit_time_range(events)] * len(events)
    if isinstance(colour_range, (int, np.integer)) and not isinstance(colour_range, bool) \
            and 0 <= colour_range < len(events):
        return [_hit_time_range([events[colour_range]])] * len(events)
    raise ValueError(f"colour_range must be one of {COLOUR_RANGES} or an event index 0..{len(events) - 1}, "
                     f"got {colour_range!r}")


def linked_event_figures(geometry: Geometry, events: Sequence[tuple[str, np.ndarray, np.ndarray]],
                         label: np.ndarray | None = None, mask: np.ndarray | None = None,
                         camera: dict | None = None, show_strings: bool = True,
                         colour_range: str | int = "shared") -> go.Figure:
    """Side-by-side 3D views (one scene per event, e.g. masked / inpainted / true), starting from one camera.

    events: list of (name, npe (P,), time (P,)). colour_range: "shared" = one time scale over all events
    (one colourbar); "each" = every view its own range and colourbar, so a quiet event is not washed out
    by a noisy one; an event index = that event's range for all views (times outside it saturate).
    Plotly does not sync cameras live: rotating one scene does not rotate the others.
    The legend is shown once; its entries toggle the matching traces in every scene (legend groups).
    """
    if not events:
        raise ValueError("linked_event_figures needs at least one (name, npe, time) event")
    checked = [(name, *_check_event(geometry, n, t)) for name, n, t in events]
    ranges = _time_ranges([(n, t) for _, n, t in checked], colour_range)
    cols = len(checked)
    fig = make_subplots(rows=1, cols=cols, specs=[[{"type": "scene"}] * cols],
                        subplot_titles=[name for name, _, _ in checked], horizontal_spacing=0.01)
    each = colour_range == "each"
    for i, (_, n, t) in enumerate(checked):
        # own ranges: a colourbar at the right edge of every view; one range: a single colourbar
        bar_x = (i + 1) / cols - 0.01 if each else None
        for trace in _event_traces(geometry, n, t, label, mask, ranges[i], show_strings,
                                   showscale=each or i == 0, showlegend=i == 0, colorbar_x=bar_x):
            fig.add_trace(trace, row=1, col=i + 1)
    scenes = {f"scene{i + 1 if i else ''}": _scene(camera) for i in range(cols)}
    fig.update_layout(**scenes, uirevision=UIREVISION, margin=dict(l=0, r=0, t=40, b=0),
                      legend=dict(orientation="h", x=0.0, y=-0.02))
    return fig


def top_view_figure(geometry: Geometry, selected_strings: Sequence[int] | None = None) -> go.Figure:
    """Top view of the string positions, labelled by id, for picking strings.

    Selected strings are highlighted in the trace "selected". Every point carries customdata = string
    id, so a Plotly selection (e.g. Streamlit on_select) gives the ids directly.
    """
    ids = geometry.strings
    xy = _r(geometry.string_xy())
    selected = np.zeros(len(ids), dtype=bool)
    if selected_strings is not None and len(selected_strings):
        geometry.indices_of_strings(list(selected_strings))  # raises DataError naming unknown ids
        selected = np.isin(ids, np.asarray(selected_strings, dtype=np.int64))
    hull = _r(geometry.outline())
    fig = go.Figure()
    if len(hull) >= 3:
        ring = np.vstack([hull, hull[:1]])
        fig.add_trace(go.Scatter(x=ring[:, 0], y=ring[:, 1], mode="lines", name="outline", hoverinfo="skip",
                                 line=dict(color="rgba(60,60,60,0.4)", width=1), showlegend=False))
    for name, sel, color, size in (("strings", ~selected, "steelblue", 9), ("selected", selected, "crimson", 13)):
        fig.add_trace(go.Scatter(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers+text", name=name, text=[str(s) for s in ids[sel]],
            textposition="top center", textfont=dict(size=8), customdata=ids[sel],
            hovertemplate="string %{customdata}<br>(%{x:.1f}, %{y:.1f}) m<extra></extra>",
            marker=dict(size=size, color=color)))
    fig.update_layout(xaxis_title="x [m]", yaxis=dict(title="y [m]", scaleanchor="x", scaleratio=1),
                      clickmode="event+select", dragmode="select", uirevision=UIREVISION,
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


# --------------------------------------------------------------------------------------------- histograms


def _edges(values: Sequence[np.ndarray], bins: int, log: bool = False) -> np.ndarray:
    """Shared bin edges over all sets (finite values only; positive ones when log)."""
    v = np.concatenate([np.ravel(x) for x in values]) if values else np.zeros(0)
    v = v[np.isfinite(v) & (v > 0 if log else True)]
    if log:
        return 10 ** np.histogram_bin_edges(np.log10(v), bins=bins) if v.size else np.logspace(0, 1, bins + 1)
    return np.histogram_bin_edges(v, bins=bins)


def _step_trace(values: np.ndarray, edges: np.ndarray, name: str, color: str, showlegend: bool) -> go.Scatter:
    """Normalized histogram as a step line: binned here so the JSON holds bins, not raw values."""
    v = np.ravel(np.asarray(values, dtype=np.float64))
    finite = v[np.isfinite(v)]
    dropped = v.size - finite.size
    counts, _ = np.histogram(finite, bins=edges)
    frac = counts / max(counts.sum(), 1)
    label = f"{name} ({dropped} non-finite dropped)" if dropped else name
    return go.Scatter(x=edges, y=np.append(frac, frac[-1]), mode="lines", line=dict(shape="hv", color=color),
                      name=label, legendgroup=name, showlegend=showlegend,
                      hovertemplate=f"{name}<br>%{{x:.3g}}: %{{y:.3g}}<extra></extra>")


def _hits_and_relative_times(npe: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log10 npe of hit DOMs and their time relative to each event's earliest hit (both 1D)."""
    npe, time = np.atleast_2d(np.asarray(npe, np.float64)), np.atleast_2d(np.asarray(time, np.float64))
    if npe.shape != time.shape:
        raise ValueError(f"npe and time must have the same shape, got {npe.shape} and {time.shape}")
    rows, cols = np.nonzero(npe > 0)
    t = time[rows, cols]
    # Indexing only hit entries keeps empty events (and inf times of unhit DOMs) out of the arithmetic.
    t_first = np.full(len(npe), np.inf)
    np.minimum.at(t_first, rows, t)
    return np.log10(npe[rows, cols]), t - t_first[rows]


def charge_time_histograms(sets: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 50) -> go.Figure:
    """Two panels, one step line per set: log10 npe of hit DOMs; first-hit time minus the event's earliest hit.

    sets: name -> (npe, time), each (N, P) or (P,). Histograms are normalized to the fraction of hits.
    """
    data = {name: _hits_and_relative_times(n, t) for name, (n, t) in sets.items()}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("charge of hit DOMs", "hit time after first hit"))
    for col in (0, 1):
        edges = _edges([d[col] for d in data.values()], bins)
        for i, (name, d) in enumerate(data.items()):
            fig.add_trace(_step_trace(d[col], edges, name, PALETTE[i % len(PALETTE)], col == 0), row=1, col=col + 1)
    fig.update_xaxes(title_text="log10(npe)", row=1, col=1)
    fig.update_xaxes(title_text="t - t_first [ns]", row=1, col=2)
    fig.update_yaxes(title_text="fraction of hits")
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), uirevision=UIREVISION)
    return fig


def vertical_spacing(rows: int, height: int, margin_px: int = 50, gap_px: int = PANEL_GAP_PX) -> float:
    """make_subplots vertical_spacing (share of the plot height) that leaves gap_px between stacked panels:
    room for the x-axis ticks and title of the panel above and the title of the panel below."""
    if rows < 2:
        return 0.0
    return min(gap_px / max(height - margin_px, 1), 0.9 / (rows - 1))


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return -(-n // cols), cols


FEATURE_UNITS = {"total_npe": "pe", "log10_total_npe": "log10 pe", "n_hit_doms": "DOMs", "n_hit_strings": "strings",
                 "centroid_x": "m", "centroid_y": "m", "centroid_z": "m", "time_mean": "ns", "time_std": "ns",
                 "time_span": "ns", "brightest_fraction": "fraction of charge", "linefit_zenith": "rad",
                 "linefit_azimuth": "rad", "linefit_speed": "m/ns", "linefit_angle": "rad"}


def axis_title(feature: str) -> str:
    """'time_span [ns]': a feature name with its unit (metrics.event_features names)."""
    unit = FEATURE_UNITS.get(feature)
    return f"{feature} [{unit}]" if unit else feature


FEATURE_PANEL_PX = 280  # height per row of feature_histograms


def feature_histograms(features_by_set: dict[str, dict[str, np.ndarray]], names: list[str],
                       bins: int = 40, cols: int = 3) -> go.Figure:
    """Grid of overlaid normalized histograms, one panel per feature in `names`, bins shared across sets."""
    for set_name, feats in features_by_set.items():
        missing = [n for n in names if n not in feats]
        if missing:
            raise ValueError(f"set '{set_name}' lacks feature(s) {missing}; it has {sorted(feats)}")
    if not names:
        raise ValueError("feature_histograms needs at least one feature name")
    rows, cols = _grid(len(names), cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names,
                        vertical_spacing=vertical_spacing(rows, FEATURE_PANEL_PX * rows))
    for k, feat in enumerate(names):
        r, c = divmod(k, cols)
        edges = _edges([f[feat] for f in features_by_set.values()], bins)
        for i, (set_name, feats) in enumerate(features_by_set.items()):
            fig.add_trace(_step_trace(feats[feat], edges, set_name, PALETTE[i % len(PALETTE)], k == 0),
                          row=r + 1, col=c + 1)
        fig.update_xaxes(title_text=axis_title(feat), row=r + 1, col=c + 1)
    fig.update_yaxes(title_text="fraction of events", col=1)
    fig.update_layout(height=FEATURE_PANEL_PX * rows, margin=dict(l=10, r=10, t=40, b=10), uirevision=UIREVISION)
    return fig


def label_histograms(labels: np.ndarray, bins: int = 40) -> go.Figure:
    """Six panels of the (N, 6) labels; energy binned and drawn on a log10 axis."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != 6:
        raise ValueError(f"labels must have shape (N, 6), got {labels.shape}")
    fig = make_subplots(rows=2, cols=3, subplot_titles=LABEL_NAMES, vertical_spacing=vertical_spacing(2, 560))
    for k in range(6):
        col = labels[:, k]
        log = k == 0
        if log:
            col = col[col > 0]  # log bins are undefined for non-positive energies
        trace = _step_trace(col, _edges([col], bins, log=log), "labels", PALETTE[0], False)
        fig.add_trace(trace, row=k // 3 + 1, col=k % 3 + 1)
        fig.update_xaxes(title_text=LABEL_NAMES[k], row=k // 3 + 1, col=k % 3 + 1)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="fraction of events", col=1)
    fig.update_layout(height=560, margin=dict(l=10, r=10, t=40, b=10), uirevision=UIREVISION)
    return fig


# ------------------------------------------------------------------------------------------- run metrics


def ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard-style weight `smoothing` in [0, 1))."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    s = pd.Series(np.asarray(values, dtype=np.float64))
    return s.to_numpy() if smoothing == 0 else s.ewm(alpha=1.0 - smoothing, adjust=True).mean().to_numpy()


# Axis titles with units of the metrics the trainer logs (tracking.LOSS_KEYS); others show their name.
METRIC_TITLES = {
    "train/loss": "train/loss [MSE, normalized units]", "val/loss": "val/loss [MSE, normalized units]",
    "train/nll": "train/nll [nats per event]", "val/nll": "val/nll [nats per event]",
    "train/bits_per_dim": "train/bits_per_dim [bits]", "val/bits_per_dim": "val/bits_per_dim [bits]",
    "train/lr": "learning rate", "train/grad_norm": "gradient norm", "train/events_per_s": "events/s",
}
X_TITLES = {"step": "step", "wall_time": "wall time [s]", "time": "wall time [s]"}


def metric_title(key: str) -> str:
    return METRIC_TITLES.get(key, key)


def _y_axis_type(values: np.ndarray, log_y: bool) -> str:
    """'log' only when asked and every value is positive: a log axis silently drops values <= 0, which
    left a flow's (negative) NLL curve empty."""
    return "log" if log_y and len(values) and bool((np.asarray(values, dtype=np.float64) > 0).all()) else "linear"


def metric_curves(df: pd.DataFrame, x: str = "step", y: str = "value", color: str = "run",
                  log_y: bool = False, smoothing: float = 0.0, x_title: str | None = None,
                  y_title: str | None = None) -> go.Figure:
    """One line per `color` group of y against x, optionally EMA-smoothed per run.

    With smoothing > 0 the raw values are also drawn, faint and without a legend entry, so spikes stay
    visible. Rows with a missing x or y are dropped. log_y falls back to a linear axis (with a note) when
    a value is <= 0.
    """
    missing = [c for c in (x, y, color) if c not in df.columns]
    if missing:
        raise ValueError(f"metric_curves: column(s) {missing} not in DataFrame (has {list(df.columns)})")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    fig = go.Figure()
    data = df.dropna(subset=[x, y])
    for i, (run, g) in enumerate(data.groupby(color, sort=True)):
        g = g.sort_values(x)
        c = PALETTE[i % len(PALETTE)]
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=g[x].to_numpy(), y=g[y].to_numpy(np.float64), mode="lines",
                                     line=dict(color=c, width=1), opacity=0.25, hoverinfo="skip",
                                     name=f"{run} (raw)", legendgroup=str(run), showlegend=False))
        # markers while a curve is short, so the first points of a live run are visible
        fig.add_trace(go.Scatter(x=g[x].to_numpy(), y=ema(g[y].to_numpy(), smoothing),
                                 mode="lines+markers" if len(g) < 30 else "lines",
                                 line=dict(color=c, width=2), name=str(run), legendgroup=str(run)))
    if not len(data):
        fig.add_annotation(text="no data", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    axis_type = _y_axis_type(data[y].to_numpy(), log_y)
    if log_y and axis_type == "linear" and len(data):
        fig.add_annotation(text="linear axis: some values are ≤ 0", showarrow=False, xref="paper", yref="paper",
                           x=1, y=1.06, xanchor="right", font=dict(size=11, color="gray"))
    fig.update_layout(xaxis_title=x_title or X_TITLES.get(x, x), yaxis=dict(title=y_title or y, type=axis_type),
                      hovermode="x unified", uirevision=UIREVISION, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def loss_panels(df: pd.DataFrame, x: str = "step", log_y: bool = False, smoothing: float = 0.0,
                height_per_panel: int = 300) -> go.Figure:
    """Curves of long frame (kind, metric, run, x, value) in one panel per model kind, each with its own
    y axis titled with the metric and its unit: a flow's NLL (nats, negative) and a diffusion loss (MSE)
    measure different things and are never drawn on one axis. Lines of a run keep one colour in all panels;
    log_y applies per panel where every value is positive (else that panel stays linear)."""
    missing = [c for c in ("kind", "metric", "run", x, "value") if c not in df.columns]
    if missing:
        raise ValueError(f"loss_panels: column(s) {missing} not in DataFrame (has {list(df.columns)})")
    data = df.dropna(subset=[x, "value"])
    kinds = sorted(data["kind"].fillna("unknown").astype(str).unique()) or ["(none)"]
    titles = []
    for kind in kinds:
        metrics = sorted(data.loc[data["kind"].fillna("unknown").astype(str) == kind, "metric"].unique())
        titles.append(f"{kind}: {', '.join(metrics)}" if metrics else kind)
    height = max(320, height_per_panel * len(kinds))
    fig = make_subplots(rows=len(kinds), cols=1, subplot_titles=titles,
                        vertical_spacing=vertical_spacing(len(kinds), height))
    colors = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(sorted(data["run"].astype(str).unique()))}
    for row, kind in enumerate(kinds, start=1):
        part = data[data["kind"].fillna("unknown").astype(str) == kind]
        for (run, metric), g in part.groupby([part["run"].astype(str), "metric"], sort=True):
            g = g.sort_values(x)
            fig.add_trace(go.Scatter(x=g[x].to_numpy(), y=ema(g["value"].to_numpy(), smoothing),
                                     mode="lines+markers" if len(g) < 30 else "lines", name=f"{run} · {metric}",
                                     line=dict(color=colors[run], width=2, dash="dot" if metric.startswith("val/") else None),
                                     legendgroup=run), row=row, col=1)
        metrics = sorted(part["metric"].unique())
        units = {metric_title(m).partition("[")[2].rstrip("]") for m in metrics}
        unit = units.pop() if len(units) == 1 else ""
        fig.update_yaxes(title_text=" / ".join(metrics) + (f" [{unit}]" if unit else ""),
                         type=_y_axis_type(part["value"].to_numpy(), log_y), row=row, col=1)
        fig.update_xaxes(title_text=X_TITLES.get(x, x), row=row, col=1)
    if not len(data):
        fig.add_annotation(text="no data", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(height=height, hovermode="x unified", uirevision=UIREVISION,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def loss_curve_figure(df: pd.DataFrame, x: str = "step", smoothing: float = 0.6, log_y: bool = True,
                      **kwargs) -> go.Figure:
    """Loss curves: metric_curves with loss-friendly defaults (log axis, some smoothing)."""
    return metric_curves(df, x=x, smoothing=smoothing, log_y=log_y, **kwargs)


def _as_numeric(s: pd.Series) -> pd.Series | None:
    """The column as floats if every non-null value is a number (MLflow stores params as strings)."""
    if pd.api.types.is_bool_dtype(s):
        return None
    if pd.api.types.is_numeric_dtype(s):
        return s.astype(np.float64)
    conv = pd.to_numeric(s, errors="coerce")
    return conv.astype(np.float64) if conv.notna().sum() == s.notna().sum() and s.notna().any() else None


def parallel_coordinates(df_params_metric: pd.DataFrame, color_col: str) -> go.Figure:
    """Parallel coordinates over all columns, lines coloured by `color_col` (usually a metric).

    Numeric columns (and strings that all parse as numbers) are used as they are; other columns become
    integer codes in sorted order with the category names as tick labels.
    """
    df = df_params_metric
    if color_col not in df.columns:
        raise ValueError(f"parallel_coordinates: color column '{color_col}' not in {list(df.columns)}")
    dims, encoded = [], {}
    for col in df.columns:
        num = _as_numeric(df[col])
        if num is not None:
            encoded[col] = num.to_numpy()
            dims.append(dict(label=str(col), values=encoded[col]))
        else:
            cats = sorted(df[col].astype(str).unique())  # missing values become the category "nan"/"None"
            codes = df[col].astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(np.float64)
            encoded[col] = codes
            # Pad the range so single categories and the end codes do not sit on the axis limits.
            dims.append(dict(label=str(col), values=codes, tickvals=list(range(len(cats))), ticktext=cats,
                             range=[-0.5, len(cats) - 0.5]))
    line = dict(color=encoded[color_col], colorscale="Viridis", showscale=True,
                colorbar=dict(title=dict(text=str(color_col))))
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(margin=dict(l=60, r=60, t=40, b=20), uirevision=UIREVISION)
    return fig


# ----------------------------------------------------------------------------------------- inpainting


def per_dom_error_figure(error: np.ndarray, mask: np.ndarray, geometry: Geometry,
                         x: str = "index", quantity: str = "npe") -> go.Figure:
    """Absolute error at each masked DOM against its DOM index (x="index") or depth (x="z").

    error: (P,) signed or absolute error (e.g. inpainted - true); mask: (P,) bool, the inpainted DOMs.
    """
    error, mask = np.asarray(error, dtype=np.float64), np.asarray(mask, dtype=bool)
    p = geometry.n_doms
    if error.shape != (p,) or mask.shape != (p,):
        raise ValueError(f"error and mask must have shape ({p},), got {error.shape} and {mask.shape}")
    if x not in ("index", "z"):
        raise ValueError(f"x must be 'index' or 'z', got {x!r}")
    idx = np.flatnonzero(mask)
    xs = idx if x == "index" else _r(geometry.positions[idx, 2])
    custom = np.column_stack([geometry.string[idx], geometry.dom[idx], idx]).astype(np.int32)
    fig = go.Figure(go.Scatter(
        x=xs, y=np.abs(error[idx]), mode="markers", name=f"|error| {quantity}", customdata=custom,
        hovertemplate="string %{customdata[0]}, DOM %{customdata[1]} (index %{customdata[2]})"
                      "<br>|error| %{y:.3g}<extra></extra>",
        marker=dict(size=6, color=geometry.string[idx], colorscale="Turbo", showscale=True,
                    colorbar=dict(title=dict(text="string")))))
    fig.update_layout(xaxis_title="DOM index" if x == "index" else "z [m]", yaxis_title=f"|error| {quantity}",
                      uirevision=UIREVISION, margin=dict(l=10, r=10, t=30, b=10))
    return fig


UNCERTAINTY_COLORSCALE = "Plasma"


def uncertainty_event_figure(geometry: Geometry, npe: np.ndarray, time: np.ndarray, uncertainty: np.ndarray,
                             mask: np.ndarray, quantity: str, label: np.ndarray | None = None,
                             camera: dict | None = None) -> go.Figure:
    """3D view of an inpainted event with its masked DOMs coloured by a per-DOM uncertainty.

    npe, time: (P,) the inpainted event (its hits drawn as usual, coloured by time); uncertainty: (P,)
    values at the masked DOMs (e.g. hit probability or spread over restarts), named `quantity` on the
    colourbar; mask: (P,) bool, the inpainted DOMs (each drawn as a coloured diamond).
    """
    npe, time = _check_event(geometry, npe, time)
    unc, mask = np.asarray(uncertainty, dtype=np.float32), np.asarray(mask, dtype=bool)
    if unc.shape != (geometry.n_doms,) or mask.shape != (geometry.n_doms,):
        raise ValueError(f"uncertainty and mask must have shape ({geometry.n_doms},), got {unc.shape} and {mask.shape}")
    tr = _hit_time_range([(npe, time)])
    traces = _detector_traces(geometry, True, True)
    traces.append(_hit_trace(geometry, npe, time, *tr, showscale=False, showlegend=True))
    pos = _r(geometry.positions[mask])
    custom = np.column_stack([geometry.string[mask], geometry.dom[mask], unc[mask]]).astype(np.float32)
    traces.append(go.Scatter3d(
        x=pos[:, 0], y=pos[:, 1], z=pos[:, 2], mode="markers", name=f"masked DOMs: {quantity}", customdata=custom,
        hovertemplate=f"string %{{customdata[0]:d}}, DOM %{{customdata[1]:d}}<br>{quantity} %{{customdata[2]:.3g}}"
                      "<extra></extra>",
        marker=dict(size=5, symbol="diamond", color=unc[mask], colorscale=UNCERTAINTY_COLORSCALE, showscale=True,
                    cmin=float(unc[mask].min()) if mask.any() else 0.0,
                    cmax=float(max(unc[mask].max(), unc[mask].min() + 1e-6)) if mask.any() else 1.0,
                    colorbar=dict(title=dict(text=quantity, side="right"), thickness=14, len=0.8))))
    if label is not None:
        traces += _track_traces(label, geometry, True)
    fig = go.Figure(traces)
    fig.update_layout(scene=_scene(camera), uirevision=UIREVISION, margin=dict(l=0, r=0, t=10, b=0),
                      legend=dict(x=0.0, y=1.0, bgcolor="rgba(255,255,255,0.6)"))
    return fig


# ------------------------------------------------------------------------------------------ response curves


def response_curves_figure(response: dict, names: tuple[str, str] = ("generated", "simulated")) -> go.Figure:
    """Grid of response curves (genesis.metrics.response_curves, or report["response"] of an evaluation):
    rows = event features, columns = label axes; per panel the mean of the feature per label bin for the
    generated and the reference (simulated) events, error bars = standard error of the bin mean, the spread
    (std) and the count in the hover. Panel titles carry the curve's summary (mean |difference| in units of
    the standard error). Undefined values (None / NaN) leave gaps."""
    feats, axes = list(response["features"]), list(response["labels"])
    if not feats or not axes:
        raise ValueError("the response has no features or no label axes")
    titles = [f"{f} vs {a}: {_summary_text(response['curves'][f'{f}_vs_{a}']['summary'])}" for f in feats
              for a in axes]
    fig = make_subplots(rows=len(feats), cols=len(axes), subplot_titles=titles, vertical_spacing=0.07,
                        horizontal_spacing=0.05)
    for r, feat in enumerate(feats):
        for c, axis in enumerate(axes):
            curve = response["curves"][f"{feat}_vs_{axis}"]
            x = np.asarray(response["bins"][axis]["centers"], dtype=np.float64)
            for i, (key, name) in enumerate((("gen", names[0]), ("ref", names[1]))):
                stats = {k: np.asarray(curve[key][k], dtype=np.float64) for k in ("mean", "std", "se", "count")}
                fig.add_trace(go.Scatter(
                    x=x, y=stats["mean"], mode="lines+markers", name=name, legendgroup=name,
                    showlegend=r == 0 and c == 0, line=dict(color=PALETTE[i]),
                    error_y=dict(type="data", array=stats["se"], visible=True),
                    customdata=np.column_stack([stats["std"], stats["se"], stats["count"]]),
                    hovertemplate=f"{name}<br>{axis} %{{x:.3g}}<br>mean %{{y:.3g}} +- %{{customdata[1]:.2g}}"
                                  "<br>std %{customdata[0]:.3g}<br>%{customdata[2]:.0f} events<extra></extra>"),
                    row=r + 1, col=c + 1)
            if r == len(feats) - 1:
                fig.update_xaxes(title_text=response["labels"][axis], row=r + 1, col=c + 1)
        fig.update_yaxes(title_text=axis_title(feat), row=r + 1, col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=230 * len(feats) + 60, margin=dict(l=10, r=10, t=40, b=10), uirevision=UIREVISION,
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0.0))
    return fig


def _summary_text(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.1f} SE"


def noise_model_figure(noise: dict) -> go.Figure:
    """The detector-noise model of a checkpoint (its data record's 'noise', genesis.noise): the density of the
    noise hits' times [1/us], read off the stored quantiles (equal-probability bins), with the rate in the title."""
    q = np.asarray(noise.get("time_quantiles_ns") or (), dtype=np.float64)
    if len(q) < 2:
        raise ValueError("the noise model has no time quantiles")
    width = np.maximum(np.diff(q), 1e-9)
    density = (1.0 / (len(q) - 1)) / width * 1e3  # per us
    fig = go.Figure(go.Scatter(x=np.repeat(q, 2)[1:-1], y=np.repeat(density, 2), mode="lines", line=dict(color=PALETTE[0]),
                               name="noise hits", hovertemplate="t %{x:.0f} ns<br>%{y:.3g} per us<extra></extra>"))
    fig.update_layout(title=f"Noise hits: {noise.get('rate', 0):.2g} per free DOM ({noise.get('isolated_per_event', 0):.1f} "
                            f"isolated per training event, radius {noise.get('radius_m', 0):g} m)",
                      xaxis_title="first-hit time [ns]", yaxis_title="density [1/us]", height=320,
                      margin=dict(l=10, r=10, t=50, b=10), uirevision=UIREVISION)
    return fig
