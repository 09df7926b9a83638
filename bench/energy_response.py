"""Does the light follow the energy? Train model variants on the same data and step budget and print, per
energy decade, the mean log10 total npe and the mean number of hit DOMs of generated events against the
simulation at the same labels (with standard errors), the charge-energy slope (least-squares slope of an
event's log10(1 + total npe) on log10 E, with its standard error), and the classifier AUCs of genesis.evaluate.

    python bench/energy_response.py --device cuda --jobs 4 --variants before,light,head,light+head
    python bench/energy_response.py --variants flow-before,flow+light --seeds 2 --jobs 2 --heldout report
    python bench/energy_response.py --device cpu --steps 20 --train-events 600 --eval-events 200   # smoke run

Each variant is a tiny preset plus the overrides in VARIANTS: diffusion variants configs/tiny.yaml ("before":
without model.light_feature and model.dom_head_conditioning, as it was until they were measured here), flow
variants configs/flow_tiny.yaml ("flow-before": without flow.light_feature). The step budget is the CPU
protocol's (2000 steps of 64 events on 20000 simulated events), so a GPU runs it in minutes. "strings W1" is
the normalized W1 of the number of hit strings per event (W1 / the simulation's standard deviation).
Variants are chosen on the *selection* held-out set (--heldout selection, simulator seed 3); numbers to quote
come from the *report* set (--heldout report, seed 2, the scorecard's held-out file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# (preset, overrides): configs/tiny.yaml's model has both handles on the energy (the "light+head" row)
NO_LIGHT, NO_HEAD_LABELS = "model.light_feature=false", "model.dom_head_conditioning=false"
DIFFUSION, FLOW = "tiny.yaml", "flow_tiny.yaml"
VARIANTS = {
    "before": (DIFFUSION, [NO_LIGHT, NO_HEAD_LABELS]),
    "light": (DIFFUSION, [NO_HEAD_LABELS]),
    "head": (DIFFUSION, [NO_LIGHT]),
    "light+head": (DIFFUSION, []),
    "light+head+snr5": (DIFFUSION, ["diffusion.min_snr_gamma=5"]),
    "flow-before": (FLOW, ["flow.light_feature=false"]),
    "flow+light": (FLOW, []),
}
HELDOUT_SEEDS = {"report": 2, "selection": 3}
DECADES = (3, 4, 5, 6)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--variants", default="before,light+head", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per variant (train.seed 0..n-1)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-events", type=int, default=20000)
    p.add_argument("--eval-events", type=int, default=1000)
    p.add_argument("--heldout", default="selection", choices=tuple(HELDOUT_SEEDS))
    p.add_argument("--sampler", default="ddim", help="sampler of the evaluation (genesis.diffusion.SAMPLERS)")
    p.add_argument("--sampling-steps", type=int, default=50)
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workdir", default=str(ROOT / "data" / "energy_response"))
    p.add_argument("--set", action="append", default=[], help="extra override for every variant")
    return p.parse_args(argv)


def simulated(path: Path, n: int, seed: int) -> Path:
    from genesis.data import schema
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like

    if not (path.is_file() and schema.file_info(path)[0] == n):
        simulate_to_file(path, n, icecube86_like(), seed=seed, force=True)
    return path


def train_and_evaluate(name: str, seed: int, args: argparse.Namespace, train_file: str, held_file: str) -> dict:
    """Train one variant without MLflow, evaluate it on the held-out labels; returns its row."""
    preset, overrides = VARIANTS[name]
    import torch

    from genesis import checkpoint, config, evaluate
    from genesis.data import schema
    from genesis.train import DistContext, StopRequested, Trainer

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*outside the training range")  # a few held-out labels, by design
    overrides = [f"data.path={train_file}", f"train.device={args.device}", f"train.max_steps={args.steps}",
                 f"train.batch_size={args.batch_size}", "train.epochs=1000", "train.eval_events=0",
                 f"train.seed={seed}", "train.checkpoint_every=500", *overrides, *args.set]
    cfg = config.load(ROOT / "configs" / preset, overrides)
    device = checkpoint.resolve_device(args.device)
    trainer = Trainer(cfg, None, None, DistContext(), device)
    trainer.ckpt_dir = Path(args.workdir) / f"{name.replace('+', '_')}_s{seed}"
    trainer.ckpt_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trainer.fit(StopRequested())
    train_s = time.time() - t0
    loaded = checkpoint.load_model(trainer.ckpt_dir / "last.pt", device=device)
    signal, labels, _ = schema.read_events(held_file)
    ev = evaluate.run_evaluation(loaded, signal, labels, sampler=args.sampler, steps=args.sampling_steps, seed=0,
                                 batch_size=512)
    row = {"variant": name, "seed": seed, "preset": preset, "overrides": overrides, "train_s": train_s,
           "checkpoint": str(trainer.ckpt_dir / "last.pt"), "scalars": ev.report["scalars"],
           "per_decade": per_decade(ev.gen_signal, ev.ref_signal, labels),
           "slope": {who: charge_energy_slope(sig, labels) for who, sig in (("gen", ev.gen_signal),
                                                                            ("ref", ev.ref_signal))}}
    (trainer.ckpt_dir / "row.json").write_text(json.dumps(row, indent=2))  # kept if a later job fails
    return row


def per_decade(gen: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Mean and standard error of log10(1 + total npe) and of hit DOMs per energy decade, gen and ref."""
    decade = np.floor(np.log10(labels[:, 0])).astype(int)
    out: dict[str, dict[str, list[float]]] = {}
    for d in DECADES:
        sel = decade == d
        if not sel.any():
            continue
        row = {}
        for who, sig in (("gen", gen[sel]), ("ref", ref[sel])):
            lq, nh = np.log10(1 + sig[:, 0].sum(1)), (sig[:, 0] > 0).sum(1).astype(float)
            se = lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
            row[who] = [float(lq.mean()), se(lq), float(nh.mean()), se(nh)]
        out[f"1e{d}"] = row
    return out


