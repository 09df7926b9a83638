"""Inpainting benchmark: every method on held-out simulated events and several mask types.

Trains a flow and a diffusion model for the same short budget (or takes --flow/--diffusion checkpoints),
then for each mask type (random DOMs, whole strings, DeepCore, a sphere) fills the masked DOMs with
flow MAP, RePaint, the neighbour mean and zero fill, and prints one table: MSE in normalized space, npe and
time errors, hit accuracy, total-charge error, MSE ratio against the zero and neighbour baselines
(> 1 = better than the baseline), and seconds per event. Baselines are measured in the same run.

    python bench/inpaint.py --minutes 2 --device cpu --events 20            # CPU, tiny presets
    python bench/inpaint.py --minutes 10 --device cuda --events 200 --presets default
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MASKS = {"random 10%": "random:0.1", "strings 36,45": "strings:36,45", "DeepCore": "deepcore",
         "sphere r=150 m": "sphere:0,0,-250,150"}


def train_for(kind: str, preset: Path, data: Path, minutes: float, device: str, workdir: Path) -> Path:
    """Train with the bare Trainer (no MLflow needed) for `minutes`; returns last.pt."""
    from genesis import config
    from genesis.checkpoint import resolve_device
    from genesis.train import DistContext, StopRequested, Trainer

    cfg = config.load(preset, [f"data.path={data}", f"train.max_minutes={minutes}", f"train.device={device}",
                               "train.epochs=1000"])
    trainer = Trainer(cfg, None, None, DistContext(), resolve_device(device))
    trainer.ckpt_dir = workdir / f"ckpt_{kind}"
    trainer.ckpt_dir.mkdir(parents=True, exist_ok=True)
    trainer.fit(StopRequested())
    print(f"trained {kind} ({preset.name}) for {minutes} min: {trainer.step} steps, val loss {trainer.best_val:.4g}")
    return trainer.ckpt_dir / "last.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help="training budget per model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--events", type=int, default=20, help="held-out events per mask type")
    p.add_argument("--train-events", type=int, default=3000)
    p.add_argument("--presets", default="tiny", choices=("tiny", "default"))
    p.add_argument("--flow", help="flow checkpoint (skip training)")
    p.add_argument("--diffusion", help="diffusion checkpoint (skip training)")
    p.add_argument("--map-steps", type=int, default=200)
    p.add_argument("--repaint-steps", type=int, default=100)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    from genesis import checkpoint
    from genesis.data import schema
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like
    from genesis.inpaint import inpaint_events, parse_mask

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genesis-inpaint-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GENESIS_HOME", str(workdir))
    geo = icecube86_like()
    train_file, held_file = workdir / "train.h5", workdir / "heldout.h5"
    if not train_file.exists():
        simulate_to_file(train_file, args.train_events, geo, seed=1)
    if not held_file.exists():
        simulate_to_file(held_file, args.events, geo, seed=2)
    suffix = "" if args.presets == "default" else "_tiny"
    flow_ckpt = args.flow or train_for("flow", ROOT / "configs" / f"flow{suffix}.yaml", train_file, args.minutes,
                                       args.device, workdir)
    diff_ckpt = args.diffusion or train_for("diffusion", ROOT / "configs" / f"{'default' if not suffix else 'tiny'}.yaml",
                                            train_file, args.minutes, args.device, workdir)
    device = checkpoint.resolve_device(args.device)
    models = {"flow-map": checkpoint.load_model(flow_ckpt, device=device),
              "repaint": checkpoint.load_model(diff_ckpt, device=device)}
    signal, labels, _ = schema.read_events(held_file)
    header = (f"{'mask':<16}{'method':<12}{'MSE norm':>10}{'npe err':>10}{'time err ns':>12}{'hit acc':>9}"
              f"{'charge err':>11}{'vs zero':>9}{'vs neigh':>9}{'s/event':>9}")
    print(f"\n{args.events} held-out events per mask; models trained {args.minutes} min each on {args.device}")
    print(header + "\n" + "-" * len(header))
    for mask_name, spec in MASKS.items():
        mask = parse_mask(spec, geo, seed=0)
        rows = {}
        for method, loaded in models.items():
            steps = args.map_steps if method == "flow-map" else args.repaint_steps
            result = inpaint_events(loaded, signal, labels, mask, method, geo, steps=steps, compare_baselines=True)
            ratios = result.ratios  # baselines scored in the same (this checkpoint's) normalization
            rows[method] = (result.metrics[method], result.seconds / len(signal), ratios["zero"], ratios["neighbours"])
            if method == "flow-map":  # baseline rows shown in the flow's normalization
                for base in ("zero", "neighbours"):
                    m = result.metrics[base]
                    rows[base] = (m, 0.0, result.metrics["zero"]["mse_normalized"] / max(m["mse_normalized"], 1e-12),
                                  result.metrics["neighbours"]["mse_normalized"] / max(m["mse_normalized"], 1e-12))
        for method in ("zero", "neighbours", "flow-map", "repaint"):
            m, sec, vs_zero, vs_neigh = rows[method]
            time_err = m["time_abs_error_ns"]
            print(f"{mask_name:<16}{method:<12}{m['mse_normalized']:>10.4g}{m['npe_abs_error']:>10.3g}"
                  f"{(time_err if time_err is not None and np.isfinite(time_err) else float('nan')):>12.4g}"
                  f"{m['hit_accuracy']:>9.3f}{m['total_charge_error']:>11.3g}{vs_zero:>9.2f}{vs_neigh:>9.2f}{sec:>9.3f}")
    print("\nMSE is in each checkpoint's normalized space; the ratios compare a method with the baselines scored in "
          "that same space (baseline rows: the flow's). npe/time errors and hit accuracy are physical.")


if __name__ == "__main__":
    main()
