"""Checkpoint listing, upload checks, tables and a data-flow diagram for the dashboard's Checkpoints page.

`list_checkpoints(store)` finds the .pt files in the runs' local artifact folders (checkpoints/*.pt), the
uploads kept in <home>/mlruns/uploads and the demo models shipped with the code (genesis.demo), with step and validation loss read from the runs' metrics (no
checkpoint is opened). The other helpers turn a `genesis.inspect` report into tables and a figure. Nothing
here imports streamlit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from genesis import config, inspect, paths, runs, tracking
from genesis.data import normalization as gn
from genesis.errors import CheckpointError, GenesisError

CHECKPOINT_SUFFIX = ".pt"
MAX_RUNS = 2000
COLUMNS = ["label", "path", "run_id", "run_name", "file", "step", "val_loss", "modified", "mtime", "kind",
           "status", "experiment_id", "demo"]
TRANSFORM_KEYS = {"time_transform": gn.TIME_TRANSFORMS, "npe_transform": gn.NPE_TRANSFORMS,
                  "energy_transform": gn.ENERGY_TRANSFORMS}


# === listing ======================================================================================
def uploads_dir() -> Path:
    """<home>/mlruns/uploads, where checked uploads are kept."""
    path = paths.mlruns_dir() / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _local_dir(artifact_uri: str) -> Path | None:
    if artifact_uri.startswith("file://"):
        return Path(artifact_uri[len("file://"):])
    if artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def _checkpoint_folder(run) -> Path:
    """Where the trainer writes a run's checkpoints (see genesis.train.checkpoint_dir)."""
    local = _local_dir(run.info.artifact_uri or "")
    if local is not None:
        return local / "checkpoints"
    return paths.mlruns_dir() / "runs" / run.info.run_id / "checkpoints"


def _all_runs(store: tracking.Store) -> list:
    """Active runs of every active experiment, newest first (at most MAX_RUNS)."""
    try:
        ids = [e.experiment_id for e in tracking.retry(lambda: store.client.search_experiments())]
        found, token = [], None
        while ids and len(found) < MAX_RUNS:
            page = tracking.retry(lambda: store.client.search_runs(
                ids, max_results=min(1000, MAX_RUNS - len(found)), page_token=token,
                order_by=["attributes.start_time DESC"]))
            found.extend(page)
            token = page.token
            if not token:
                break
        return found
    except GenesisError:
        raise
    except Exception as exc:  # MLflow raises many types for a locked or unreachable store
        raise tracking.StoreError(f"MLflow store {store.tracking_uri} is not reachable: {exc}") from exc


def _last(hist: pd.DataFrame) -> tuple[float, float]:
    """(step, value) of the latest entry of a metric history (NaN, NaN when empty)."""
    if hist.empty:
        return math.nan, math.nan
    row = hist.sort_values(["step", "timestamp"]).iloc[-1]
    return float(row["step"]), float(row["value"])


def _step_and_loss(file: str, val: pd.DataFrame, train: pd.DataFrame) -> tuple[float, float]:
    """best.pt: the step of the minimum validation loss; last.pt: the latest logged step and its validation loss."""
    if file == "best.pt":
        if val.empty:
            return math.nan, math.nan
        row = val.sort_values(["value", "step"]).iloc[0]
        return float(row["step"]), float(row["value"])
    if file == "last.pt":
        (v_step, v_loss), (t_step, _) = _last(val), _last(train)
        steps = [s for s in (v_step, t_step) if not math.isnan(s)]
        return (max(steps) if steps else math.nan), v_loss
    return math.nan, math.nan


def _label(name: str, file: str, step: float, loss: float) -> str:
    parts = [name, file]
    if not math.isnan(step):
        parts.append(f"step {int(step)}")
    if not math.isnan(loss):
        parts.append(f"val {loss:.4g}")
    return " · ".join(parts)


