"""Training and sampling throughput: per-DOM seed model vs string-patch model, and the whole trainer.

Both models share hidden size and depth (about the same parameter count); only patch_size differs
(1 = one token per DOM, the original PMTDiT; 60 = one token per string). Measured in one run:
- bare training step (forward + backward + AdamW, bf16 autocast on CUDA) events/s;
- sampling events/s for DDIM-50 and DDPM-1000, from the measured time of one denoising step at the
  sampling batch size (a full DDPM-1000 run of the per-DOM model would take hours); the patch model's
  DDIM-50 figure is also checked by a real end-to-end sample;
- the whole trainer (genesis.train.train with data loading, EMA, logging) on a simulated file, next to
  the bare step of the same model and batch.
Ratios printed: patch / per-DOM, trainer / bare step.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genesis import config  # noqa: E402
from genesis.data.normalization import Normalization  # noqa: E402
from genesis.diffusion import GaussianDiffusion, ddim_sample  # noqa: E402
from genesis.geometry import icecube86_like  # noqa: E402
from genesis.models.dit import PMTDiT  # noqa: E402


def timed(fn, device: torch.device, repeat: int) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def measure(model_cfg, device, batch: int, sample_batch: int, repeat: int) -> dict:
    geo = icecube86_like()
    model = PMTDiT(model_cfg, geo.n_doms, Normalization()).to(device)
    diffusion = GaussianDiffusion(config.DiffusionConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    geo_n = torch.rand(3, geo.n_doms, device=device)
    x, lab = torch.randn(batch, 2, geo.n_doms, device=device), torch.rand(batch, 6, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def train_step():
        with amp:
            loss = diffusion.training_loss(model, x, lab, geo_n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    xs, ls = torch.randn(sample_batch, 2, geo.n_doms, device=device), torch.rand(sample_batch, 6, device=device)
    t = torch.full((sample_batch,), 500, device=device)

    @torch.no_grad()
    def denoise_step():
        with amp:
            model(xs, t, ls, geo_n)

    model.train()
    step_s = timed(train_step, device, repeat)
    model.eval()
    denoise_s = timed(denoise_step, device, repeat)
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "train": batch / step_s, "ddim50": sample_batch / (50 * denoise_s),
            "ddpm1000": sample_batch / (1000 * denoise_s), "model": model, "diffusion": diffusion}


def real_ddim(result: dict, device, n: int) -> float:
    model, geo = result["model"], icecube86_like()
    lab, geo_n = torch.rand(n, 6, device=device), torch.rand(3, geo.n_doms, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        sec = timed(lambda: ddim_sample(result["diffusion"], model, lab, geo_n, steps=50), device, 1)
    return n / sec


def whole_trainer(preset: Path, device: torch.device, events: int, steps: int) -> tuple[float, float]:
    """(trainer events/s timed around Trainer.fit, bare-step events/s of the same model and batch).

    The trainer runs without an MLflow store here so the figure is the loop itself: data batches from
    memory, autocast, loss, backward, clipping, AdamW, LR schedule, EMA and checkpoint bookkeeping.
    """
    from genesis.data.simulate import simulate_to_file
    from genesis.train import DistContext, StopRequested, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GENESIS_HOME"] = tmp
        data = simulate_to_file(Path(tmp) / "train.h5", events, icecube86_like(), seed=0)
        cfg = config.load(preset, [f"data.path={data}", f"train.device={device.type}", f"train.max_steps={steps}",
                                   "train.epochs=1000", "data.val_fraction=0.01", "data.test_fraction=0.01",
                                   f"train.checkpoint_every={10 * steps}", f"train.log_every={10 * steps}"])
        trainer = Trainer(cfg, None, None, DistContext(), device)
        trainer.train_step(*next(iter(trainer.batches(trainer.train_data, True))))  # warm-up (kernels, allocator)
        t0 = time.perf_counter()
        trainer.fit(StopRequested())
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = (trainer.step - 1) * cfg.train.batch_size / (time.perf_counter() - t0)
    bare = measure(cfg.model, device, cfg.train.batch_size, 8, 5)["train"]
    return rate, bare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, default=None, help="hidden size of both models (default: seed.yaml's)")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="training batch (default 16 on CUDA, 2 on CPU)")
    p.add_argument("--sample-batch", type=int, default=None)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--trainer-events", type=int, default=3000)
    p.add_argument("--trainer-steps", type=int, default=200)
    p.add_argument("--only-trainer", action="store_true", help="skip the model comparison")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    seed = config.load(ROOT / "configs" / "seed.yaml").model
    hidden, depth = args.hidden or (seed.hidden_size if cuda else 64), args.depth or (seed.depth if cuda else 4)
    heads = seed.num_heads if hidden % seed.num_heads == 0 else 4
    base = config.DiTConfig(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=1, time_embed_dim=seed.time_embed_dim)
    batch, sbatch = args.batch or (16 if cuda else 2), args.sample_batch or (64 if cuda else 4)
    if not args.only_trainer:
        compare_models(base, device, batch, sbatch, args.repeat)
    preset = ROOT / "configs" / ("default.yaml" if cuda else "tiny.yaml")
    trainer, bare = whole_trainer(preset, device, args.trainer_events, args.trainer_steps)
    print(f"whole trainer ({preset.name}): {trainer:,.0f} events/s vs bare step {bare:,.0f} events/s "
          f"(ratio {trainer / bare:.2f})")


def compare_models(base: config.DiTConfig, device: torch.device, batch: int, sbatch: int, repeat: int) -> None:
    cuda = device.type == "cuda"
    hidden, depth = base.hidden_size, base.depth
    per_dom = measure(base, device, batch, sbatch, repeat)
    patch_cfg = config.DiTConfig(**{**config.to_dict(base), "patch_size": 60})
    patch = measure(patch_cfg, device, batch * 64 if cuda else batch * 16, sbatch * 16, repeat)
    real = real_ddim(patch, device, sbatch * 16)
    print(f"device {device}  hidden {hidden}  depth {depth}")
    print(f"{'model':<28}{'params':>12}{'train ev/s':>14}{'DDIM-50 ev/s':>15}{'DDPM-1000 ev/s':>16}")
    for name, r in (("per-DOM (patch 1, seed)", per_dom), ("string patch (patch 60)", patch)):
        print(f"{name:<28}{r['params']:>12,}{r['train']:>14,.1f}{r['ddim50']:>15,.2f}{r['ddpm1000']:>16,.3f}")
    print(f"ratio patch / per-DOM: train {patch['train'] / per_dom['train']:.1f}x, "
          f"DDIM-50 {patch['ddim50'] / per_dom['ddim50']:.1f}x")
    print(f"patch model real DDIM-50 end to end: {real:,.1f} events/s")


if __name__ == "__main__":
    main()
