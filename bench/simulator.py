"""Simulator throughput: the vectorised simulator against the original implementation, in one run.

Baseline: `genesis.data.simulate_reference` (the original float64 simulator with (n, P, 3) temporaries,
batches of 32, kept for this purpose). Measured: `genesis.data.simulate` (float32 planes, thinned Poisson
hits, threaded batches). Both simulate triggered events on the built-in IceCube-86 geometry, bare and
into an HDF5 file (same writer); the two are interleaved over --repeats rounds and the best round of each
is kept, so a neighbour's load on a shared machine hits both alike. Then the physics check: feature
distances (genesis.metrics, normalized W1) between new and old at the same labels against the
old-vs-old floor (each the mean of two independent simulations against one old reference). Prints figures
and the ratios new/old.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genesis import metrics  # noqa: E402
from genesis.data.schema import EventWriter  # noqa: E402
from genesis.data.simulate import simulate, simulate_at_labels, simulate_to_file  # noqa: E402
from genesis.data.simulate_reference import simulate_at_labels_reference, simulate_reference  # noqa: E402
from genesis.geometry import Geometry, icecube86  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rate(run: Callable[[], int]) -> tuple[float, float]:
    """(events per wall-clock second, events per CPU second) of one call of run(), which returns its
    number of events. The second does not depend on what else runs on the machine."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    n = run()
    return n / (time.perf_counter() - t0), n / max(cpu_seconds() - c0, 1e-9)


def old_to_file(path: Path, n: int, geo: Geometry) -> int:
    with EventWriter(path, geo, producer={"producer": "bench"}) as writer:
        for signal, labels in simulate_reference(n, geo, seed=1):
            writer.append(signal, labels)
    return n


def throughput(geo: Geometry, n_new: int, n_old: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best-of-repeats (events per wall second, events per CPU second) of the old and new simulators,
    bare and into an HDF5 file."""
    best = {key: (0.0, 0.0) for key in ("old", "new", "old_file", "new_file")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            runs = {
                "old": lambda: sum(len(s) for s, _ in simulate_reference(n_old, geo, seed=1)),
                "new": lambda: sum(len(s) for s, _ in simulate(n_new, geo, seed=1)),
                "old_file": lambda: old_to_file(Path(tmp) / f"old{r}.h5", n_old, geo),
                "new_file": lambda: simulate_to_file(Path(tmp) / f"new{r}.h5", n_new, geo, seed=1) and n_new,
            }
            for key, run in runs.items():
                wall, cpu = rate(run)
                best[key] = (max(best[key][0], wall), max(best[key][1], cpu))
    return best


def physics(geo: Geometry, n: int, pairs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Normalized W1 per feature, (F,) each, at the same labels: old vs old (the floor) and new vs old,
    each averaged over `pairs` independent simulations compared with one old reference."""
    labels = np.concatenate([lab for _, lab in simulate(n, geo, seed=11)])

    def feats(signal: np.ndarray) -> dict[str, np.ndarray]:
        return metrics.event_features(signal[:, 0], signal[:, 1], geo.positions, geo.string, labels)

    def w1(other: dict[str, np.ndarray]) -> np.ndarray:
        return np.array([metrics.normalized_w1(other[k], ref[k]) for k in metrics.FEATURES])

    ref = feats(simulate_at_labels_reference(labels, geo, np.random.default_rng(0)))
    floor = np.mean([w1(feats(simulate_at_labels_reference(labels, geo, np.random.default_rng(1 + i))))
                     for i in range(pairs)], 0)
    got = np.mean([w1(feats(simulate_at_labels(labels, geo, np.random.default_rng(100 + i))))
                   for i in range(pairs)], 0)
    return floor, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4000, help="events per new-simulator run")
    parser.add_argument("--old-events", type=int, default=800, help="events per old-simulator run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--physics-events", type=int, default=1000, help="0 skips the physics check")
    args = parser.parse_args()
    geo = icecube86()
    best = throughput(geo, args.events, args.old_events, args.repeats)
    print(f"geometry {geo.name} (P = {geo.n_doms}), best of {args.repeats} interleaved rounds; "
          f"events per wall-clock second and per CPU second (all threads)")
    rows = (("old simulator (simulate_reference)", "old", None), ("new simulator (simulate)", "new", "old"),
            ("old simulator + HDF5 writer", "old_file", None), ("new simulator + HDF5 writer", "new_file", "old_file"))
    for title, key, base in rows:
        wall, cpu = best[key]
        line = f"{title:36s}: {wall:7.0f} events/s  {cpu:7.0f} events/CPU-s"
        if base:
            line += f"   new/old {wall / best[base][0]:4.1f}x wall, {cpu / best[base][1]:4.1f}x CPU"
        print(line)
    if args.physics_events:
        floor, got = physics(geo, args.physics_events)
        print(f"\nphysics at the same {args.physics_events} labels: normalized W1 of genesis.metrics features "
              "(mean of 2 simulations vs one old reference)")
        print(f"{'feature':22s} {'old vs old':>10s} {'new vs old':>10s}")
        for name, f, g in zip(metrics.FEATURES, floor, got):
            print(f"{name:22s} {f:10.4f} {g:10.4f}")
        print(f"{'mean':22s} {floor.mean():10.4f} {got.mean():10.4f}   (new vs old / floor: {got.mean() / floor.mean():.2f})")


if __name__ == "__main__":
    main()
