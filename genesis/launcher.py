"""Start and stop training subprocesses that outlive the dashboard.

launch(): the MLflow run is created first (params, tags, request id), the config is written next to the
run's log, then `python -m genesis train --config <file> --run-id <id>` starts from an argv list (no
shell) in its own process group with stdout/stderr to the run's log file. A file lock plus the request
id make a repeated call (rerun, double click, second tab) return the same run instead of a new process.
stop(): SIGTERM to the group (the trainer saves last.pt and ends the run KILLED), SIGKILL after a timeout;
the run's tag genesis.stop records which of the two ended it ("SIGTERM" or "killed after timeout ...").
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dataclasses import dataclass

from genesis import config, distill, paths, tracking
from genesis.errors import DataError, GenesisError
from genesis.train import check_data, log_file_for

log = logging.getLogger("genesis.launcher")


@contextmanager
def _launch_lock() -> Iterator[None]:
    lock_path = paths.mlruns_dir() / ".launch.lock"
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def find_request(store: tracking.Store, experiment: str, request_id: str) -> str | None:
    frame, _ = store.search([experiment], f"tags.`{tracking.TAG_REQUEST}` = '{request_id}'", max_results=1)
    return None if frame.empty else str(frame.iloc[0]["run_id"])


def train_argv(config_path: Path, run_id: str, gpus: int) -> list[str]:
    """argv of the trainer; torchrun (DDP) when more than one GPU is requested."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
                "-m", "genesis", "train", "--config", str(config_path), "--run-id", run_id]
    return [sys.executable, "-m", "genesis", "train", "--config", str(config_path), "--run-id", run_id]


@dataclass(frozen=True)
class Preflight:
    """What a launch would train on, and every reason it cannot start (empty when it can)."""

    n_events: int = 0
    n_doms: int = 0
    splits: tuple[tuple[str, int], ...] = ()  # (split, events) for train, val, test
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        sizes = ", ".join(f"{n:,} {name}" for name, n in self.splits)
        return f"{self.n_events:,} events of {self.n_doms:,} DOMs" + (f": {sizes}" if sizes else "")


def _divisors_near(n: int, target: int, count: int = 3) -> list[int]:
    return sorted((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), d))[:count]


def preflight(cfg: config.RunConfig, gpus: int = 1) -> Preflight:
    """Check a config against its dataset before anything starts: the file is readable, every split the
    trainer opens has events (on every DDP rank), and the model can tokenise the detector (P divisible by
    the patch size). Each problem says what is wrong and what to change."""
    try:
        cfg = check_data(cfg)
        from genesis.data import dataset, schema

        n, p, _ = schema.file_info(cfg.data.path)
        dataset.resolve_geometry(cfg.data)
    except GenesisError as exc:
        return Preflight(problems=(str(exc),))
    n = min(n, cfg.data.max_events) if cfg.data.max_events else n
    d = cfg.data
    n_val, n_test = int(round(n * d.val_fraction)), int(round(n * d.test_fraction))
    n_train = n - n_val - n_test
    ranks = max(1, int(gpus))
    problems = []
    if n_train < ranks:
        problems.append(f"the training split is empty: {n} events leave {n_train} after {n_val} for validation "
                        f"and {n_test} for test; use a larger dataset or lower data.val_fraction/test_fraction")
    if n_val < ranks:
        problems.append(f"the validation split is empty: {n} events × data.val_fraction {d.val_fraction:g} = "
                        f"{n_val}{f' for {ranks} GPUs' if ranks > 1 else ''}; use a larger dataset (at least "
                        f"{math.ceil(ranks / max(d.val_fraction, 1e-9)):,} events) or raise data.val_fraction")
    section = "model" if cfg.kind == "diffusion" else "flow"
    patch = getattr(cfg, section).patch_size
    if p % patch:
        problems.append(f"the dataset has P = {p} DOMs, which {section}.patch_size {patch} does not divide; "
                        f"choose a divisor of {p}, e.g. {', '.join(map(str, _divisors_near(p, patch)))}")
    return Preflight(n, p, (("train", n_train), ("val", n_val), ("test", n_test)), tuple(problems))