def list_checkpoints(store: tracking.Store, demos: bool = True) -> pd.DataFrame:
    """One row per checkpoint file (runs' checkpoints/*.pt and mlruns/uploads/*.pt), newest first, then
    (with `demos`) the demo models shipped with the code: on a fresh clone they are the only ones.

    Columns: label, path, run_id, run_name, file, step, val_loss, modified (UTC timestamp), mtime (seconds),
    kind, status, experiment_id, demo (bool). Step and val loss come from the run's val/loss and train/loss
    histories.
    """
    found: list[tuple[Any, Path]] = []
    for run in _all_runs(store):
        folder = _checkpoint_folder(run)
        if folder.is_dir():
            found += [(run, p) for p in sorted(folder.glob(f"*{CHECKPOINT_SUFFIX}")) if p.is_file()]
    ids = list(dict.fromkeys(run.info.run_id for run, _ in found))
    try:
        val = runs.val_loss_histories(store, ids)  # val/loss (diffusion, old flows) or val/nll (flows)
        train = pd.concat([runs.metric_histories(store, ids, key) for key in ("train/loss", "train/nll")],
                          ignore_index=True)
    except GenesisError:
        raise
    except Exception as exc:
        raise tracking.StoreError(f"MLflow store {store.tracking_uri} is not reachable: {exc}") from exc
    by_id = {run.info.run_id: run for run, _ in found}
    names = runs.run_labels(pd.DataFrame({"name": [by_id[i].info.run_name for i in ids], "run_id": ids})) \
        if ids else []
    name_of = dict(zip(ids, names))
    rows = []
    for run, path in found:
        rid = run.info.run_id
        step, loss = _step_and_loss(path.name, val[val["run_id"] == rid], train[train["run_id"] == rid])
        rows.append({"label": _label(name_of[rid], path.name, step, loss), "path": str(path), "run_id": rid,
                     "run_name": run.info.run_name, "file": path.name, "step": step, "val_loss": loss,
                     "mtime": path.stat().st_mtime, "kind": run.data.tags.get(tracking.TAG_KIND),
                     "status": run.info.status, "experiment_id": run.info.experiment_id, "demo": False})
    for path in sorted(uploads_dir().glob(f"*{CHECKPOINT_SUFFIX}")):
        if path.is_file() and not path.name.startswith("."):
            rows.append({"label": f"upload · {path.name}", "path": str(path), "run_id": None, "run_name": None,
                         "file": path.name, "step": math.nan, "val_loss": math.nan, "mtime": path.stat().st_mtime,
                         "kind": None, "status": None, "experiment_id": None, "demo": False})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    parts = [part for part in (_ordered(frame), demo_rows() if demos else None) if part is not None and len(part)]
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] if parts else frame
    frame["modified"] = pd.to_datetime(frame["mtime"], unit="s")
    frame["demo"] = frame["demo"].astype(bool)
    return frame


def demo_label(name: str, preset: str) -> str:
    return f"demo · {name} ({preset}, shipped)"


def demo_rows() -> pd.DataFrame:
    """list_checkpoints rows of the shipped demo models (genesis.demo), diffusion first; none opened."""
    from genesis import demo

    rows = [{"label": demo_label(spec.name, spec.preset), "path": str(path), "run_id": None, "run_name": None,
             "file": spec.name, "step": math.nan, "val_loss": math.nan, "mtime": path.stat().st_mtime,
             "kind": spec.kind, "status": None, "experiment_id": None, "demo": True}
            for spec in demo.SPECS for path in [demo.DEMO_DIR / spec.name] if path.is_file()]
    return pd.DataFrame(rows, columns=COLUMNS)


FILE_RANK = {"best.pt": 0, "last.pt": 1}  # within a run: the best checkpoint first, the one people want


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Newest run first (by its newest file; uploads each on their own), within a run best.pt, last.pt,
    then other files newest first. last.pt is written after best.pt, so mtime alone put it first."""
    group = frame["run_id"].where(frame["run_id"].notna(), frame["path"])
    keys = pd.DataFrame({"group_mtime": frame.groupby(group)["mtime"].transform("max"),
                         "rank": frame["file"].map(FILE_RANK).fillna(len(FILE_RANK)), "mtime": frame["mtime"]})
    order = keys.sort_values(["group_mtime", "rank", "mtime"], ascending=[False, True, False], kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def checkpoint_row(table: pd.DataFrame, path: str) -> dict[str, Any]:
    """The list_checkpoints row of `path` as a dict, missing values (uploads have no run) as None."""
    row = table[table["path"] == str(path)].iloc[0].to_dict()
    return {k: None if not isinstance(v, (list, tuple)) and pd.isna(v) else v for k, v in row.items()}


def training_batch(report: dict[str, Any], default: int = 64) -> int:
    """The batch size the checkpoint's run trained with (config train.batch_size), else `default`."""
    value = (report.get("config") or {}).get("train.batch_size")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1 << 16 \
        else default


# === uploads ======================================================================================
def check_uploaded_checkpoint(path: str | Path, batch_size: int = 64) -> dict[str, Any]:
    """The inspector's report for an uploaded file; CheckpointError when it is no model checkpoint."""
    report = inspect.inspect_checkpoint(path, batch_size)
    if report["source"]["kind"] == "legacy" and not report["model"].get("n_tensors"):
        raise CheckpointError(f"{path}: holds no tensors ({report['legacy']['reason']}): not a model checkpoint")
    return report


