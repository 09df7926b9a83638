"""Demo checkpoints shipped with the code, so the Sample and Inpaint pages work on a fresh clone.

`build_demo_models()` (CLI `python -m genesis demo-models`, `make demo-models`) simulates a training file,
trains one small diffusion model (configs/tiny.yaml) and one small flow (configs/flow_tiny.yaml) with the
project's own trainer for a fixed step budget, and exports each as a slim checkpoint: the weights that
sampling uses (EMA where there is one), no optimizer or scheduler state, and a `provenance` record (the
command, git commit, data, steps, wall time, validation loss, torch threads). Every recipe trains with
TRAIN_THREADS torch threads, in its own process or in this one (the arithmetic, and so the weights, depend on
the thread count); the two trainings run side by side in two processes (on 2 cores that is about twice as fast
as one after the other).
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from genesis import checkpoint, config
from genesis.errors import CheckpointError
from genesis.paths import PACKAGE_ROOT

DEMO_DIR = PACKAGE_ROOT / "genesis" / "resources" / "demo"


@dataclass(frozen=True)
class DemoSpec:
    """One demo model: its file name and the preset it is trained from."""

    name: str
    preset: str
    kind: str


SPECS = (DemoSpec("demo-diffusion.pt", "configs/tiny.yaml", "diffusion"),
         DemoSpec("demo-flow.pt", "configs/flow_tiny.yaml", "flow"))


def demo_checkpoints(folder: Path = DEMO_DIR) -> list[Path]:
    """The shipped demo checkpoints that exist, diffusion first."""
    return [folder / s.name for s in SPECS if (folder / s.name).is_file()]


def slim_state(state: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict without optimizer/scheduler state, keeping only the weights sampling uses."""
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    return {**state, "model": weights, "ema": None, "optimizer": None, "scheduler": None, "provenance": provenance}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


LOG_EVERY = 100  # training steps between progress lines (each model prints its step, loss and events/s)
TRAIN_THREADS = 1  # torch threads of every demo training: the shipped weights were made with one


def _worker_init() -> None:
    """The trainer's progress lines on stderr."""
    import logging

    train_log = logging.getLogger("genesis.train")
    if not train_log.handlers:  # called again in the same process (jobs=1): one handler, not one per call
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        train_log.addHandler(handler)
    train_log.setLevel(logging.INFO)


def _train(spec: DemoSpec, data: str, steps: int, batch_size: int, workdir: str) -> dict[str, Any]:
    """Train one demo model with the bare trainer (no MLflow run: demo models are not lab runs), with
    TRAIN_THREADS torch threads (the caller's setting is restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return {**_fit(spec, data, steps, batch_size, workdir), "torch_threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(before)


def _fit(spec: DemoSpec, data: str, steps: int, batch_size: int, workdir: str) -> dict[str, Any]:
    import torch

    from genesis.train import DistContext, StopRequested, Trainer

    overrides = [f"data.path={data}", f"train.max_steps={steps}", f"train.batch_size={batch_size}", "train.epochs=100000",
                 "train.max_minutes=0", "train.device=cpu", "train.eval_events=0", f"train.log_every={LOG_EVERY}"]
    cfg = config.load(PACKAGE_ROOT / spec.preset, overrides)
    trainer = Trainer(cfg, None, None, DistContext(), torch.device("cpu"))
    trainer.ckpt_dir = Path(workdir) / spec.name.removesuffix(".pt")
    trainer.ckpt_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trainer.fit(StopRequested())
    return {"checkpoint": str(trainer.ckpt_dir / "last.pt"), "preset": spec.preset, "overrides": overrides[1:],
            "steps": trainer.step, "train_wall_s": round(time.time() - t0, 1), "best_val_loss": trainer.best_val}


def build_demo_models(out_dir: Path = DEMO_DIR, steps: int = 2000, batch_size: int = 64, events: int = 20000,
                      seed: int = 1, log: Callable[[str], None] = print, jobs: int = len(SPECS),
                      kinds: tuple[str, ...] = ()) -> list[Path]:
    """Simulate `events` training events, train the SPECS models of `kinds` (empty: all) for `steps` steps (in
    `jobs` processes) and write the slim checkpoints into out_dir. Returns their paths."""
    specs = tuple(s for s in SPECS if not kinds or s.kind in kinds)
    from genesis.data import schema
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genesis-demo-") as work:
        data = Path(work) / "train.h5"
        log(f"simulating {events} training events (seed {seed}) ...")
        simulate_to_file(data, events, icecube86_like(), seed=seed)
        log(f"training {', '.join(s.preset for s in specs)} for {steps} steps of {batch_size} events each ...")
        n = len(specs)
        args = (specs, [str(data)] * n, [steps] * n, [batch_size] * n, [work] * n)
        if min(jobs, n) > 1:
            with ProcessPoolExecutor(min(jobs, n), mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
                results = list(pool.map(_train, *args))
        else:  # in this process, one after the other
            _worker_init()
            results = list(map(_train, *args))
        data_record = schema.describe_source(data, events)  # the simulator's settings, seed and event count
        return [export(Path(r.pop("checkpoint")), out_dir / spec.name, {"data": data_record, **r}, log)
                for spec, r in zip(specs, results)]


def export(source: Path, out: Path, provenance: dict[str, Any], log: Callable[[str], None] = print,
           kind: str | None = None) -> Path:
    """Write the slim version of checkpoint `source` to `out` with its provenance (plus the command that
    ran and the git commit). Used for checkpoints trained elsewhere with the same recipe (--from)."""
    state = checkpoint.load_state(source)
    if kind and state["kind"] != kind:
        raise CheckpointError(f"{source}: a {state['kind']} checkpoint; {out.name} needs a {kind} one")
    provenance = {"command": "python -m genesis demo-models " + " ".join(sys.argv[2:]), "git_commit": git_commit(),
                  "steps": state.get("step"), "best_val_loss": state.get("best_val_loss"),
                  "train_wall_s": state.get("train_seconds"), "source_run_id": (state.get("mlflow") or {}).get("run_id"),
                  **provenance}
    described = provenance.get("data")
    if isinstance(described, dict) and "producer" in described:  # the training file is temporary: keep what made it
        state = {**state, "data": {**(state.get("data") or {}), "source": described}}
    if (provenance.get("data") or {}).get("producer"):  # what made the training data, where the reference simulation looks
        state = {**state, "data": {**(state.get("data") or {}), "source": provenance["data"]}}
    path = checkpoint.save(slim_state(state, provenance), out)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {json.dumps(provenance, default=str)}")
    return path
