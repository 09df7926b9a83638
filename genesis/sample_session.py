"""Package side of the dashboard's Sample and Inpaint pages (never imports streamlit).

Sampling: labels from widgets, a dataset or a CSV upload -> events streamed into an HDF5 file under
<home>/data/generated/ (training-data schema, producer attributes), the first `KEEP_EVENTS` kept in
memory for display, simulator events at the same labels as a reference, feature comparison.
Inpainting: checks of checkpoint/method/dataset compatibility, masks from the page's widgets, a run on
one event of a dataset, a metrics table and the result as HDF5 bytes for download.

Events are physical (N, 2, P) arrays [npe, first-hit time ns], no-hit DOMs 0; labels (N, 6).
"""

from __future__ import annotations

import functools
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from genesis import evaluate, metrics, paths, ranges, sampling
from genesis.data import schema
from genesis.inpaint import timing as inpaint_timing
from genesis.errors import CheckpointError, ConfigError, DataError
from genesis.geometry import Geometry

CONFIRM_ABOVE = 5000  # requests above this many events need an explicit confirmation on the page
KEEP_EVENTS = 1000  # events kept in memory for the browser and comparisons; the file holds them all
SUMMARY_FEATURES = ["total_npe", "n_hit_doms", "time_span"]


# ------------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file (a run's checkpoints/*.pt, an upload or a shipped demo model), with its model kind
    (from the run's tags, the demo's spec, or for uploads read from the file)."""

    path: Path
    run_id: str | None
    title: str  # run name · file · step · val loss (genesis.checkpoints_index)
    kind: str  # "diffusion" or "flow"
    mtime: float
    demo: bool = False

    @property
    def label(self) -> str:
        return f"{self.title} · {self.kind}"


def list_checkpoints(store) -> list[CheckpointInfo]:
    """The checkpoints the Checkpoints page lists (runs' artifact folders, uploads, then the shipped demo
    models) that can be sampled: uploads that are no GENESIS checkpoint (legacy files, which only the
    inspector reads) are left out. Order as there: newest run first, its best.pt before its last.pt."""
    from genesis import checkpoints_index

    return _infos(checkpoints_index.list_checkpoints(store))


def _infos(frame: pd.DataFrame) -> list[CheckpointInfo]:
    out = []
    for r in frame.itertuples():
        kind = r.kind if isinstance(r.kind, str) and r.kind else _file_kind(str(r.path), float(r.mtime))
        if kind is not None:
            out.append(CheckpointInfo(Path(r.path), r.run_id if isinstance(r.run_id, str) else None, str(r.label),
                                      kind, float(r.mtime), bool(r.demo)))
    return out


def demo_checkpoints() -> list[CheckpointInfo]:
    """The demo models shipped with the code (genesis.demo), diffusion first."""
    from genesis import checkpoints_index

    return _infos(checkpoints_index.demo_rows())


def checkpoint_choices(checkpoints: list[CheckpointInfo], kinds: Iterable[str] | None = None) -> list[CheckpointInfo]:
    """The checkpoints of the given kinds (all when None), order kept: a page lists only what it can use."""
    kinds = None if kinds is None else set(kinds)
    return [c for c in checkpoints if kinds is None or c.kind in kinds]


def default_checkpoint(checkpoints: list[CheckpointInfo], kind: str | None = None) -> CheckpointInfo | None:
    """The checkpoint a picker starts on: the shipped demo model of `kind` (any demo without a kind, or when
    there is none of that kind), else the first listed; None for an empty list. The demo, not the newest
    upload: a newcomer must find the model that is known to work."""
    demos = [c for c in checkpoints if c.demo]
    for candidate in [c for c in demos if c.kind == kind] + demos + list(checkpoints):
        return candidate
    return None


@functools.lru_cache(maxsize=256)
def _file_kind(path: str, mtime: float) -> str | None:
    """A checkpoint file's model kind, None when it cannot be sampled (legacy or unreadable); cached per
    path and mtime, so an unchanged upload is read once per process."""
    from genesis import checkpoint

    try:
        kind = checkpoint.load_state(path).get("kind")
    except CheckpointError:
        return None
    return kind if kind in ("diffusion", "flow") else None


def describe(loaded) -> str:
    """'last.pt of run 1a2b3c4d' (or the path when the checkpoint has no run)."""
    return f"{loaded.path.name} of run {loaded.run_id[:8]}" if loaded.run_id else str(loaded.path)


def check_kind(loaded, kind: str) -> None:
    """CheckpointError unless the loaded checkpoint is of `kind` ("diffusion" or "flow")."""
    if loaded.kind != kind:
        other = "Flow" if loaded.kind == "flow" else "Diffusion"
        raise CheckpointError(f"{describe(loaded)} is a {loaded.kind} checkpoint, but {kind} was chosen; "
                              f"pick a {kind} checkpoint or switch the model to {other}")


# ----------------------------------------------------------------------------------------- labels
def widget_labels(n: int, energy: float, zenith_deg: float, azimuth_deg: float, x: float, y: float,
                  z: float) -> np.ndarray:
    """(n, 6) labels, one label repeated n times; angles given in degrees, stored in radians."""
    check_count(n)
    return sampling.labels_from_args(None, n, energy, math.radians(zenith_deg), math.radians(azimuth_deg), x, y, z)


def dataset_labels(path: str | Path, n: int, start: int = 0) -> np.ndarray:
    """(n, 6) labels of events start .. start + n - 1 of a dataset."""
    check_count(n)
    n_events, _, _ = schema.file_info(path)
    if not 0 <= start < n_events:
        raise DataError(f"{Path(path).name} has {n_events} events; the first event must be in 0..{n_events - 1}")
    if start + n > n_events:
        raise DataError(f"{Path(path).name} has {n_events} events: {n} events from index {start} would run past "
                        f"the end; ask for at most {n_events - start}")
    import h5py

    with h5py.File(path, "r") as f:
        labels = np.asarray(f["label"][start:start + n], dtype=np.float32)
    sampling.check_labels(labels)
    return labels


def csv_labels(data: bytes, name: str, per_row: int) -> np.ndarray:
    """Labels from an uploaded CSV (header energy,zenith,azimuth,x,y,z; radians): each row per_row times."""
    check_count(per_row)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        path.write_bytes(data)
        try:
            rows = sampling.read_labels_csv(path)
        except DataError as exc:
            raise DataError(str(exc).replace(str(path), name)) from None
    labels = sampling.repeat_labels(rows, per_row)
    try:
        sampling.check_labels(labels)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    return labels


def check_count(n: int, confirmed: bool = True) -> None:
    """DataError for zero/negative requests, and for more than CONFIRM_ABOVE events unless confirmed."""
    if n <= 0:
        raise DataError(f"{n} events requested: ask for at least 1 event")
    if n > CONFIRM_ABOVE and not confirmed:
        raise DataError(f"{n:,} events is a large request (more than {CONFIRM_ABOVE:,}): tick the confirmation "
                        "box to generate them; they are streamed to disk")


# --------------------------------------------------------------------------------------- sampling
@dataclass
class SampleResult:
    """Where the events went and the first `kept` of them for display."""

    path: Path
    n_events: int
    signal: np.ndarray  # (kept, 2, P) generated
    labels: np.ndarray  # (kept, 6)
    seconds: float
    producer: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def progress_text(done: int, total: int, elapsed: float) -> str:
    """'12/100 events · 3 s elapsed · ETA 25 s' (ETA from the mean rate so far)."""
    eta = f"ETA {elapsed / done * (total - done):,.0f} s" if done > 0 else "ETA …"
    return f"{done:,}/{total:,} events · {elapsed:,.0f} s elapsed · {eta}"


# Time estimates: seconds per event and sampler step (flows: per event), measured on this machine now.
WARMUP_STEPS = 2  # sampler steps of one timed warm-up run (no redraws, no file: the sampler loop alone)
WARMUP_REPEATS = 3  # timed runs; with the last call's rate they make the range (median: one load spike does not)
WARMUP_BATCH = 64  # at most this many events in a warm-up run (the page samples in batches of 64)
LOAD_MARGIN = inpaint_timing.LOAD_MARGIN  # one margin for every time estimate of the pages


@dataclass(frozen=True)
class TimeEstimate:
    """Expected generation time as a range [low_s, high_s] seconds and what it rests on."""

    low_s: float
    high_s: float
    basis: str

    def text(self, device: str) -> str:
        return (f"Expected time: **{_seconds(self.low_s)} to {_seconds(self.high_s)}** on {device} ({self.basis}; "
                "the reference simulation and comparison add a little).")


def _seconds(s: float) -> str:
    return f"{s:,.0f} s" if s >= 10 else f"{s:.2g} s"


def _work(kind: str, steps: int) -> int:
    return 1 if kind == "flow" else max(int(steps), 1)


def warmup_rates(loaded, n_events: int, sampler: str = "ddim", guidance: float = 1.0,
                 steps: int = WARMUP_STEPS, repeats: int = WARMUP_REPEATS, bf16: bool = False) -> list[float]:
    """Seconds per event and step (flows: per event) of `repeats` timed sampler runs of `steps` steps on
    min(n_events, WARMUP_BATCH) events at mid-range labels, on the checkpoint's device, as it is loaded now
    (bf16: under bfloat16 autocast, as sampling.generate_batches runs it)."""
    import torch

    b = max(1, min(int(n_events), WARMUP_BATCH))
    record = loaded.state.get("data") or {}
    lo, hi = np.asarray(record.get("label_min", [1e3, 0, 0, 0, 0, 0])), np.asarray(record.get("label_max", [1e6, 3, 6, 0, 0, 0]))
    label = np.concatenate([[math.sqrt(max(lo[0], 1e-3) * max(hi[0], 1e-3))], (lo[1:] + hi[1:]) / 2])
    device = next(loaded.model.parameters()).device
    norm = loaded.normalization
    lab_n = norm.normalize_labels(torch.from_numpy(np.tile(label, (b, 1)).astype(np.float32)).to(device))
    geo_n = norm.normalize_geometry(torch.from_numpy(loaded.geometry.positions)).to(device)
    steps = _work(loaded.kind, steps)
    rates = []
    for r in range(repeats + 1):  # the first run is not timed: first calls allocate and compile
        t0 = time.perf_counter()
        with sampling.network_precision(device, bf16):
            sampling.generate_normalized(loaded.model, loaded.kind, loaded.config, lab_n, geo_n, sampler, steps,
                                         guidance, generator=torch.Generator(device=device).manual_seed(r),
                                         data_record=record)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append((time.perf_counter() - t0) / (b * steps))
    return rates[1:]


def call_rate(result: "SampleResult", kind: str, steps: int) -> float:
    """Seconds per event and step (flows: per event) of a finished sampling call."""
    return result.seconds / max(result.n_events * _work(kind, steps), 1)


def estimate_time(kind: str, n_events: int, steps: int, warmup: list[float], last: float | None = None,
                  redraws: bool = False, margin: tuple[float, float] = LOAD_MARGIN) -> TimeEstimate:
    """The range of n_events x steps (flows: n_events) from the measured rates (warm-up runs, and the last
    call's when given): the fastest x margin[0] to the median x margin[1], for a changing machine load (the
    median, not the slowest: one run caught in a load spike must not stretch the range tenfold).
    redraws: the sampler draws untriggered events again (not in a warm-up; the last call's rate has them)."""
    rates = [r for r in [*warmup, last] if r is not None and r > 0]
    if not rates:
        raise ValueError("estimate_time needs at least one positive measured rate")
    work = n_events * _work(kind, steps)
    what = "one pass" if kind == "flow" else f"{WARMUP_STEPS} steps"
    basis = f"from {len(warmup)} timed warm-up runs of {what} just now"
    if last is not None:
        basis += " and the last call's speed"
    if redraws:
        basis += "; events that do not trigger are drawn again, which adds time far from the training labels"
    return TimeEstimate(min(rates) * work * margin[0], float(np.median(rates)) * work * margin[1], basis)


def output_path(kind: str, folder: Path | None = None) -> Path:
    """A new, unused file name under <home>/data/generated/ (created)."""
    folder = folder or paths.data_dir() / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = folder / f"sample-{kind}-{stamp}{f'-{i}' if i else ''}.h5"
        if not path.exists():
            return path
    raise DataError(f"{folder}: cannot find a free file name; clean up old samples")


# several GPUs share one request through torchrun (sampling.sample_to_file shards the label rows over ranks)
SHARDED_COMMAND = ("torchrun --standalone --nproc-per-node={gpus} -m genesis sample --checkpoint {checkpoint} "
                   "--labels labels.csv --events N --out data/generated.h5")


def run_sampling(loaded, labels: np.ndarray, sampler: str = "ddim", steps: int = 50, guidance: float = 1.0,
                 seed: int = 0, out: Path | None = None, batch_size: int = 64, keep: int = KEEP_EVENTS,
                 labels_source: str = "", progress: Callable[[int, int], None] | None = None,
                 bf16: bool = False, compiled: bool = False) -> SampleResult:
    """Generate events for labels (N, 6), streaming batches into an HDF5 file in the training schema, on the
    checkpoint's device (several GPUs: `torchrun ... -m genesis sample`, see SHARDED_COMMAND); bf16: the
    network in bfloat16, compiled: through torch.compile (sampling.generate_batches).

    The file appears only when all events are written (EventWriter); a stopped run leaves nothing.
    """
    check_count(len(labels))
    sampling.check_labels(labels)
    if loaded.kind == "diffusion" and not 1 <= steps <= loaded.config.diffusion.timesteps:
        raise ConfigError(f"steps must be in 1..{loaded.config.diffusion.timesteps} (the model's timesteps), "
                          f"got {steps}")
    out = Path(out) if out else output_path(loaded.kind)
    producer = {**sampling.producer_info(loaded, sampler, steps, guidance, seed, bf16=bf16, compiled=compiled),
                "labels": labels_source, "interface": "dashboard"}
    warnings = ranges.label_warnings(labels, ranges.record_of(loaded))
    t0, kept, start = time.time(), [], 0
    with schema.EventWriter(out, loaded.geometry, producer) as writer:
        for batch in sampling.generate_batches(loaded, labels, sampler, steps, guidance, seed, batch_size, progress,
                                               bf16=bf16, compiled=compiled):
            writer.append(batch, labels[start:start + len(batch)])
            if start < keep:
                kept.append(batch[:keep - start])
            start += len(batch)
    signal = np.concatenate(kept)
    return SampleResult(out, len(labels), signal, labels[:len(signal)], time.time() - t0, producer, warnings)


def reference_events(labels: np.ndarray, loaded, seed: int = 0) -> np.ndarray:
    """Simulator events (N, 2, P) at the given labels (N, 6) for a loaded checkpoint: the same triggered
    simulation, with the training file's simulator settings, that `genesis evaluate` compares against."""
    return evaluate.simulate_triggered_at(np.asarray(labels), loaded.geometry, seed,
                                          evaluate.training_sim_config(loaded)[0])


def reference_fallback(loaded) -> str | None:
    """Why the reference simulation uses the simulator's default settings (the checkpoint does not say what
    made its training data), or None when it uses the training data's own settings."""
    where = evaluate.training_sim_config(loaded)[1]
    return where if where.startswith("simulator defaults") else None


@dataclass
class Comparison:
    """Features per set ({"generated": {...}, "simulated": {...}}), distances, the classifier AUCs without and
    with the labels (each with its standard error) or a note, and the response curves to the labels
    (genesis.evaluate.response_of; draw with viz.response_curves_figure)."""

    features: dict[str, dict[str, np.ndarray]]
    distances: pd.DataFrame
    auc: float | None
    note: str
    auc_se: float | None = None
    auc_conditional: float | None = None
    auc_conditional_se: float | None = None
    response: dict | None = None


def compare(generated: np.ndarray, reference: np.ndarray, labels: np.ndarray, geometry: Geometry,
            seed: int = 0) -> Comparison:
    """metrics.event_features of both sets, per-feature W1/JSD, and (>= 200 events each) classifier AUC."""
    feats = {name: metrics.event_features(x[:, 0], x[:, 1], geometry.positions, geometry.string, labels)
             for name, x in (("generated", generated), ("simulated", reference))}
    dist = pd.DataFrame(metrics.feature_distances(feats["generated"], feats["simulated"])).T
    dist.index.name = "feature"
    response = evaluate.response_of(generated, reference, labels, geometry)
    n = min(len(generated), len(reference))
    if n < metrics.MIN_EVENTS_FOR_AUC:
        return Comparison(feats, dist, None, f"classifier AUC needs at least {metrics.MIN_EVENTS_FOR_AUC} events; "
                                             f"{n} were generated", response=response)
    fm_gen, fm_sim = (metrics.feature_matrix(feats[k]) for k in ("generated", "simulated"))
    clf = metrics.classifier_auc(fm_gen, fm_sim, seed=seed)
    cond = metrics.conditional_classifier_auc(fm_gen, labels, fm_sim, labels, seed=seed)
    return Comparison(feats, dist, float(clf["auc"]), f"classifier AUCs on {clf['n_test']} test events "
                      "(0.5 = indistinguishable; with labels: also sees whether events follow their labels)",
                      clf.get("auc_se"), float(cond["auc"]), cond.get("auc_se"), response)


# ---------------------------------------------------------------------------------- quality check
QUALITY_FACTOR = 3.0  # generated and simulated more than this many times apart: the page shows a banner
BAD_FACTOR = 10.0  # ... more than this: an error banner (the model is not usable at these labels)
SUMMARY_ROWS = {"n_hit_doms": ("hit DOMs", 1.0), "total_npe": ("total charge [pe]", 1.0),
                "time_span": ("time span [ns]", 10.0)}  # name -> (row label, floor below which values count as equal)
CHECKED = ("n_hit_doms", "total_npe")  # the banner's quantities; time spans of few hits vary too much


def event_summaries(signal: np.ndarray) -> dict[str, np.ndarray]:
    """Per event (N,) of physical events (N, 2, P): hit DOMs, total charge pe, time span (latest - earliest
    first-hit time over hit DOMs, ns; 0 with fewer than two hits)."""
    npe, time_ns = np.asarray(signal[:, 0], np.float64), np.asarray(signal[:, 1], np.float64)
    hit = npe > 0
    latest = np.where(hit, time_ns, -np.inf).max(1)
    earliest = np.where(hit, time_ns, np.inf).min(1)
    span = np.where(hit.sum(1) >= 2, latest - earliest, 0.0)
    return {"n_hit_doms": hit.sum(1).astype(np.float64), "total_npe": np.where(hit, npe, 0.0).sum(1),
            "time_span": span}


def fold(a: float, b: float, floor: float = 1.0) -> float:
    """How many times larger the larger of a and b is (>= 1); values below `floor` count as `floor`, so
    0 hits against 60 is 60x, not infinite."""
    lo, hi = sorted((max(float(a), floor), max(float(b), floor)))
    return hi / lo


@dataclass(frozen=True)
class QualityCheck:
    """Generated vs simulated at the same labels. table: rows hit DOMs / total charge / time span, columns
    generated, simulated, ratio (generated / simulated); level: "ok", "warning" or "error"; message: the
    banner text (empty when ok); far: the quantities more than QUALITY_FACTOR apart."""

    table: pd.DataFrame
    level: str
    message: str
    far: tuple[str, ...]


def _num(x: float) -> str:
    """1,234 below a million, 5.7e+08 above (banner text)."""
    return f"{x:,.0f}" if abs(x) < 1e6 else f"{x:.2g}"


def _ratio(g: float, s: float, floor: float) -> float:
    return max(g, floor) / max(s, floor)


def quality_check(generated: np.ndarray, simulated: np.ndarray, event: int | None = None,
                  factor: float = QUALITY_FACTOR, bad: float = BAD_FACTOR) -> QualityCheck:
    """Compare hit count, total charge and time span of generated and simulated events (N, 2, P) at the same
    labels: medians over all events, or one event when `event` is given. A quantity of CHECKED more than
    `factor` times apart gives a warning, more than `bad` times an error."""
    gen, sim = event_summaries(generated), event_summaries(simulated)
    pick = (lambda v: float(v[event])) if event is not None else (lambda v: float(np.median(v)))
    rows = {label: (pick(gen[k]), pick(sim[k]), _ratio(pick(gen[k]), pick(sim[k]), floor))
            for k, (label, floor) in SUMMARY_ROWS.items()}
    table = pd.DataFrame(rows, index=["generated", "simulated", "generated / simulated"]).T
    table.index.name = "median per event" if event is None else f"event {event}"
    folds = {k: fold(pick(gen[k]), pick(sim[k]), SUMMARY_ROWS[k][1]) for k in CHECKED}
    far = tuple(k for k in CHECKED if folds[k] > factor)
    if not far:
        return QualityCheck(table, "ok", "", far)
    level = "error" if max(folds[k] for k in far) > bad else "warning"
    what = "; ".join(f"{SUMMARY_ROWS[k][0]} {_num(pick(gen[k]))} generated vs {_num(pick(sim[k]))} simulated "
                     f"({_num(folds[k])}x {'higher' if pick(gen[k]) > pick(sim[k]) else 'lower'})" for k in far)
    scope = "the median event" if event is None else f"event {event}"
    message = (f"Generated events are far from simulated ones at the same labels ({scope}: {what}). "
               "The model is probably untrained, trained too briefly, or trained on other data: do not use these "
               "events; see the Feature comparison tab.")
    return QualityCheck(table, level, message, far)


# ------------------------------------------------------------------------------------- inpainting
def check_inpaint_inputs(loaded, geometry: Geometry, method: str) -> None:
    """Clear errors for an unknown method, a checkpoint of the wrong kind, or a different detector (P)."""
    from genesis.inpaint import METHOD_KIND, METHODS

    if method not in METHODS:
        raise ConfigError(f"unknown inpainting method {method!r}; choose one of {', '.join(METHODS)}")
    need = METHOD_KIND.get(method)
    if need and loaded.kind != need:
        alt = next(m for m, k in METHOD_KIND.items() if k == loaded.kind)
        raise CheckpointError(f"method '{method}' needs a {need} checkpoint, but {describe(loaded)} is a "
                              f"{loaded.kind} checkpoint; pick a {need} checkpoint or use method '{alt}'")
    if loaded.geometry.n_doms != geometry.n_doms:
        raise DataError(f"the checkpoint was trained on P = {loaded.geometry.n_doms} DOMs but the dataset has "
                        f"P = {geometry.n_doms}; pick a dataset on the checkpoint's detector or another checkpoint")


DEMO_DATA = "data/demo.h5"  # the presets' data.path and the Home page's demo dataset
MAP_DEFAULTS = {"cpu": (100, 2)}  # device -> flow-MAP (steps, restarts): a string in seconds on 2 cores
MAP_DEFAULTS_ACCELERATOR = (200, 3)  # the library's defaults, for GPUs


def map_defaults(device: str) -> tuple[int, int]:
    """Default flow-MAP (steps, restarts) for a device: CPU-sized on the CPU, the library's elsewhere."""
    return MAP_DEFAULTS.get(device, MAP_DEFAULTS_ACCELERATOR)


def preferred_data_file(files: list[Path], trained_on: str | None = None) -> Path | None:
    """The file a data picker should start on: the checkpoint's training file, else the demo dataset (the
    presets' data.path), else the first of `files` (newest). Never just the newest upload: a 5-event test
    file uploaded last must not become everybody's default."""
    resolved = {Path(f).resolve(): Path(f) for f in files}
    for candidate in (trained_on, DEMO_DATA):
        if candidate:
            hit = resolved.get(paths.resolve_data_path(candidate))
            if hit is not None:
                return hit
    return files[0] if files else None


def trained_on(loaded) -> str | None:
    """The data path recorded in a loaded checkpoint (None when it has none)."""
    value = ((loaded.state or {}).get("data") or {}).get("path") if hasattr(loaded, "state") else None
    return str(value) if value else None


def inpaint_verdict(result) -> tuple[bool, str]:
    """(beat both baselines, a sentence) for an InpaintResult with baselines; see inpaint.inpaint_verdict."""
    from genesis.inpaint import inpaint_verdict as verdict

    return verdict(result.metrics, result.method)


def strings_from_selection(points: Iterable[dict] | None) -> list[int]:
    """String ids from Plotly selection points of viz.top_view_figure (customdata = string id)."""
    out = set()
    for p in points or []:
        value = p.get("customdata")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            out.add(int(value))
    return sorted(out)


def build_mask(geometry: Geometry, strings: Iterable[int] = (), random_fraction: float = 0.0,
               deepcore: bool = False, sphere: tuple[float, float, float, float] | None = None,
               dead: tuple[str, bytes] | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """(P,) mask (True = inpainted) as the union of the chosen parts, and a text spec of it.

    dead: (file name, bytes) of an uploaded dead-DOM list (see inpaint.dead_doms_mask).
    """
    from genesis import inpaint

    parts, specs = [], []
    strings = sorted(int(s) for s in strings)
    if strings:
        parts.append(inpaint.strings_mask(geometry, strings))
        specs.append("strings:" + ",".join(map(str, strings)))
    if random_fraction:
        parts.append(inpaint.random_mask(geometry, random_fraction, seed))
        specs.append(f"random:{random_fraction:g}")
    if deepcore:
        parts.append(inpaint.deepcore_mask(geometry))
        specs.append("deepcore")
    if sphere is not None:
        parts.append(inpaint.sphere_mask(geometry, sphere[:3], sphere[3]))
        specs.append("sphere:" + ",".join(f"{v:g}" for v in sphere))
    if dead is not None:
        name, data = dead
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dead.csv"
            path.write_bytes(data)
            try:
                parts.append(inpaint.dead_doms_mask(geometry, path))
            except DataError as exc:
                raise DataError(str(exc).replace(str(path), name)) from None
        specs.append(f"dead:{name}")
    if not parts:
        raise DataError("the mask selects no DOM: choose strings (list or top view), a random fraction, "
                        "DeepCore, a sphere or a dead-DOM file")
    mask = inpaint.combine(*parts)
    if mask.all():
        raise DataError(f"the mask selects every DOM ({mask.size}); at least one DOM must stay observed")
    return mask, "+".join(specs)


def run_inpaint(loaded, data_path: str | Path, index: int, geometry: Geometry, mask: np.ndarray, method: str,
                steps: int = 200, restarts: int = 2, seed: int = 0,
                progress: Callable[[int, int], None] | None = None):
    """Inpaint event `index` of a dataset; returns inpaint.InpaintResult (with zero/neighbour baselines)."""
    from genesis.inpaint import inpaint_events

    check_inpaint_inputs(loaded, geometry, method)
    n_events, _, _ = schema.file_info(data_path)
    if not 0 <= index < n_events:
        raise DataError(f"event index {index} is outside 0..{n_events - 1}")
    signal, labels, _ = schema.read_events(data_path, indices=np.array([index]))
    return inpaint_events(loaded, signal, labels, mask, method, geometry, steps=steps, restarts=restarts, seed=seed,
                          compare_baselines=True, progress=progress)


def metrics_table(result) -> pd.DataFrame:
    """One row per method (the chosen one first): the inpainting metrics and the MSE ratio against it."""
    frame = pd.DataFrame(result.metrics).T
    frame.index.name = "method"
    frame["mse ratio vs " + result.method] = [1.0 if m == result.method else result.ratios.get(m, math.nan)
                                              for m in frame.index]
    return frame


def per_dom_error(result, channel: int = 0, event: int = 0) -> np.ndarray:
    """(P,) filled - true of one event and channel (0 = npe, 1 = time ns)."""
    return result.filled[event, channel] - result.true[event, channel]


def inpaint_hdf5_bytes(result, geometry: Geometry, producer: dict[str, Any]) -> bytes:
    """The result as an HDF5 file (like `genesis inpaint`): input = filled, input_masked, input_true, mask."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inpainted.h5"
        schema.write_events(path, result.filled, result.labels, geometry, producer=producer,
                            extra={"input_masked": result.masked, "input_true": result.true, "mask": result.mask})
        return path.read_bytes()


def safe_name(text: str) -> str:
    """Text usable in a download file name."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_")[:80] or "result"
