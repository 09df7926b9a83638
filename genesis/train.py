"""Training loop for both model kinds: AdamW, warm-up + cosine LR, grad clipping, EMA, bf16 on CUDA,
validation every epoch, early stopping, atomic last.pt/best.pt, exact resume, DDP under torchrun,
MLflow logging (rank 0 only), SIGTERM/SIGINT -> last.pt + KILLED, exceptions -> FAILED with reason.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import itertools
import logging
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from genesis import checkpoint, config, distill, paths, tracking
from genesis.checkpoint import resolve_device
from genesis.data import dataset, schema
from genesis.inpaint import nohit_value
from genesis.errors import ConfigError, DataError, GenesisError

log = logging.getLogger("genesis.train")


class TrainingFailed(GenesisError):
    """Training cannot continue (non-finite loss, ...); the run ends FAILED with this reason."""


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class EMA:
    """Exponential moving average of a model's parameters (buffers copied), with warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        # one fused kernel per dtype group instead of a Python loop over ~100 tensors
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()], 1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


class StopRequested:
    """SIGTERM/SIGINT set a flag; the loop saves last.pt and ends the run KILLED.

    Installing the handlers is undone by `restore()` (or leaving the `with` block), so a process that
    goes on after training (an evaluation, a benchmark) can be stopped with a plain kill again."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, _frame) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> "StopRequested":
        return self

    def __exit__(self, *_exc) -> None:
        self.restore()

    def __bool__(self) -> bool:
        return self.signal is not None


def lr_lambda(warmup: int, total: int, budget_fraction=lambda: 0.0):
    """Linear warm-up, then cosine decay to 10% of the peak over the run's real length: progress is the
    larger of the step fraction and `budget_fraction()` (the share of a wall-time budget already used),
    so a run ended by `train.max_minutes` anneals too."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, max((step - warmup) / max(1, total - warmup), budget_fraction()))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one rank's randomness at one step: reseeding every step makes resume exact without
    saving generator states, and gives every DDP rank its own noise."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


