"""Simulator throughput: events/s on this machine, against a baseline measured in the same run.

Baseline: the bare per-event physics (simulate_at_labels on one label set at a time); measured: the
vectorized batched simulator including the trigger and the HDF5 writer. Prints figures and the ratio.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genesis.data.simulate import SimConfig, draw_labels, simulate_at_labels, simulate_to_file  # noqa: E402
from genesis.geometry import icecube86_like  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    geo = icecube86_like()
    rng = np.random.default_rng(0)
    labels = draw_labels(200, rng)
    t0 = time.perf_counter()
    for row in labels:
        simulate_at_labels(row[None], geo, rng, SimConfig())
    per_event = len(labels) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate_to_file(Path(tmp) / "bench.h5", args.events, geo, seed=1)
        batched = args.events / (time.perf_counter() - t0)
        size = (Path(tmp) / "bench.h5").stat().st_size
    print(f"baseline, one event at a time : {per_event:10.0f} events/s")
    print(f"batched simulator + HDF5 write: {batched:10.0f} events/s  ({size / args.events / 1024:.1f} KiB/event on disk)")
    print(f"ratio batched / baseline      : {batched / per_event:10.1f}x")


if __name__ == "__main__":
    main()
