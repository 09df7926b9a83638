"""Datasets yielding normalized (signal (2, P), geometry (3, P), label (6,)).

Two ways in:
- `InMemoryEvents`: the split normalized once and kept as one tensor (on the GPU when it fits), with a
  fast `batches()` iterator that indexes on the device, so a string-patch model is never input-bound.
- `H5EventStream`: an IterableDataset that reads shuffled chunks of events from disk; h5py is opened
  inside each DataLoader worker (never shared across processes).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from genesis import noise
from genesis.config import DataConfig
from genesis.data import schema
from genesis.data.normalization import Normalization
from genesis.errors import ConfigError, DataError
from genesis.geometry import Geometry

READ_CHUNK = 512
log = logging.getLogger(__name__)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint sorted index arrays 'train', 'val', 'test' covering range(n), fixed by seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise DataError(f"dataset of {n} events is too small for the requested val/test fractions")
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    return {k: np.sort(v) for k, v in parts.items()}


def fingerprint(path: str | Path) -> str:
    """Short content hash of a data file (shape, labels and the first events), cheap for large files."""
    path = Path(path)
    n, p, _ = schema.file_info(path)
    h = hashlib.sha256(f"{n}:{p}".encode())
    with h5py.File(path, "r") as f:
        h.update(np.ascontiguousarray(f["label"][()], dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(f["input"][: min(n, 16)], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def resolve_geometry(cfg: DataConfig) -> Geometry:
    """The geometry named in the config (CSV path or built-in name), else the positions stored in the
    data file. DataError when its P differs from the data's or its DOMs are not ordered by string then
    DOM (string-patch tokens would mix strings)."""
    from genesis import geometry

    geo = geometry.load(cfg.geometry) if cfg.geometry else schema.read_geometry(cfg.path)
    _, p, _ = schema.file_info(cfg.path)
    if geo.n_doms != p:
        raise DataError(f"{cfg.path}: dataset 'input' has P = {p} DOMs but geometry '{geo.name}' has {geo.n_doms}")
    geometry.require_string_order(geo, str(cfg.geometry or cfg.path))
    return geo


def fits_in_memory(n_events: int, n_doms: int, device: torch.device) -> bool:
    """True when the normalized split takes under a quarter of the free memory of the device."""
    need = n_events * (2 * n_doms + 6) * 4
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return need < 0.4 * free
    try:
        import os

        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        free = 4 << 30
    return need < 0.25 * free


class InMemoryEvents(Dataset):
    """Normalized events held as tensors. signal (N, 2, P), labels (N, 6), geometry (3, P)."""

    def __init__(self, signal: torch.Tensor, labels: torch.Tensor, geometry: torch.Tensor) -> None:
        self.signal, self.labels, self.geometry = signal, labels, geometry

    def __len__(self) -> int:
        return len(self.signal)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.signal[i], self.geometry, self.labels[i]

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (signal (B, 2, P), labels (B, 6)) by indexing on the tensors' device, from batch `skip` on
        (the order is drawn in full first, so skipping k batches resumes an epoch where it stopped)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.signal.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(skip * batch_size, stop, batch_size):
            idx = order[start:start + batch_size]
            yield self.signal.index_select(0, idx), self.labels.index_select(0, idx)


def read_training_events(path: str | Path, indices: np.ndarray, geometry: Geometry, noise_radius: float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Physical (signal (n, 2, P), labels (n, 6)) of the given events as the model learns them: with a noise
    radius (data.noise_radius_m), without their isolated hits (genesis.noise.clean)."""
    sig, lab, _ = schema.read_events(path, indices=indices)
    if noise_radius > 0:
        sig = noise.clean(sig, noise.adjacency(geometry.positions, noise_radius))
    return sig, lab


def load_in_memory(path: str | Path, indices: np.ndarray, norm: Normalization, geometry: Geometry,
                   device: torch.device | str = "cpu", noise_radius: float = 0.0) -> InMemoryEvents:
    """Read the given events chunk by chunk (`read_training_events`), normalize each chunk on `device`, keep
    the result there."""
    device = torch.device(device)
    p = geometry.n_doms
    signal = torch.empty((len(indices), norm.channels, p), dtype=torch.float32, device=device)
    labels = torch.empty((len(indices), 6), dtype=torch.float32, device=device)
    for start in range(0, len(indices), READ_CHUNK):
        sel = indices[start:start + READ_CHUNK]
        sig, lab = read_training_events(path, sel, geometry, noise_radius)
        sl = slice(start, start + len(sel))
        signal[sl] = norm.normalize_signal(torch.from_numpy(sig).to(device), torch.from_numpy(lab).to(device),
                                           geometry.positions)
        labels[sl] = norm.normalize_labels(torch.from_numpy(lab).to(device))
    geo = norm.normalize_geometry(torch.from_numpy(geometry.positions).to(device)).contiguous()
    return InMemoryEvents(signal, labels, geo)