class Objective:
    """Loss for one batch of normalized events, for either model kind.

    The network is always called through `net`, which under torchrun is the DistributedDataParallel
    wrapper: only DDP's own forward arms the gradient all-reduce, so calling `net.module` would leave
    every rank training on its own shard."""

    def __init__(self, cfg: config.RunConfig) -> None:
        self.kind = cfg.kind
        self.label_dropout = cfg.model.label_dropout
        self.norm = cfg.data.normalization
        self.hit_weight = cfg.diffusion.hit_weight
        self.no_hit_weight = cfg.diffusion.no_hit_weight
        self.dequantize_npe = cfg.diffusion.dequantize_npe
        # normalized npe of a DOM without a hit (legacy representation: hits are npe above it)
        self.no_hit_npe = float(nohit_value(self.norm, torch.zeros(()))[0, 0, 0])
        if cfg.kind == "diffusion":
            from genesis.diffusion import GaussianDiffusion

            self.diffusion = GaussianDiffusion(cfg.diffusion)

    def loss_weights(self, signal: torch.Tensor) -> torch.Tensor | None:
        """(B, C, P) weights of the diffusion loss, or None for a plain mean: with the hit representation
        npe and time of DOMs without a hit weigh diffusion.no_hit_weight (they only learn the neutral 0);
        hit DOMs weigh diffusion.hit_weight."""
        if self.norm.representation == "hit":
            hit = signal[:, :1] > 0
            values = torch.where(hit, 1.0, self.no_hit_weight).to(signal.dtype)
            w = torch.cat([torch.ones_like(values), values, values], 1)
        elif self.hit_weight != 1.0:
            hit = signal[:, :1] > self.no_hit_npe + 1e-6
            w = torch.ones_like(signal)
        else:
            return None
        return w * torch.where(hit, self.hit_weight, 1.0).to(signal.dtype) if self.hit_weight != 1.0 else w

    def __call__(self, net, signal, labels, geometry, generator=None, train: bool = True
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """signal (B, C, P), labels (B, 6), geometry (3, P) -> (scalar loss, detached extras)."""
        if self.kind == "diffusion":
            dropout = self.label_dropout if train else 0.0
            if self.dequantize_npe:
                signal = self.norm.dequantize_npe(signal, generator)
            loss = self.diffusion.training_loss(net, signal, labels, geometry, generator, label_dropout=dropout,
                                                weights=self.loss_weights(signal))
            return loss, {}
        flow = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
        loss, extra = flow.training_loss(signal, labels, geometry, generator=generator, forward=net)
        # the loss trains flow and hit head together; 'nll' (the flow's alone) is what train/nll and val/nll
        # report and best.pt is chosen on, so runs with and without a head compare; the head's is 'hit_nll'
        return loss, {k: v for k, v in extra.items() if k in ("nll", "bits_per_dim", "hit_nll")}


class Trainer:
    """Holds the model, optimiser and data of one run; `fit()` runs the loop."""

    def __init__(self, cfg: config.RunConfig, run_id: str | None, store: tracking.Store | None,
                 ctx: DistContext, device: torch.device) -> None:
        self.cfg, self.run_id, self.store, self.ctx, self.device = cfg, run_id, store, ctx, device
        tc = cfg.train
        torch.manual_seed(tc.seed + ctx.rank)
        self.geometry = dataset.resolve_geometry(cfg.data)
        self.norm = cfg.data.normalization
        self.train_data = dataset.open_split(cfg.data, "train", self.norm, self.geometry, device, ctx.rank, ctx.world)
        self.val_data = dataset.open_split(cfg.data, "val", self.norm, self.geometry, device, ctx.rank, ctx.world)
        self.geo_n = self.norm.normalize_geometry(torch.from_numpy(self.geometry.positions)).to(device)
        self.step, self.epoch, self.best_val, self.bad_epochs = 0, 0, float("inf"), 0
        self.seconds_before = 0.0  # training time of earlier sessions of this run (resume)
        self.fit_start = time.time()
        self.nonfinite_at = torch.zeros((), dtype=torch.long, device=device)
        self.model = checkpoint.build_model(cfg, self.geometry.n_doms, self.norm).to(device)
        # distillation: the student starts as the teacher (weights copied here, before the EMA copy and DDP)
        self.distiller = (distill.Distiller(cfg, self.model, self.geometry.n_doms, device, Objective(cfg).loss_weights)
                          if cfg.distill.teacher else None)
        if cfg.kind == "flow":
            self.initialize_actnorm()
        self.net = self.model
        if ctx.world > 1:  # DDP broadcasts rank 0's weights here, so the EMA copy comes after
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.ema = EMA(self.model, tc.ema_decay)
        self.objective = self.distiller or Objective(cfg)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.steps_per_epoch = max(1, math.ceil(len(self.train_data) / tc.batch_size))
        total = tc.max_steps or tc.epochs * self.steps_per_epoch
        self.total_steps = min(total, tc.epochs * self.steps_per_epoch)
        schedule = (self.distiller.lr_lambda(tc.warmup_steps, self.total_steps) if self.distiller
                    else lr_lambda(tc.warmup_steps, self.total_steps, self.budget_fraction))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.generator = torch.Generator(device=device)  # reseeded every step, see step_seed
        self.ckpt_dir = checkpoint_dir(store, run_id) if ctx.is_main else None
        if self.ckpt_dir is not None:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = dataset.fingerprint(cfg.data.path)
        self.ranges = dataset.training_data_record(cfg.data, self.norm, self.geometry.positions) if ctx.is_main else {}
        if ctx.is_main and cfg.diffusion.dequantize_npe and not self.ranges.get("npe_integer"):
            raise ConfigError(f"diffusion.dequantize_npe is for whole-pe data, but {cfg.data.path} has hit DOMs with a "
                              "fractional npe; set diffusion.dequantize_npe=false")

    @torch.no_grad()
    def initialize_actnorm(self) -> None:
        """Data-dependent ActNorm init on one training batch, before the DDP wrap and the EMA copy
        (DDP then broadcasts rank 0's values, so every rank and the EMA start from the same init)."""
        signal, labels = next(iter(self.batches(self.train_data, shuffle=True)))
        self.model(self.model.dequantize(signal), labels, self.geo_n)

    # --- time budget -----------------------------------------------------------------------------
    def seconds_trained(self) -> float:
        return self.seconds_before + time.time() - self.fit_start

    def budget_fraction(self) -> float:
        """Share of train.max_minutes used so far (0 without a time budget); drives the LR schedule."""
        budget = self.cfg.train.max_minutes * 60
        return self.seconds_trained() / budget if budget else 0.0

    # --- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        data = {"path": str(self.cfg.data.path), "size": len(self.train_data) * self.ctx.world,
                "fingerprint": self.fingerprint, "splits": {"train": len(self.train_data), "val": len(self.val_data)}, **self.ranges}
        mlflow_info = {"tracking_uri": self.store.tracking_uri, "run_id": self.run_id} if self.store else {}
        cfg = self.distiller.checkpoint_config(self.cfg) if self.distiller else self.cfg
        return checkpoint.make_state(cfg, self.model, self.ema.module, self.geometry, self.step, self.epoch,
                                     self.best_val, self.optimizer, self.scheduler, data, mlflow_info,
                                     extra={"bad_epochs": self.bad_epochs, "train_seconds": self.seconds_trained(),
                                            **(self.distiller.checkpoint_extra() if self.distiller else {})})

    def save(self, name: str) -> Path | None:
        if not self.ctx.is_main or self.ckpt_dir is None:
            return None
        path = checkpoint.save(self.state(), self.ckpt_dir / name)
        if self.store and not self.store.is_local:
            self.store.log_artifact(self.run_id, path, "checkpoints")
        return path

    def resume_from(self, path: str | Path) -> None:
        """Continue exactly where `path` ended: weights, EMA, optimiser, LR schedule, counters, and the
        position inside the epoch (the next batch is the one the stopped run would have drawn)."""
        state = checkpoint.load_state(path, map_location=self.device)
        if state["kind"] != self.cfg.kind or state["n_doms"] != self.geometry.n_doms:
            raise GenesisError(f"{path}: cannot resume a {state['kind']} model of P={state['n_doms']} "
                               f"as {self.cfg.kind} with P={self.geometry.n_doms}")
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.best_val = state["step"], state["epoch"], state["best_val_loss"]
        self.bad_epochs = state.get("bad_epochs", 0)
        self.seconds_before = float(state.get("train_seconds", 0.0))
        if self.distiller:
            self.distiller.load(state)
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # --- loop ----------------------------------------------------------------------------------------
    def batches(self, data, shuffle: bool, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches (the order depends only on seed and epoch), from batch `skip` on."""
        if isinstance(data, dataset.InMemoryEvents):
            gen = torch.Generator().manual_seed(self.cfg.train.seed * 1000 + self.epoch)
            return data.batches(self.cfg.train.batch_size, shuffle, gen, skip=skip)
        data.set_epoch(self.epoch)
        stream = dataset.stream_batches(data, self.cfg.train.batch_size, self.cfg.data.num_workers, self.device)
        return itertools.islice(stream, skip, None)

    def autocast(self):
        use_bf16 = self.device.type == "cuda" and self.cfg.train.amp
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16)

    def seed_step(self) -> None:
        seed = step_seed(self.cfg.train.seed, self.ctx.rank, self.step)
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)  # dropout layers draw from the global generator

    def train_step(self, signal: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """One optimisation step. Returns device tensors (loss, grad norm, extras): no host sync here,
        so the GPU never waits for Python; `check_finite()` syncs at log and checkpoint steps."""
        self.net.train()
        if self.distiller and self.distiller.begin_step(self.step, self.ema.module):
            self.best_val, self.bad_epochs = float("inf"), 0  # best.pt: the best student of the newest round
        self.seed_step()
        with self.autocast():
            loss, extra = self.objective(self.net, signal, labels, self.geo_n, self.generator)
        if self.cfg.train.fail_at_step and self.step + 1 == self.cfg.train.fail_at_step:
            loss = loss * float("nan")
        self.nonfinite_at = torch.where(torch.isfinite(loss) | (self.nonfinite_at > 0), self.nonfinite_at,
                                        torch.full_like(self.nonfinite_at, self.step + 1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.train.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return loss.detach(), grad_norm.detach(), extra

    def check_finite(self) -> None:
        bad = int(self.nonfinite_at.item())
        if bad:
            raise TrainingFailed(f"non-finite loss at step {bad}; lower train.lr or check the data")

    @property
    def val_model(self) -> torch.nn.Module:
        """The weights validation scores: the EMA weights (those best.pt is chosen for and sampling uses)
        unless train.val_weights = 'raw'."""
        return self.ema.module if self.cfg.train.val_weights == "ema" else self.model

    @torch.no_grad()
    def validate(self) -> tuple[float, dict[str, float]]:
        """(the validation loss best.pt is chosen on: a flow's own NLL, without its hit head's, {'hit_nll'} for
        flows with a hit head, else {}), event-weighted means over the validation split."""
        model = self.val_model
        was_training = model.training
        model.eval()
        gen = torch.Generator(device=self.device).manual_seed(12345)
        total, count = torch.zeros(2, device=self.device, dtype=torch.float64), 0
        has_head = False
        for events, labels in self.batches(self.val_data, shuffle=False):
            with self.autocast():
                loss, extra = self.objective(model, events, labels, self.geo_n, gen, train=False)
            has_head = "hit_nll" in extra
            total += torch.stack([extra.get("nll", loss), extra.get("hit_nll", loss.new_zeros(()))]).double() * len(events)
            count += len(events)
        model.train(was_training)
        stats = torch.cat([total, torch.tensor([float(count)], device=self.device, dtype=torch.float64)])
        if self.ctx.world > 1:
            dist.all_reduce(stats)
        return float(stats[0] / stats[2]), ({"hit_nll": float(stats[1] / stats[2])} if has_head else {})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.ctx.is_main and self.store:
            self.store.log_metrics(self.run_id, metrics, self.step)

    def stop_reason(self, stop: StopRequested, deadline: float) -> str | None:
        """Why the loop must end after this step: 'steps', 'signal', 'budget', or None.

        Under DDP a signal or a passed deadline is agreed on by all ranks (one all-reduce every
        train.log_every steps), so no rank leaves the loop while another waits in a collective."""
        if self.step >= self.total_steps:
            return "steps"
        flags = [int(bool(stop)), int(time.time() > deadline)]
        if self.ctx.world > 1:
            if self.step % self.cfg.train.log_every:
                return None
            agreed = torch.tensor(flags, dtype=torch.int32, device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            flags = agreed.tolist()
        return "signal" if flags[0] else "budget" if flags[1] else None

    def fit(self, stop: StopRequested) -> str:
        """Train until done; returns the end status: FINISHED or KILLED."""
        tc = self.cfg.train
        self.fit_start = time.time()
        budget = tc.max_minutes * 60 - self.seconds_before if tc.max_minutes else float("inf")
        deadline = self.fit_start + budget
        window_events, window_start = 0, time.time()
        if self.ctx.is_main and self.store:
            self.store.set_tags(self.run_id, {"genesis.total_steps": str(self.total_steps),
                                              "genesis.steps_per_epoch": str(self.steps_per_epoch)})
        log.info("training %s: %d train / %d val events, %d steps/epoch, %d steps in all, device %s",
                 self.cfg.kind, len(self.train_data), len(self.val_data), self.steps_per_epoch, self.total_steps, self.device)
        while self.epoch < tc.epochs and self.step < self.total_steps:
            reason = None
            done_in_epoch = self.step - self.epoch * self.steps_per_epoch
            for events, labels in self.batches(self.train_data, shuffle=True, skip=done_in_epoch):
                loss, grad_norm, extra = self.train_step(events, labels)
                window_events += len(events) * self.ctx.world
                if self.step % tc.log_every == 0:
                    self.check_finite()
                    rate = window_events / max(time.time() - window_start, 1e-9)
                    self.log_step(loss.item(), grad_norm.item(), rate, {k: float(v) for k, v in extra.items()})
                    window_events, window_start = 0, time.time()
                if self.step % tc.checkpoint_every == 0:
                    self.check_finite()  # never save NaN weights as last.pt
                    self.save("last.pt")
                reason = self.stop_reason(stop, deadline)
                if reason:
                    break
            if reason == "signal":
                self.check_finite()
                self.save("last.pt")
                log.info("stopped by signal %s at step %d; saved last.pt", stop.signal, self.step)
                return "KILLED"
            if reason == "budget":
                log.info("time budget of %.1f min reached at step %d", tc.max_minutes, self.step)
            complete = self.step == (self.epoch + 1) * self.steps_per_epoch
            if self.end_epoch(complete) or not complete:
                break
        self.save("last.pt")
        log.info("done: %d steps in %.1f s, best val loss %.5f", self.step, time.time() - self.fit_start, self.best_val)
        return "FINISHED"

    def log_step(self, loss: float, grad_norm: float, rate: float, extra: dict[str, float]) -> None:
        """Step metrics; the loss is named by kind (tracking.LOSS_KEYS). The log line carries the same
        name and value (genesis.live reads the live curve from it without querying the store)."""
        lr = self.scheduler.get_last_lr()[0]
        extra = dict(extra)
        loss = extra.pop("nll", loss)  # flows: the flow's own NLL (its hit head's is train/hit_nll)
        key = tracking.loss_key(self.cfg.kind, "train")
        self.log_metrics({key: loss, "train/lr": lr, "train/grad_norm": grad_norm,
                          "train/events_per_s": rate, **{f"train/{k}": v for k, v in extra.items()}})
        log.info("step %d/%d epoch %d %s %.6g lr %.2e %.0f ev/s", self.step, self.total_steps, self.epoch, key, loss,
                 lr, rate)

    def end_epoch(self, complete: bool = True) -> bool:
        """Validate, save best.pt, count patience; returns True to stop early. A run that ends inside an
        epoch (max_steps, time budget) is validated too, but its epoch counter stays: resuming it
        continues that epoch."""
        self.check_finite()
        val, val_extra = self.validate()
        if complete:
            self.epoch += 1
        key = tracking.loss_key(self.cfg.kind, "val")
        metrics = {key: val, "epoch": self.epoch, **{f"val/{k}": v for k, v in val_extra.items()}}
        if self.cfg.kind == "flow":  # per-dimension, comparable across detector sizes
            metrics["val/bits_per_dim"] = val / (2 * self.geometry.n_doms * math.log(2))
        self.log_metrics(metrics)
        log.info("epoch %d step %d %s %.6g", self.epoch, self.step, key, val)
        if val < self.best_val:
            self.best_val, self.bad_epochs = val, 0
            self.save("best.pt")
        else:
            self.bad_epochs += 1
        self.save("last.pt")
        return bool(self.cfg.train.patience and self.bad_epochs >= self.cfg.train.patience)


def checkpoint_dir(store: tracking.Store | None, run_id: str | None) -> Path:
    """Checkpoints go straight into the run's local artifact folder, else into mlruns/runs/<id>/."""
    if store and run_id:
        local = store.artifact_dir(run_id)
        if local is not None:
            return local / "checkpoints"
    return paths.mlruns_dir() / "runs" / (run_id or "no-run") / "checkpoints"


def setup_logging(log_file: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)


def log_file_for(run_id: str) -> Path:
    return paths.mlruns_dir() / "logs" / f"{run_id}.log"


def run_tags(cfg: config.RunConfig, fingerprint: str) -> dict[str, str]:
    return {tracking.TAG_KIND: cfg.kind, tracking.TAG_FINGERPRINT: fingerprint, tracking.TAG_GIT: tracking.git_sha(),
            tracking.TAG_HOST: socket.gethostname(), tracking.TAG_PID: str(os.getpid()), **distill.run_tags(cfg)}


def with_resolved_paths(cfg: config.RunConfig) -> config.RunConfig:
    """The config with absolute data and geometry paths (see paths.resolve_data_path)."""
    data = dataclasses.replace(cfg.data, path=str(paths.resolve_data_path(cfg.data.path)),
                               geometry=str(paths.resolve_data_path(cfg.data.geometry)) if cfg.data.geometry else "")
    return dataclasses.replace(cfg, data=data)


def check_data(cfg: config.RunConfig) -> config.RunConfig:
    """The config with resolved paths; DataError before any run is created when the data file or the
    geometry is unusable."""
    resolved = with_resolved_paths(cfg)
    if not Path(resolved.data.path).is_file():
        raise DataError(f"{cfg.data.path}: data file not found (looked for {resolved.data.path}); "
                        "create one with `python -m genesis simulate`")
    cfg = resolved
    dataset.resolve_geometry(cfg.data)
    schema.file_info(cfg.data.path)
    schema.scan_labels(cfg.data.path)  # NaN/inf labels would only show up later as a non-finite loss
    return cfg


def train(cfg: config.RunConfig, run_id: str | None = None, resume: str | Path | None = None) -> dict[str, Any]:
    """Run training (one process, or one rank under torchrun). Returns a summary dict."""
    ctx = DistContext.from_env()
    cfg = check_data(distill.student_config(cfg))  # a distillation run takes its model from the teacher
    if resume:  # a missing, corrupted or unsafe checkpoint is reported before any run is created
        checkpoint.load_state(resume)
    store = tracking.Store.default() if ctx.is_main else None
    if ctx.world > 1:
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    if ctx.is_main and run_id is None:
        run_id = store.create_run(cfg.experiment, cfg.name, {}, tracking.run_params(cfg))
    if ctx.world > 1:
        holder = [run_id]
        dist.broadcast_object_list(holder, src=0)
        run_id = holder[0]
    own_log = None
    if ctx.is_main:
        run = store.run(run_id)
        own_log = None if run.data.tags.get(tracking.TAG_LOG) else log_file_for(run_id)
    setup_logging(own_log)
    stop = StopRequested()
    status, error, trainer = "FAILED", None, None
    try:
        device = resolve_device(cfg.train.device, ctx.local_rank)
        if ctx.is_main:
            store.set_tags(run_id, {**run_tags(cfg, dataset.fingerprint(cfg.data.path)),
                                    **({tracking.TAG_LOG: str(own_log)} if own_log else {})})
        trainer = Trainer(cfg, run_id, store, ctx, device)
        if resume:
            trainer.resume_from(resume)
        if ctx.is_main:
            cfg_path = trainer.ckpt_dir.parent / "config.yaml"
            config.save(cfg, cfg_path)
            if not store.is_local:
                store.log_artifact(run_id, cfg_path)
        status = trainer.fit(stop)
        stop.restore()  # the evaluation below can be stopped with a plain kill
        if ctx.is_main and status == "FINISHED":
            finish_artifacts(trainer)
    except Exception as exc:  # the run must end with a reason, whatever went wrong
        error = f"{type(exc).__name__}: {exc}"
        log.exception("training failed")
        if trainer is not None and not isinstance(exc, TrainingFailed):
            trainer.save("last.pt")
        raise
    finally:
        stop.restore()
        if ctx.is_main:
            end_run(store, run_id, status if error is None else "FAILED", error)
        if ctx.world > 1 and dist.is_initialized():
            leave_process_group(trainer, wait_for_peers=error is None)
    return {"run_id": run_id, "status": status, "step": trainer.step, "epoch": trainer.epoch,
            "best_val_loss": trainer.best_val, "checkpoint_dir": str(trainer.ckpt_dir)}


def leave_process_group(trainer: Trainer | None, wait_for_peers: bool) -> None:
    """Tear down this rank's process group so that no rank aborts at exit.

    Gloo aborts a rank ("terminate called without an active exception") when its peer closes the connection
    while it is still finishing, or when the group's worker threads are freed only at interpreter shutdown.
    So the ranks first meet at a barrier (skipped after a failure, when a peer may never arrive), and the
    DDP wrapper, which holds the group, is released and collected before the group is destroyed."""
    if wait_for_peers:
        dist.barrier()
    if trainer is not None and isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel):
        trainer.net = trainer.net.module
    gc.collect()
    dist.destroy_process_group()


def end_run(store: tracking.Store, run_id: str, status: str, error: str | None) -> None:
    log_path = Path(store.run(run_id).data.tags.get(tracking.TAG_LOG, ""))
    if log_path.is_file():
        for h in logging.getLogger().handlers:
            h.flush()
        store.log_artifact(run_id, log_path)
    store.end_run(run_id, status, error)


def finish_artifacts(trainer: Trainer) -> None:
    """A figure of a few generated events, and optionally the physics evaluation."""
    from genesis.sampling import preview_figure

    fig_path = trainer.ckpt_dir.parent / "generated_events.html"
    try:
        preview_figure(trainer.ema.module, trainer.cfg, trainer.geometry, trainer.device, trainer.ranges).write_html(
            fig_path, include_plotlyjs="cdn")
        if not trainer.store.is_local:
            trainer.store.log_artifact(trainer.run_id, fig_path)
    except Exception as exc:  # a failed preview must not turn a finished run into a failed one
        log.warning("could not draw generated events: %s", exc)
    if trainer.cfg.train.eval_events:
        from genesis.evaluate import evaluate_model

        evaluate_model(trainer, n_events=trainer.cfg.train.eval_events)
