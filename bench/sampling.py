"""Sampling cost against quality: today's default (DDIM-50) against the new default, and a curve over samplers
and step counts, measured in one run on one model.

For every setting the same labels (those of N reference events simulated independently of the training data,
genesis.evaluate.reference_events) are sampled with genesis.sampling.generate (redraws included), timed
(events/s of wall time, device synchronized, and events per CPU-second of this process, which a shared busy
CPU does not distort: compare CPU runs by it), and compared with the reference by genesis.evaluate.compare_events: the
classifier AUC and the worst W1 over the high-level features, each with its standard error, and the response
summary of genesis.metrics. Printed: the headline (DDIM-50 against the preset's default, configs/tiny.yaml's
diffusion.sampler and sampling_steps unless --new says otherwise, run as `genesis sample` runs a large request:
bf16 where the device has it natively, compiled on a CPU (--new-plain: float32, eager); events/s, their ratio,
AUC and worst W1),
then the quality-against-cost table; --figure writes it as a Plotly figure (.html, or .png through headless
Chromium as bench/report_png.py does).

    python bench/sampling.py [--checkpoint genesis/resources/demo/demo-diffusion.pt] [--events 1000]
        [--device cpu|cuda] [--batch-size N] [--bf16] [--compile | --new-compile] [--steps 1,2,4,8,16,50]
        [--samplers ddim,dpmpp2m]
        [--new SAMPLER:STEPS[:SPACING] | --new STUDENT.pt] [--student NAME=PATH ...] [--figure docs/sampling-curve.png]
    # throughput of an untrained preset (no quality), e.g. on a GPU:
    python bench/sampling.py --config configs/default.yaml --device cuda --bf16 --batch-size 1024 \\
        --events 8192 --no-quality --steps none
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genesis import checkpoint, config, diffusion, evaluate, sampling  # noqa: E402
from genesis.demo import DEMO_DIR  # noqa: E402
from genesis.geometry import icecube86_like  # noqa: E402

BASELINE = ("ddim", 50, None)


@dataclass
class Row:
    name: str
    sampler: str
    steps: int
    spacing: str | None
    events_per_s: float
    events_per_cpu_s: float  # per second of this process's CPU time: what a busy shared machine cannot distort
    redrawn: float  # share of events drawn again
    report: dict | None  # compare_events scalars, None without quality

    def get(self, key: str) -> float:
        return math.nan if self.report is None else float(self.report.get(key, math.nan))

    @property
    def worst_w1(self) -> tuple[str, float, float]:
        """(feature, W1, its SE) of the feature with the largest normalized W1."""
        if self.report is None:
            return "-", math.nan, math.nan
        w1 = {k[len("eval/w1_"):]: v for k, v in self.report.items()
              if k.startswith("eval/w1_") and not k.endswith("_se")}
        name = max(w1, key=w1.get)
        return name, w1[name], self.get(f"eval/w1_{name}_se")


def parse_setting(text: str) -> tuple[str, int | None, str | None]:
    """'SAMPLER[:STEPS[:SPACING]]' -> (sampler, steps or None, spacing or None)."""
    parts = text.split(":")
    if parts[0] not in diffusion.SAMPLERS or len(parts) > 3:
        raise SystemExit(f"setting {text!r}: expected SAMPLER[:STEPS[:SPACING]], SAMPLER one of {diffusion.SAMPLERS}")
    steps = int(parts[1]) if len(parts) > 1 and parts[1] else None
    spacing = parts[2] if len(parts) > 2 else None
    if spacing is not None and spacing not in diffusion.SPACINGS:
        raise SystemExit(f"setting {text!r}: spacing must be one of {diffusion.SPACINGS}")
    return parts[0], steps, spacing


def untrained(config_path: str, folder: Path):
    """A LoadedModel with the fresh (untrained) weights of a preset, on the IceCube-86-like geometry:
    enough for throughput, not for quality."""
    cfg = config.load(config_path)
    geometry = icecube86_like()
    model = checkpoint.build_model(cfg, geometry.n_doms, cfg.data.normalization)
    path = checkpoint.save(checkpoint.make_state(cfg, model, None, geometry, 0, 0, math.inf), folder / "untrained.pt")
    return path


def model_before(loaded, rev: str, device: torch.device) -> torch.nn.Module:
    """The checkpoint's weights in genesis/models/dit.py as of git revision `rev` (e.g. the code before the
    once-per-batch conditioning, which samplers then call step by step as before)."""
    src = subprocess.run(["git", "show", f"{rev}:genesis/models/dit.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    module = types.ModuleType("dit_before")
    exec(compile(src, f"dit.py@{rev}", "exec"), module.__dict__)  # noqa: S102 - the project's own history
    old = module.PMTDiT(loaded.model.config, loaded.model.n_doms, loaded.normalization)
    try:
        old.load_state_dict(loaded.model.state_dict())
    except RuntimeError as exc:  # options added since `rev` (e.g. model.light_feature) change the weights' shapes
        raise SystemExit(f"--before {rev}: the model code of {rev} cannot build {loaded.path} (a model option added "
                         f"since changes its weights); give a checkpoint trained before {rev} with --checkpoint. "
                         f"({str(exc).splitlines()[0]})") from exc
    return old.to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(loaded, name: str, sampler: str, steps: int | None, spacing: str | None, labels: np.ndarray,
            ref: np.ndarray | None, args, device: torch.device, bf16: bool | None = None,
            compiled: bool | None = None) -> Row:
    """One row: `labels` sampled and timed, compared with `ref`; bf16: autocast (None: --bf16); compiled:
    torch.compile (None: --compile), its one-off compilation in the untimed warm-up."""
    sampler, steps = sampling.recorded_sampler(loaded, sampler, steps)
    bf16 = args.bf16 if bf16 is None else bf16
    compiled = args.compile if compiled is None else compiled
    stats: dict = {}
    # warm-up (kernels, caches, allocator, compilation): a full batch when compiled, whose shape is compiled
    warm = labels[: min(len(labels), args.batch_size if compiled else min(args.batch_size, 64))]
    t0 = time.perf_counter()
    sampling.generate(loaded, warm, sampler, min(steps, 2), seed=99, batch_size=args.batch_size, spacing=spacing,
                      bf16=bf16, compiled=compiled)
    synchronize(device)
    if compiled:
        print(f"  (compiled in {time.perf_counter() - t0:.0f} s of wall time)", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    events = sampling.generate(loaded, labels, sampler, steps, seed=args.seed, batch_size=args.batch_size,
                               spacing=spacing, stats=stats, bf16=bf16, compiled=compiled)
    synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    report = None
    if ref is not None:
        report = evaluate.compare_events(events, ref, labels, loaded.geometry, args.seed)["scalars"]
    row = Row(name, sampler, steps, spacing, len(labels) / seconds, len(labels) / cpu_seconds,
              stats["redrawn"] / max(stats["events"], 1), report)
    print(f"  {row.name:28s} {row.events_per_s:10.2f} events/s {row.events_per_cpu_s:10.2f} per CPU-s  "
          f"AUC {row.get('eval/auc'):.3f}", flush=True)
    return row


def fmt(value: float, se: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f} +- {se:.{digits}f}"


def print_table(rows: list[Row], base: Row) -> None:
    print(f"\n{'setting':30s} {'steps':>5s} {'events/s':>10s} {'x DDIM-50':>9s} {'per CPU-s':>9s} {'x':>6s} {'AUC':>15s} "
          f"{'worst W1 (feature)':>32s} "
          f"{'response':>8s} {'redrawn':>7s}")
    for r in rows:
        feature, w1, w1_se = r.worst_w1
        print(f"{r.name:30s} {r.steps:5d} {r.events_per_s:10.2f} {r.events_per_s / base.events_per_s:9.2f} "
              f"{r.events_per_cpu_s:9.2f} {r.events_per_cpu_s / base.events_per_cpu_s:6.2f} "
              f"{fmt(r.get('eval/auc'), r.get('eval/auc_se')):>15s} {fmt(w1, w1_se) + f' ({feature})':>32s} "
              f"{r.get('eval/response_summary'):8.3f} {r.redrawn:7.1%}")


def figure(rows: list[Row], path: Path) -> None:
    """AUC (with SE bars) against the steps (network calls per draw), one line per sampler and spacing, a
    marker per student; events/s in the hover text (on a GPU they also carry the host's fixed cost)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    groups: dict[str, list[Row]] = {}
    for r in rows:
        key = r.name if r.name.startswith("student") else r.sampler + (f" ({r.spacing})" if r.spacing else "")
        groups.setdefault(key, []).append(r)
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r.steps)
        fig.add_trace(go.Scatter(
            x=[r.steps for r in group], y=[r.get("eval/auc") for r in group], name=label, mode="lines+markers",
            hovertext=[f"{r.name}: {r.events_per_s:.1f} events/s" for r in group],
            error_y=dict(type="data", array=[r.get("eval/auc_se") for r in group])))
    fig.update_layout(title="Sampling: quality against cost", xaxis_title="steps (network calls per event)",
                      yaxis_title="classifier AUC (0.5 = indistinguishable from simulation)", xaxis_type="log",
                      width=900, height=550)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        fig.write_html(path)
        return
    from bench.report_png import screenshot_figure

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "curve.html"
        fig.write_html(html, include_plotlyjs=True)
        screenshot_figure(html, path, figure=0, width=1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEMO_DIR / "demo-diffusion.pt"))
    parser.add_argument("--config", help="an untrained model of this preset instead of --checkpoint (throughput only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=0, help="default: sampling.default_batch_size")
    parser.add_argument("--bf16", action="store_true", help="autocast every row to bfloat16")
    parser.add_argument("--new-bf16", action="store_true", help="autocast only the new default to bfloat16 "
                        "(today's DDIM-50 stays float32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network of every row")
    parser.add_argument("--new-compile", action="store_true", help="torch.compile only the new default's network "
                        "(today's DDIM-50 stays eager)")
    parser.add_argument("--new-plain", action="store_true", help="the new default in float32 and eager (default: "
                        "as a large request samples, sampling.fast_settings: bf16 where native, compiled on a CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--new", help="the new default as SAMPLER:STEPS[:SPACING] (default: configs/tiny.yaml's), "
                        "or a distilled checkpoint (.pt), sampled with its own sampler and steps")
    parser.add_argument("--steps", default="1,2,4,8,16,50", help="step counts of the curve ('none': headline only)")
    parser.add_argument("--samplers", default="ddim,dpmpp2m",
                        help="curve samplers, each SAMPLER[::SPACING] (e.g. dpmpp2m::logsnr)")
    parser.add_argument("--student", action="append", default=[], metavar="NAME=PATH",
                        help="a distilled checkpoint as an extra row (sampled with its own sampler and steps)")
    parser.add_argument("--no-quality", action="store_true", help="events/s only (untrained models)")
    parser.add_argument("--before", metavar="REV", help="also DDIM-50 with the model code of this git revision "
                        "(e.g. 4478d41, before issue 24), on the first --before-events labels")
    parser.add_argument("--before-events", type=int, default=0, help="0 = all --events")
    parser.add_argument("--figure", type=Path, help="write the curve to this .html or .png")
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    parser.add_argument("--from-json", type=Path, help="print and draw the rows of an earlier --json, measure nothing")
    args = parser.parse_args()
    if args.from_json:
        rows = [Row(**{"events_per_cpu_s": math.nan, **r}) for r in json.loads(args.from_json.read_text())]
        print_table(rows, rows[0])
        if args.figure:
            figure([r for r in rows[2:] if r.report is not None] or rows, args.figure)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = checkpoint.resolve_device(args.device)
    args.batch_size = args.batch_size or sampling.default_batch_size(device)
    tmp = tempfile.TemporaryDirectory()
    path = untrained(args.config, Path(tmp.name)) if args.config else args.checkpoint
    loaded = checkpoint.load_model(path, device=device)
    ref, labels = evaluate.reference_events(loaded, simulate=args.events, seed=args.seed)
    ref = None if args.no_quality else ref
    preset = config.load(ROOT / "configs" / "tiny.yaml").diffusion
    student_new = args.new if args.new and args.new.endswith(".pt") else None
    new = (None, None, None) if student_new else (
        parse_setting(args.new) if args.new else (preset.sampler, preset.sampling_steps, preset.spacing or None))
    print(f"model {args.config or args.checkpoint} on {device} ({torch.get_num_threads()} CPU threads"
          f"{', bf16' if args.bf16 else ''}), {args.events} events in batches of {args.batch_size}; reference: "
          f"{'none' if ref is None else 'simulated'}")

    def name(sampler: str, steps: int | None, spacing: str | None) -> str:
        return f"{sampler}-{steps}" + (f" ({spacing})" if spacing else "")

    base = measure(loaded, name(*BASELINE) + " (today)", *BASELINE, labels, ref, args, device)
    new_model = checkpoint.load_model(student_new, device=device) if student_new else loaded
    # as `genesis sample` runs a large request by default (sampling.fast_settings), unless --new-plain
    fast = (False, False) if args.new_plain else sampling.fast_settings(new_model, sampling.COMPILE_FROM_EVENTS)
    bf16, compiled = args.bf16 or args.new_bf16 or fast[0], args.compile or args.new_compile or fast[1]
    how = ("bf16 " if bf16 else "") + ("compiled " if compiled else "")
    newest = measure(new_model, (f"student {Path(student_new).stem}" if student_new else name(*new))
                     + f" ({how}new default)", *new, labels, ref, args, device, bf16=bf16, compiled=compiled)
    rows = []
    if args.before:
        old = copy.copy(loaded)
        old.model = model_before(loaded, args.before, device)
        n_before = args.before_events or None
        rows.append(measure(old, name(*BASELINE) + f" (code @{args.before})", *BASELINE, labels[:n_before],
                            None if ref is None else ref[:n_before], args, device))
    if args.steps != "none":
        for text in args.samplers.split(","):
            sampler, _, spacing = parse_setting(text.replace("::", ":0:") if "::" in text else text)
            for steps in (int(s) for s in args.steps.split(",")):
                rows.append(measure(loaded, name(sampler, steps, spacing), sampler, steps, spacing, labels, ref, args,
                                    device))
    for spec in args.student:
        student_name, _, student_path = spec.partition("=")
        student = checkpoint.load_model(student_path, device=device)
        rows.append(measure(student, f"student {student_name}", None, None, None, labels, ref, args, device))

    print(f"\n== headline ({args.events} events, {device}{', bf16' if args.bf16 else ''}) ==")
    for r in (base, newest, *rows[:1 if args.before else 0]):
        feature, w1, w1_se = r.worst_w1
        print(f"{r.name:32s} {r.events_per_s:9.2f} events/s {r.events_per_cpu_s:9.2f} per CPU-s   "
              f"AUC {fmt(r.get('eval/auc'), r.get('eval/auc_se'))}   "
              f"worst W1 {fmt(w1, w1_se)} ({feature})")
    ratio = newest.events_per_s / base.events_per_s
    cpu_ratio = newest.events_per_cpu_s / base.events_per_cpu_s
    line = f"new default / DDIM-50: {ratio:.1f}x events/s, {cpu_ratio:.1f}x events per CPU-second"
    if args.before:
        line += (f" (/ DDIM-50 with the code @{args.before}: {newest.events_per_s / rows[0].events_per_s:.1f}x, "
                 f"{newest.events_per_cpu_s / rows[0].events_per_cpu_s:.1f}x)")
    if ref is not None:
        diff = newest.get("eval/auc") - base.get("eval/auc")
        se = base.get("eval/auc_se")
        line += (f"; AUC difference {diff:+.3f} (DDIM-50's SE {se:.3f}, of the difference "
                 f"{math.hypot(se, newest.get('eval/auc_se')):.3f}): {'within' if diff <= se else 'NOT within'} "
                 "DDIM-50's standard error")
    print(line)
    if rows:
        print_table([base, newest, *rows], base)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in (base, newest, *rows)], indent=1))
    if args.figure:
        figure([r for r in rows if r.report is not None] or rows, args.figure)
        print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