def charge_energy_slope(signal: np.ndarray, labels: np.ndarray) -> list[float]:
    """[slope, its standard error] of the least-squares line of log10(1 + total npe) on log10 E, events
    signal (N, 2, P) with labels (N, 6): how much brighter an event gets per decade of energy."""
    x, y = np.log10(labels[:, 0]), np.log10(1 + signal[:, 0].sum(1))
    (slope, intercept), cov = np.polyfit(x, y, 1, cov=True)
    return [float(slope), float(np.sqrt(cov[0, 0]))]


def print_rows(rows: list[dict]) -> None:
    print(f"\n{'variant':<14} {'seed':>4} {'AUC':>6} {'AUC|lab':>7} {'strings W1':>10} {'slope gen/ref':>15} "
          + " ".join(f"{'1e' + str(d):>21}" for d in DECADES)
          + "   (per decade: mean log10 npe gen/ref, hit DOMs gen/ref)")
    for r in rows:
        s = r["scalars"]
        cells = []
        for d in DECADES:
            c = r["per_decade"].get(f"1e{d}")
            cells.append(f"{c['gen'][0]:.2f}/{c['ref'][0]:.2f} {c['gen'][2]:4.0f}/{c['ref'][2]:4.0f}" if c else "-")
        slope = f"{r['slope']['gen'][0]:.3f}/{r['slope']['ref'][0]:.3f}"
        print(f"{r['variant']:<14} {r['seed']:>4} {s.get('eval/auc', float('nan')):6.3f} "
              f"{s.get('eval/auc_conditional', float('nan')):7.3f} {s.get('eval/w1_n_hit_strings', float('nan')):10.2f} "
              f"{slope:>15} " + " ".join(f"{c:>21}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.workdir = str(work)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    train_file = simulated(work / "train.h5", args.train_events, seed=1)
    held_file = simulated(work / f"heldout_{args.heldout}.h5", args.eval_events, HELDOUT_SEEDS[args.heldout])
    jobs = [(n, s) for n in names for s in range(args.seeds)]
    import multiprocessing

    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_evaluate, n, s, args, str(train_file), str(held_file)) for n, s in jobs]
        rows = [f.result() for f in futures]
    print_rows(rows)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = work / f"energy_response_{args.heldout}.json"
    out.write_text(json.dumps({"args": vars(args), "commit": commit, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