def keep_upload(data: bytes, target: Path, batch_size: int = 64) -> dict[str, Any]:
    """Check uploaded bytes as a checkpoint in a staging folder and move them to `target` only if they pass.

    Raises CheckpointError (mentioning the upload's name, not the staging path); nothing is kept then.
    """
    target = Path(target)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / target.name
        staged.write_bytes(data)
        try:
            report = check_uploaded_checkpoint(staged, batch_size)
        except CheckpointError as exc:
            raise CheckpointError(str(exc).replace(str(staged), target.name)) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, target)
    report["source"]["path"] = str(target)
    return report


# === normalization ================================================================================
def _values(norm: dict[str, Any], key: str, n: int) -> list[float]:
    v = norm.get(key)
    v = list(v) if isinstance(v, (list, tuple)) else []
    return [float(x) if isinstance(x, (int, float)) else math.nan for x in v[:n]] + [math.nan] * (n - len(v[:n]))


PHYSICAL_UNITS = {"npe": "pe", "time": "ns", "x": "m", "y": "m", "z": "m", "energy": "GeV", "zenith": "rad",
                  "azimuth": "rad"}
_TRANSFORMED = {"ln": "ln(1 + {x}/{u})", "log1p": "ln(1 + {x}/{u})", "log10": "log10(1 + {x}/{u})",
                "asinh": "asinh(({x} - c)/w)"}


def transformed_unit(channel: str, transform: str) -> str:
    """Unit of T(x), in which a channel's offset and scale are given: 'ns', 'ln(1 + npe/pe)', 'log10(E/GeV)'."""
    unit = PHYSICAL_UNITS.get(channel, "")
    if transform in ("none", "", None) or transform not in _TRANSFORMED:
        return unit if transform in ("none", "", None) else f"{transform}({channel})"
    if channel == "energy":  # energy's log10 has no +1 (see normalization.ENERGY_TRANSFORMS)
        return f"log10(E/{unit})"
    return _TRANSFORMED[transform].format(x="t" if channel == "time" else channel, u=unit)