def launch(cfg: config.RunConfig, request_id: str | None = None, gpus: int = 0,
           store: tracking.Store | None = None) -> str:
    """Create the run and start its trainer process; returns the run id (the same one for a repeated request)."""
    # a bad dataset is reported before any run exists; paths made absolute; a distillation run takes model,
    # diffusion and normalization from its teacher (the params show the student)
    cfg = check_data(distill.student_config(cfg))
    checked = preflight(cfg, max(1, gpus))
    if not checked.ok:  # no run is created for a config that would fail in its first second
        raise DataError("; ".join(checked.problems))
    if gpus > 1:
        import torch

        if torch.cuda.device_count() < gpus:
            raise GenesisError(f"{gpus} GPUs requested but {torch.cuda.device_count()} are available")
    store = store or tracking.Store.default()
    store.experiment_id(cfg.experiment)  # create database and experiment before any subprocess
    with _launch_lock():
        if request_id:
            existing = find_request(store, cfg.experiment, request_id)
            if existing:
                return existing
        tags = {tracking.TAG_KIND: cfg.kind, tracking.TAG_HOST: socket.gethostname(), **distill.run_tags(cfg)}
        if request_id:
            tags[tracking.TAG_REQUEST] = request_id
        run_id = store.create_run(cfg.experiment, cfg.name, tags, tracking.run_params(cfg))
        log_path = log_file_for(run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        store.set_tags(run_id, {tracking.TAG_LOG: str(log_path)})  # before the trainer looks for it
        cfg_path = log_path.with_suffix(".yaml")
        config.save(cfg, cfg_path)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
               "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(train_argv(cfg_path, run_id, gpus), stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=paths.home(), env=env, start_new_session=True)
        store.set_tags(run_id, {tracking.TAG_PID: str(proc.pid)})
    return run_id


def _pid(store: tracking.Store, run_id: str) -> int | None:
    pid = store.run(run_id).data.tags.get(tracking.TAG_PID)
    return int(pid) if pid else None


KILLED_AFTER_TIMEOUT = "killed after timeout"


def stop(run_id: str, timeout: float = 30.0, store: tracking.Store | None = None) -> str:
    """SIGTERM the run's process group, SIGKILL after `timeout`; returns the run's final status.

    The run's tag genesis.stop says how it ended: "SIGTERM" when the trainer stopped by itself (it saved
    last.pt), or "killed after timeout ..." when it had to be killed; the kill is also written to the
    run's log, so a stop that lost the final checkpoint is never mistaken for a clean one."""
    store = store or tracking.Store.default()
    run = store.run(run_id)
    if run.info.status != "RUNNING":
        return run.info.status
    pid = _pid(store, run_id)
    if pid is None or not tracking.process_alive(pid):
        store.end_run(run_id, "FAILED", "process lost")
        return "FAILED"
    _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and tracking.process_alive(pid):
        _reap(pid)
        time.sleep(0.2)
    killed = tracking.process_alive(pid)
    if killed:
        marker = f"{KILLED_AFTER_TIMEOUT} (SIGKILL {timeout:g} s after SIGTERM)"
        log.warning("run %s: trainer pid %d still alive %g s after SIGTERM: %s", run_id, pid, timeout, marker)
        _signal_group(pid, signal.SIGKILL)
        _append_log(store, run_id, f"genesis.launcher: {marker}; last.pt may be older than the last step")
        store.set_tags(run_id, {tracking.TAG_STOP: marker})
        kill_deadline = time.time() + 10
        while time.time() < kill_deadline and tracking.process_alive(pid):
            _reap(pid)
            time.sleep(0.1)
    else:
        _reap(pid)
        store.set_tags(run_id, {tracking.TAG_STOP: "SIGTERM"})
    if store.run(run_id).info.status == "RUNNING":  # it died before it could end its own run
        store.end_run(run_id, "KILLED", f"stopped by the user ({KILLED_AFTER_TIMEOUT})" if killed
                      else "stopped by the user (the trainer exited without ending its run)")
    return store.run(run_id).info.status


def _append_log(store: tracking.Store, run_id: str, line: str) -> None:
    path = store.run(run_id).data.tags.get(tracking.TAG_LOG)
    if path:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} WARNING {line}\n")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status if the trainer is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(store: tracking.Store, run_id: str, lines: int = 30) -> str:
    """Last lines of the run's log file ('' when there is none yet)."""
    return tail_file(store.run(run_id).data.tags.get(tracking.TAG_LOG), lines)


