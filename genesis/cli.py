"""Command line: python -m genesis {simulate,import,validate,stats,train,sample,inpaint,inspect,evaluate,ui}.

Every dashboard action has a command here calling the same package functions. Errors caused by input
(GenesisError) print one clear line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from genesis.errors import ConfigError, GenesisError

EXIT_BAD_INPUT = 2


def _progress_bar(total: int, desc: str, unit: str = "ev") -> Callable[[int, int], None]:
    """A tqdm bar driven by progress(done, total) callbacks; the callback's total wins over `total`."""
    from tqdm import tqdm

    bar = None

    def update(done: int, callback_total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=callback_total or total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= bar.total:
            bar.close()

    return update


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


MAX_SEED = 2**32 - 1


def _seed(text: str) -> int:
    """A random seed: an integer in 0..2**32-1 (what every generator used here accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{MAX_SEED}, got {value}")
    return value


# --- data commands ------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from genesis import geometry
    from genesis.data.simulate import SimConfig, check_request, simulate_to_file

    cfg = SimConfig(energy_min=args.energy_min, energy_max=args.energy_max, noise_rate=args.noise_rate,
                    min_hits=args.min_hits)
    geo = geometry.load(args.geometry)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise GenesisError(f"{out}: file exists; choose another name or pass --force to overwrite")
    check_request(args.events, geo, cfg)  # before any folder is created
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    simulate_to_file(out, args.events, geo, seed=args.seed, cfg=cfg, force=args.force,
                     progress=_progress_bar(args.events, "simulating"))
    print(f"wrote {args.events} events on {geo.n_doms} DOMs ({geo.name}) to {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from genesis import geometry
    from genesis.data import schema

    geo = geometry.from_csv(args.geometry) if args.geometry else None
    summary = schema.validate(args.file, geo)
    print("\n".join(summary.lines()))
    print("OK")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from genesis.data import schema
    from genesis.data.normalization import Normalization, suggest

    n, _, _ = schema.file_info(args.file)
    signal, labels, _ = schema.read_events(args.file, 0, min(n, args.max_events))
    schema.check_finite_labels(labels, args.file)
    geo = schema.read_geometry(args.file)
    reference = {"time_reference": args.time_reference, "representation": "hit"} if args.time_reference != "none" else {}
    if args.npe_reference != "none":
        if args.npe_transform != "log1p":
            raise ConfigError("--npe-reference expected needs --npe-transform log1p (it measures log1p npe)")
        reference.update(npe_reference=args.npe_reference, representation="hit")
    base = Normalization(time_transform=args.time_transform, npe_transform=args.npe_transform,
                         energy_transform=args.energy_transform, time_width_ns=args.time_width_ns, **reference)
    suggested = suggest(signal, labels, geo.positions, base)
    print(f"# suggested normalization from {min(n, args.max_events)} events of {args.file}")
    print("data:\n  normalization:")
    for key, value in suggested.to_dict().items():
        print(f"    {key}: {json.dumps(value)}")
    diffs = suggested.differences(Normalization())
    if diffs:
        print("# differs from the original GENESIS defaults in: " + "; ".join(d.split(':')[0] for d in diffs))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from genesis import geometry
    from genesis.data.importer import import_pulses, parse_column_overrides

    columns = parse_column_overrides(args.column)
    geo = geometry.load(args.geometry)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise GenesisError(f"{out}: file exists; choose another name or pass --force to overwrite")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    report = import_pulses(args.source, out, geo, truth=args.truth, pulse_table=args.pulse_table,
                           truth_table=args.truth_table, columns=columns, match=args.match,
                           tolerance=args.tolerance, drop_unmatched=args.drop_unmatched,
                           chunk_events=args.chunk_events, force=args.force, progress=_progress_bar(0, "importing"))
    print(report.line())
    return 0


# --- model commands -----------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from genesis import config
    from genesis.train import train

    cfg = config.load(args.config, args.set)
    result = train(cfg, run_id=args.run_id, resume=args.resume)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from genesis.sampling import dist_env, labels_from_args, sample_to_file

    labels = labels_from_args(args.labels, args.n, args.energy, args.zenith, args.azimuth, args.x, args.y, args.z)
    rank, world, _ = dist_env()  # under torchrun: every rank draws its share, rank 0 reports
    progress = _progress_bar(len(labels), "sampling" if world == 1 else f"sampling (rank 0 of {world})") \
        if rank == 0 else None
    path = sample_to_file(args.checkpoint, labels, args.out, sampler=args.sampler, steps=args.steps,
                          guidance=args.guidance, seed=args.seed, device=args.device, batch_size=args.batch_size,
                          force=args.force, progress=progress, spacing=args.spacing,
                          on_warning=lambda message: print(f"warning: {message}", file=sys.stderr), bf16=args.bf16,
                          compiled=args.compile)
    if rank == 0:
        print(f"wrote {len(labels)} generated events to {path}" + (f" ({world} ranks)" if world > 1 else ""))
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    from genesis.inpaint import inpaint_to_file

    report = inpaint_to_file(args.checkpoint, args.data, args.events, args.mask, args.method, args.out,
                             steps=args.steps, restarts=args.restarts, seed=args.seed, device=args.device,
                             force=args.force, compare_baselines=not args.no_baselines)
    for message in report["warnings"]:  # labels outside the checkpoint's training ranges: filled anyway
        print(f"warning: {message}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from genesis.inspect import inspect_checkpoint, inspect_config, render_text

    if bool(args.checkpoint) == bool(args.config):
        raise GenesisError("inspect needs exactly one of --checkpoint or --config")
    report = inspect_checkpoint(args.checkpoint, args.batch_size) if args.checkpoint \
        else inspect_config(args.config, args.batch_size)
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report, verbose=args.verbose))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from genesis.evaluate import evaluate_checkpoint, summary_line

    for out in (args.out, args.html):
        if out and Path(out).is_dir():
            raise GenesisError(f"{out}: is a folder; give the name of a file to write")
        if out and Path(out).exists() and not args.force:
            raise GenesisError(f"{out}: file exists; choose another name or pass --force to overwrite")
    report = evaluate_checkpoint(args.checkpoint, data=args.data, simulate=args.simulate, sampler=args.sampler,
                                 steps=args.steps, seed=args.seed, device=args.device, out=args.out,
                                 html=args.html, log_to_mlflow=not args.no_mlflow,
                                 progress=_progress_bar(0, "sampling"))
    print(json.dumps(report["scalars"], indent=2))
    print(summary_line(report), file=sys.stderr)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start `mlflow ui` on the project's store and print the address of our runs in the model-training view."""
    import os
    import subprocess

    from genesis import mlflow_ui, tracking

    store = tracking.Store.default()
    exp_id = mlflow_ui.mark_model_training(store)  # created before the server starts: no first-time race
    base = f"http://{args.host}:{args.port}"
    url = mlflow_ui.runs_url(base, exp_id)
    print(f"Starting the MLflow UI for {store.tracking_uri} (about 15 s) ...", flush=True)
    process = subprocess.Popen(mlflow_ui.ui_command(store, args.host, args.port), env=os.environ.copy())
    try:
        if mlflow_ui.wait_until_up(base, process):
            print(f"MLflow UI ready. Open our runs (model-training view):\n  {url}", flush=True)
        elif process.poll() is None:
            print(f"MLflow UI is slow to start; open it when it answers:\n  {url}", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


def cmd_demo_models(args: argparse.Namespace) -> int:
    """Train the shipped demo checkpoints (make demo-models)."""
    from genesis import demo

    out_dir = Path(args.out_dir) if args.out_dir else demo.DEMO_DIR
    if args.source:  # checkpoints trained elsewhere with the same recipe (e.g. bench/scorecard.py's preset rows)
        specs = [spec for spec in demo.SPECS if spec.kind in (args.only or (spec.kind,))]
        if len(args.source) != len(specs):
            raise GenesisError(f"--from takes one checkpoint per demo model ({', '.join(s.kind for s in specs)}): "
                               f"got {len(args.source)}; name the kinds with --only to export fewer")
        for spec, source in zip(specs, args.source):
            demo.export(Path(source), out_dir / spec.name, {"preset": spec.preset, "trained_by": args.trained_by},
                        kind=spec.kind)
        return 0
    demo.build_demo_models(out_dir, steps=args.steps, batch_size=args.batch_size, events=args.events, seed=args.seed,
                           kinds=tuple(args.only or ()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from genesis.diffusion import SAMPLERS, SPACINGS  # torch is imported by the config anyway
    from genesis.sampling import COMPILE_FROM_EVENTS

    p = argparse.ArgumentParser(prog="python -m genesis", description="GENESIS: generative models of IceCube events")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="simulate events into an HDF5 file")
    s.add_argument("--events", type=_positive_int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--geometry", help="geometry CSV (string,dom,x,y,z), HDF5 data file, or a built-in name: "
                                      "icecube86 (default, the real IceCube-86), icecube86-grid (procedural)")
    s.add_argument("--energy-min", type=float, default=1e3)
    s.add_argument("--energy-max", type=float, default=1e7)
    s.add_argument("--noise-rate", type=float, default=1e-3, help="noise-hit probability per DOM")
    s.add_argument("--min-hits", type=int, default=8, help="trigger: minimum hit DOMs")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("import", help="convert pulse tables (SQLite, Parquet; graphnet layout) into an HDF5 file")
    s.add_argument("source", help="SQLite database (.db), pulse .parquet file, or folder of graphnet Parquet tables")
    s.add_argument("--out", required=True)
    s.add_argument("--truth", help="truth .parquet for a Parquet pulse file (default: truth.parquet next to it)")
    s.add_argument("--pulse-table", help="pulse table (default: the only table besides the truth table)")
    s.add_argument("--truth-table", default="truth")
    s.add_argument("--column", action="append", default=[], metavar="KEY=NAME",
                   help="rename a column, e.g. dom_time=time or energy=primary_energy (keys: graphnet's names)")
    s.add_argument("--match", choices=("auto", "ids", "position"), default="auto",
                   help="pulse -> DOM by string/dom_number ids (auto: when present, positions checked) or position")
    s.add_argument("--tolerance", type=float, default=0.5, help="position tolerance in metres")
    s.add_argument("--drop-unmatched", action="store_true",
                   help="skip pulses on modules the geometry lacks (e.g. IceCube Upgrade) instead of failing")
    s.add_argument("--geometry", help="geometry CSV (string,dom,x,y,z), HDF5 data file, or a built-in name "
                   "(icecube86, icecube86-grid); default: the real IceCube-86")
    s.add_argument("--chunk-events", type=_positive_int, default=1024, help="events read and written at a time")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("validate", help="check an HDF5 event file and print a summary")
    s.add_argument("file")
    s.add_argument("--geometry", help="geometry CSV the file must match")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("stats", help="suggest normalization offsets/scales from data")
    s.add_argument("file")
    s.add_argument("--max-events", type=_positive_int, default=5000)
    s.add_argument("--time-transform", default="ln", choices=("ln", "log10", "none", "asinh"))
    s.add_argument("--time-reference", default="none", choices=("none", "arrival"),
                   help="arrival: times as the delay after direct light (the presets'; implies the hit representation)")
    s.add_argument("--time-width-ns", type=float, default=200.0,
                   help="asinh only: its linear width (the centre is suggested from the data)")
    s.add_argument("--npe-transform", default="none", choices=("none", "log1p"))
    s.add_argument("--npe-reference", default="none", choices=("none", "expected"),
                   help="expected: hit npe measured from the charge the light path predicts (needs log1p; implies the "
                        "hit representation)")
    s.add_argument("--energy-transform", default="none", choices=("none", "log10"))
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("train", help="train a model (MLflow-tracked)")
    s.add_argument("--config", help="YAML config (e.g. configs/tiny.yaml)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")
    s.add_argument("--resume", help="checkpoint to continue from")
    s.add_argument("--run-id", help="existing MLflow run to log into (used by the launcher)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate events from a checkpoint into HDF5")
    s.add_argument("--checkpoint", required=True)
    # --events: the same as --n, which torchrun's own parser would take for an abbreviation of its options
    s.add_argument("--n", "--events", dest="n", type=_positive_int, default=1,
                   help="events per label row (or in all, with --labels)")
    s.add_argument("--labels", help="CSV with columns energy,zenith,azimuth,x,y,z")
    for name, default in (("energy", 1e5), ("zenith", 1.0), ("azimuth", 1.0), ("x", 0.0), ("y", 0.0), ("z", 0.0)):
        s.add_argument(f"--{name}", type=float, default=default)
    s.add_argument("--sampler", choices=SAMPLERS, help="default: the checkpoint's own (its diffusion.sampler)")
    s.add_argument("--steps", type=_positive_int, help="default: the checkpoint's own (diffusion.sampling_steps)")
    s.add_argument("--spacing", choices=SPACINGS,
                   help="time-step spacing of ddim/dpmpp2m/unipc (default: the sampler's)")
    s.add_argument("--guidance", type=float, default=1.0)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", default="auto", help="under torchrun, auto/cuda = each rank's own GPU")
    s.add_argument("--batch-size", type=_positive_int,
                   help="events per batch (default 64 on CPU, 256 on a GPU); the events depend on it and the seed, "
                        "not on the number of ranks")
    s.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="run the network in bfloat16 (faster on GPUs and on CPUs with AVX512-BF16 or AMX, slower on "
                        "other CPUs; recorded in the file). Default: a diffusion network where the device runs "
                        "bfloat16 natively")
    s.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="run a diffusion network through torch.compile: faster steps after a one-off compile of "
                        "20-60 s (needs a C++ compiler on a CPU); recorded in the file. Default: on a CPU "
                        f"from {COMPILE_FROM_EVENTS:,} events")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("inpaint", help="fill masked or dead DOMs")
    s.add_argument("--checkpoint", help="flow (flow-map) or diffusion (repaint) checkpoint; not needed for baselines")
    s.add_argument("--data", required=True)
    s.add_argument("--events", default="0", help="comma-separated event indices, e.g. 0,5,9")
    s.add_argument("--mask", required=True, help="e.g. strings:36,79 | random:0.1 | deepcore | sphere:x,y,z,r | dead:FILE; join with +")
    s.add_argument("--method", default="flow-map", choices=("flow-map", "repaint", "neighbours", "zero"))
    s.add_argument("--steps", type=_positive_int, default=200, help="MAP optimisation steps or RePaint steps")
    s.add_argument("--restarts", type=_positive_int, default=3,
                   help="flow-map restarts (from flow samples, or the hit head's); combined as flow.inpaint_fill says")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--no-baselines", action="store_true", help="skip the zero/neighbour comparison")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_inpaint)

    s = sub.add_parser("inspect", help="describe a checkpoint or a config")
    s.add_argument("--checkpoint")
    s.add_argument("--config")
    s.add_argument("--verbose", action="store_true", help="list every module")
    s.add_argument("--batch-size", type=_positive_int, default=64, help="for the memory estimate")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("evaluate", help="physics quality of a checkpoint against simulation")
    s.add_argument("--checkpoint", required=True)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--data", help="held-out HDF5 reference file")
    g.add_argument("--simulate", type=_positive_int, help="simulate this many reference events")
    s.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the checkpoint's own")
    s.add_argument("--steps", type=_positive_int, default=None, help="default: the checkpoint's own")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True, help="report JSON")
    s.add_argument("--html", help="report HTML with figures")
    s.add_argument("--no-mlflow", action="store_true", help="do not log the results to the checkpoint's run")
    s.add_argument("--force", action="store_true", help="overwrite existing report files")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("ui", help="start the MLflow UI on the project's store, in its model-training view")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    s.set_defaults(func=cmd_ui)

    s = sub.add_parser("demo-models", help="train the small demo checkpoints shipped for the Sample and Inpaint pages")
    s.add_argument("--out-dir", help="where the checkpoints go (default: genesis/resources/demo, the shipped ones)")
    s.add_argument("--steps", type=_positive_int, default=2000, help="training steps per model")
    s.add_argument("--batch-size", type=_positive_int, default=64)
    s.add_argument("--events", type=_positive_int, default=20000, help="simulated training events")
    s.add_argument("--seed", type=_seed, default=1, help="simulator seed of the training events")
    s.add_argument("--only", nargs="+", choices=("diffusion", "flow"),
                   help="train only these demo models (default: all); the others stay as they are")
    s.add_argument("--from", dest="source", nargs="+", metavar="PT",
                   help="export these checkpoints (trained with the same recipe elsewhere) instead of training: "
                        "diffusion then flow, or those of --only")
    s.add_argument("--trained-by", default="", help="with --from: the command that trained them (provenance)")
    s.set_defaults(func=cmd_demo_models)
    return p



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GenesisError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # always one line
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
