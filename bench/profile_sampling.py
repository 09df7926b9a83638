"""Where the time of one sampling call goes: a profile of genesis.sampling.generate on a checkpoint.

One call of the real code (default: the shipped demo diffusion model, DDIM-50, 256 events) with timers
around its parts, each closed by a device synchronize (so on CUDA the parts add up, at a small cost to
the total):
- conditioning: PMTDiT.condition, once per sampler call since issue 24 (label embedding, geometry tokens,
  the per-DOM head's per-DOM part), and inside it the physics features (PMTDiT.per_dom_inputs);
- transformer: step embedding, patch embedding, the DiT blocks and the final layer, at every step;
- per-DOM head: at every step;
- sampler arithmetic: the rest of the denoising loop (x0 / eps, clipping, the update);
- redraw: second and later draws of events below the training data's trigger (all of their parts);
- host: denormalization and post-processing to physical events on the CPU.
Shares are of the whole call. Also measured in the same run: the same call with the conditioning made at
every step (as before issue 24) and with classifier-free guidance at scale 2 (a doubled batch), as
events/s and their ratio to the plain call.

    python bench/profile_sampling.py [--device cpu|cuda] [--events 256] [--sampler ddim --steps 50]
    python bench/profile_sampling.py --sweep   # CPU: events/s of one denoising step by batch size and threads
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genesis import checkpoint, sampling  # noqa: E402
from genesis.data.normalization import Normalization  # noqa: E402
from genesis.demo import DEMO_DIR  # noqa: E402

LABELS = np.array([[1e5, 1.0, 1.0, 0.0, 0.0, 0.0], [3e4, 2.0, 4.0, 100.0, -100.0, -200.0],
                   [1e6, 0.5, 2.5, -200.0, 50.0, 100.0], [1e4, 2.5, 5.0, 0.0, 0.0, -400.0]], np.float32)


class Timers:
    """Accumulated wall time per part; every timed region is closed by a device synchronize."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.total, self.calls = device, defaultdict(float), defaultdict(int)
        self.muted = False  # inside a redraw: only the redraw as a whole is timed

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def part(self, name: str):
        if self.muted:
            yield
            return
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.total[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def wrap(self, owner, attr: str, name: str) -> None:
        """Replace owner.attr (a function or bound method) by a timed version."""
        fn = getattr(owner, attr)

        def timed(*args, **kw):
            with self.part(name):
                return fn(*args, **kw)

        setattr(owner, attr, timed)

    def hook(self, module: nn.Module, name: str) -> None:
        """Time every forward of `module` under `name`."""
        starts: list[float] = []

        def pre(m, a):
            if not self.muted:
                self.sync()
                starts.append(time.perf_counter())

        def post(m, a, out):
            if self.muted:
                return
            self.sync()
            self.total[name] += time.perf_counter() - starts.pop()
            self.calls[name] += 1

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def instrument(loaded, timers: Timers) -> None:
    """Timers on the parts of one sampling call (instance attributes and hooks; the code is unchanged)."""
    model = loaded.model
    timers.wrap(model, "condition", "conditioning (once per call)")
    timers.wrap(model, "per_dom_inputs", "  of which physics features")
    for module in (model.t_embedder, model.signal_embed, *model.blocks, model.final_layer):
        timers.hook(module, "transformer")
    if model.dom_head is not None:
        timers.hook(model.dom_head, "per-DOM head")
    timers.hook(model, "network (whole forward)")
    inner = sampling.generate_normalized

    def generate_normalized(*args, **kw):  # a batch's first draw has a progress callback, its redraws none
        if kw.get("progress") is not None:
            with timers.part("draw"):
                return inner(*args, **kw)
        with timers.part("redraw"):
            timers.muted = True
            try:
                return inner(*args, **kw)
            finally:
                timers.muted = False

    sampling.generate_normalized = generate_normalized
    timers.wrap(Normalization, "denormalize_signal", "host")
    timers.wrap(sampling, "postprocess", "host")


def run(loaded, labels: np.ndarray, args, guidance: float = 1.0) -> tuple[float, dict]:
    stats: dict = {}
    t0 = time.perf_counter()
    sampling.generate(loaded, labels, args.sampler, args.steps, guidance, seed=0, batch_size=args.batch_size,
                      progress=lambda d, n: None, stats=stats)
    if next(loaded.model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, stats


class EveryStep(nn.Module):
    """The model without `condition`: samplers then let it make its conditioning at every step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.channels, self.normalization = model, model.channels, model.normalization

    def forward(self, x, t, labels, geometry, drop_labels=None):
        return self.model(x, t, labels, geometry, drop_labels=drop_labels)


def sweep(loaded, batches=(16, 64, 256, 1024), threads=(1, 2), rounds: int = 3) -> None:
    """events/s of one network call (conditioning made once) by batch size and CPU threads; the settings
    are interleaved over `rounds` rounds (the best round counts), so a busy machine biases none of them."""
    model, norm = loaded.model, loaded.normalization
    geo = norm.normalize_geometry(torch.from_numpy(loaded.geometry.positions))
    best: dict = {}
    with torch.no_grad():
        for _ in range(rounds):
            for b in batches:
                labels = norm.normalize_labels(torch.from_numpy(np.resize(LABELS, (b, 6))))
                cond = model.condition(labels, geo, torch.zeros(b, dtype=torch.bool))
                x, t = torch.randn(b, model.channels, geo.shape[-1]), torch.full((b,), 500)
                for n in threads:
                    torch.set_num_threads(n)
                    model(x, t, labels, geo, cond=cond)
                    t0, c0 = time.perf_counter(), time.process_time()
                    model(x, t, labels, geo, cond=cond)
                    wall, cpu = b / (time.perf_counter() - t0), b / (time.process_time() - c0)
                    old = best.get((b, n), (0.0, 0.0))
                    best[b, n] = (max(old[0], wall), max(old[1], cpu))
    print(f"\nevent-steps of the network per second of wall time / per CPU-second (best of {rounds} interleaved "
          "rounds; on a busy shared machine trust the CPU-seconds)")
    print("batch " + "".join(f"{f'{n} thread(s)':>22s}" for n in threads))
    for b in batches:
        print(f"{b:5d} " + "".join(f"{best[b, n][0]:11.1f} /{best[b, n][1]:9.1f}" for n in threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEMO_DIR / "demo-diffusion.pt"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--events", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--sweep", action="store_true", help="only the batch-size and thread sweep (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = checkpoint.resolve_device(args.device)
    loaded = checkpoint.load_model(args.checkpoint, device=device)
    if args.sweep:
        sweep(loaded)
        return
    labels = np.resize(LABELS, (args.events, 6))
    print(f"checkpoint {args.checkpoint} on {device} ({torch.get_num_threads()} CPU threads): {args.sampler}-"
          f"{args.steps}, {args.events} events in batches of {args.batch_size}")
    warm = np.resize(LABELS, (min(8, args.events), 6))
    sampling.generate(loaded, warm, args.sampler, 2, seed=1, batch_size=len(warm))  # warm-up (kernels, caches)

    plain_s, _ = run(loaded, labels, args)  # uninstrumented, for events/s
    model = loaded.model
    loaded.model = EveryStep(model)
    every_step_s, _ = run(loaded, labels, args)
    loaded.model = model
    guided_s, _ = run(loaded, labels, args, guidance=2.0)

    timers = Timers(device)
    instrument(loaded, timers)
    total_s, stats = run(loaded, labels, args)
    t = timers.total
    network = t["network (whole forward)"]
    rows = [("conditioning (once per call)", t["conditioning (once per call)"]),
            ("  of which physics features", t["  of which physics features"]),
            ("transformer", t["transformer"]), ("per-DOM head", t["per-DOM head"]),
            ("rest of the network (adds, unpatchify)", network - t["transformer"] - t["per-DOM head"]),
            ("sampler arithmetic", t["draw"] - network - t["conditioning (once per call)"]),
            ("redraw (all parts)", t["redraw"]), ("host (denormalize, postprocess)", t["host"])]
    rows.append(("other (Python, batching)", total_s - sum(v for k, v in rows if not k.startswith("  "))))
    steps = args.steps if args.sampler != "ddpm" else 1000
    evals = timers.calls["network (whole forward)"]
    print(f"\n{'part':42s} {'seconds':>9s} {'share':>7s} {'ms per network call':>20s}")
    for name, sec in rows:
        print(f"{name:42s} {sec:9.3f} {sec / total_s:7.1%} {1000 * sec / max(evals, 1):20.2f}")
    print(f"{'total (instrumented)':42s} {total_s:9.3f} {1:7.0%}   ({evals} network calls, {steps} steps per draw)")
    print(f"redraw: {stats['redrawn']} of {stats['events']} events drawn again, {stats['below_trigger']} still "
          f"below the trigger")
    n = args.events
    print(f"\nevents/s (uninstrumented): conditioning once per call {n / plain_s:.2f}; "
          f"made at every step {n / every_step_s:.2f} (ratio {every_step_s / plain_s:.2f}x); "
          f"with guidance 2 {n / guided_s:.2f} (cost {guided_s / plain_s:.2f}x)")


if __name__ == "__main__":
    main()
