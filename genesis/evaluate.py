"""Physics evaluation of a generative model against simulation: `python -m genesis evaluate`.

A model is good when its events cannot be told from simulated events at the same labels. The reference
is either a held-out HDF5 file (same detector: same P as the checkpoint) or a fresh simulation on the
checkpoint's geometry with a seed that no training file uses. The model generates one event per reference
label; `metrics.compare_sets` then gives two classifier two-sample AUCs (event features alone, and with the
labels: does each event follow its label?), each with its standard error, per-feature distances with
bootstrap standard errors, DOM-map correlations, the response curves of charge, hits and time span to the
labels, the npe-vs-energy curves and the LineFit angular resolution (report["scalars"] is the flat dict
logged to MLflow as eval/*). report["sampling"] says how many events were drawn again below the trigger.

Entry points:
    evaluate_checkpoint(path, ...)   the CLI: reference -> generate -> report JSON (+ HTML) -> MLflow
    evaluate_model(trainer, n)       end of training: EMA model on the test split of the training file
    evaluate(loaded, ref_signal, ref_labels, ...)   the core, for any LoadedModel-like object
    simulator_floor(ref_signal, ref_labels, geometry, ...)   simulator vs itself (the best possible AUC)
    response_of(gen_signal, ref_signal, labels, geometry)    response curves alone (the Sample page)
"""

from __future__ import annotations

import html as html_lib
import json
import logging
import math
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np
import torch

from genesis import checkpoint, metrics, sampling, tracking
from genesis.data import schema
from genesis.data.simulate import SimConfig, settings_from_record, simulate_at_labels
from genesis.data.simulate import simulate as simulate_events
from genesis.errors import DataError, GenesisError
from genesis.geometry import Geometry

log = logging.getLogger("genesis.evaluate")
# Label rows of the default evaluation: the AUC's standard error is <= 0.01 at any AUC (largest at 0.5:
# 1/sqrt(6 m) for m test events per class; metrics.events_for_auc_se() = 3336 with half the rows for the test).
DEFAULT_SIMULATED_EVENTS = 3400
DEFAULT_MAX_FILE_EVENTS = 20_000  # events read from a reference file by evaluate_checkpoint (memory bound)
EVAL_SEED_TAG = 0x6E5E_E7A1  # mixed into simulation seeds: reference events never repeat a training file's seed
POSITION_TOLERANCE_M = 0.5
TAG_EVAL_ERROR = "genesis.eval_error"
Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------------ model handles
@dataclass
class ModelHandle:
    """LoadedModel-like wrapper of an in-memory model (e.g. the trainer's EMA model), so `sampling.generate`
    and `evaluate` accept it like a checkpoint. `state` holds what a checkpoint would: step, mlflow, data."""

    model: torch.nn.Module
    kind: str
    config: Any
    geometry: Geometry
    normalization: Any
    state: dict[str, Any] = field(default_factory=dict)
    path: Path | str = "<in-memory model>"

    @property
    def run_id(self) -> str | None:
        return (self.state.get("mlflow") or {}).get("run_id")


def handle_from_trainer(trainer) -> ModelHandle:
    """The trainer's EMA model as a LoadedModel-like object (state: step, mlflow run, data path)."""
    mlflow_info = {"tracking_uri": trainer.store.tracking_uri, "run_id": trainer.run_id} if trainer.store else {}
    ckpt = trainer.ckpt_dir / "last.pt" if trainer.ckpt_dir is not None else "<in-memory model>"
    return ModelHandle(model=trainer.ema.module, kind=trainer.cfg.kind, config=trainer.cfg, geometry=trainer.geometry,
                       normalization=trainer.cfg.data.normalization,
                       state={"step": trainer.step, "mlflow": mlflow_info,
                              "data": {"path": str(trainer.cfg.data.path), **trainer.ranges}},
                       path=ckpt)


# ------------------------------------------------------------------------------------- references
def eval_seed(seed: int) -> int:
    """A simulation seed derived from `seed` that no `genesis simulate --seed k` file uses (k small)."""
    return int(np.random.SeedSequence([EVAL_SEED_TAG, int(seed)]).generate_state(1)[0])


def training_sim_config(loaded) -> tuple[SimConfig, str]:
    """The simulator settings the checkpoint's training data was made with (simulate.settings_from_record),
    else the defaults. Returns (config, where it came from: 'training data' or why the defaults are used)."""
    cfg, fallback = settings_from_record(loaded.state.get("data"))
    return cfg, fallback or "settings of the training data"


