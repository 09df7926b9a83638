"""Data loader throughput (events/s) for the three input paths, against raw HDF5 reads in the same run.

- baseline: schema.read_events over the file in chunks (decompress + clean, no normalization);
- in-memory: InMemoryEvents.batches (what the trainer uses when the split fits);
- streaming: H5EventStream through a DataLoader with workers (large files).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genesis.data import schema  # noqa: E402
from genesis.data.dataset import H5EventStream, load_in_memory, stream_batches  # noqa: E402
from genesis.data.normalization import Normalization  # noqa: E402
from genesis.data.simulate import simulate_to_file  # noqa: E402
from genesis.geometry import icecube86_like  # noqa: E402


def rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    geo, norm = icecube86_like(), Normalization(npe_transform="log1p")
    with tempfile.TemporaryDirectory() as tmp:
        path = simulate_to_file(Path(tmp) / "bench.h5", args.events, geo, seed=0)
        idx = np.arange(args.events)
        t0 = time.perf_counter()
        for start in range(0, args.events, 512):
            schema.read_events(path, start, start + 512)
        raw = rate(args.events, time.perf_counter() - t0)

        t0 = time.perf_counter()
        data = load_in_memory(path, idx, norm, geo, device)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = 0
        for _ in range(5):
            for sig, lab in data.batches(args.batch_size, shuffle=True):
                n += len(sig)
        if device.type == "cuda":
            torch.cuda.synchronize()
        in_memory = rate(n, time.perf_counter() - t0)

        stream = H5EventStream(path, idx, norm, geo, shuffle=True)
        t0 = time.perf_counter()
        n = sum(len(sig) for sig, _ in stream_batches(stream, args.batch_size, args.workers, device))
        streaming = rate(n, time.perf_counter() - t0)
    print(f"device {device}, {args.events} events, batch {args.batch_size}")
    print(f"baseline raw HDF5 chunk reads : {raw:12,.0f} events/s")
    print(f"in-memory load (once)         : {load_s:12.2f} s")
    print(f"in-memory batches             : {in_memory:12,.0f} events/s  ratio {in_memory / raw:8.1f}x")
    print(f"streaming, {args.workers} workers          : {streaming:12,.0f} events/s  ratio {streaming / raw:8.1f}x")


if __name__ == "__main__":
    main()