class H5EventStream(IterableDataset):
    """Stream normalized (signal, geometry, label) from disk in shuffled chunks (for large files)."""

    def __init__(self, path: str | Path, indices: np.ndarray, norm: Normalization, geometry: Geometry,
                 shuffle: bool = True, seed: int = 0, chunk: int = READ_CHUNK, noise_radius: float = 0.0) -> None:
        self.path, self.indices, self.norm, self.shuffle, self.seed, self.chunk = str(path), indices, norm, shuffle, seed, chunk
        self.geometry = norm.normalize_geometry(torch.from_numpy(geometry.positions))
        self.positions, self.geo, self.noise_radius = geometry.positions, geometry, noise_radius
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_chunks(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + self.epoch)
        chunks = [self.indices[i:i + self.chunk] for i in range(0, len(self.indices), self.chunk)]
        if self.shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        info = get_worker_info()
        return chunks if info is None else chunks[info.id::info.num_workers]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed + self.epoch + 7919)
        for sel in self._my_chunks():
            sig, lab = read_training_events(self.path, sel, self.geo, self.noise_radius)
            sig_n = self.norm.normalize_signal(torch.from_numpy(sig), torch.from_numpy(lab), self.positions)
            lab_n = self.norm.normalize_labels(torch.from_numpy(lab))
            order = rng.permutation(len(sel)) if self.shuffle else np.arange(len(sel))
            for i in order:
                yield sig_n[i], self.geometry, lab_n[i]


