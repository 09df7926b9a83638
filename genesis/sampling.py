"""Checkpoint + labels -> events in physical units, and HDF5 export in the training-data schema.

Post-processing: samples are denormalized with the checkpoint's own metadata; a DOM whose sampled npe
is below `HIT_THRESHOLD_PE` (the flow's configured hit_threshold for flows) has no hit: npe 0, time 0.

Reproducibility: the label rows are cut into consecutive batches of batch_size rows, and batch b is drawn
from a generator seeded with seed * 100003 + b. An event therefore depends on the seed, the batch size
and its row, never on the process that draws it: `sample_to_file` under torchrun hands the batches out
to the ranks round-robin (each writes a shard, rank 0 merges them) and gives the same file as one process.

Precision: bf16=True runs the network under bfloat16 autocast (the sampler's arithmetic and the outputs stay
float32). On a CPU with AVX512-BF16 or AMX the demo model's unipc-6 made 1.33x the events per CPU-second at the
same AUC (bench/sampling.py --new-bf16); a CPU without them emulates bfloat16 and is slower.

Compilation: compiled=True runs a diffusion network through torch.compile (inductor: generated C++ on a CPU, which
needs a C++ compiler; Triton on a GPU). Only full batches of batch_size events use the compiled network, so it is
compiled for one shape, once per process (20-60 s on one CPU core); redraws and a shorter last batch run
eagerly. The compiled network reorders floating-point sums, so a few events differ from eager ones at round-off
(a DOM's npe crossing the hit threshold); events stay reproducible among compiled runs.

Defaults: the library samples in float32, eagerly, unless told otherwise. `sample_to_file` (the CLI) and the
Sample page choose where the user does not (fast_settings): bf16 where the device runs it natively, and on a CPU
compiling for requests of at least COMPILE_FROM_EVENTS events, where the minute of compiling pays.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genesis import checkpoint, diffusion, noise
from genesis.data import schema
from genesis.errors import DataError, GenesisError

log = logging.getLogger("genesis.sampling")
HIT_THRESHOLD_PE = 0.5
LABEL_COLUMNS = ("energy", "zenith", "azimuth", "x", "y", "z")
MAX_EVENTS_PER_CALL = 1_000_000
# Predictions of x0 are clipped per channel to the normalized range seen in training (stored in the
# checkpoint, widened by CLIP_MARGIN of its span) so a few wild DOMs cannot blow up to absurd npe or
# times after the inverse log transforms. Checkpoints without that record fall back to CLIP_X0.
CLIP_X0 = (-1.0, 3.0)
CLIP_MARGIN = 0.05
REDRAW_TRIES = 10  # events with fewer hit DOMs than any training event are drawn again at most this often
# Events per batch when none is given. On CPU small batches keep the per-DOM activations in cache: the demo
# model's step did 667 event-steps per CPU-second at batch 16-64, 412 at 256 and 384 at 1024 (one thread;
# bench/profile_sampling.py --sweep). On GPUs larger batches fill the device.
BATCH_SIZE = {"cpu": 64, "cuda": 256}
# From this many events a CPU request compiles by default: compiling saved ~8 ms per event of unipc-8 on the demo
# model (45.0 against 32.9 events per CPU-s, bench/sampling.py), so 10,000 events save more than the 20-60 s it takes.
COMPILE_FROM_EVENTS = 10_000


def labels_from_args(labels_csv: str | None, n: int, energy: float, zenith: float, azimuth: float,
                     x: float, y: float, z: float) -> np.ndarray:
    """(N, 6) labels: every row of the CSV (or the single given label) repeated n times."""
    rows = read_labels_csv(labels_csv) if labels_csv else np.array([[energy, zenith, azimuth, x, y, z]], np.float32)
    labels = repeat_labels(rows, n)
    try:
        check_labels(labels)
    except DataError as exc:
        if not labels_csv:
            raise
        raise DataError(f"{labels_csv}: {exc}") from None
    return labels


def repeat_labels(rows: np.ndarray, n: int) -> np.ndarray:
    """(R, 6) rows -> (R * n, 6), each row n times; a request above MAX_EVENTS_PER_CALL is refused before
    anything is allocated."""
    if len(rows) * n > MAX_EVENTS_PER_CALL:
        raise DataError(f"{len(rows)} label row(s) x {n} events each = {len(rows) * n} events requested; "
                        f"at most {MAX_EVENTS_PER_CALL} per call")
    return np.repeat(rows, n, axis=0)


def read_labels_csv(path: str | Path) -> np.ndarray:
    """CSV with header energy,zenith,azimuth,x,y,z -> (N, 6) float32."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read labels CSV ({exc})") from exc
    if not rows or any(c not in rows[0] for c in LABEL_COLUMNS):
        raise DataError(f"{path}: labels CSV needs a header with columns {','.join(LABEL_COLUMNS)} and rows")
    try:
        return np.array([[float(r[c]) for c in LABEL_COLUMNS] for r in rows], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: labels CSV has a non-numeric value ({exc})") from exc


def check_labels(labels: np.ndarray) -> None:
    if labels.ndim != 2 or labels.shape[1] != 6 or len(labels) == 0:
        raise DataError(f"labels must have shape (N, 6) with N > 0, got {labels.shape}")
    if not np.isfinite(labels).all():
        row, col = np.argwhere(~np.isfinite(labels))[0]
        raise DataError(f"labels contain NaN or inf (first in row {row}, column {LABEL_COLUMNS[col]})")
    if (labels[:, 0] <= 0).any():
        raise DataError("energy must be positive (GeV)")
    if len(labels) > MAX_EVENTS_PER_CALL:
        raise DataError(f"{len(labels)} events requested; at most {MAX_EVENTS_PER_CALL} per call")


def range_warnings(labels: np.ndarray, loaded: checkpoint.LoadedModel) -> list[str]:
    """Plain-words messages for labels (N, 6) outside the ranges the checkpoint was trained on
    (genesis.ranges, the one implementation the pages use too); sampling still goes ahead."""
    from genesis import ranges

    return ranges.label_warnings(labels, ranges.record_of(loaded))


def postprocess(signal: np.ndarray, hit_threshold: float = HIT_THRESHOLD_PE, data_record: dict | None = None,
                threshold_decides: bool = False, npe_floor: bool = False) -> np.ndarray:
    """Physical (n, 2, P) -> a consistent event: npe below threshold (or non-finite) -> no hit (npe 0,
    time 0); time >= 0. With the training ranges of hits in `data_record` (checkpoints since the hit
    representation), every hit gets an npe and a time inside the ranges seen in training, and a whole
    npe where the training npe were counts. Which DOMs are hits: those with npe > 0 (a model with a hit
    channel decided, the denormalization set the others to 0), or with threshold_decides (a flow's continuous
    npe) those at hit_threshold or above, before the clipping lifts them to the smallest training npe.
    npe_floor: whole counts by the floor instead of rounding (a model trained on dequantized npe,
    diffusion.dequantize_npe)."""
    out = np.nan_to_num(signal.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    record = data_record or {}
    npe, time = out[:, 0], out[:, 1]
    if "hit_npe_min" in record:
        hit = npe >= hit_threshold if threshold_decides else npe > 0
        npe = np.clip(npe, record["hit_npe_min"], record["hit_npe_max"])
        if record.get("npe_integer"):
            npe = np.maximum(np.floor(npe) if npe_floor else np.round(npe), record["hit_npe_min"])
        time = np.clip(time, record["hit_time_min"], record["hit_time_max"])
        npe, time = np.where(hit, npe, 0.0), np.where(hit, time, 0.0)
        hit_threshold = min(hit_threshold, record["hit_npe_min"])
    hit = npe >= hit_threshold
    out[:, 0] = np.where(hit, npe, 0.0)
    out[:, 1] = np.where(hit, np.maximum(time, 0.0), 0.0)
    return out


def clip_range(data_record: dict | None, device: torch.device, channels: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) tensors of shape (1, C, 1): the training range of each signal channel, with a margin.
    C defaults to the channels recorded in training (2 for records without one)."""
    record = data_record or {}
    channels = channels or len(record.get("signal_min", ())) or 2
    if len(record.get("signal_min", ())) != channels:
        lo, hi = [CLIP_X0[0]] * channels, [CLIP_X0[1]] * channels
    else:
        lo, hi = np.asarray(record["signal_min"]), np.asarray(record["signal_max"])
        span = np.maximum(hi - lo, 1e-6)
        lo, hi = lo - CLIP_MARGIN * span, hi + CLIP_MARGIN * span
    as_t = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, channels, 1)  # noqa: E731
    return as_t(lo), as_t(hi)


@torch.no_grad()
def generate_normalized(model: torch.nn.Module, kind: str, cfg, labels_n: torch.Tensor, geometry_n: torch.Tensor,
                        sampler: str = "ddim", steps: int = 50, guidance: float = 1.0, eta: float = 0.0,
                        generator: torch.Generator | None = None, progress: Callable[[int, int], None] | None = None,
                        data_record: dict | None = None, spacing: str | None = None) -> torch.Tensor:
    """Normalized samples (B, 2, P) for normalized labels (B, 6) and geometry (3, P), clipped to the
    training range of each channel (see clip_range). spacing: see diffusion.timesteps (None: cfg's own
    for its sampler, else the sampler's default: diffusion.resolve_spacing)."""
    lo, hi = clip_range(data_record, labels_n.device, model.normalization.channels)
    if kind == "flow":
        out = model.sample(labels_n, geometry_n, generator=generator)
        if progress:
            progress(1, 1)
        return torch.maximum(torch.minimum(out, hi), lo)
    process = diffusion.GaussianDiffusion(cfg.diffusion)
    out = diffusion.sample(process, model, labels_n, geometry_n, sampler=sampler, steps=steps, eta=eta,
                           spacing=diffusion.resolve_spacing(cfg.diffusion, sampler, spacing), guidance_scale=guidance, generator=generator, progress=progress,
                           clip_x0=(lo, hi))
    return torch.maximum(torch.minimum(out, hi), lo)


def network_precision(device: torch.device, bf16: bool):
    """The context the network runs in: bfloat16 autocast when bf16, else float32 (see the module doc)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 natively: a GPU that supports it, or a CPU with AVX512-BF16 or AMX (read
    from /proc/cpuinfo; False where there is none). Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_settings(loaded: checkpoint.LoadedModel, n_events: int, bf16: bool | None = None,
                  compiled: bool | None = None) -> tuple[bool, bool]:
    """(bf16, compiled) for a request of n_events, each the given one or, where None, the default: bf16 for a
    diffusion model where native_bf16; compiled for a diffusion model on a CPU from COMPILE_FROM_EVENTS events
    where a C++ compiler is present (the module doc; GPUs compile only when asked: not measured there yet)."""
    device = next(loaded.model.parameters()).device
    if bf16 is None:  # measured at equal quality on diffusion models; a flow's inverse is not measured in bf16
        bf16 = loaded.kind == "diffusion" and native_bf16(device)
    if compiled is None:
        compiled = (loaded.kind == "diffusion" and device.type == "cpu" and n_events >= COMPILE_FROM_EVENTS
                    and checkpoint.cxx_compiler() is not None)
    return bf16, compiled


def generate(loaded: checkpoint.LoadedModel, labels: np.ndarray, sampler: str | None = None, steps: int | None = None,
             guidance: float = 1.0, seed: int = 0, batch_size: int | None = None,
             progress: Callable[[int, int], None] | None = None, spacing: str | None = None,
             stats: dict | None = None, bf16: bool = False, compiled: bool = False) -> np.ndarray:
    """Physical events (N, 2, P) for physical labels (N, 6), batched; reproducible by seed.
    sampler/steps: None = the checkpoint's own (recorded_sampler); stats, bf16, compiled: see generate_batches."""
    return np.concatenate(list(generate_batches(loaded, labels, sampler, steps, guidance, seed, batch_size, progress,
                                                spacing=spacing, stats=stats, bf16=bf16, compiled=compiled)))


def recorded_sampler(loaded: checkpoint.LoadedModel, sampler: str | None = None, steps: int | None = None
                     ) -> tuple[str, int]:
    """(sampler, steps), each the given one or else the checkpoint's own (its config's diffusion.sampler
    and sampling_steps): checkpoints keep sampling the way they were trained to unless the user chooses."""
    cfg = loaded.config.diffusion
    return sampler or cfg.sampler, steps or cfg.sampling_steps


def default_batch_size(device: torch.device | str) -> int:
    """Events per batch on `device` when the caller gives none (BATCH_SIZE; 256 elsewhere)."""
    return BATCH_SIZE.get(torch.device(device).type, 256)


def batch_starts(n: int, batch_size: int) -> list[int]:
    """First rows of the batches of n label rows: the fixed partition that seeds are tied to."""
    return list(range(0, n, batch_size))


def generate_batches(loaded: checkpoint.LoadedModel, labels: np.ndarray, sampler: str | None = None,
                     steps: int | None = None,
                     guidance: float = 1.0, seed: int = 0, batch_size: int | None = None,
                     progress: Callable[[int, int], None] | None = None, spacing: str | None = None,
                     stats: dict | None = None, batches: Sequence[int] | None = None,
                     bf16: bool = False, compiled: bool = False) -> Iterator[np.ndarray]:
    """Yield physical (b, 2, P) batches for consecutive slices of `labels` (streams huge requests).

    sampler, steps: None = the checkpoint's own (recorded_sampler); batch_size: None = default_batch_size.
    batches: indices of the batches to draw, in the partition of `labels` into slices of batch_size rows
    (default all, in order); batch b is drawn from a generator seeded with seed * 100003 + b.
    stats: a dict filled (over all batches) with events (drawn), redrawn (events below the training
    data's trigger drawn again at least once) and below_trigger (still below it after the last try).
    A checkpoint trained with detector noise kept apart (data.noise_radius_m; its record's 'noise') gets its
    events cleaned of isolated hits and noise drawn from that model (genesis.noise.resample) before the
    trigger counts them; the noise is drawn from a generator seeded with (seed, b).
    bf16: the network under bfloat16 autocast; compiled: full batches through loaded.compiled_model() (diffusion
    models only; see the module doc for both).
    """
    check_labels(labels)
    sampler, steps = recorded_sampler(loaded, sampler, steps)
    if sampler not in diffusion.SAMPLERS:
        raise GenesisError(f"unknown sampler {sampler!r}; use one of {', '.join(diffusion.SAMPLERS)}")
    if not math.isfinite(guidance) or guidance < 0:
        raise GenesisError(f"guidance scale must be a finite number >= 0 (1 = off), got {guidance}")
    if compiled and loaded.kind != "diffusion":
        raise GenesisError("compiling applies to diffusion models; a flow samples in one pass: sample without it")
    device = next(loaded.model.parameters()).device
    batch_size = batch_size or default_batch_size(device)
    network = loaded.compiled_model() if compiled else loaded.model
    norm = loaded.normalization
    geo_n = norm.normalize_geometry(torch.from_numpy(loaded.geometry.positions)).to(device)
    threshold = loaded.config.flow.hit_threshold if loaded.kind == "flow" else HIT_THRESHOLD_PE
    record = loaded.state.get("data") or {}
    redraw = loaded.kind == "diffusion" and loaded.config.diffusion.redraw_untriggered
    fewest_hits = record.get("hit_doms_min", 0) if redraw else 0  # 0: checkpoints from before the record
    starts = batch_starts(len(labels), batch_size)
    chosen = range(len(starts)) if batches is None else list(batches)
    n = sum(len(labels[starts[b]:starts[b] + batch_size]) for b in chosen)
    if stats is not None:
        stats.update(events=0, redrawn=0, below_trigger=0)
    done = 0
    for b in chosen:
        lab = labels[starts[b]:starts[b] + batch_size]
        gen = torch.Generator(device=device).manual_seed(seed * 100003 + b)
        noise_rng = np.random.default_rng([seed, b])

        def draw(rows: np.ndarray, progress_of_batch=None) -> np.ndarray:
            """Physical events (len(rows), 2, P) for the batch's label rows, from the batch's generator."""
            lab_n = norm.normalize_labels(torch.from_numpy(lab[rows]).to(device))
            # one compiled shape: redraws and a short last batch run eagerly instead of compiling again
            model = network if len(rows) == batch_size else loaded.model
            with network_precision(device, bf16):
                x = generate_normalized(model, loaded.kind, loaded.config, lab_n, geo_n, sampler, steps,
                                        guidance, eta=loaded.config.diffusion.eta, generator=gen,
                                        progress=progress_of_batch, data_record=record, spacing=spacing)
            phys = norm.denormalize_signal(x.float().cpu(), torch.from_numpy(lab[rows]), loaded.geometry.positions)
            events = postprocess(phys.numpy(), threshold, record, threshold_decides=loaded.kind == "flow",
                                 npe_floor=loaded.config.diffusion.dequantize_npe)
            if "noise" in record:  # a model of the cleaned events: its own isolated hits out, the noise model's in
                events = noise.resample(events, loaded.geometry.positions, record["noise"], noise_rng)
            return events

        inner = (lambda i, t, s=done, k=len(lab): progress(s + int(k * i / t), n)) if progress else None
        events = draw(np.arange(len(lab)), inner)
        redrawn = np.zeros(len(lab), dtype=bool)
        for _ in range(REDRAW_TRIES):  # the training events all triggered: so must these (the last try stays)
            again = np.flatnonzero((events[:, 0] > 0).sum(1) < fewest_hits)
            if not len(again):
                break
            redrawn[again] = True
            events[again] = draw(again)
        done += len(lab)
        if stats is not None:
            stats["events"] += len(lab)
            stats["redrawn"] += int(redrawn.sum())
            stats["below_trigger"] += int(((events[:, 0] > 0).sum(1) < fewest_hits).sum())
        if progress:
            progress(done, n)
        yield events


def producer_info(loaded: checkpoint.LoadedModel, sampler: str, steps: int, guidance: float, seed: int,
                  batch_size: int | None = None, spacing: str | None = None, bf16: bool = False,
                  compiled: bool = False) -> dict:
    diffusion_kind = loaded.kind == "diffusion"
    info = {"producer": "genesis sampler", "checkpoint": str(loaded.path), "kind": loaded.kind,
            "run_id": loaded.run_id, "step": loaded.state.get("step"), "sampler": sampler if diffusion_kind else "flow",
            "steps": steps, "guidance": guidance, "seed": seed}
    if batch_size is not None:  # the events depend on it (see the module doc)
        info["batch_size"] = batch_size
    if bf16:  # so do they on the precision
        info["precision"] = "bf16"
    if compiled:  # and, at round-off, on compiling
        info["compiled"] = True
    if diffusion_kind and sampler in diffusion.DEFAULT_SPACING:
        info["spacing"] = diffusion.resolve_spacing(loaded.config.diffusion, sampler, spacing)
    return info


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0"))


def sample_to_file(checkpoint_path: str | Path, labels: np.ndarray, out: str | Path, sampler: str | None = None,
                   steps: int | None = None, guidance: float = 1.0, seed: int = 0, device: str = "auto",
                   batch_size: int | None = None,
                   force: bool = False, progress: Callable[[int, int], None] | None = None,
                   spacing: str | None = None, on_warning: Callable[[str], None] | None = None,
                   bf16: bool | None = None, compiled: bool | None = None) -> Path:
    """Sample and stream batches into an HDF5 file in the training-data schema; sampler/steps: None =
    the checkpoint's own (recorded_sampler); bf16, compiled: see generate_batches (None: fast_settings).
    on_warning receives each `range_warnings` message (labels outside the training ranges: sampled anyway),
    once (rank 0 under torchrun).

    Under torchrun (WORLD_SIZE > 1) every rank draws the batches b with b % world == rank on its own
    device (cuda:LOCAL_RANK with device auto/cuda on a GPU machine), writes them to a shard next to
    `out`, and rank 0 merges the shards into `out` in the global batch order: the same events as one
    process with the same seed and batch size. `out`'s folder must be one that every rank can see."""
    rank, world, local_rank = dist_env()
    if world > 1:
        return _sample_sharded(checkpoint_path, labels, Path(out), sampler, steps, guidance, seed, device, batch_size,
                               force, progress, spacing, rank, world, local_rank, on_warning, bf16, compiled)
    loaded = checkpoint.load_model(checkpoint_path, device=checkpoint.resolve_device(device))
    _say_range_warnings(labels, loaded, on_warning)
    sampler, steps = recorded_sampler(loaded, sampler, steps)
    bf16, compiled = fast_settings(loaded, len(labels), bf16, compiled)
    batch_size = batch_size or default_batch_size(next(loaded.model.parameters()).device)
    info = producer_info(loaded, sampler, steps, guidance, seed, batch_size, spacing, bf16, compiled)
    with schema.EventWriter(out, loaded.geometry, info, force=force) as writer:
        start = 0
        for batch in generate_batches(loaded, labels, sampler, steps, guidance, seed, batch_size, progress,
                                      spacing=spacing, bf16=bf16, compiled=compiled):
            writer.append(batch, labels[start:start + len(batch)])
            start += len(batch)
    return Path(out)


def shard_path(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f"{out.stem}.shard{rank}of{world}{out.suffix or '.h5'}")


def _say_range_warnings(labels: np.ndarray, loaded: checkpoint.LoadedModel,
                        on_warning: Callable[[str], None] | None) -> None:
    for message in range_warnings(labels, loaded) if on_warning else ():
        on_warning(message)


def _sample_sharded(checkpoint_path, labels: np.ndarray, out: Path, sampler: str | None, steps: int | None,
                    guidance: float,
                    seed: int, device: str, batch_size: int | None, force: bool, progress, spacing: str | None,
                    rank: int, world: int, local_rank: int, on_warning: Callable[[str], None] | None = None,
                    bf16: bool | None = None, compiled: bool | None = None) -> Path:
    """One rank of sample_to_file under torchrun. The ranks exchange no tensors, only barriers, so the
    process group is gloo on GPU machines too (NCCL would only add a device binding)."""
    import torch.distributed as dist

    if out.exists() and not force:  # every rank sees the same file and stops with the same message
        raise DataError(f"{out}: file exists; choose another name or pass --force to overwrite")
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")
    try:
        loaded = checkpoint.load_model(checkpoint_path, device=checkpoint.resolve_device(device, local_rank))
        if rank == 0:
            _say_range_warnings(labels, loaded, on_warning)
        sampler, steps = recorded_sampler(loaded, sampler, steps)
        bf16, compiled = fast_settings(loaded, len(labels), bf16, compiled)  # the whole request: every rank alike
        batch_size = batch_size or default_batch_size(next(loaded.model.parameters()).device)
        starts = batch_starts(len(labels), batch_size)
        mine = list(range(rank, len(starts), world))
        info = {**producer_info(loaded, sampler, steps, guidance, seed, batch_size, spacing, bf16, compiled),
                "ranks": world}
        if mine:  # more ranks than batches: the last ranks have nothing to draw
            with schema.EventWriter(shard_path(out, rank, world), loaded.geometry, info, force=True) as writer:
                for b, batch in zip(mine, generate_batches(loaded, labels, sampler, steps, guidance, seed, batch_size,
                                                           progress, spacing=spacing, batches=mine, bf16=bf16,
                                                           compiled=compiled)):
                    writer.append(batch, labels[starts[b]:starts[b] + len(batch)])
        dist.barrier()
        if rank == 0:
            merge_shards(out, world, len(labels), batch_size, loaded.geometry, info, force)
        dist.barrier()  # every rank returns once the file is there
    finally:
        if own_group:
            dist.destroy_process_group()
    return out


def merge_shards(out: Path, world: int, n: int, batch_size: int, geometry, producer: dict, force: bool) -> Path:
    """Merge the world shards of sample_to_file into `out` in global batch order (batch b is the
    (b // world)-th batch of shard b % world), then delete the shards."""
    shards = [shard_path(out, r, world) for r in range(min(world, len(batch_starts(n, batch_size))))]
    with schema.EventWriter(out, geometry, producer, force=force) as writer:
        for b, start in enumerate(batch_starts(n, batch_size)):
            size = min(batch_size, n - start)
            first = (b // world) * batch_size
            signal, labels, _ = schema.read_events(shards[b % world], first, first + size)
            writer.append(signal, labels)
    for shard in shards:
        shard.unlink()
    return out


def preview_figure(model: torch.nn.Module, cfg, geometry, device: torch.device, data_record: dict | None = None):
    """3D views of two generated events at fixed labels (a run artifact at the end of training)."""
    from genesis import viz

    norm = model.normalization
    labels = np.array([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0], [1e6, 2.0, 4.0, 100.0, -100.0, -200.0]], np.float32)
    geo_n = norm.normalize_geometry(torch.from_numpy(geometry.positions)).to(device)
    lab_n = norm.normalize_labels(torch.from_numpy(labels).to(device))
    gen = torch.Generator(device=device).manual_seed(0)
    model.eval()
    x = generate_normalized(model, cfg.kind, cfg, lab_n, geo_n, "ddim", min(20, cfg.diffusion.timesteps), generator=gen,
                            data_record=data_record)
    threshold = cfg.flow.hit_threshold if cfg.kind == "flow" else HIT_THRESHOLD_PE
    sig = postprocess(norm.denormalize_signal(x.float().cpu(), torch.from_numpy(labels), geometry.positions).numpy(),
                      threshold, data_record, threshold_decides=cfg.kind == "flow",
                      npe_floor=cfg.diffusion.dequantize_npe)
    return viz.linked_event_figures(geometry, [(f"E={lab[0]:.0e} GeV", s[0], s[1]) for lab, s in zip(labels, sig)])
