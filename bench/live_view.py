"""Does watching a run slow it? `nice -n 19 python bench/live_view.py [--steps 150] [--reps 2]`

Trains the tiny preset (configs/tiny.yaml, --steps steps) as a real launched trainer subprocess
(genesis.launcher, the dashboard's own path), alternately with the Train page closed and open in headless
Chromium against `streamlit run app.py` (the approach of tests/test_browser.py), on the same machine and in
the same run; alternating cancels slow drifts of the machine's load. For each phase it prints the trainer's
events/s (the median of its logged train/events_per_s, warm-up window left out) and, for open phases, the
CPU time the dashboard and the browser used; then the ratio open / closed (target >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="training steps per phase (default 150)")
    p.add_argument("--events", type=int, default=1000, help="events in the demo dataset (default 1000)")
    p.add_argument("--reps", type=int, default=2, help="closed/open pairs (default 2)")
    p.add_argument("--refresh", type=float, default=None, help="live refresh in s (default: the page's, 5 s)")
    return p.parse_args()


def descendants(pid: int) -> list[int]:
    """Pids of all processes below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def dashboard_cpu_seconds() -> float:
    """utime + stime of this process's descendants except trainers: the streamlit server and the browser."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            if b"genesis\x00train" in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":  # an ended trainer not yet reaped (its cmdline is gone): not the dashboard
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def train_once(home: Path, steps: int) -> tuple[float, float]:
    """Launch the tiny preset, wait for the end; (median events/s after the first window, wall seconds)."""
    from genesis import config, launcher, tracking

    cfg = config.load(ROOT / "configs" / "tiny.yaml", [f"data.path={home}/data/demo.h5", f"train.max_steps={steps}",
                                                       "train.epochs=1000", "train.device=cpu", "train.log_every=5",
                                                       "train.checkpoint_every=100000", "name=bench-live-view"])
    store = tracking.Store.default()
    start = time.time()
    run_id = launcher.launch(cfg, store=store)
    while store.run(run_id).info.status == "RUNNING":
        time.sleep(1)
    wall = time.time() - start
    if store.run(run_id).info.status != "FINISHED":
        raise SystemExit(f"run {run_id} ended {store.run(run_id).info.status}:\n" + launcher.log_tail(store, run_id, 30))
    rates = store.metric_history(run_id, "train/events_per_s")["value"].tolist()[1:]
    return statistics.median(rates), wall


def main() -> None:
    args = parse()
    home = Path(tempfile.mkdtemp(prefix="genesis-bench-live-"))
    os.environ["GENESIS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if args.refresh:
        os.environ["GENESIS_LIVE_REFRESH_S"] = str(args.refresh)
    from conftest import browser_page, streamlit_app
    from genesis import tracking
    from genesis.data.simulate import simulate_to_file
    from genesis.geometry import icecube86_like

    (home / "data").mkdir()
    simulate_to_file(home / "data" / "demo.h5", args.events, icecube86_like(), seed=0)
    tracking.Store.default().experiment_id(tracking.DEFAULT_EXPERIMENT)
    print(f"tiny preset, {args.steps} steps per phase, {args.events} events, {os.cpu_count()} CPUs, home {home}")
    print(f"{'phase':<8}{'events/s':>10}{'wall s':>8}{'dashboard+browser CPU s':>26}")
    closed, opened = [], []
    with streamlit_app(home, home / "streamlit.log") as base, browser_page() as page:
        for rep in range(args.reps):
            page.goto("about:blank")  # closed: no session, the server idles
            time.sleep(2)
            rate, wall = train_once(home, args.steps)
            closed.append(rate)
            print(f"{'closed':<8}{rate:>10.1f}{wall:>8.1f}{'-':>26}", flush=True)

            page.goto(f"{base}/train")
            page.get_by_text("Active runs").first.wait_for()
            cpu0 = dashboard_cpu_seconds()
            rate, wall = train_once(home, args.steps)
            cpu = dashboard_cpu_seconds() - cpu0
            if not page.locator(".js-plotly-plot").count():
                print("warning: the live chart never appeared; was the page watching?", flush=True)
            opened.append(rate)
            print(f"{'open':<8}{rate:>10.1f}{wall:>8.1f}{cpu:>26.1f}", flush=True)
    c, o = statistics.mean(closed), statistics.mean(opened)
    print(f"\nclosed {c:.1f} events/s, open {o:.1f} events/s, ratio open/closed {o / c:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