def stream_batches(stream: H5EventStream, batch_size: int, num_workers: int, device: torch.device
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(signal (B, 2, P), labels (B, 6)) batches from a stream through a DataLoader with workers."""
    loader = DataLoader(stream, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    for sig, _, lab in loader:
        yield sig.to(device, non_blocking=True), lab.to(device, non_blocking=True)


def shard(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s share of `indices`: every rank gets the same count (the last len % world events are
    left out), so all ranks run the same number of steps and meet in every collective."""
    usable = len(indices) - len(indices) % world
    return indices[:usable][rank::world]


def check_refractive_index(norm: Normalization, path: str | Path) -> None:
    """ConfigError when the time reference measures from direct light with another refractive index than the
    one the data's simulator used (its attributes state it): the delays would be off by the difference."""
    stated = schema.read_producer(path).get("refractive_index")
    if norm.time_reference == "arrival" and isinstance(stated, (int, float)) and stated != norm.refractive_index:
        raise ConfigError(f"{path} was simulated with refractive index {stated} but data.normalization.refractive_index "
                          f"is {norm.refractive_index}; set data.normalization.refractive_index={stated}")


def open_split(cfg: DataConfig, split: str, norm: Normalization, geometry: Geometry, device: torch.device,
               rank: int = 0, world: int = 1) -> InMemoryEvents | H5EventStream:
    """The events of one split ('train', 'val', 'test'), sharded across DDP ranks, in memory or streamed
    (after `check_refractive_index`)."""
    check_refractive_index(norm, cfg.path)
    n, p, _ = schema.file_info(cfg.path)
    n = min(n, cfg.max_events) if cfg.max_events else n
    indices = shard(split_indices(n, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)[split], rank, world)
    if len(indices) == 0:
        raise DataError(f"{cfg.path}: the '{split}' split is empty; use more events or larger fractions")
    in_memory = cfg.in_memory == "always" or (cfg.in_memory == "auto" and fits_in_memory(len(indices), p, device))
    if in_memory:
        return load_in_memory(cfg.path, indices, norm, geometry, device, cfg.noise_radius_m)
    return H5EventStream(cfg.path, indices, norm, geometry, shuffle=split == "train", seed=cfg.split_seed,
                         noise_radius=cfg.noise_radius_m)


def value_ranges(cfg: DataConfig, norm: Normalization, positions: np.ndarray | None = None) -> dict[str, Any]:
    """What the model saw in training, stored in checkpoints, over all training events (read in chunks,
    so any file size works): per-channel min/max of the normalized signal (sampling clips x0 to it),
    min/max of the physical labels (labels outside warn), and of hit DOMs' npe and time, plus whether
    every npe is a whole number (sampled hits then get counts inside those ranges), and the fewest hit DOMs
    of any triggered event (`hit_doms_min`, the trigger: sampling draws events with fewer again; see
    `trigger_threshold`), with a warning in `warnings` (and the log) when that is 0. With data.noise_radius_m,
    the signal and hit ranges are those of the cleaned events the model learns, `hit_doms_min` that of the
    events as recorded (sampling adds the noise before it counts), and `noise` the noise model (genesis.noise)."""
    n, _, _ = schema.file_info(cfg.path)
    n = min(n, cfg.max_events) if cfg.max_events else n
    train = split_indices(n, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)["train"]
    with h5py.File(cfg.path, "r") as f:
        labels = np.asarray(f["label"][()], dtype=np.float64)[train]
    lo, hi = np.full(norm.channels, np.inf), np.full(norm.channels, -np.inf)
    hit_lo, hit_hi, integer, n_hits = np.full(2, np.inf), np.full(2, -np.inf), True, []
    if cfg.noise_radius_m > 0 and positions is None:
        raise ConfigError("data.noise_radius_m needs the DOM positions to find isolated hits")
    noise_fit = noise.NoiseFit(noise.adjacency(positions, cfg.noise_radius_m), cfg.noise_radius_m) \
        if cfg.noise_radius_m > 0 else None
    for start in range(0, len(train), READ_CHUNK):
        signal, chunk_labels, _ = schema.read_events(cfg.path, indices=train[start:start + READ_CHUNK])
        n_hits.append((signal[:, 0] > 0).sum(1))
        if noise_fit:
            signal = noise_fit.update(signal)
        x = norm.normalize_signal(signal.astype(np.float64), chunk_labels.astype(np.float64), positions)
        lo, hi = np.minimum(lo, x.min(axis=(0, 2))), np.maximum(hi, x.max(axis=(0, 2)))
        hits = signal.transpose(1, 0, 2)[:, signal[:, 0] > 0]  # (2, hits)
        if hits.size:
            hit_lo, hit_hi = np.minimum(hit_lo, hits.min(1)), np.maximum(hit_hi, hits.max(1))
            integer = integer and bool(np.all(hits[0] == np.round(hits[0])))
    ranges = {"signal_min": lo.tolist(), "signal_max": hi.tolist(),
              "label_min": labels.min(0).tolist(), "label_max": labels.max(0).tolist()}
    if np.isfinite(hit_lo).all():
        trigger = trigger_threshold(schema.read_producer(cfg.path))
        fewest, warnings = fewest_triggered_hits(np.concatenate(n_hits), trigger, str(cfg.path))
        ranges.update(hit_npe_min=float(hit_lo[0]), hit_npe_max=float(hit_hi[0]), hit_time_min=float(hit_lo[1]),
                      hit_time_max=float(hit_hi[1]), npe_integer=integer, hit_doms_min=fewest,
                      hit_doms_trigger=trigger)
        if warnings:
            ranges["warnings"] = warnings
    if noise_fit:
        ranges["noise"] = noise_fit.record()
    return ranges


def trigger_threshold(producer: dict[str, Any]) -> int:
    """The hit DOMs an event needs to count as triggered: the trigger the data's attributes state (the
    simulator's min_hits), else 1 (an event without any pulse did not trigger)."""
    stated = producer.get("min_hits") if producer.get("producer") == "genesis simulator" else None
    return int(stated) if isinstance(stated, (int, float)) and stated >= 1 else 1


def fewest_triggered_hits(n_hit: np.ndarray, trigger: int, source: str) -> tuple[int, list[str]]:
    """(the fewest hit DOMs of the events with at least `trigger` of them, warnings) for hit DOM counts (N,).
    0 (with a warning, also logged) when no event triggered: sampling then never redraws an event."""
    triggered = n_hit[n_hit >= trigger]
    warnings = []
    if len(triggered) < len(n_hit):
        warnings.append(f"{source}: {len(n_hit) - len(triggered)} of {len(n_hit)} training events have fewer than "
                        f"{trigger} hit DOM(s) (untriggered); hit_doms_min counts the triggered ones only")
    fewest = int(triggered.min()) if len(triggered) else 0
    if fewest == 0:
        warnings.append(f"{source}: no training event has {trigger} or more hit DOMs; hit_doms_min is 0, so "
                        "sampling does not redraw events below a trigger")
    for text in warnings:
        log.warning(text)
    return fewest, warnings


def training_data_record(cfg: DataConfig, norm: Normalization, positions: np.ndarray | None = None) -> dict[str, Any]:
    """The part of a checkpoint's `data` record that describes the training file: `value_ranges` plus
    `source`, what made the file (the simulator with its settings, seed and event count, copied from the
    file's attributes; `schema.describe_source`), so the record still means something where the file is
    not (another machine, a deleted temporary folder)."""
    n, _, _ = schema.file_info(cfg.path)
    return {**value_ranges(cfg, norm, positions), "source": schema.describe_source(cfg.path, n)}
