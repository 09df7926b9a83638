"""Physics scorecard: train a diffusion transformer and a flow for the same time budget, evaluate both on
the same held-out simulation, and compare with the simulator against itself (the floor) measured in the
same run.

    python bench/scorecard.py --minutes 8 --device cuda                       # GPU, default presets
    python bench/scorecard.py --minutes 0.5 --device cpu --train-events 2000 --eval-events 400 \
        --preset-suffix tiny --steps 20                                       # CPU smoke run (~3 min)

CPU protocol (a step budget instead of a time budget, so any 2-core machine gets the same numbers;
about 15 minutes per model on 2 idle cores):

    python bench/scorecard.py --device cpu --preset-suffix tiny --train-events 20000 --eval-events 1000 \
        --set train.max_steps=2000 --set train.batch_size=64 [--models diffusion] [--ablate]

Evaluation (issue 23): every row reports the label-aware classifier AUC (event features + labels: do the
events follow their labels?) and the unconditional AUC, each +- its standard error (DeLong, over the test
half of the label rows), the response summary (mean |generated - simulated| of the charge, hit DOMs, hit
strings and time span per bin of energy, direction and vertex, in standard errors; ~0.8 or less for the
simulator itself), W1 +- bootstrap errors and the fraction of events drawn again below the trigger. The
default --eval-events 5000 gives AUC standard errors <= 0.01 at any AUC (3400 suffice). There are two
held-out files, simulated with different seeds: --heldout selection (heldout_selection.h5, seed 3) for
choosing variants and --heldout report (heldout.h5, seed 2, the default) for the numbers quoted. --seeds 2
trains every row twice (train.seed 0 and 1) and reports the mean over the seeds and their range.
scorecard.json and every report_*.json record the git commit the run started at (and whether the tree was dirty then).

--ablate trains the variants of ABLATION (each diffusion row adds one change to the row above it; the
flow rows compare the flow preset before and after), all on the same data with the same budget, and
prints one table with the simulator floor measured in the same run. --jobs 2 runs two rows at once (one
torch thread each), which on 2 cores takes about half the time of one row after the other:

    python bench/scorecard.py --device cpu --preset-suffix tiny --train-events 20000 --eval-events 1000 \
        --set train.max_steps=2000 --set train.batch_size=64 --ablate --jobs 2

Presets: configs/default.yaml + configs/flow.yaml, or with --preset-suffix S configs/S.yaml +
configs/flow_S.yaml. Data (IceCube-86-like geometry, default simulator) is simulated into --workdir and
reused when a file of the requested size is there. MLflow goes to sqlite:///<workdir>/mlflow.db unless
MLFLOW_TRACKING_URI is set. Prints one table (AUC, W1, LineFit ratio, training and sampling events/s)
and the per-feature W1 table; writes scorecard.json and one HTML report per model into the workdir.
The baseline to beat is in ../shared/notes/physics-baseline.md (AUC 0.96-0.99 at 200k events).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget per model (wall minutes); default 8, or none when --set train.max_steps=N "
                        "is given (a step budget)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--train-events", type=int, default=200_000, help="simulated training events")
    p.add_argument("--eval-events", type=int, default=5000,
                   help="held-out events (labels for generation); >= 3400 keeps the AUC's standard error <= 0.01")
    p.add_argument("--heldout", default="report", choices=tuple(HELDOUT_SEEDS),
                   help="held-out set to evaluate on: 'selection' for choosing variants, 'report' for quoted numbers")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every row this many times (train.seed 0, 1, ...): mean and range over the seeds")
    p.add_argument("--workdir", default=str(ROOT / "data" / "scorecard"), help="data, MLflow store, reports")
    p.add_argument("--preset-suffix", default="", help="'' = default.yaml/flow.yaml; S = S.yaml/flow_S.yaml")
    p.add_argument("--models", default="diffusion,flow", help="comma-separated subset of diffusion,flow")
    p.add_argument("--epochs", type=int, default=1000,
                   help="epoch cap (train.epochs); large by default so the time budget ends training")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps of the diffusion model's recorded sampler (default: its diffusion.sampling_steps)")
    p.add_argument("--seed", type=int, default=0, help="sampling and classifier seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for both models (e.g. train.batch_size=128)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML reports")
    p.add_argument("--no-mlflow", action="store_true", help="train without an MLflow store (machines without mlflow)")
    p.add_argument("--ablate", action="store_true", help="train and compare the ABLATION variants of the diffusion preset")
    p.add_argument("--ablate-rows", default="", help="comma-separated ABLATION row numbers to run, from 0 (default: all)")
    p.add_argument("--keep-rows", action="store_true", help="--ablate: keep the rows of the previous scorecard.json "
                   "in the workdir that are not re-run (same data and budget), to run a long ablation in parts")
    p.add_argument("--jobs", type=int, default=1, help="--ablate: train and evaluate this many rows at once "
                   "(processes of one torch thread each)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    rows = [i.strip() for i in args.ablate_rows.split(",") if i.strip()]
    if any(not i.isdigit() or int(i) >= len(ABLATION) for i in rows):
        p.error(f"--ablate-rows takes row numbers 0-{len(ABLATION) - 1} (0 = {ABLATION[0][0]!r}); got {args.ablate_rows!r}")
    if args.seeds > 1 and any(s.startswith("train.seed=") for s in args.set):
        p.error("--seeds sets train.seed for every training; drop --set train.seed=...")
    if args.minutes is None:
        args.minutes = 0.0 if any(s.startswith("train.max_steps=") for s in args.set) else 8.0
    # the code this run measures: read once at the start, since commits made while a long run trains must not
    # be recorded as the commit of its numbers
    args.git = git_state()
    return args


def recorded_git(args: argparse.Namespace) -> dict:
    """The git state at the start of the run (args.git), plus the commit at the time of writing where it moved."""
    now = git_state()
    return args.git | ({"head_when_written": now["commit"]} if now["commit"] != args.git["commit"] else {})


def setup_store(workdir: Path) -> str:
    """Point GENESIS_HOME (run logs) and, unless already set, MLflow at the workdir. Returns the URI."""
    os.environ["GENESIS_HOME"] = str(workdir)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from genesis import tracking

    uri = os.environ["MLFLOW_TRACKING_URI"]
    # Create the experiment with its artifacts in the workdir (else MLflow would use ./mlruns of the cwd).
    root = workdir / "artifacts" if uri == f"sqlite:///{workdir / 'mlflow.db'}" else None
    tracking.Store(uri, str(root) if root else None).experiment_id("scorecard")
    return uri


HELDOUT_SEEDS = {"report": 2, "selection": 3}  # simulation seeds of the held-out files (training file: 1)
HELDOUT_FILES = {"report": "heldout.h5", "selection": "heldout_selection.h5"}


def git_state() -> dict:
    """The commit this scorecard ran at and whether tracked files differed from it (dirty)."""
    import subprocess

    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=True).stdout

    try:
        return {"commit": git("rev-parse", "HEAD").strip(),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip())}
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"commit": None, "dirty": None, "error": str(exc)[:200]}


def _file_seed(path: Path) -> int | None:
    """The simulation seed recorded in a simulated file (None when it has none)."""
    from genesis.data import schema

    try:
        return json.loads(schema.read_attrs(path).get("producer", "{}")).get("seed")
    except (ValueError, TypeError, AttributeError):
        return None


def simulated_file(path: Path, n: int, geo, seed: int) -> Path:
    from genesis.data import schema
    from genesis.data.simulate import simulate_to_file

    if path.is_file() and schema.file_info(path)[0] == n and _file_seed(path) in (seed, None):
        print(f"reusing {path} ({n} events)")
        return path
    t0 = time.time()
    simulate_to_file(path, n, geo, seed=seed, force=True)
    print(f"simulated {n} events into {path} in {time.time() - t0:.1f} s")
    return path


# Ablation rows: (name, model kind, overrides on top of that kind's preset). The first diffusion row is the
# model before the hit-aware representation (the presets' defaults until then); each later row adds one
# change. A row whose overrides differ from an earlier row's only in sampling settings reuses that row's
# model (no second training). The flow rows compare the flow preset before and after.
BEFORE = ["data.noise_radius_m=0", "data.normalization.representation=legacy", "model.conditioning=labels", "model.dom_head_width=0",
          "model.light_feature=false", "model.dom_head_conditioning=false",
          "diffusion.min_snr_gamma=0", "diffusion.hit_weight=1", "diffusion.no_hit_weight=0.1",
          "diffusion.objective=eps", "diffusion.sampler=ddim", "diffusion.spacing=", "diffusion.eta=0", "diffusion.sampling_steps=50", "diffusion.redraw_untriggered=false",
          "data.normalization.time_reference=none", "data.normalization.time_transform=none",
          "data.normalization.time_center_ns=0", "data.normalization.time_width_ns=100",
          "data.normalization.affine_offsets=[1.0,9000.0,-600.0,-550.0,-550.0]",
          "data.normalization.affine_scales=[2.0,2000.0,1200.0,1100.0,1100.0]"]
HIT = [*BEFORE, "data.normalization.representation=hit"]
PHYSICS = [*HIT, "model.conditioning=physics", "model.dom_head_width=32"]
V_OBJECTIVE = [*PHYSICS, "diffusion.objective=v"]
# time measured from the expected direct-light arrival (t0 = 10 us in the simulator): the model learns the delay
TIME_RESIDUAL = [*V_OBJECTIVE, "data.normalization.time_reference=arrival",
                 "data.normalization.affine_offsets=[1.0,10000.0,-600.0,-550.0,-550.0]"]
# the delay after direct light through asinh((delay - 10 us) / w): its long scattering tail and the early noise
# hits become about symmetric (time bias of the linear delay: +250 ns); bulk of hit times at about -0.5..1
ASINH_200 = [*V_OBJECTIVE, "data.normalization.time_reference=arrival", "data.normalization.time_transform=asinh",
             "data.normalization.time_center_ns=10000", "data.normalization.time_width_ns=200",
             "data.normalization.affine_offsets=[1.0,1.0,-600.0,-550.0,-550.0]",
             "data.normalization.affine_scales=[2.0,1.5,1200.0,1100.0,1100.0]"]
ASINH_500 = [*ASINH_200, "data.normalization.time_width_ns=500",
             "data.normalization.affine_offsets=[1.0,0.5,-600.0,-550.0,-550.0]",
             "data.normalization.affine_scales=[2.0,1.0,1200.0,1100.0,1100.0]"]
# the events the model was trained on all triggered (>= 8 hit DOMs): events sampled with fewer are drawn again,
# as the simulator draws untriggered events again (a sampling setting: the asinh 200 ns model, not retrained)
REDRAW = [*ASINH_200, "diffusion.redraw_untriggered=true"]
FLOW_BEFORE = ["data.normalization.time_transform=ln", "data.normalization.npe_transform=log1p",
               "data.normalization.affine_offsets=[0.0,0.0,-600.0,-550.0,-550.0]",
               "data.normalization.affine_scales=[5.0,10.0,1200.0,1100.0,1100.0]", "flow.conditioning=labels",
               "flow.dom_width=0", "flow.dom_neighbours=false", "flow.hit_head=0", "flow.inpaint_fill=best",
               "flow.light_feature=false"]
NPE_REFERENCE = ["data.normalization.npe_reference=expected",
                 "data.normalization.affine_offsets=[0.3,1.0,-600.0,-550.0,-550.0]",
                 "data.normalization.affine_scales=[0.6,1.5,1200.0,1100.0,1100.0]"]
# the rows measured before the preset kept detector noise apart (data.noise_radius_m) keep learning it
NOISE_LEARNED = ["data.noise_radius_m=0"]
ABLATION = [
    ("before", "diffusion", BEFORE),
    ("+hit channel", "diffusion", HIT),
    ("+physics+DOM head", "diffusion", PHYSICS),
    ("+v objective", "diffusion", V_OBJECTIVE),
    ("+time from direct light", "diffusion", TIME_RESIDUAL),
    ("same model, DDIM-50 eta 1", "diffusion", [*TIME_RESIDUAL, "diffusion.eta=1"]),
    ("+asinh delay, w 200 ns", "diffusion", ASINH_200),
    ("+asinh delay, w 500 ns", "diffusion", ASINH_500),
    ("+redraw untriggered events", "diffusion", REDRAW),
    ("flow before", "flow", FLOW_BEFORE),
    ("flow preset", "flow", []),
    # classifier-free guidance on the preset's model (sampling only): at a bright central label the model's
    # charge was 6x below the simulator's without it
    ("+guidance 1.5", "diffusion", [*REDRAW, "diffusion.guidance_scale=1.5"]),
    ("+guidance 2", "diffusion", [*REDRAW, "diffusion.guidance_scale=2"]),
    # the diffusion preset as it is now (e.g. with the expected-light feature and the labels in the per-DOM head);
    # the rows above switch off what came after them, so they keep measuring what they measured
    ("diffusion preset", "diffusion", []),
    # the flow preset before its expected-light input (flow.light_feature: the hits' charge follows the energy)
    ("flow preset, no expected light", "flow", ["flow.light_feature=false"]),
    # the diffusion preset before its two energy inputs (the expected light per DOM, the labels in the per-DOM
    # head): the "before" row of the preset's headline, sampled as the preset samples
    ("diffusion preset, no energy inputs", "diffusion", [*NOISE_LEARNED, "model.light_feature=false",
                                                         "model.dom_head_conditioning=false"]),
    # the hit DOMs' charge measured from the charge the light path predicts (normalization.npe_reference): the
    # model learns a residual of spread 0.49 instead of log1p npe (1.63), which under-learned the energy
    ("diffusion preset, npe from expected light", "diffusion", [*NOISE_LEARNED, *NPE_REFERENCE]),
    # whole-pe charge learned as npe + U(0, 1) and floored when sampling: at 1e3-1e4 GeV 70% of the hits have 1 pe,
    # a point mass the preset smeared from 0.4 to 2 pe, which rounding turned into too many 2-pe hits
    ("diffusion preset, dequantized npe", "diffusion", [*NOISE_LEARNED, "diffusion.dequantize_npe=true"]),
    # the npe of the faintest hits (1 pe) at -0.65 instead of -0.15, farther from the neutral 0 that DOMs without a
    # hit learn: the two variants that moved faint hits towards 0 (rows 16, 17) drew many more hits at low energy
    ("diffusion preset, faint hits farther from no-hit", "diffusion",
     [*NOISE_LEARNED, "data.normalization.affine_offsets=[2.0,1.0,-600.0,-550.0,-550.0]"]),
    # half the peak learning rate: with four training seeds the preset's AUC spans 0.68-0.90, the worse seeds with
    # too long a late tail of hit times (time span W1 0.66-0.97 against 0.23) and extra hit strings
    ("diffusion preset, peak LR 5e-4", "diffusion", [*NOISE_LEARNED, "train.lr=5e-4"]),
    # the preset before detector noise was kept apart (genesis.noise, data.noise_radius_m; the preset since 4 seeds
    # of it measured AUC | labels 0.718 +- 0.016 on the selection set): the model learns the isolated noise hits too.
    # Its worse seeds drew up to twice as many isolated hits as the simulator, too late and on too many strings
    ("diffusion preset, noise learned", "diffusion", NOISE_LEARNED),
]
HEADLINE = ["n_hit_doms", "n_hit_strings", "total_npe", "time_span", "time_std", "brightest_fraction"]


def preset_paths(suffix: str) -> dict[str, Path]:
    if suffix:
        return {"diffusion": ROOT / "configs" / f"{suffix}.yaml", "flow": ROOT / "configs" / f"flow_{suffix}.yaml"}
    return {"diffusion": ROOT / "configs" / "default.yaml", "flow": ROOT / "configs" / "flow.yaml"}


def train_without_store(cfg, kind: str, workdir: Path) -> dict:
    """Train with the bare Trainer (no MLflow: for machines without it); events/s timed around fit()."""
    from genesis.checkpoint import resolve_device
    from genesis.train import DistContext, StopRequested, Trainer

    trainer = Trainer(cfg, None, None, DistContext(), resolve_device(cfg.train.device))
    trainer.ckpt_dir = workdir / f"checkpoints_{kind}"
    trainer.ckpt_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trainer.fit(StopRequested())
    rate = trainer.step * cfg.train.batch_size / (time.time() - t0)
    print(f"{kind}: {trainer.step} steps, {rate:.0f} train events/s (no MLflow), best val {trainer.best_val:.5f}")
    return {"run_id": None, "steps": trainer.step, "train_wall_s": time.time() - t0, "train_events_per_s": rate,
            "checkpoint": str(trainer.ckpt_dir / "last.pt"), "preset": "", "status": "FINISHED"}


def train_one(kind: str, preset: Path, data: Path, args: argparse.Namespace, workdir: Path,
              extra: list[str] = ()) -> dict:
    """Train for the budget (stdout of the trainer goes to <workdir>/train_<kind>.log)."""
    from genesis import config, tracking
    from genesis.train import train

    cfg = config.load(preset, [f"data.path={data}", f"train.max_minutes={args.minutes}", f"train.device={args.device}",
                               f"train.epochs={args.epochs}", "train.eval_events=0", "experiment=scorecard",
                               f"name=scorecard-{kind}", *extra, *args.set])
    if args.no_mlflow:
        return {**train_without_store(cfg, kind, workdir), "preset": str(preset)}
    t0 = time.time()
    log_path = workdir / f"train_{kind}.log"
    try:
        with open(log_path, "w") as f, contextlib.redirect_stdout(f):
            result = train(cfg)
    finally:  # train() logs to the redirected stdout; point logging back at stderr before that file closes
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    wall = time.time() - t0
    store = tracking.Store.default()
    rates = store.metric_history(result["run_id"], "train/events_per_s")["value"].to_numpy()
    rate = float(np.median(rates[1:] if len(rates) > 1 else rates)) if len(rates) else float("nan")
    print(f"{kind}: {result['status']} after {result['step']} steps ({wall:.0f} s, {rate:.0f} train events/s), "
          f"run {result['run_id']}, log {log_path}")
    return {"run_id": result["run_id"], "steps": result["step"], "train_wall_s": wall, "train_events_per_s": rate,
            "checkpoint": str(Path(result["checkpoint_dir"]) / "last.pt"), "preset": str(preset)}


def evaluate_one(info: dict, ref_signal, ref_labels, args: argparse.Namespace, workdir: Path, kind: str,
                 sampler: dict | None = None, held_file: Path | None = None) -> dict:
    """Evaluate a trained checkpoint with its recorded sampler; `sampler` (sampler_of: the row's own settings,
    whichever row trained the shared model) overrides the sampler, its grid, eta and steps, whether events below
    the trigger are drawn again and the guidance scale."""
    import dataclasses

    from genesis import checkpoint, evaluate
    from genesis.data.dataset import value_ranges

    loaded = checkpoint.load_model(info["checkpoint"], device=checkpoint.resolve_device(args.device))
    sampler = sampler or {}
    if "eta" in sampler:
        loaded.config = dataclasses.replace(loaded.config, diffusion=dataclasses.replace(
            loaded.config.diffusion, sampler=sampler["sampler"], spacing=sampler["spacing"], eta=sampler["eta"],
            redraw_untriggered=sampler["redraw"]))
    record = loaded.state.get("data") or {}
    if sampler.get("redraw") and "hit_doms_min" not in record:  # trained before checkpoints recorded the trigger
        loaded.state["data"] = {**value_ranges(loaded.config.data, loaded.normalization, loaded.geometry.positions),
                                **record}
    params = sum(p.numel() for p in loaded.model.parameters())
    # the sampler, steps and grid the checkpoint records (a preset's own: unipc-8 quadratic for tiny), unless
    # --steps or the row say otherwise
    steps = sampler.get("steps", args.steps)
    held_file = held_file or workdir / HELDOUT_FILES[args.heldout]
    ev = evaluate.run_evaluation(loaded, ref_signal, ref_labels, sampler=None, steps=steps,
                                 seed=args.seed, guidance=sampler.get("guidance"),
                                 reference={"source": "file", "path": str(held_file), "n": len(ref_labels),
                                            "heldout": args.heldout})
    if not args.no_mlflow:
        evaluate.log_to_run(ev.report, loaded)
    save_reports(ev, workdir, kind, args)
    return {**info, "params": params, "report": ev.report}


def save_reports(ev, workdir: Path, kind: str, args: argparse.Namespace) -> None:
    from genesis import evaluate

    ev.report["git"] = recorded_git(args)
    evaluate.write_json(ev.report, workdir / f"report_{kind}.json")
    if not args.no_html:
        names = ("simulation B", "simulation A") if kind == "simulator" else ("generated", "reference")
        figs = evaluate.report_figures(ev.report, ev.gen_signal, ev.ref_signal, ev.labels, ev.geometry, names)
        evaluate.write_html(ev.report, workdir / f"report_{kind}.html", figs)


# ----------------------------------------------------------------------------------------- seeds
def seed_overrides(args: argparse.Namespace, k: int) -> list[str]:
    """The override of training k of a row: train.seed=k with --seeds > 1 (none with one seed, so a
    one-seed row trains exactly what it trained before)."""
    return [f"train.seed={k}"] if args.seeds > 1 else []


def seed_tag(tag: str, args: argparse.Namespace, k: int) -> str:
    return f"{tag}-seed{k}" if args.seeds > 1 else tag


def combine_seeds(results: list[dict]) -> dict:
    """One row from the evaluations of one variant trained with several seeds (each {..., report}).

    Scalars: the mean over the seeds; a standard error (keys ending in _se) becomes the standard error of
    that mean, sqrt(sum se^2) / S. seed_range: max - min over the seeds of every other scalar (with >= 2 seeds).
    seeds: every training's info and scalars (so --keep-rows can reuse the checkpoints).
    """
    scalars = [r["report"]["scalars"] for r in results]
    keys = [k for k in scalars[0] if all(k in s for s in scalars)]
    n = len(results)
    mean = {k: float(np.sqrt(sum(s[k] ** 2 for s in scalars)) / n) if k.endswith("_se")
            else float(np.mean([s[k] for s in scalars])) for k in keys}
    spread = {k: float(max(s[k] for s in scalars) - min(s[k] for s in scalars)) for k in keys
              if not k.endswith("_se")} if n > 1 else {}
    timing = {k: float(np.mean([r["report"]["timing"][k] for r in results])) for k in results[0]["report"]["timing"]}
    sampling = [r["report"].get("sampling") or {} for r in results]
    frac = [s["redrawn_fraction"] for s in sampling if "redrawn_fraction" in s]
    first = {k: v for k, v in results[0].items() if k != "report"}
    return {**first, "train_events_per_s": float(np.mean([r.get("train_events_per_s", np.nan) for r in results])),
            "report": {"scalars": mean, "timing": timing,
                       "sampling": {"redrawn_fraction": float(np.mean(frac))} if len(frac) == n else sampling[0]},
            "seed_range": spread,
            "seeds": [{**{k: v for k, v in r.items() if k != "report"}, "scalars": r["report"]["scalars"],
                       "sampling": r["report"].get("sampling")} for r in results]}


# ---------------------------------------------------------------------------------------- tables
def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def _pm(s: dict, key: str, fmt: str = ".3f") -> str:
    """'value+-se' of scalar key and its key_se."""
    v, se = s.get(key), s.get(f"{key}_se")
    return _f(v, fmt) if se is None else f"{_f(v, fmt)}+-{_f(se, fmt)}"


def _redraw(r: dict) -> str:
    return _f((r["report"].get("sampling") or {}).get("redrawn_fraction"), ".3f")


def _seed_range(r: dict, key: str) -> str:
    rng = (r.get("seed_range") or {}).get(key)
    return "" if rng is None else f"range {rng:.3f}"


def print_tables(rows: dict[str, dict], n_eval: int) -> None:
    from genesis.metrics import FEATURES

    floor = rows["simulator"]["report"]["scalars"]
    floor_w1 = np.mean([floor[f"eval/w1_{k}"] for k in FEATURES])
    print(f"\nscorecard: {n_eval} held-out labels; AUC|labels = label-aware classifier, AUC = event features only "
          "(+- standard error over the test set); response in standard errors; redraw = fraction of events drawn "
          "again below the trigger; W1 in units of the reference spread; 'x floor' = mean W1 / the simulator's own")
    head = (f"{'model':<26} {'params':>9} {'steps':>7} {'AUC|labels':>13} {'AUC':>13} {'response':>8} {'redraw':>6} "
            f"{'mean W1':>8} {'x floor':>8} {'worst W1 (feature)':>32} {'LineFit ratio':>13} {'train ev/s':>11} "
            f"{'sample ev/s':>12}  seeds")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        s = r["report"]["scalars"]
        w1 = {k: s[f"eval/w1_{k}"] for k in FEATURES if f"eval/w1_{k}" in s}
        worst = max(w1, key=w1.get)
        mean = float(np.mean(list(w1.values())))
        print(f"{name:<26} {r.get('params', 0):>9,} {r.get('steps', 0):>7} {_pm(s, 'eval/auc_conditional'):>13} "
              f"{_pm(s, 'eval/auc'):>13} {_f(s.get('eval/response_summary'), '.2f'):>8} {_redraw(r):>6} "
              f"{_f(mean, '.3g'):>8} {_f(mean / floor_w1, '.3g'):>8} {f'{w1[worst]:.3g} ({worst})':>32} "
              f"{_f(s.get('eval/linefit_median_angle_ratio'), '.2f'):>13} "
              f"{_f(r.get('train_events_per_s'), '.0f'):>11} "
              f"{_f(r['report']['timing']['sampling_events_per_s'], '.1f'):>12}  "
              f"{len(r.get('seeds', [r]))} {_seed_range(r, 'eval/auc_conditional')}")
    print("\nper-feature W1 / reference std (+- bootstrap standard error)")
    print(f"{'feature':<20}" + "".join(f"{n[:15]:>16}" for n in rows))
    for k in FEATURES:
        print(f"{k:<20}" + "".join(f"{_pm(r['report']['scalars'], f'eval/w1_{k}', '.3g'):>16}" for r in rows.values()))
    print("\nbaseline to beat (shared/notes/physics-baseline.md, 200k events, 6.5-8 min H100): "
          "AUC 0.960-0.992, sim vs sim 0.46; LineFit ratio 1.3-1.4")


def print_ablation(rows: dict[str, dict], n_eval: int) -> None:
    """One line per variant: both AUCs +- SE, the response summary, the redraw fraction, the issue's headline
    numbers (W1 in units of the reference spread +- bootstrap SE) and the charge against energy (npe vs E:
    mean |difference| of the mean log10 total npe over energy bins, generated vs reference)."""
    from genesis.metrics import FEATURES

    print(f"\nablation: {n_eval} held-out labels, same data and step budget for every row")
    head = (f"{'variant':<26} {'AUC|labels':>13} {'AUC':>13} {'response':>8} {'redraw':>6} {'mean W1':>8} "
            f"{'LineFit':>8} {'occ corr':>8} {'npe vs E':>8} " + "".join(f"{k[:13]:>14}" for k in HEADLINE)
            + f" {'worst three W1':<48} {'train ev/s':>10} {'sample ev/s':>11}  seeds")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        s = r["report"]["scalars"]
        w1 = {k: s.get(f"eval/w1_{k}", float("nan")) for k in FEATURES}
        worst = sorted(w1, key=lambda k: -w1[k])[:3]
        print(f"{name:<26} {_pm(s, 'eval/auc_conditional'):>13} {_pm(s, 'eval/auc'):>13} "
              f"{_f(s.get('eval/response_summary'), '.2f'):>8} {_redraw(r):>6} "
              f"{_f(float(np.nanmean(list(w1.values()))), '.3g'):>8} "
              f"{_f(s.get('eval/linefit_median_angle_ratio'), '.2f'):>8} {_f(s.get('eval/occupancy_corr'), '.2f'):>8} "
              f"{_f(s.get('eval/npe_vs_energy_mean_abs_diff'), '.2f'):>8} "
              + "".join(f"{_pm(s, f'eval/w1_{k}', '.2f'):>14}" for k in HEADLINE)
              + f" {', '.join(f'{k} {w1[k]:.3g}' for k in worst):<48} {_f(r.get('train_events_per_s'), '.0f'):>10} "
              f"{_f(r['report']['timing']['sampling_events_per_s'], '.1f'):>11}  "
              f"{len(r.get('seeds', [r]))} {_seed_range(r, 'eval/auc_conditional')}")


def print_decades(rows: dict[str, dict]) -> None:
    """Per true-energy decade (metrics.decade_response): generated minus simulated mean log10 total npe, and the
    generated/simulated mean hit DOMs as a percentage difference (issue goals: |npe| <= 0.15, hits within 10%);
    and the slope of the charge on the energy, generated and simulated (the flow's goal: within 20%)."""
    from genesis.metrics import ENERGY_DECADES

    names = [f"1e{d}-1e{d + 1}" for d in ENERGY_DECADES]
    print("\nper energy decade: mean log10 total npe generated - simulated | mean hit DOMs generated / simulated - 1")
    head = (f"{'model':<26} " + "".join(f"{n:>9}" for n in names) + " | " + "".join(f"{n:>9}" for n in names)
            + " | slope of log10 npe on log10 E: gen / sim")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        if name == "simulator":
            continue
        s = r["report"]["scalars"]
        npe = [s.get(f"eval/decade{d}_log10_npe_diff") for d in ENERGY_DECADES]
        hits = [s.get(f"eval/decade{d}_hit_doms_ratio") for d in ENERGY_DECADES]
        print(f"{name:<26} " + "".join(f"{_f(v, '+.2f'):>9}" for v in npe) + " | "
              + "".join(f"{_f(None if v is None else v - 1, '+.0%'):>9}" for v in hits)
              + f" | {_f(s.get('eval/npe_energy_slope_gen'), '.3f')} / {_f(s.get('eval/npe_energy_slope_ref'), '.3f')}")


# -------------------------------------------------------------------------------------- ablation
def training_key(kind: str, overrides: list[str], args: argparse.Namespace) -> str:
    """What a row trains: its resolved config without the sampling-only settings, so rows that differ
    only in how they sample (or spell the same config differently) share one model."""
    from genesis import config

    cfg = config.to_dict(config.load(preset_paths(args.preset_suffix)[kind], [*overrides, *args.set]))
    for key in ("sampler", "spacing", "eta", "sampling_steps", "redraw_untriggered", "guidance_scale"):
        cfg["diffusion"].pop(key)
    return json.dumps(cfg, sort_keys=True)


def sampler_of(kind: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """The row's own sampling settings (sampler, grid, eta, steps from its resolved config or --steps, redraw, guidance),
    whichever row trained the model it shares: evaluate_one's sampler dict ({} for flows)."""
    from genesis import config

    if kind != "diffusion":
        return {}
    cfg = config.load(preset_paths(args.preset_suffix)[kind], [*overrides, *args.set]).diffusion
    return {"sampler": cfg.sampler, "spacing": cfg.spacing, "eta": cfg.eta, "steps": args.steps or cfg.sampling_steps,
            "redraw": cfg.redraw_untriggered,
            "guidance": cfg.guidance_scale}


def tag_of(name: str) -> str:
    return "abl-" + "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _train_row(kind: str, overrides: list[str], tag: str, train_file: str, args: argparse.Namespace,
               workdir: str, threads: int) -> dict:
    """One training of the ablation (runs in a worker process when --jobs > 1)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return train_one(tag, preset_paths(args.preset_suffix)[kind], Path(train_file), args, Path(workdir), overrides)


def _evaluate_row(info: dict, tag: str, kind: str, overrides: list[str], held_file: str, args: argparse.Namespace,
                  workdir: str, threads: int) -> dict:
    import torch

    from genesis.data import schema

    if threads:
        torch.set_num_threads(threads)
    ref_signal, ref_labels, _ = schema.read_events(held_file)
    return evaluate_one(info, ref_signal, ref_labels, args, Path(workdir), tag, sampler_of(kind, overrides, args),
                        Path(held_file))


@contextlib.contextmanager
def workers_end_with_us():
    """While in the block, SIGTERM ends this process's worker processes first: spawned pool workers are not in
    the scorecard's kill path and would otherwise go on training for half an hour after it was stopped."""
    import multiprocessing

    def stop(signum, frame):
        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_ablation(train_file: Path, held_file: Path, args: argparse.Namespace, workdir: Path) -> dict[str, dict]:
    """Train every distinct model of the picked ABLATION rows (each --seeds times), then evaluate every row and
    seed; with --jobs N, N processes of one torch thread each share the work (on 2 cores, 2 one-thread jobs do
    about twice the work of one two-thread job: this small model does not scale across threads)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    picked = [ABLATION[int(i)] for i in args.ablate_rows.split(",") if i.strip()] or ABLATION
    seeds = range(args.seeds)
    kept = earlier_rows(workdir, args) if args.keep_rows else {}
    # models already trained by an earlier part (--keep-rows) are evaluated again, not retrained
    infos = {training_key(kind, [*ov, *seed_overrides(args, k)], args):
             {kk: vv for kk, vv in entry.items() if kk not in ("report", "scalars", "timing", "sampling", "seeds",
                                                               "seed_range")}
             for name, kind, ov in ABLATION if name in kept
             for k, entry in enumerate(kept[name].get("seeds") or [kept[name]])}
    trainings = {training_key(kind, [*ov, *seed_overrides(args, k)], args):
                 (kind, [*ov, *seed_overrides(args, k)], seed_tag(tag_of(name), args, k))
                 for name, kind, ov in reversed(picked) for k in seeds}
    threads = 1 if args.jobs > 1 else 0
    common = (str(train_file), args, str(workdir), threads)
    with workers_end_with_us(), ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {key: pool.submit(_train_row, kind, ov, tag, *common)
                   for key, (kind, ov, tag) in trainings.items() if key not in infos}
        infos |= {key: f.result() for key, f in futures.items()}
        evals = {(name, k): pool.submit(_evaluate_row, infos[training_key(kind, [*ov, *seed_overrides(args, k)], args)],
                                        seed_tag(tag_of(name), args, k), kind, ov, str(held_file), args, str(workdir),
                                        threads)
                 for name, kind, ov in picked for k in seeds}
        return {name: combine_seeds([evals[name, k].result() for k in seeds]) for name, _, _ in picked}


def earlier_rows(workdir: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The ablation rows of the previous scorecard.json in workdir (same data, budget, held-out set and seeds,
    else refused), so a long ablation can be run in parts: rows re-run now replace them."""
    path = workdir / "scorecard.json"
    if not path.is_file():
        return {}
    before = json.loads(path.read_text())
    same = ("train_events", "eval_events", "preset_suffix", "set", "seed", "steps", "heldout", "seeds")
    defaults = {"heldout": "report", "seeds": 1}  # files from before these options
    if any(before["args"].get(k, defaults.get(k)) != getattr(args, k) for k in same):
        raise SystemExit(f"{path} was measured with other settings ({', '.join(same)} must match); "
                         "drop --keep-rows or use another --workdir")
    order = [name for name, _, _ in ABLATION]
    kept = {k: r for k, r in before["rows"].items() if k in order}
    return {k: {**kept[k], "report": {"scalars": kept[k]["scalars"], "timing": kept[k]["timing"],
                                      "sampling": kept[k].get("sampling")}}
            for k in order if k in kept}


def train_and_evaluate(kind: str, preset: Path, train_file: Path, held_file: Path, ref_signal, ref_labels,
                       args: argparse.Namespace, workdir: Path) -> dict:
    """A default-preset row (no --ablate): trained --seeds times, evaluated, combined."""
    results = []
    for k in range(args.seeds):
        tag = seed_tag(kind, args, k)
        info = train_one(tag, preset, train_file, args, workdir, seed_overrides(args, k))
        t0 = time.time()
        results.append(evaluate_one(info, ref_signal, ref_labels, args, workdir, tag, held_file=held_file))
        print(f"{tag}: evaluated in {time.time() - t0:.0f} s")
    return combine_seeds(results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = "none" if args.no_mlflow else setup_store(workdir)
    print(f"workdir {workdir}; MLflow {uri}; held-out set '{args.heldout}'; {args.seeds} training seed(s) per row")

    from genesis import evaluate
    from genesis.data import schema
    from genesis.geometry import icecube86_like

    geo = icecube86_like()
    train_file = simulated_file(workdir / "train.h5", args.train_events, geo, seed=1)
    held_file = simulated_file(workdir / HELDOUT_FILES[args.heldout], args.eval_events, geo,
                               seed=HELDOUT_SEEDS[args.heldout])
    ref_signal, ref_labels, _ = schema.read_events(held_file)
    presets = preset_paths(args.preset_suffix)
    rows: dict[str, dict] = run_ablation(train_file, held_file, args, workdir) if args.ablate else {}
    if args.ablate and args.keep_rows:
        rows = earlier_rows(workdir, args) | rows
    for kind in [] if args.ablate else [m.strip() for m in args.models.split(",") if m.strip()]:
        if kind not in presets:
            raise SystemExit(f"unknown model {kind!r}; use diffusion and/or flow")
        rows[kind] = train_and_evaluate(kind, presets[kind], train_file, held_file, ref_signal, ref_labels, args,
                                        workdir)
    t0 = time.time()
    floor = evaluate.simulator_floor(ref_signal, ref_labels, geo, seed=args.seed)
    save_reports(floor, workdir, "simulator", args)
    rows["simulator"] = {"report": floor.report, "params": 0, "steps": 0}
    print(f"simulator floor evaluated in {time.time() - t0:.0f} s")
    print_tables(rows, len(ref_labels))
    if args.ablate:
        print_ablation(rows, len(ref_labels))
    print_decades(rows)
    summary = {"args": {k: v for k, v in vars(args).items() if k != "git"}, "tracking_uri": uri, "git": recorded_git(args),
               "heldout": {"set": args.heldout, "path": str(held_file), "seed": HELDOUT_SEEDS[args.heldout]},
               "rows": {k: {kk: vv for kk, vv in r.items() if kk != "report"}
                        | {"scalars": r["report"]["scalars"], "timing": r["report"]["timing"],
                           "sampling": r["report"].get("sampling")}
                        for k, r in rows.items()}}
    (workdir / "scorecard.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {workdir / 'scorecard.json'} and report_*.json/html (commit {summary['git']['commit']}"
          f"{', dirty tree' if summary['git']['dirty'] else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