def reference_events(loaded, data: str | Path | None = None, simulate: int | None = None, seed: int = 0,
                     max_events: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference events (signal (N, 2, P) physical, labels (N, 6)) for a model.

    data: a held-out HDF5 file whose P must equal the checkpoint's (DataError naming both otherwise); its
    first max_events events are used. simulate: that many events simulated on the checkpoint's geometry
    (with the training file's simulator settings when known) from eval_seed(seed), independent of the
    training data. Exactly one of data / simulate.
    """
    if (data is None) == (simulate is None):
        raise GenesisError("reference_events needs exactly one of data (an HDF5 file) or simulate (a count)")
    geo = loaded.geometry
    if data is not None:
        n, p, _ = schema.file_info(data)
        if p != geo.n_doms:
            raise DataError(f"{data}: reference data has P = {p} DOMs but checkpoint {loaded.path} was trained on "
                            f"P = {geo.n_doms} DOMs (geometry '{geo.name}'); evaluate with data from the same detector "
                            "or use --simulate N")
        ref_geo = schema.read_geometry(data)
        offset = float(np.abs(ref_geo.positions - geo.positions).max())
        if offset > POSITION_TOLERANCE_M:
            warnings.warn(f"{data}: DOM positions differ from the checkpoint's geometry by up to {offset:.1f} m; "
                          "the features are computed with the checkpoint's positions", stacklevel=2)
        stop = n if max_events is None else min(n, max_events)
        signal, labels, _ = schema.read_events(data, 0, stop)
        schema.check_finite_labels(labels, data)
        return signal, labels
    cfg, _ = training_sim_config(loaded)
    batches = list(simulate_events(simulate, geo, seed=eval_seed(seed), cfg=cfg))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def simulate_triggered_at(labels: np.ndarray, geometry: Geometry, seed: int, cfg: SimConfig = SimConfig(),
                          max_tries: int = 50) -> np.ndarray:
    """One triggered event (>= cfg.min_hits hit DOMs) per label row (n, 6) -> signal (n, 2, P).

    Rows that do not trigger are simulated again (the reference events are triggered ones, so an
    independent simulation at the same labels must be too); after max_tries the last try is kept.
    """
    rng = np.random.default_rng(eval_seed(seed) + 1)
    out = simulate_at_labels(labels, geometry, rng, cfg)
    todo = np.flatnonzero((out[:, 0] > 0).sum(1) < cfg.min_hits)
    for _ in range(max_tries):
        if not len(todo):
            break
        redo = simulate_at_labels(labels[todo], geometry, rng, cfg)
        out[todo] = redo
        todo = todo[(redo[:, 0] > 0).sum(1) < cfg.min_hits]
    return out


# ------------------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """A report plus the events behind it (for figures)."""

    report: dict[str, Any]
    gen_signal: np.ndarray
    ref_signal: np.ndarray
    labels: np.ndarray
    geometry: Geometry

    def figures(self) -> dict[str, Any]:
        return report_figures(self.report, self.gen_signal, self.ref_signal, self.labels, self.geometry)


def compare_events(gen_signal: np.ndarray, ref_signal: np.ndarray, labels: np.ndarray, geometry: Geometry,
                   seed: int = 0) -> dict[str, Any]:
    """metrics.compare_sets on physical signals gen (N, 2, P) and ref (N, 2, P) at the same labels (N, 6)."""
    return metrics.compare_sets(gen_signal[:, 0], gen_signal[:, 1], ref_signal[:, 0], ref_signal[:, 1],
                                geometry.positions, geometry.string, labels, seed=seed)


def response_of(gen_signal: np.ndarray, ref_signal: np.ndarray, labels: np.ndarray, geometry: Geometry,
                gen_labels: np.ndarray | None = None, n_bins: int = metrics.RESPONSE_BINS) -> dict[str, Any]:
    """Response curves (metrics.response_curves, JSON-ready) of physical signals gen (Ng, 2, P) at gen_labels
    (Ng, 6; default labels) against ref (Nr, 2, P) at labels (Nr, 6); draw with viz.response_curves_figure."""
    gen_labels = labels if gen_labels is None else gen_labels
    gf = metrics.event_features(gen_signal[:, 0], gen_signal[:, 1], geometry.positions, geometry.string)
    rf = metrics.event_features(ref_signal[:, 0], ref_signal[:, 1], geometry.positions, geometry.string)
    return metrics._json(metrics.response_curves(gf, gen_labels, rf, labels, n_bins))


def _generate_with_stats(loaded, labels: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """sampling.generate plus its redraw statistics {events, redrawn, below_trigger, redrawn_fraction,
    below_trigger_fraction}."""
    stats: dict[str, Any] = {}
    gen = sampling.generate(loaded, labels, stats=stats, **kwargs)
    n = max(int(stats.get("events") or len(labels)), 1)
    return gen, {**stats, "redrawn_fraction": stats.get("redrawn", 0) / n,
                 "below_trigger_fraction": stats.get("below_trigger", 0) / n}


def run_evaluation(loaded, ref_signal: np.ndarray, ref_labels: np.ndarray, sampler: str | None = None,
                   steps: int | None = None, seed: int = 0, progress: Progress | None = None,
                   guidance: float | None = None, reference: dict[str, Any] | None = None,
                   batch_size: int = 256) -> Evaluation:
    """Generate one event per reference label, compare, and return the report with the events.
    sampler/steps: None = the checkpoint's own (sampling.recorded_sampler)."""
    ref_signal, ref_labels = np.asarray(ref_signal, np.float32), np.asarray(ref_labels, np.float32)
    if ref_signal.ndim != 3 or ref_signal.shape[1] != 2 or ref_labels.shape != (len(ref_signal), 6):
        raise DataError(f"reference must be signal (N, 2, P) and labels (N, 6); got {ref_signal.shape} "
                        f"and {ref_labels.shape}")
    if ref_signal.shape[2] != loaded.geometry.n_doms:
        raise DataError(f"reference events have P = {ref_signal.shape[2]} DOMs but the model has "
                        f"P = {loaded.geometry.n_doms}")
    if guidance is None:
        guidance = float(loaded.config.diffusion.guidance_scale) if loaded.kind == "diffusion" else 1.0
    sampler, steps = sampling.recorded_sampler(loaded, sampler, steps)
    t0 = time.perf_counter()
    gen, stats = _generate_with_stats(loaded, ref_labels, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                                      batch_size=batch_size, progress=progress)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    sampling_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = compare_events(gen, ref_signal, ref_labels, loaded.geometry, seed)
    report["settings"] = {
        "checkpoint": str(loaded.path), "kind": loaded.kind, "run_id": loaded.run_id,
        "step": loaded.state.get("step"), "sampler": sampler if loaded.kind == "diffusion" else "flow",
        "steps": steps if loaded.kind == "diffusion" else None, "guidance": guidance, "seed": seed,
        "n_events": len(ref_labels), "reference": reference or {"source": "given arrays"},
        "device": str(next(loaded.model.parameters()).device),
    }
    report["timing"] = {"sampling_s": sampling_s, "sampling_events_per_s": len(gen) / max(sampling_s, 1e-9),
                        "metrics_s": time.perf_counter() - t1}
    report["sampling"] = stats
    for key in ("redrawn_fraction", "below_trigger_fraction"):
        if key in stats:
            report["scalars"][f"eval/{key}"] = float(stats[key])
    return Evaluation(metrics._json(report), gen, ref_signal, ref_labels, loaded.geometry)


def evaluate(loaded, ref_signal: np.ndarray, ref_labels: np.ndarray, sampler: str | None = None,
             steps: int | None = None,
             seed: int = 0, progress: Progress | None = None, guidance: float | None = None,
             reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Report dict (metrics.compare_sets + settings + timing) of a model against reference events.

    loaded: LoadedModel or ModelHandle. ref_signal (N, 2, P) physical, ref_labels (N, 6). The model
    generates at ref_labels with `sampler`/`steps` (ignored for flows), seeded. With fewer than
    metrics.MIN_EVENTS_FOR_AUC events the classifier part carries a note instead of an AUC.
    """
    return run_evaluation(loaded, ref_signal, ref_labels, sampler, steps, seed, progress, guidance, reference).report


def simulator_floor(ref_signal: np.ndarray, ref_labels: np.ndarray, geometry: Geometry, seed: int = 0,
                    cfg: SimConfig = SimConfig()) -> Evaluation:
    """The simulator against itself: a second, independent triggered simulation at the reference labels,
    compared like a model. Its AUC (~0.5) and distances are the best any model can reach with N events."""
    t0 = time.perf_counter()
    other = simulate_triggered_at(np.asarray(ref_labels), geometry, seed, cfg)
    sim_s = time.perf_counter() - t0
    report = compare_events(other, np.asarray(ref_signal), np.asarray(ref_labels), geometry, seed)
    report["settings"] = {"kind": "simulator", "n_events": len(ref_labels), "seed": seed}
    report["timing"] = {"sampling_s": sim_s, "sampling_events_per_s": len(other) / max(sim_s, 1e-9)}
    return Evaluation(metrics._json(report), other, np.asarray(ref_signal), np.asarray(ref_labels), geometry)


# ----------------------------------------------------------------------------------------- figures
def report_figures(report: dict[str, Any], gen_signal: np.ndarray, ref_signal: np.ndarray, labels: np.ndarray,
                   geometry: Geometry, names: tuple[str, str] = ("generated", "reference")) -> dict[str, Any]:
    """Plotly figures of an evaluation: title -> go.Figure (features, charge/time, npe vs energy, LineFit)."""
    import plotly.graph_objects as go

    from genesis import viz

    gf = metrics.event_features(gen_signal[:, 0], gen_signal[:, 1], geometry.positions, geometry.string, labels)
    rf = metrics.event_features(ref_signal[:, 0], ref_signal[:, 1], geometry.positions, geometry.string, labels)
    figs: dict[str, Any] = {}
    figs["High-level features"] = viz.feature_histograms({names[0]: gf, names[1]: rf}, metrics.FEATURES)
    figs["Charge and time of hit DOMs"] = viz.charge_time_histograms(
        {names[0]: (gen_signal[:, 0], gen_signal[:, 1]), names[1]: (ref_signal[:, 0], ref_signal[:, 1])})
    curve = report["npe_vs_energy"]
    fig = go.Figure()
    for i, key in enumerate(("gen", "ref")):
        fig.add_trace(go.Scatter(x=curve["bin_centers"], y=curve[key]["mean_log10_npe"], mode="lines+markers",
                                 name=names[i], line=dict(color=viz.PALETTE[i]),
                                 customdata=curve[key]["count"],
                                 hovertemplate="E %{x:.3g} GeV<br>mean log10(1+npe) %{y:.3f}<br>"
                                               "%{customdata} events<extra></extra>"))
    fig.update_layout(xaxis=dict(type="log", title="energy [GeV]"), yaxis_title="mean log10(1 + total npe)",
                      margin=dict(l=10, r=10, t=30, b=10))
    figs["Total charge vs energy"] = fig
    if report.get("response"):
        figs["Response to the labels"] = viz.response_curves_figure(report["response"], names)
    angles = {n: {"LineFit angle to true direction [deg]": np.degrees(f["linefit_angle"][f["linefit_valid"]])}
              for n, f in zip(names, (gf, rf))}
    if all(len(next(iter(a.values()))) for a in angles.values()):
        figs["LineFit angular error"] = viz.feature_histograms(angles, ["LineFit angle to true direction [deg]"],
                                                               bins=45, cols=1)
    return figs


def summary_line(report: dict[str, Any]) -> str:
    """One line for a terminal: both AUCs +- their standard errors, the response summary and the redraw fraction,
    e.g. 'AUC 0.788 +- 0.007 (event features), 0.812 +- 0.007 (with labels); response 2.1 SE; redrawn 0.15'."""
    def auc(key: str) -> str:
        c = report.get(key) or {}
        return "n/a" if c.get("auc") is None else f"{c['auc']:.3f} +- {_fmt(c.get('auc_se'))}"

    redrawn = (report.get("sampling") or {}).get("redrawn_fraction")
    return (f"AUC {auc('classifier')} (event features), {auc('classifier_conditional')} (with labels); "
            f"response {_fmt((report.get('response') or {}).get('summary'))} SE"
            + ("" if redrawn is None else f"; redrawn {redrawn:.3f}"))


# -------------------------------------------------------------------------------------------- HTML
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "n/a"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    esc = html_lib.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 24px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}td:first-child{text-align:left}
.note{background:#fff6d5;padding:6px 10px;border-left:4px solid #e0b000}"""


def _classifier_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, name in (("classifier", "event features"), ("classifier_conditional", "event features + labels")):
        c = report.get(key) or {}
        rows.append([name, c.get("auc"), c.get("auc_se"), c.get("n_test")])
    return rows


def _response_html(response: dict[str, Any] | None) -> str:
    """The response summaries as a table (rows = features, columns = label axes) with the overall summary."""
    if not response:
        return ""
    esc = html_lib.escape
    rows = [[f, *[response["curves"][f"{f}_vs_{a}"]["summary"] for a in response["labels"]]]
            for f in response["features"]]
    return (f"<h2>Response summaries</h2><p>Rows: event features; columns: label axes. "
            f"{esc(response.get('definition', ''))}. This evaluation: <b>{esc(_fmt(response.get('summary')))}</b>.</p>"
            + _table(["feature", *response["labels"]], rows))


def write_html(report: dict[str, Any], path: str | Path, figures: dict[str, Any] | list | None = None) -> Path:
    """A standalone HTML report: settings, scalars, per-feature W1/JSD, and the figures. Plotly.js is
    embedded once (in the first figure), so the file works offline."""
    esc = html_lib.escape
    items = list(figures.items()) if isinstance(figures, dict) else [(None, f) for f in (figures or [])]
    settings = report.get("settings", {})
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>GENESIS evaluation</title>"
             f"<style>{_CSS}</style></head><body><h1>GENESIS evaluation</h1>"]
    parts.append(_table(["setting", "value"], [[k, json.dumps(v) if isinstance(v, dict) else v]
                                               for k, v in settings.items()]))
    clf = report.get("classifier", {})
    if clf.get("note"):
        parts.append(f"<p class='note'>{esc(clf['note'])}</p>")
    if (report.get("mlflow") or {}).get("message"):
        parts.append(f"<p class='note'>MLflow: {esc(report['mlflow']['message'])}</p>")
    parts.append("<h2>Classifier two-sample tests</h2><p>AUC near 0.5: a classifier cannot tell generated events "
                 "from the reference. The label-aware classifier also reads each event's labels (log10 energy, "
                 "direction, vertex), so it sees events that are right on the whole but at the wrong labels. "
                 "Standard errors (DeLong) are over the test set; both classifiers use one split of the label "
                 "rows.</p>")
    parts.append(_table(["classifier", "AUC", "+- SE", "test events"], _classifier_rows(report)))
    parts.append(_response_html(report.get("response")))
    sampled = report.get("sampling") or {}
    if "redrawn_fraction" in sampled:
        parts.append(f"<p>Events drawn again below the trigger: {_fmt(sampled.get('redrawn'))} of "
                     f"{_fmt(sampled.get('events'))} (fraction {_fmt(sampled['redrawn_fraction'])}); still below "
                     f"after the last try: {_fmt(sampled.get('below_trigger'))}.</p>")
    parts.append("<h2>Summary</h2><p>W1 is in units of the reference spread.</p>")
    parts.append(_table(["metric", "value"], [[k, v] for k, v in report.get("scalars", {}).items()]))
    feats = report.get("features", {})
    parts.append("<h2>Per-feature distances</h2><p>SE: bootstrap over events.</p>")
    parts.append(_table(["feature", "W1 / ref std", "+- SE", "W1", "JSD"],
                        [[k, d.get("w1_norm"), d.get("w1_norm_se"), d.get("w1"), d.get("jsd")]
                         for k, d in feats.items()]))
    for i, (title, fig) in enumerate(items):
        if title:
            parts.append(f"<h2>{esc(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Strict JSON (NaN/inf become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metrics._json(report), f, indent=2, allow_nan=False)
    return path


# ------------------------------------------------------------------------------------------ MLflow
def _reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None when the store at uri can be tried, else why not (without creating anything)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if db and db != ":memory:" and not Path(db).is_file():
            return f"database {db} does not exist"
        return None
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        except OSError as exc:
            return f"cannot connect to {parsed.hostname}:{port} ({exc})"
    return None


def _candidate_stores(loaded, store: tracking.Store | None) -> list[tracking.Store]:
    if store is not None:
        return [store]
    out: list[tracking.Store] = []
    uri = (loaded.state.get("mlflow") or {}).get("tracking_uri")
    if uri:
        out.append(tracking.Store(uri))
    try:
        default = tracking.Store.default()
        if all(s.tracking_uri != default.tracking_uri for s in out):
            out.append(default)
    except GenesisError as exc:
        log.warning("default MLflow store unusable: %s", exc)
    return out


def log_to_run(report: dict[str, Any], loaded, store: tracking.Store | None = None,
               artifacts: list[Path] | None = None) -> bool:
    """Log report["scalars"] to the checkpoint's MLflow run (step = checkpoint step) and the files in
    `artifacts` under evaluation/. Tries the given store, else the checkpoint's tracking URI, then
    MLFLOW_TRACKING_URI / the project store. Never raises: returns False and puts the reason in
    report["mlflow"]["message"] (also logged as a warning) when nothing could be logged."""
    run_id, step = loaded.run_id, int(loaded.state.get("step") or 0)
    status: dict[str, Any] = {"logged": False, "run_id": run_id, "tracking_uri": None, "message": ""}
    report["mlflow"] = status
    if not run_id:
        status["message"] = "checkpoint has no MLflow run id; results not logged"
        log.warning(status["message"])
        return False
    reasons = []
    for candidate in _candidate_stores(loaded, store):
        why = _reachable(candidate.tracking_uri)
        if why:
            reasons.append(f"{candidate.tracking_uri}: {why}")
            continue
        try:
            candidate.run(run_id)
        except Exception as exc:  # MLflow raises many types for 'not found' / 'unreachable'
            reasons.append(f"{candidate.tracking_uri}: run {run_id} not available ({str(exc).splitlines()[0][:200]})")
            continue
        try:
            candidate.log_metrics(run_id, report.get("scalars", {}), step)
            for path in artifacts or []:
                candidate.log_artifact(run_id, path, "evaluation")
        except Exception as exc:
            reasons.append(f"{candidate.tracking_uri}: logging failed ({str(exc).splitlines()[0][:200]})")
            continue
        status.update(logged=True, tracking_uri=candidate.tracking_uri,
                      message=f"logged {len(report.get('scalars', {}))} eval metrics to run {run_id} at step {step}")
        return True
    status["message"] = "results not logged to MLflow: " + ("; ".join(reasons) or "no store configured")
    log.warning(status["message"])
    return False


# -------------------------------------------------------------------------------------- entry points
def evaluate_checkpoint(path: str | Path, data: str | Path | None = None, simulate: int | None = None,
                        sampler: str | None = None, steps: int | None = None, seed: int = 0, device: str = "auto",
                        out: str | Path | None = None, html: str | Path | None = None, log_to_mlflow: bool = True,
                        allow_small: bool = False, progress: Progress | None = None,
                        max_events: int | None = DEFAULT_MAX_FILE_EVENTS) -> dict[str, Any]:
    """Evaluate a checkpoint against a held-out file (`data`) or `simulate` fresh events (default
    DEFAULT_SIMULATED_EVENTS: an AUC standard error <= 0.01).

    Writes the report as JSON to `out` and as HTML to `html` (when given), and logs report["scalars"] to the
    checkpoint's MLflow run when `log_to_mlflow`. Fewer than metrics.MIN_EVENTS_FOR_AUC reference events
    raise GenesisError unless allow_small (then the report has no AUC, only a note). From a file, the first
    max_events events are used (None = all); the report's settings.reference says how many of how many.
    """
    minimum = metrics.MIN_EVENTS_FOR_AUC
    if data is None and simulate is None:
        simulate = DEFAULT_SIMULATED_EVENTS
    if simulate is not None and simulate < minimum and not allow_small:
        raise GenesisError(f"--simulate {simulate} is too few: the classifier test needs at least {minimum} events")
    if simulate is not None and simulate > DEFAULT_MAX_FILE_EVENTS:
        raise GenesisError(f"--simulate {simulate} is too many: at most {DEFAULT_MAX_FILE_EVENTS} reference events "
                           "are held in memory (as many as are read from a reference file)")
    loaded = checkpoint.load_model(path, device=checkpoint.resolve_device(device))
    if data is not None:
        n, p, _ = schema.file_info(data)
        if p == loaded.geometry.n_doms and n < minimum and not allow_small:
            raise GenesisError(f"{data}: {n} events is too few; the classifier test needs at least {minimum}")
    signal, labels = reference_events(loaded, data=data, simulate=simulate, seed=seed, max_events=max_events)
    if data is not None:
        if len(labels) < n:
            log.warning("%s: using the first %d of its %d events as reference", data, len(labels), n)
        reference = {"source": "file", "path": str(data), "n": len(labels), "n_in_file": n,
                     "is_training_file": _is_training_file(loaded, data)}
        if reference["is_training_file"]:
            log.warning("%s is the checkpoint's training file: most of its events were seen in training; "
                        "use a held-out file or --simulate for an unbiased evaluation", data)
    else:
        reference = {"source": "simulation", "n": len(labels), "seed": eval_seed(seed),
                     "settings": training_sim_config(loaded)[1]}
    ev = run_evaluation(loaded, signal, labels, sampler=sampler, steps=steps, seed=seed, progress=progress,
                        reference=reference)
    report = ev.report
    if log_to_mlflow:
        log_to_run(report, loaded)
    else:
        report["mlflow"] = {"logged": False, "run_id": loaded.run_id, "message": "not logged (disabled)"}
    written = []
    if out is not None:
        written.append(write_json(report, out))
    if html is not None:
        written.append(write_html(report, html, ev.figures()))
    if log_to_mlflow and report["mlflow"]["logged"] and written:
        try:
            store = tracking.Store(report["mlflow"]["tracking_uri"])
            for p in written:
                store.log_artifact(loaded.run_id, p, "evaluation")
        except Exception as exc:  # the metrics are logged; a failed copy of the report files is only reported
            log.warning("could not attach the report files to run %s: %s", loaded.run_id, exc)
    return report


def _is_training_file(loaded, data: str | Path) -> bool:
    """True when `data` has the fingerprint recorded in the checkpoint for its training file."""
    from genesis.data.dataset import fingerprint

    recorded = (loaded.state.get("data") or {}).get("fingerprint")
    return bool(recorded) and fingerprint(data) == recorded


def evaluate_model(trainer, n_events: int) -> dict[str, Any] | None:
    """End-of-training evaluation of the trainer's EMA model on the first n_events of the test split of the
    training file. Logs the scalars to the run (step = trainer.step) and writes eval_report.json/.html next
    to the checkpoints folder. Never fails the run: errors are logged and set as tag genesis.eval_error."""
    try:
        return _evaluate_model(trainer, n_events)
    except Exception as exc:  # training has finished; a failed evaluation must not turn it into FAILED
        log.warning("end-of-training evaluation failed: %s: %s", type(exc).__name__, exc)
        if trainer.store is not None and trainer.run_id:
            try:
                trainer.store.set_tags(trainer.run_id, {TAG_EVAL_ERROR: f"{type(exc).__name__}: {exc}"[:4000]})
            except Exception as tag_exc:
                log.warning("could not tag the run with the evaluation error: %s", tag_exc)
        return None


def _evaluate_model(trainer, n_events: int) -> dict[str, Any] | None:
    from genesis.data.dataset import split_indices

    cfg = trainer.cfg
    n, _, _ = schema.file_info(cfg.data.path)
    n = min(n, cfg.data.max_events) if cfg.data.max_events else n
    test = split_indices(n, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)["test"][:n_events]
    if len(test) == 0:
        log.warning("no test events (data.test_fraction = %s); skipping the evaluation", cfg.data.test_fraction)
        return None
    signal, labels, _ = schema.read_events(cfg.data.path, indices=test)
    handle = handle_from_trainer(trainer)
    t0 = time.time()
    ev = run_evaluation(handle, signal, labels, sampler=cfg.diffusion.sampler, steps=cfg.diffusion.sampling_steps,
                        reference={"source": "test split", "path": str(cfg.data.path), "n": len(test)})
    report = ev.report
    out_dir = trainer.ckpt_dir.parent if trainer.ckpt_dir is not None else None
    files = []
    if out_dir is not None:
        files = [write_json(report, out_dir / "eval_report.json"), write_html(report, out_dir / "eval_report.html",
                                                                             ev.figures())]
    if trainer.store is not None and trainer.run_id:
        log_to_run(report, handle, trainer.store, [] if trainer.store.is_local else files)
        if files:
            write_json(report, files[0])  # now with the MLflow status
    log.info("evaluation on %d test events in %.1f s: AUC %s, label-aware AUC %s", len(test), time.time() - t0,
             _fmt(report["classifier"].get("auc")), _fmt(report["classifier_conditional"].get("auc")))
    return report


__all__ = ["ModelHandle", "Evaluation", "reference_events", "evaluate", "run_evaluation", "simulator_floor",
           "write_html", "write_json", "log_to_run", "evaluate_checkpoint", "evaluate_model", "report_figures",
           "simulate_triggered_at", "eval_seed", "handle_from_trainer", "compare_events", "training_sim_config",
           "response_of", "summary_line", "DEFAULT_SIMULATED_EVENTS"]