def normalization_tables(report: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(signal/geometry table of the 5 affine channels, label table of the 6 label channels):
    channel, transform T, unit (of T(x), which offset and scale share), offset, scale, with
    x_n = (T(x) - offset) / scale dimensionless."""
    norm = report.get("normalization") or {}
    t = {k: norm.get(k, "not recorded") for k in TRANSFORM_KEYS}
    affine_t = [t["npe_transform"], t["time_transform"], "none", "none", "none"]
    label_t = [t["energy_transform"]] + ["none"] * 5
    affine = pd.DataFrame({"channel": inspect.AFFINE_CHANNELS, "transform": affine_t,
                           "unit": [transformed_unit(c, tr) for c, tr in zip(inspect.AFFINE_CHANNELS, affine_t)],
                           "offset": _values(norm, "affine_offsets", 5), "scale": _values(norm, "affine_scales", 5)})
    if t["time_transform"] == "asinh" and all(k in norm for k in inspect.ASINH_KEYS):
        affine.loc[1, "unit"] = f"asinh((t - {norm['time_center_ns']:g} ns) / {norm['time_width_ns']:g} ns)"
    labels = pd.DataFrame({"channel": inspect.LABEL_CHANNELS, "transform": label_t,
                           "unit": [transformed_unit(c, tr) for c, tr in zip(inspect.LABEL_CHANNELS, label_t)],
                           "offset": _values(norm, "label_offsets", 6), "scale": _values(norm, "label_scales", 6)})
    return affine, labels


def suggested_normalization_diff(report: dict[str, Any], data_path: str | Path, max_events: int = 2000) -> list[str]:
    """Where the checkpoint's normalization differs from what `suggest` proposes for a data file (with the
    checkpoint's transforms as base); also flags a DOM count that differs from the checkpoint's."""
    from genesis.data import schema

    n, n_doms, _ = schema.file_info(data_path)
    signal, labels, _ = schema.read_events(data_path, 0, min(n, max_events))
    positions = schema.read_geometry(data_path).positions
    norm = report.get("normalization") or {}
    base = gn.Normalization(**{k: norm[k] for k, allowed in TRANSFORM_KEYS.items() if norm.get(k) in allowed},
                            **{k: norm[k] for k in ("representation", "time_reference", "npe_reference", *inspect.ASINH_KEYS)
                               if k in norm})
    out = []
    model_doms = (report.get("model") or {}).get("n_doms")
    if model_doms is not None and model_doms != n_doms:
        out.append(f"n_doms: checkpoint {model_doms} vs data {n_doms} (the model cannot read this file)")
    return out + inspect.normalization_mismatch(report, gn.suggest(signal, labels, positions, base))


FIT_LIMIT = 10.0  # the bulk of a channel beyond +-this many normalized units: the model never saw such inputs
MIN_SPREAD = 0.01  # the bulk narrower than this: the normalization squeezes the channel to a constant
BULK = (0.1, 99.9)  # percentiles that make "the bulk" (a few outliers must not raise a warning)


def _normalized_channels(norm: gn.Normalization, signal, labels, positions) -> dict[str, "np.ndarray"]:
    """Each channel of a data sample as the model sees it: hit npe and time of hit DOMs, positions, labels."""
    import numpy as np

    hit = signal[:, 0] > 0
    off, sc = np.asarray(norm.affine_offsets, np.float64), np.asarray(norm.affine_scales, np.float64)
    npe = gn.forward_npe(signal[:, 0].astype(np.float64), norm.npe_transform) - norm.npe_shift(signal, labels, positions)
    values = {"npe": (npe[hit] - off[0]) / sc[0],
              "time": (norm.forward_time((signal[:, 1] - norm.time_shift(signal, labels, positions))[hit].astype(np.float64))
                       - off[1]) / sc[1]}
    values.update({a: (positions[:, i] - off[2 + i]) / sc[2 + i] for i, a in enumerate("xyz")})
    lab = np.asarray(norm.normalize_labels(np.asarray(labels, np.float64)))
    values.update({name: lab[:, i] for i, name in enumerate(inspect.LABEL_CHANNELS)})
    return values


def normalization_fit(report: dict[str, Any], data_path: str | Path, max_events: int = 2000) -> list[str]:
    """Problems of a data file under the checkpoint's normalization: a DOM count the model cannot read, or a
    channel whose bulk (BULK percentiles) lies beyond +-FIT_LIMIT or spans less than MIN_SPREAD in normalized
    units. Empty when the data fits. Unlike `suggested_normalization_diff` this does not ask for the values
    `genesis stats` would pick: a preset's hand-chosen offsets and scales fit its data without being those."""
    import numpy as np

    from genesis.data import schema

    n, n_doms, _ = schema.file_info(data_path)
    model_doms = (report.get("model") or {}).get("n_doms")
    if model_doms is not None and model_doms != n_doms:
        return [f"n_doms: checkpoint {model_doms} vs data {n_doms} (the model cannot read this file)"]
    have = {k: v for k, v in (report.get("normalization") or {}).items()
            if k in {f.name for f in dataclasses.fields(gn.Normalization)}}
    if not have:
        return ["the checkpoint carries no normalization metadata"]
    signal, labels, _ = schema.read_events(data_path, 0, min(n, max_events))
    channels = _normalized_channels(gn.Normalization.from_dict(have), signal, labels,
                                    schema.read_geometry(data_path).positions.astype(np.float64))
    out = []
    for name, v in channels.items():
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        lo, hi = np.percentile(v, BULK)
        if max(abs(lo), abs(hi)) > FIT_LIMIT:
            out.append(f"{name}: the data spans {lo:.3g} .. {hi:.3g} after normalization, beyond +-{FIT_LIMIT:g}")
        elif hi - lo < MIN_SPREAD and np.ptp(v) > 0:
            out.append(f"{name}: the data is squeezed into {lo:.3g} .. {hi:.3g} after normalization")
    return out


# === tables =======================================================================================
def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return str(v)


def kv_table(d: dict[str, Any]) -> pd.DataFrame:
    """A nested dict flattened to rows key, value (values as text, so mixed types display)."""
    flat = config.flatten(d or {})
    return pd.DataFrame({"key": list(flat), "value": [_text(v) for v in flat.values()]})


def memory_table(memory: dict[str, Any]) -> pd.DataFrame:
    """Rows item, MB of a report's memory section (None -> NaN: unknown)."""
    items = [(k.removesuffix("_mb"), v) for k, v in memory.items() if k.endswith("_mb")]
    return pd.DataFrame({"item": [k for k, _ in items],
                         "MB": [math.nan if v is None else float(v) for _, v in items]})


def compare_table(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """`inspect.compare_reports` as a frame section, key, A, B (text), differs; normalization rows first."""
    rows = inspect.compare_reports(a, b)
    return pd.DataFrame({"section": [r["section"] for r in rows], "key": [r["key"] for r in rows],
                         "A": [_text(r["a"]) for r in rows], "B": [_text(r["b"]) for r in rows],
                         "differs": [bool(r["differs"]) for r in rows]})


def normalization_differences(table: pd.DataFrame) -> list[str]:
    """'key: A vs B' for each normalization row of a compare_table that differs."""
    rows = table[(table["section"] == "normalization") & table["differs"]]
    return [f"{r.key}: {r.A or 'not recorded'} vs {r.B or 'not recorded'}" for r in rows.itertuples()]


def highlight_differences(table: pd.DataFrame, color: str = "rgba(255, 165, 0, 0.3)"):
    """pandas Styler that shades the rows of a compare_table whose values differ."""
    return table.style.apply(lambda r: [f"background-color: {color}" if r["differs"] else ""] * len(r), axis=1)


# === data flow diagram ============================================================================
_INPUT_NAMES = ("geometry", "labels")
_COLORS = {"input": "#dbeafe", "model": "#f3f4f6", "output": "#dcfce7"}


def _is_input(stage: str) -> bool:
    return stage in _INPUT_NAMES or stage.startswith(("input ", "timestep "))


def data_flow_figure(report: dict[str, Any]) -> go.Figure:
    """The report's data_flow as a diagram: inputs side by side on top, then one box per stage (name and
    tensor shape) joined by arrows down to the output; hovering a box shows its note."""
    stages = report.get("data_flow") or []
    fig = go.Figure()
    layout = dict(xaxis=dict(visible=False, range=[-0.02, 1.02], fixedrange=True),
                  yaxis=dict(visible=False, fixedrange=True), plot_bgcolor="rgba(0,0,0,0)",
                  margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    if not stages:
        fig.add_annotation(text=report.get("data_flow_method") or "no data flow recorded", x=0.5, y=0,
                           showarrow=False)
        return fig.update_layout(**layout, height=120, yaxis_range=[-1, 1])
    n_in = next((i for i, s in enumerate(stages) if not _is_input(s["stage"])), len(stages))
    rows = ([stages[:n_in]] if n_in else []) + [[s] for s in stages[n_in:]]
    half, centers = 0.34, []
    for r, row in enumerate(rows):
        width = 1.0 / len(row)
        centers.append([])
        for c, s in enumerate(row):
            kind = "input" if r == 0 and n_in else "output" if r == len(rows) - 1 else "model"
            x0, x1 = c * width + 0.01, (c + 1) * width - 0.01
            fig.add_shape(type="rect", x0=x0, x1=x1, y0=-r - half, y1=-r + half, fillcolor=_COLORS[kind],
                          line=dict(color="#6b7280", width=1), layer="below")
            fig.add_annotation(x=(x0 + x1) / 2, y=-r, text=f"<b>{s['stage']}</b><br>{s['shape']}",
                               showarrow=False, font=dict(size=12))
            centers[-1].append(((x0 + x1) / 2, -r, s))
    for r in range(len(rows) - 1):  # arrows from every box of a row to the first box of the next
        tx, ty, _ = centers[r + 1][0]
        for x, y, _ in centers[r]:
            fig.add_annotation(x=tx, y=ty + half, ax=x, ay=y - half, xref="x", yref="y", axref="x", ayref="y",
                               text="", showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.2,
                               arrowcolor="#6b7280")
    pts = [p for row in centers for p in row]
    fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers",
                             marker=dict(size=30, opacity=0), hoverinfo="text",
                             hovertext=[f"{p[2]['stage']}: {p[2]['shape']}<br>{p[2].get('note', '')}" for p in pts]))
    return fig.update_layout(**layout, height=int(70 * len(rows) + 40), yaxis_range=[-len(rows) + 0.5, 0.5])


def by_type_figure(report: dict[str, Any]) -> go.Figure:
    """Horizontal bar chart of parameters per module type (or top-level name for legacy files)."""
    by_type = report["parameters"].get("by_type") or []
    fig = go.Figure(go.Bar(x=[r["params"] for r in by_type], y=[r["type"] for r in by_type], orientation="h",
                           text=[f"{r['share_pct']:.1f}%" for r in by_type], textposition="auto",
                           hovertemplate="%{y}: %{x:,} parameters<extra></extra>"))
    return fig.update_layout(yaxis=dict(autorange="reversed"), xaxis_title="parameters",
                             height=max(200, 28 * len(by_type) + 80), margin=dict(l=10, r=10, t=10, b=40))
