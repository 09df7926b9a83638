"""Inpainting benchmark: every method on held-out simulated events and several mask types, one table.

Trains a flow and a diffusion model for a fixed number of optimiser steps (or takes --flow/--diffusion
checkpoints), then for each mask type (random 10% of DOMs, two whole strings, DeepCore, a sphere) fills
the masked DOMs of the same held-out events with flow MAP, RePaint, the neighbour mean and zero fill
(what a dead DOM records), and prints one table measured in that one run.

CPU protocol (the default; a step budget, so the numbers do not depend on the machine's load, and one
torch thread, so the arithmetic is the same on any machine; about 15 minutes on 2 idle cores):

    python bench/inpaint.py                     # 6000 training events, 2000 steps per model, 100 events
    python bench/inpaint.py --flow-steps 300 --diffusion-steps 300 --events 20 --map-steps 20   # smoke
    python bench/inpaint.py --device cuda --presets default --flow-steps 20000 --diffusion-steps 20000
    python bench/inpaint.py --flow before=old/last.pt --flow after=new/last.pt --methods flow-map   # compare flows

Columns, all on the masked DOMs of all events, from genesis.inpaint.inpaint_metrics (the one definition the
Inpaint page and `genesis inpaint` use: physical values, a DOM is hit when npe > 0, one fixed scoring space
for every method and model: log1p npe and linear time, genesis.inpaint.SCORING):
  MSE all   mean squared error over every masked DOM, both channels (false hits count; the page's score);
            ±: its standard error over the masked DOMs;   MSE hit: the same over masked DOMs hit in the truth
  npe err   mean |npe fill - npe true| [pe];   npe rel: mean relative npe error over masked true hits
  t err ns  median |t fill - t true| over masked DOMs hit in both
  prec/rec  hit precision and recall on masked DOMs
  Q err     mean |total charge fill - true| / true (events with charge)
  LF shift  mean angle [deg] between the LineFit direction of the filled event and of the unmasked
            event, over events whose mask hid a hit; the zero row is the change the mask causes
  /zero /neigh  MSE all relative to the zero and neighbour rows (< 1 = better than that baseline)
  flow-map  the fill with the flow's own flow.inpaint_fill; 'flow-map best' / 'flow-map vote' are both ways to
            combine the same restarts (best restart per event; per DOM from all restarts: majority vote with the
            mean npe and time, or with a hit head the head's hit / no hit and the restarts' mean values). Several
            --flow checkpoints are rows 'flow-map NAME' of the same run (e.g. a preset before and after a change)
  unc       flow MAP: mean hit probability at the masked DOMs (the hit head's, else the share of restarts that
            hit; the per-DOM uncertainty the Inpaint page shows; compare with the true hit fraction,
            (hits) / (events x masked DOMs))
  MSE hit rewards filling hits anywhere (recall); read it with MSE all and precision, which count false hits.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MASKS = {"random 10%": "random:0.1", "strings 36,45": "strings:36,45", "DeepCore": "deepcore",
         "sphere r=150 m": "sphere:0,0,-250,150"}
SCORE = "mse_all"  # the score the ratio columns divide (genesis.inpaint.SCORE: the Inpaint page's verdict)


def train_for(kind: str, preset: Path, data: Path, steps: int, batch: int, device: str, workdir: Path,
              overrides: tuple[str, ...] = ()) -> Path:
    """Train with the bare Trainer (no MLflow) for exactly `steps` optimiser steps; returns last.pt.
    overrides: extra --set style 'key=value' settings on top of the preset (they name the checkpoint folder)."""
    from genesis import config
    from genesis.checkpoint import resolve_device
    from genesis.train import DistContext, StopRequested, Trainer

    cfg = config.load(preset, [f"data.path={data}", f"train.max_steps={steps}", "train.max_minutes=0",
                               f"train.device={device}", "train.epochs=100000", f"train.batch_size={batch}",
                               "train.eval_events=0", f"train.checkpoint_every={max(steps, 1)}", *overrides])
    trainer = Trainer(cfg, None, None, DistContext(), resolve_device(device))
    tag = "".join(c if c.isalnum() else "_" for c in "-".join(overrides))
    trainer.ckpt_dir = workdir / f"ckpt_{kind}{'_' + tag if tag else ''}_{steps}"
    trainer.ckpt_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trainer.fit(StopRequested())
    print(f"trained {kind} ({preset.name}): {trainer.step} steps of {batch} events in {time.time() - t0:.0f} s, "
          f"best val loss {trainer.best_val:.4g}", flush=True)
    return trainer.ckpt_dir / "last.pt"


def linefit_dirs(signal: np.ndarray, geometry) -> tuple[np.ndarray, np.ndarray]:
    """LineFit 'comes from' unit vectors (N, 3) and validity (N,) of physical events (N, 2, P)."""
    from genesis.metrics import direction_from_angles, event_features

    f = event_features(signal[:, 0], signal[:, 1], geometry.positions, geometry.string)
    return direction_from_angles(f["linefit_zenith"], f["linefit_azimuth"]), f["linefit_valid"]


def score(filled: np.ndarray, true: np.ndarray, mask: np.ndarray, geometry, true_fit) -> dict[str, float]:
    """The scores of physical fills (N, 2, P) against the truth on the masked DOMs: genesis.inpaint's one
    definition (the Inpaint page's and `genesis inpaint`'s), plus the LineFit shift of the filled events."""
    from genesis.inpaint import inpaint_metrics
    from genesis.metrics import opening_angle

    fit_dir, fit_ok = linefit_dirs(filled, geometry)
    ref_dir, ref_ok = true_fit
    affected = (true[:, 0][:, mask] > 0).any(1) & ref_ok
    shift = np.degrees(opening_angle(fit_dir, ref_dir))[affected]
    return {**inpaint_metrics(filled, true, mask), "lf_shift": float(shift.mean()) if shift.size else math.nan,
            "lf_valid": float(fit_ok[affected].mean()) if affected.any() else math.nan}


def _fmt(v: float, spec: str) -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, spec)


def print_table(rows: dict[tuple[str, str], dict[str, float]], n_hidden_hits: dict[str, int]) -> None:
    head = ("| mask | method | MSE all | ± | MSE hit | npe err pe | npe rel | t err ns | prec | rec | Q err "
            "| LF shift deg | /zero | /neigh | unc | s/event |")
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for (mask_name, method), m in rows.items():
        zero, neigh = rows[(mask_name, "zero")][SCORE], rows[(mask_name, "neighbours")][SCORE]
        print(f"| {mask_name} ({n_hidden_hits[mask_name]} hits) | {method} | {_fmt(m['mse_all'], '.4f')} "
              f"| {_fmt(m['mse_all_se'], '.4f')} | {_fmt(m['mse_hit'], '.3f')} | {_fmt(m['npe_abs_error'], '.3f')} "
              f"| {_fmt(m['npe_rel_error'], '.2f')} | {_fmt(m['time_error_ns'], '.0f')} "
              f"| {_fmt(m['precision'], '.2f')} | {_fmt(m['recall'], '.2f')} | {_fmt(m['total_charge_error'], '.3f')} "
              f"| {_fmt(m['lf_shift'], '.2f')} | {_fmt(m[SCORE] / zero, '.2f')} "
              f"| {_fmt(m[SCORE] / neigh, '.2f')} | {_fmt(m.get('unc', math.nan), '.3f')} "
              f"| {_fmt(m['seconds'], '.3f')} |")


def run_method(method: str, loaded, signal, labels, mask, geometry, args
               ) -> tuple[np.ndarray, float, float, dict[str, np.ndarray]]:
    """Physical fills (N, 2, P), seconds per event, mean per-DOM uncertainty (NaN when none) and, for flow
    MAP, the fill of every way to combine its restarts ('best', 'vote'; from the same restarts)."""
    from genesis.inpaint import inpaint_events

    method = method.split()[0]  # 'flow-map NAME' -> flow-map
    steps = {"flow-map": args.map_steps, "repaint": args.repaint_steps}.get(method, 1)
    t0 = time.time()
    result = inpaint_events(loaded, signal, labels, mask, method, geometry, steps=steps, restarts=args.restarts,
                            seed=args.seed, compare_baselines=False)
    seconds = (time.time() - t0) / len(signal)
    unc = getattr(result, "uncertainty", None)  # (N, 3, P) [hit probability, npe / time spread] if reported
    mean_unc = float(np.nanmean(np.asarray(unc)[:, 0][:, mask])) if unc is not None else math.nan
    return result.filled, seconds, mean_unc, getattr(result, "fills", None) or {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the same arithmetic on any CPU)")
    p.add_argument("--events", type=int, default=100, help="held-out events (every mask type uses them all)")
    p.add_argument("--train-events", type=int, default=6000)
    p.add_argument("--flow-steps", type=int, default=2000, help="flow training steps")
    p.add_argument("--diffusion-steps", type=int, default=2000, help="diffusion training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--presets", default="tiny", choices=("tiny", "default"))
    p.add_argument("--flow", action="append", default=[], metavar="[NAME=]PATH",
                   help="flow checkpoint (skip training); repeat to compare flows in one run, each row then "
                        "named 'flow-map NAME' (NAME defaults to the checkpoint's folder)")
    p.add_argument("--flow-preset", help="flow preset YAML to train (default: configs/flow[_tiny].yaml)")
    p.add_argument("--diffusion", help="diffusion checkpoint (skip training)")
    p.add_argument("--map-steps", type=int, default=100, help="flow MAP optimisation steps per restart")
    p.add_argument("--restarts", type=int, default=3, help="flow MAP restarts")
    p.add_argument("--repaint-steps", type=int, default=50, help="RePaint reverse steps (its defaults otherwise)")
    p.add_argument("--methods", default="flow-map,repaint", help="model methods to run (baselines always run)")
    p.add_argument("--masks", default=";".join(MASKS), help=f"mask types to run, ';'-separated names of {list(MASKS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from genesis import checkpoint
    from genesis.data import schema
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like
    from genesis.inpaint import baseline_fill, parse_mask

    t_start = time.time()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genesis-inpaint-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GENESIS_HOME", str(workdir))
    geo = icecube86_like()
    train_file, held_file = workdir / f"train{args.train_events}.h5", workdir / f"heldout{args.events}.h5"
    if not train_file.exists():
        simulate_to_file(train_file, args.train_events, geo, seed=1)
    if not held_file.exists():
        simulate_to_file(held_file, args.events, geo, seed=2)
    suffix = "" if args.presets == "default" else "_tiny"
    methods = [m for m in args.methods.split(",") if m]
    ckpts = {}
    if "flow-map" in methods:
        preset = Path(args.flow_preset) if args.flow_preset else ROOT / "configs" / f"flow{suffix}.yaml"
        flows = [(f.partition("=")[0], f.partition("=")[2]) if "=" in f else ("", f) for f in args.flow]
        if not flows:
            flows = [("", train_for("flow", preset, train_file, args.flow_steps, args.batch_size, args.device,
                                    workdir))]
        for name, path in flows:
            ckpts[f"flow-map {name or Path(path).parent.name}" if len(flows) > 1 else "flow-map"] = path
    if "repaint" in methods:
        ckpts["repaint"] = args.diffusion or train_for(
            "diffusion", ROOT / "configs" / ("default.yaml" if args.presets == "default" else "tiny.yaml"),
            train_file, args.diffusion_steps, args.batch_size, args.device, workdir)
    device = checkpoint.resolve_device(args.device)
    models = {m: checkpoint.load_model(c, device=device) for m, c in ckpts.items()}
    signal, labels, _ = schema.read_events(held_file)
    true_fit = linefit_dirs(signal, geo)
    rows: dict[tuple[str, str], dict[str, float]] = {}
    hidden: dict[str, int] = {}
    chosen = [name.strip() for name in args.masks.split(";") if name.strip()]
    unknown = sorted(set(chosen) - set(MASKS))
    if unknown:
        p.error(f"unknown mask types {unknown}; choose from {list(MASKS)}")
    for mask_name in chosen:
        mask = parse_mask(MASKS[mask_name], geo, seed=args.seed)
        hidden[mask_name] = int((signal[:, 0][:, mask] > 0).sum())
        for method in ["zero", "neighbours", *[m for m in models if m.startswith("flow-map")], "repaint"]:
            if method in ("zero", "neighbours"):
                t0 = time.time()
                filled, sec, unc = baseline_fill(method, signal, mask, geo), (time.time() - t0) / len(signal), math.nan
            elif method in models:
                filled, sec, unc, combined = run_method(method, models[method], signal, labels, mask, geo, args)
                for name, fill in combined.items():  # both ways to combine the same restarts
                    rows[(mask_name, f"{method} {name}")] = {**score(fill, signal, mask, geo, true_fit),
                                                             "seconds": sec, "unc": unc}
            else:
                continue
            rows[(mask_name, method)] = {**score(filled, signal, mask, geo, true_fit), "seconds": sec, "unc": unc}
            print(f"  {mask_name:<16}{method:<12}{rows[(mask_name, method)][SCORE]:.4g} ({time.time() - t_start:.0f} s)",
                  flush=True)
    from genesis.metrics import angular_error_summary, event_features

    ref = event_features(signal[:, 0], signal[:, 1], geo.positions, geo.string, labels)
    print(f"\n{args.events} held-out events; flow {args.flow_steps} / diffusion {args.diffusion_steps} training steps "
          f"of {args.batch_size} on {args.train_events} events ({args.presets} presets, {args.device}, "
          f"{args.threads} thread(s)); flow MAP {args.map_steps} steps x {args.restarts} restarts; RePaint "
          f"{args.repaint_steps} steps; LineFit of the unmasked events: median error "
          f"{angular_error_summary(ref['linefit_angle'], ref['linefit_valid'])['median_deg']:.1f} deg to the truth")
    print_table(rows, hidden)
    print(f"\ntotal {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