def tail_file(path: str | Path | None, lines: int = 30) -> str:
    """Last lines of a log file ('' when there is none yet); reads only its end, never the whole file."""
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200 * lines))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------------------------ launch form
# What the Train page's generated form shows. Keys set by other widgets (dataset, device) and testing aids
# (fail_at_step: makes the loss NaN on purpose) are not offered; a YAML file or --set still reaches them.
FORM_SECTIONS = {"diffusion": ("model", "diffusion", "data", "train"), "flow": ("flow", "data", "train")}
FORM_HIDDEN = frozenset({"data.path", "train.device", "train.fail_at_step"})
FORM_LABELS = {
    "model.hidden_size": "Token width", "model.depth": "DiT blocks", "model.num_heads": "Attention heads",
    "model.patch_size": "DOMs per token (patch size)", "model.fusion": "Signal/geometry fusion",
    "model.label_dim": "Number of labels", "model.time_embed_dim": "Step embedding size",
    "model.mlp_ratio": "MLP width ratio", "model.dropout": "Dropout", "model.label_dropout": "Label dropout (CFG)",
    "model.conditioning": "Conditioning", "model.dom_head_width": "Per-DOM head width (0 = off)",
    "diffusion.timesteps": "Diffusion steps T", "diffusion.schedule": "Noise schedule",
    "diffusion.objective": "Prediction target", "diffusion.sampler": "Sampler",
    "diffusion.sampling_steps": "Sampling steps", "diffusion.spacing": "Sampling time steps (empty = the sampler's)",
    "diffusion.eta": "DDIM eta",
    "diffusion.guidance_scale": "Guidance scale", "diffusion.min_snr_gamma": "Min-SNR gamma (0 = off)",
    "diffusion.hit_weight": "Hit DOM loss weight", "diffusion.no_hit_weight": "No-hit DOM loss weight",
    "flow.num_couplings": "Coupling layers", "flow.hidden_size": "Coupling network width",
    "flow.depth": "Transformer layers per coupling", "flow.num_heads": "Attention heads",
    "flow.patch_size": "DOMs per token (patch size)", "flow.scale_bound": "Log-scale bound",
    "flow.dequant_noise": "Dequantization noise", "flow.hit_threshold": "Hit threshold (pe)",
    "flow.conditioning": "Conditioning", "flow.dom_width": "Per-DOM network width (0 = off)",
    "flow.inpaint_fill": "Flow MAP fill of the restarts", "flow.dom_neighbours": "Per-DOM nets read the DOMs above/below",
    "flow.hit_head": "Hit head width (0 = off)", "flow.light_feature": "Expected light per DOM",
    "model.light_feature": "Expected light per DOM", "model.dom_head_conditioning": "Labels into the per-DOM head",
    "diffusion.redraw_untriggered": "Redraw events below the trigger",
    "diffusion.dequantize_npe": "Dequantized whole-pe charge (floor when sampling)",
    "data.geometry": "Geometry CSV (empty = from the data file)", "data.val_fraction": "Validation fraction",
    "data.test_fraction": "Test fraction", "data.split_seed": "Split seed", "data.in_memory": "Load into memory",
    "data.max_events": "Max events (0 = all)", "data.num_workers": "Loader workers",
    "data.noise_radius_m": "Detector noise apart: radius [m] (0 = learned)",
    "data.normalization": "Normalization (YAML)",
    "train.batch_size": "Batch size (events)", "train.lr": "Learning rate", "train.weight_decay": "Weight decay",
    "train.warmup_steps": "Warm-up steps", "train.epochs": "Epochs", "train.max_steps": "Max steps (0 = no limit)",
    "train.max_minutes": "Max minutes (0 = no limit)", "train.grad_clip": "Gradient clip (0 = off)",
    "train.ema_decay": "EMA decay", "train.checkpoint_every": "Checkpoint every (steps)",
    "train.log_every": "Log every (steps)", "train.patience": "Early-stop patience (epochs, 0 = off)",
    "train.seed": "Seed", "train.amp": "bf16 autocast (CUDA only)", "train.val_weights": "Validation weights",
    "train.eval_events": "Physics evaluation events (0 = off)",
    "distill.student_steps": "Student DDIM steps", "distill.start_steps": "Teacher DDIM steps (first round)",
    "distill.steps_per_round": "Training steps per round", "distill.spacing": "Student time-step grid",
    "distill.teacher_sampler": "Teacher's targets", "distill.teacher_substeps": "Teacher UniPC steps per student step",
}


