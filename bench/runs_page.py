"""Runs page timings on a store with many runs: `python bench/runs_page.py [--runs 1000] [--dir DIR]`.

Builds N runs (100 steps of train/loss, 10 of val/loss, a few params each; log_batch) in a temporary
SQLite store, then times, each against a baseline measured in the same run:
  - one page (50 runs) of genesis.runs.runs_table   vs the bare MlflowClient.search_runs of that page
  - best val/loss of that page, one batched query    vs get_metric_history run by run
  - the full filter (status + name + params) query   vs the bare search_runs with the same filter
  - compare_curves for 5 runs                        vs 5 bare get_metric_history calls
  - rendering views/runs.py with AppTest (cold, rerun, 5 runs selected) vs runs_table alone
--dir reuses (or keeps) the store in DIR, so a second invocation skips the build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000, help="runs in the store (default 1000)")
    p.add_argument("--dir", type=Path, default=None, help="store folder to reuse or keep (default: temporary)")
    p.add_argument("--repeat", type=int, default=5, help="repetitions per timing; the median is printed")
    args = p.parse_args()
    if args.runs < 5:
        p.error("--runs must be at least 5 (compare_curves uses 5 runs)")
    return args


ARGS = parse()
WORK = ARGS.dir or Path(tempfile.mkdtemp(prefix="genesis-bench-runs-"))
WORK.mkdir(parents=True, exist_ok=True)
# Before mlflow or genesis is imported: the store every call (and the page under AppTest) uses.
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{WORK / 'mlflow.db'}"
os.environ["GENESIS_HOME"] = str(WORK)
os.environ.pop("GENESIS_MLFLOW_UI_URL", None)
sys.path.insert(0, str(ROOT))

from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from genesis import runs, tracking  # noqa: E402

STATUSES = ("FINISHED", "FINISHED", "FAILED", "KILLED", "FINISHED")
FILTER = dict(status="FINISHED", name_contains="5", param_filter="params.kind = 'flow'")


def build(store: tracking.Store, n: int) -> None:
    exp = store.experiment_id(tracking.DEFAULT_EXPERIMENT)
    client = store.client
    t0 = time.perf_counter()
    for i in range(n):
        kind = "flow" if i % 2 else "diffusion"
        start = int(time.time() * 1000) - (n - i) * 600_000
        run = client.create_run(exp, run_name=f"run-{i:04d}", start_time=start, tags={tracking.TAG_KIND: kind})
        rid = run.info.run_id
        metrics = [Metric("train/loss", 1.0 / (s + 1) + 0.01 * (i % 7), start + 1000 * s, s) for s in range(100)]
        metrics += [Metric("val/loss", 0.5 + 0.1 * ((s * 7 + i) % 10) / 10, start + 10_000 * s, s) for s in range(10)]
        metrics += [Metric("train/events_per_s", 200.0 + i % 13, start + 99_000, 99)]
        params = [Param("kind", kind), Param("train.lr", str(10 ** -(2 + i % 3))), Param("model.depth", str(2 + i % 4)),
                  Param("data.path", "data/demo.h5")]
        client.log_batch(rid, metrics=metrics, params=params, tags=[RunTag("bench", "1")])
        if i % 20:  # every 20th run stays RUNNING (no pid tag, so reconcile leaves it alone)
            client.set_terminated(rid, status=STATUSES[i % len(STATUSES)], end_time=start + 100_000)
        if (i + 1) % 100 == 0:
            print(f"  built {i + 1}/{n} runs ({time.perf_counter() - t0:.0f} s)", flush=True)


def timed(fn, repeat: int = ARGS.repeat) -> tuple[float, object]:
    """Median wall time (s) over `repeat` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def row(what: str, t: float, base_what: str, base: float) -> None:
    print(f"{what:<44s} {t * 1000:9.1f} ms   {base_what:<36s} {base * 1000:9.1f} ms   ratio {t / base:6.2f}")


def main() -> None:
    store = tracking.Store.default()
    client = store.client
    exp = store.experiment_id(tracking.DEFAULT_EXPERIMENT)
    have = len(client.search_runs([exp], max_results=ARGS.runs))
    if have < ARGS.runs:
        print(f"building {ARGS.runs - have} runs in {WORK} ...", flush=True)
        t = time.perf_counter()
        build(store, ARGS.runs - have)
        print(f"built in {time.perf_counter() - t:.1f} s")
    print(f"store: {os.environ['MLFLOW_TRACKING_URI']} with {ARGS.runs} runs; medians of {ARGS.repeat}\n")

    base, page = timed(lambda: client.search_runs([exp], max_results=50, order_by=["attributes.start_time DESC"]))
    t, (table, _) = timed(lambda: runs.runs_table(store, [tracking.DEFAULT_EXPERIMENT], page_size=50))
    assert len(table) == min(50, ARGS.runs) and table["best val/loss"].notna().all()
    row(f"runs_table, one page of {len(table)}", t, f"bare search_runs ({len(page)})", base)

    ids = [r.info.run_id for r in page]
    t_bulk, best = timed(lambda: runs.best_values(store, ids))
    t_loop, _ = timed(lambda: [min(m.value for m in client.get_metric_history(i, "val/loss")) for i in ids])
    assert best.notna().all()
    row(f"best val/loss of {len(ids)} runs (batched)", t_bulk, f"get_metric_history x{len(ids)}", t_loop)

    flt = runs.build_filter(FILTER["status"], FILTER["name_contains"], FILTER["param_filter"])
    base, found = timed(lambda: client.search_runs([exp], flt, max_results=1000))
    t, (table, _) = timed(lambda: runs.runs_table(store, [tracking.DEFAULT_EXPERIMENT], page_size=1000, **FILTER))
    assert len(table) == len(found)
    row(f"runs_table with full filter ({len(found)} runs)", t, "bare search_runs, same filter", base)

    five = ids[:5]
    base, _ = timed(lambda: [client.get_metric_history(i, "train/loss") for i in five])
    t, curves = timed(lambda: runs.compare_curves(store, five, "train/loss", "wall time"))
    assert len(curves) == 500
    row("compare_curves, 5 runs x 100 steps", t, "get_metric_history x5", base)

    from streamlit.testing.v1 import AppTest

    t_table, _ = timed(lambda: runs.runs_table(store, [tracking.DEFAULT_EXPERIMENT], page_size=50))
    at = AppTest.from_file(str(ROOT / "views" / "runs.py"), default_timeout=120)
    t = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t
    assert not at.exception, [e.value for e in at.exception]
    row("AppTest views/runs.py, first render", cold, "runs_table (50)", t_table)
    warm, _ = timed(lambda: at.run())
    row("AppTest views/runs.py, rerun", warm, "runs_table (50)", t_table)
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0, 1, 2, 3, 4], "columns": []}}
    sel, _ = timed(lambda: at.run())
    assert not at.exception and len(at.get("plotly_chart")) >= 1, [e.value for e in at.exception]
    row("AppTest views/runs.py, 5 runs selected", sel, "runs_table (50)", t_table)


if __name__ == "__main__":
    try:
        main()
    finally:
        if ARGS.dir is None:
            shutil.rmtree(WORK, ignore_errors=True)