DISTILL_FORM = ("distill.student_steps", "distill.teacher_sampler", "distill.teacher_substeps", "distill.start_steps",
                "distill.steps_per_round", "distill.spacing",
                "train.batch_size", "train.lr", "train.ema_decay", "train.max_minutes", "train.seed")


def is_distill_preset(preset: Path) -> bool:
    """Presets for distillation runs (configs/distill*.yaml), offered under "Distill a checkpoint" only."""
    return Path(preset).stem.startswith("distill")


def teacher_choices(store: tracking.Store) -> list[tuple[str, str]]:
    """(label, path) of every diffusion checkpoint a distillation can start from: the project's runs' and
    uploads' checkpoints, then the shipped demo model."""
    from genesis.checkpoints_index import list_checkpoints

    table = list_checkpoints(store, demos=True)
    table = table[(table["kind"] == "diffusion") | table["kind"].isna()]
    return list(zip(table["label"], table["path"]))


def distill_form_specs() -> list[dict]:
    """The fields the distillation form shows (config.field_specs of DISTILL_FORM, in that order)."""
    specs = {s["key"]: s for s in config.field_specs(config.RunConfig)}
    return [specs[key] for key in DISTILL_FORM]


def form_label(key: str) -> str:
    """Human label of a config key for the form ('train.log_every' -> 'Log every (steps)')."""
    return FORM_LABELS.get(key) or key.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def form_specs(kind: str) -> dict[str, list[dict]]:
    """The form's fields of a model kind, by section: config.field_specs minus FORM_HIDDEN."""
    specs = config.field_specs(config.RunConfig)
    return {section: [s for s in specs if s["key"].startswith(section + ".") and s["key"] not in FORM_HIDDEN]
            for section in FORM_SECTIONS[kind]}


def is_smoke_test(preset: Path) -> bool:
    """Tiny presets exist to show that the pipeline runs on a CPU, not to produce usable events."""
    return "tiny" in Path(preset).stem


def preset_label(preset: Path) -> str:
    name = Path(preset).name
    return f"{name} · smoke test (CPU, minutes; events not physical)" if is_smoke_test(preset) else name


def default_dataset(preset_data_path: str, files: list[Path]) -> Path | None:
    """The dataset a launch form starts on: the preset's data.path when it is among `files`, else the demo
    data, else the first file. Never "the newest file": an upload must not become the training set unasked."""
    if not files:
        return None
    resolved = {Path(f).resolve(): Path(f) for f in files}
    for candidate in (preset_data_path, "data/demo.h5"):
        where = Path(candidate) if Path(candidate).is_absolute() else paths.home() / candidate  # as the page lists them
        if candidate and (hit := resolved.get(where.resolve())) is not None:
            return hit
    return files[0]
