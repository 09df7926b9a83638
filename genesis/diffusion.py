"""Gaussian diffusion (DDPM, Ho et al. 2020) with DDIM sampling (Song et al. 2021), DPM-Solver++(2M)
(Lu et al. 2022), UniPC (Zhao et al. 2023), classifier-free guidance (Ho & Salimans 2022) and RePaint
inpainting (Lugmayr et al. 2022).

Like openai/guided-diffusion, `GaussianDiffusion` is a plain class holding the schedule (float64) and the
training loss; the network is passed in. Samplers are module-level functions. Notation: t in [0, T) is
the step index, alpha_bar[t] = prod_{s<=t}(1 - beta_s), x_t = sqrt(alpha_bar[t]) x0 + sqrt(1-alpha_bar[t]) eps;
index -1 stands for clean data (alpha_bar = 1). Only the signal (B, 2, P) is diffused; labels and
geometry are clean conditioning.

Samplers make the network's conditioning (everything that depends on labels and geometry only, see
PMTDiT.condition) once per call and reuse it at every step; step coefficients come from the float64
schedule on the host, so the loop never waits on the device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from genesis.config import DiffusionConfig
from genesis.errors import ConfigError

Progress = Callable[[int, int], None]


def linear_betas(T: int) -> np.ndarray:
    """DDPM linear schedule 1e-4..0.02 for T = 1000, rescaled so any T spans the same noise range."""
    scale = 1000.0 / T
    return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=np.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021) cosine schedule: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi/2)."""
    f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta)


class GaussianDiffusion:
    """Forward process, training loss and model parameterisation (eps or v) for T = cfg.timesteps."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        if cfg.schedule not in ("linear", "cosine"):
            raise ConfigError(f"diffusion.schedule must be 'linear' or 'cosine', got {cfg.schedule!r}")
        if cfg.objective not in ("eps", "v"):
            raise ConfigError(f"diffusion.objective must be 'eps' or 'v', got {cfg.objective!r}")
        self.config = cfg
        self.T = cfg.timesteps
        self.objective = cfg.objective
        self.betas = linear_betas(self.T) if cfg.schedule == "linear" else cosine_betas(self.T)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        # alpha_bar at index t + 1, with alpha_bar(-1) = 1 (clean data): lets strided schedules end at x0.
        self._alpha_bar = torch.from_numpy(np.concatenate([[1.0], self.alphas_cumprod]))
        self._tables: dict[torch.device, Tensor] = {}

    # --- schedule lookup ------------------------------------------------------------------------
    def table(self, device: torch.device) -> Tensor:
        """The alpha_bar table (T + 1,) on `device`, copied once: looking up steps on the device they live
        on never makes the GPU wait for the host. float64 where the device has it (not on MPS)."""
        device = torch.device(device)
        if device not in self._tables:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._tables[device] = self._alpha_bar.to(device, dtype)
        return self._tables[device]

    def alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        """alpha_bar[t] for step indices t (B,) (-1 = clean data), shaped (B, 1, 1) like `like`."""
        a = self.table(t.device)[t.long() + 1]
        return a.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))

    # --- forward process ------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Sample x_t ~ q(x_t | x0) for x0 (B, 2, P), t (B,) step indices; noise (B, 2, P) or fresh N(0, I)."""
        noise = torch.randn_like(x0) if noise is None else noise
        a = self.alpha_bar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor, t_prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t_prev} | x_t, x0) (DDPM eq. 6-7); t_prev defaults to t - 1 and may be
        any earlier index (strided schedules) or -1 (clean data)."""
        t_prev = t - 1 if t_prev is None else t_prev
        a_t, a_prev = self.alpha_bar(t, x_t), self.alpha_bar(t_prev, x_t)
        beta = 1 - a_t / a_prev  # the effective beta of the (possibly strided) step
        mean = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x_t) / (1 - a_t)
        return mean, beta * (1 - a_prev) / (1 - a_t)

    # --- parameterisation -----------------------------------------------------------------------
    def target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network learns: eps, or v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022)."""
        if self.objective == "eps":
            return noise
        a = self.alpha_bar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def output_to_x0_eps(self, out: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Network output (eps or v) at x_t -> (x0, eps) predictions."""
        a = self.alpha_bar(t, x_t)
        if self.objective == "eps":
            return (x_t - (1 - a).sqrt() * out) / a.sqrt(), out
        return a.sqrt() * x_t - (1 - a).sqrt() * out, (1 - a).sqrt() * x_t + a.sqrt() * out

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        a = self.alpha_bar(t, x_t)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    # --- training -------------------------------------------------------------------------------
    def training_loss(self, model: nn.Module, x0: Tensor, labels: Tensor, geometry: Tensor,
                      generator: torch.Generator | None = None, label_dropout: float = 0.0,
                      weights: Tensor | None = None) -> Tensor:
        """Weighted MSE between the network output and its target, for t ~ U{0..T-1} and eps ~ N(0, I).

        x0: (B, C, P) normalized signal; labels (B, 6); geometry (3, P) or (B, 3, P) (kept clean).
        Labels are dropped (null embedding, for guidance) with probability label_dropout; every random
        draw comes from `generator`, so a seeded generator makes the loss reproducible.
        weights: optional (B, C, P) per-element weights (0 = not learned, e.g. the time of a DOM without a
        hit); the loss is sum(w * err^2) / sum(w). With config.min_snr_gamma > 0 each event is weighted
        by min(SNR, gamma) / SNR (eps) or min(SNR, gamma) / (SNR + 1) (v) (Hang et al. 2023).
        """
        B = x0.shape[0]
        t = torch.randint(0, self.T, (B,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        drop = torch.rand(B, generator=generator, device=x0.device) < label_dropout
        out = model(self.q_sample(x0, t, noise), t, labels, geometry, drop_labels=drop)
        err = (out.float() - self.target(x0, t, noise).float()) ** 2
        w = torch.ones_like(err) if weights is None else weights.float().expand_as(err)
        if self.config.min_snr_gamma > 0:
            a = self.alpha_bar(t, err)
            snr = a / (1 - a)
            w = w * (snr.clamp(max=self.config.min_snr_gamma) / (snr if self.objective == "eps" else snr + 1))
        return (w * err).sum() / w.sum().clamp_min(1e-12)

    def predict_x0_and_eps(self, model: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor, geometry: Tensor,
                           guidance_scale: float = 1.0, cond=None) -> tuple[Tensor, Tensor]:
        """(x0, eps) predictions at x_t (B, 2, P), t (B,), with classifier-free guidance
        eps = eps_uncond + s (eps_cond - eps_uncond); s == 1 runs the conditional pass only.
        cond: `condition(model, labels, geometry, guidance_scale)` made once for these events (else the
        model computes it at this step)."""
        B = x_t.shape[0]
        if guidance_scale == 1.0:
            drop = None if cond is not None else torch.zeros(B, dtype=torch.bool, device=x_t.device)
            out = _call(model, x_t, t, labels, geometry, drop, cond)
            return self.output_to_x0_eps(out, x_t, t)
        # One batched pass: first half conditional, second half with the null label embedding.
        drop = torch.arange(2 * B, device=x_t.device) >= B
        geo2 = torch.cat([geometry, geometry]) if geometry.dim() == 3 else geometry
        out = _call(model, torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, labels]), geo2, drop, cond)
        cond_out, uncond = out.chunk(2)
        # eps and v are affine in the output with the same coefficients, so guiding the output guides eps.
        return self.output_to_x0_eps(uncond + guidance_scale * (cond_out - uncond), x_t, t)


def _call(model: nn.Module, x: Tensor, t: Tensor, labels: Tensor, geometry: Tensor, drop: Tensor | None, cond):
    if cond is None:
        return model(x, t, labels, geometry, drop_labels=drop)
    return model(x, t, labels, geometry, cond=cond)


def condition(model: nn.Module, labels: Tensor, geometry: Tensor, guidance_scale: float = 1.0):
    """The model's conditioning for labels (B, 6) and geometry, made once per sampling call: for the
    doubled batch [conditional | unconditional] with guidance. None for networks without a
    `condition` method (they compute it at every step)."""
    if not hasattr(model, "condition"):
        return None
    B = labels.shape[0]
    if guidance_scale == 1.0:
        return model.condition(labels, geometry, torch.zeros(B, dtype=torch.bool, device=labels.device))
    geo2 = torch.cat([geometry, geometry]) if geometry.dim() == 3 else geometry
    return model.condition(torch.cat([labels, labels]), geo2, torch.arange(2 * B, device=labels.device) >= B)


# --- samplers ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _sampling_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad for the duration of sampling; restores the model's previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _setup(model: nn.Module, labels: Tensor, geometry: Tensor) -> tuple[torch.device, Tensor, Tensor, tuple]:
    device = next(model.parameters()).device
    labels, geometry = labels.to(device, torch.float32), geometry.to(device, torch.float32)
    return device, labels, geometry, (labels.shape[0], getattr(model, "channels", 2), geometry.shape[-1])


def _randn(shape: tuple, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def _predict(diffusion: GaussianDiffusion, model: nn.Module, x: Tensor, t: Tensor, labels: Tensor,
             geometry: Tensor, guidance_scale: float, clip_x0: tuple | None, cond=None) -> tuple[Tensor, Tensor]:
    x0, eps = diffusion.predict_x0_and_eps(model, x, t, labels, geometry, guidance_scale, cond)
    if clip_x0 is not None:  # keep x0 in a plausible range and make eps consistent with it
        x0 = x0.clamp(*clip_x0)
        eps = diffusion.eps_from_x0(x, t, x0)
    return x0, eps


def _posterior_step(diffusion: GaussianDiffusion, x: Tensor, x0: Tensor, t: Tensor, t_prev: Tensor,
                    generator: torch.Generator | None, last: bool) -> Tensor:
    """Ancestral step x_t -> x_{t_prev} ~ q(x_{t_prev} | x_t, x0_pred); no noise on the last step
    (t_prev = -1; the caller says so, reading t_prev on the device would make the host wait for it)."""
    mean, var = diffusion.q_posterior(x0, x, t, t_prev)
    if last:
        return mean
    return mean + var.sqrt() * _randn(x.shape, generator, x.device)


def ddpm_sample(diffusion: GaussianDiffusion, model: nn.Module, labels: Tensor, geometry: Tensor, *,
                guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                progress: Progress | None = None, clip_x0: tuple | None = None, noise: Tensor | None = None) -> Tensor:
    """Ancestral DDPM sampling over all T steps.

    labels (B, 6) and geometry (3, P) or (B, 3, P) normalized; noise: optional x_T (B, 2, P).
    clip_x0: optional (min, max) applied to the x0 prediction. Returns normalized signal (B, 2, P).
    """
    device, labels, geometry, shape = _setup(model, labels, geometry)
    with _sampling_mode(model):
        x = _randn(shape, generator, device) if noise is None else noise.to(device, torch.float32)
        cond = condition(model, labels, geometry, guidance_scale)
        for done, i in enumerate(reversed(range(diffusion.T)), start=1):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x0, _ = _predict(diffusion, model, x, t, labels, geometry, guidance_scale, clip_x0, cond)
            x = _posterior_step(diffusion, x, x0, t, t - 1, generator, last=i == 0)
            if progress is not None:
                progress(done, diffusion.T)
    return x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """`steps` distinct step indices from T-1 down to 0, evenly spaced."""
    if not 1 <= steps <= T:
        raise ConfigError(f"number of sampling steps must be between 1 and T = {T}, got {steps}")
    return [int(round(v)) for v in np.linspace(T - 1, 0, steps)] if steps > 1 else [T - 1]


def ddim_sample(diffusion: GaussianDiffusion, model: nn.Module, labels: Tensor, geometry: Tensor, *,
                steps: int = 50, eta: float = 0.0, guidance_scale: float = 1.0,
                generator: torch.Generator | None = None, progress: Progress | None = None,
                clip_x0: tuple | None = None, noise: Tensor | None = None, spacing: str = "linspace") -> Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) over `steps` strided steps; eta = 0 is deterministic
    given x_T, eta = 1 is DDPM-like. spacing: see `timesteps`. Arguments as in ddpm_sample.
    Returns (B, 2, P)."""
    device, labels, geometry, shape = _setup(model, labels, geometry)
    ts = timesteps(diffusion, steps, spacing)
    with _sampling_mode(model):
        x = _randn(shape, generator, device) if noise is None else noise.to(device, torch.float32)
        cond = condition(model, labels, geometry, guidance_scale)
        for done, (i, i_prev) in enumerate(zip(ts, ts[1:] + [-1]), start=1):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x0, eps = _predict(diffusion, model, x, t, labels, geometry, guidance_scale, clip_x0, cond)
            a, a_prev = diffusion.alpha_bar(t, x), diffusion.alpha_bar(torch.full_like(t, i_prev), x)
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
            if eta > 0 and i_prev >= 0:
                x = x + sigma * _randn(shape, generator, device)
            if progress is not None:
                progress(done, len(ts))
    return x


def timesteps(diffusion: GaussianDiffusion, steps: int, spacing: str = "linspace") -> list[int]:
    """`steps` distinct step indices, descending, where a sampler evaluates the network (it then goes
    from the last one to clean data). spacing (Lin et al. 2024, "Common diffusion noise schedules and
    sample steps are flawed", table 2; Lu et al. 2022 sec. 3.3):
    'linspace': evenly from T-1 down to 0 (DDIM's; with few steps the last evaluation, at t = 0, comes
    after a long step in log-SNR, which makes a multistep solver's extrapolation unstable); 'trailing': T-1,
    T-1-T/steps, ... (the last one T/steps above clean data, where the jump to clean data returns the
    posterior mean E[x0 | x_t], narrower than the data); 'logsnr': evenly in log-SNR from T-1 to 0;
    'quadratic': T (1 - k/steps)^2 - 1 (DDIM's quadratic grid, trailing: the last evaluation ~T/steps^2 above
    clean data; with UniPC's corrector the best few-step grid measured on the demo model, bench/sampling.py)."""
    T = diffusion.T
    if not 1 <= steps <= T:
        raise ConfigError(f"number of sampling steps must be between 1 and T = {T}, got {steps}")
    if spacing == "linspace":
        return ddim_timesteps(T, steps)
    if spacing == "trailing":
        return [int(round(v)) - 1 for v in np.arange(T, 0, -T / steps)][:steps]
    if spacing == "logsnr":
        lam = _log_snr(diffusion.alphas_cumprod)  # decreasing in t
        targets = np.linspace(lam[-1], lam[0], steps)
        return _distinct_descending(np.searchsorted(-lam, -targets).clip(0, T - 1))  # first t with lam[t] <= target
    if spacing == "quadratic":  # trailing in sqrt(t): denser near clean data, the last evaluation at t ~ T / steps^2
        return _distinct_descending(np.round(T * ((steps - np.arange(steps)) / steps) ** 2) - 1)
    raise ConfigError(f"time-step spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")


def _distinct_descending(ts: np.ndarray) -> list[int]:
    """Step indices made distinct and descending, whatever the rounding to whole steps did, and >= 0."""
    out: list[int] = []
    for k, v in enumerate(ts):
        out.append(max(int(min(v, out[-1] - 1)) if out else int(v), len(ts) - 1 - k))
    return out


def _log_snr(alpha_bar: np.ndarray | float) -> np.ndarray:
    """lambda = log(alpha / sigma) = 0.5 log(alpha_bar / (1 - alpha_bar)) (float64)."""
    return 0.5 * np.log(alpha_bar / (1.0 - alpha_bar))


def dpmpp2m_sample(diffusion: GaussianDiffusion, model: nn.Module, labels: Tensor, geometry: Tensor, *,
                   steps: int = 10, spacing: str = "trailing", guidance_scale: float = 1.0,
                   generator: torch.Generator | None = None, progress: Progress | None = None,
                   clip_x0: tuple | None = None, noise: Tensor | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): a second-order multistep solver of the
    probability-flow ODE in its data-prediction form, one network evaluation per step. With
    lambda = log(alpha / sigma) and h = lambda_t - lambda_s,
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D,
    D = x0(s) on the first step and (1 + 1/2r) x0(s) - (1/2r) x0(previous) after it (r = h_prev / h):
    UniPC's predictor without its corrector (unipc_solve, corrector=False).
    The last step goes to clean data (sigma = 0), where the update is x0(s) (first order, as in
    diffusers' lower_order_final). Works for both objectives via the x0 prediction; clip_x0 clips that
    prediction. Arguments as in ddim_sample; deterministic given x_T. Returns (B, 2, P).

    Written here rather than taken from diffusers' DPMSolverMultistepScheduler: the update is these
    few lines, ours clips x0 to each channel's training range (diffusers only offers dynamic
    thresholding), takes the conditioning made once per call, and needs no new dependency; on the demo
    model both gave the same samples (largest difference 7e-6 at 6 and 8 steps; README, Sampling)."""
    return _multistep_sample(diffusion, model, labels, geometry, steps, spacing, guidance_scale, generator,
                             progress, clip_x0, noise, corrector=False)


def _multistep_sample(diffusion: GaussianDiffusion, model: nn.Module, labels: Tensor, geometry: Tensor, steps: int,
                      spacing: str, guidance_scale: float, generator: torch.Generator | None,
                      progress: Progress | None, clip_x0: tuple | None, noise: Tensor | None, corrector: bool
                      ) -> Tensor:
    """unipc_solve from x_T (noise, or drawn) over `steps` points of `spacing` to clean data."""
    device, labels, geometry, shape = _setup(model, labels, geometry)
    ts = timesteps(diffusion, steps, spacing)
    with _sampling_mode(model):
        x = _randn(shape, generator, device) if noise is None else noise.to(device, torch.float32)
        cond = condition(model, labels, geometry, guidance_scale)
        return unipc_solve(diffusion, model, x, ts + [-1], labels, geometry, guidance_scale=guidance_scale,
                           clip_x0=clip_x0, cond=cond, progress=progress, corrector=corrector)


def _unipc_corrector_weights(h: float, r1: float) -> tuple[float, float]:
    """UniC-bh2 weights (rho_1, rho_t) of an order-2 correction (Zhao et al. 2023, eq. 10) for a step of
    length h in log-SNR with a history point at relative log-SNR r1 (< 0): they solve
    [[1, 1], [r1, 1]] rho = [b1, b2] with B(h) = phi_1(h) = expm1(-h)."""
    hh = -h
    b_h = math.expm1(hh)
    phi_k = b_h / hh - 1
    b1 = phi_k / b_h
    b2 = 2 * (phi_k / hh - 0.5) / b_h
    rho_1 = (b1 - b2) / (1 - r1)  # rho_1 + rho_t = b1, r1 rho_1 + rho_t = b2
    return rho_1, b1 - rho_1


def unipc_sample(diffusion: GaussianDiffusion, model: nn.Module, labels: Tensor, geometry: Tensor, *,
                 steps: int = 6, spacing: str = "trailing", guidance_scale: float = 1.0,
                 generator: torch.Generator | None = None, progress: Progress | None = None,
                 clip_x0: tuple | None = None, noise: Tensor | None = None) -> Tensor:
    """UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework for fast sampling"), bh2,
    order 2, data prediction, from noise to clean data on `steps` points of `spacing` (unipc_solve). Arguments
    as in dpmpp2m_sample; deterministic given x_T. Returns (B, 2, P)."""
    return _multistep_sample(diffusion, model, labels, geometry, steps, spacing, guidance_scale, generator,
                             progress, clip_x0, noise, corrector=True)


def unipc_solve(diffusion: GaussianDiffusion, model: nn.Module, x: Tensor, grid: list[int], labels: Tensor,
                geometry: Tensor, *, guidance_scale: float = 1.0, clip_x0: tuple | None = None, cond=None,
                progress: Progress | None = None, corrector: bool = True) -> Tensor:
    """Solve the probability-flow ODE from x (B, C, P) at grid[0] to grid[-1] (descending; -1 = clean data)
    with UniPC bh2, order 2, data prediction: the network is evaluated at grid[:-1] (len(grid) - 1 calls).
    The predictor is DPM-Solver++(2M)'s multistep update with UniP's weights; after each network evaluation
    the corrector UniC redoes the step that led there with the new x0 prediction included, at no extra
    network call (the evaluation at the uncorrected point is reused). With lambda = log(alpha / sigma),
    h = lambda_t - lambda_s and D1 = (x0(s_prev) - x0(s)) / r1:
        predictor  x_t = (sigma_t / sigma_s) x_s - alpha_t phi_1 x0(s) - alpha_t B(h) D1 / 2,
        corrector  x_t = (sigma_t / sigma_s) x_s - alpha_t phi_1 x0(s)
                         - alpha_t B(h) (rho_1 D1 + rho_t (x0(t) - x0(s))).
    Orders drop to 1 on the first step and on a last one to clean data (where the update is x0: diffusers'
    lower_order_final); a last step to grid[-1] >= 0 is the predictor alone (no evaluation there to correct
    with). corrector=False: the predictor alone, which is DPM-Solver++(2M). The caller sets eval/no_grad;
    cond: the model's conditioning made once (None: at every call)."""
    abar = diffusion.alphas_cumprod
    history: list[tuple[float, Tensor]] = []  # (lambda, x0 prediction) at the evaluated points
    last = None  # (x_s, sigma_t / sigma_s, alpha_t, h) of the step that led to x, for the corrector
    for done, (i, i_next) in enumerate(zip(grid[:-1], grid[1:]), start=1):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        x0, _ = _predict(diffusion, model, x, t, labels, geometry, guidance_scale, clip_x0, cond)
        lam = float(_log_snr(abar[i]))
        if last is not None and corrector:  # UniC: correct x with the evaluation made there
            x_s, ratio, alpha_t, h = last
            lam_s, m_s = history[-1]
            if len(history) > 1:
                r1 = (history[-2][0] - lam_s) / h
                rho_1, rho_t = _unipc_corrector_weights(h, r1)
                corr = rho_1 * (history[-2][1] - m_s) / r1 + rho_t * (x0 - m_s)
            else:  # first-order corrector
                corr = 0.5 * (x0 - m_s)
            b_h = math.expm1(-h)  # bh2: B(h) = phi_1(h)
            x = ratio * x_s - alpha_t * b_h * (m_s + corr)
        history = [*history[-1:], (lam, x0)]
        if i_next < 0:
            x = x0
        else:  # UniP from the (corrected) x to the next point; coefficients on the host: no device sync
            a_s, a_t = float(abar[i]), float(abar[i_next])
            h = float(_log_snr(a_t)) - lam
            ratio, alpha_t = math.sqrt((1 - a_t) / (1 - a_s)), math.sqrt(a_t)
            b_h = math.expm1(-h)  # bh2: B(h) = phi_1(h)
            d = x0 if len(history) < 2 else x0 + 0.5 * (history[0][1] - x0) / ((history[0][0] - lam) / h)
            x_s, x = x, ratio * x - alpha_t * b_h * d
            last = (x_s, ratio, alpha_t, h)
        if progress is not None:
            progress(done, len(grid) - 1)
    return x


SAMPLERS = ("dpmpp2m", "unipc", "ddim", "ddpm")  # names the CLI, configs and pages offer
SPACINGS = ("linspace", "trailing", "logsnr", "quadratic")
DEFAULT_SPACING = {"ddim": "linspace", "dpmpp2m": "trailing", "unipc": "trailing"}


def resolve_spacing(cfg: DiffusionConfig, sampler: str, spacing: str | None = None) -> str | None:
    """The time-step spacing a sampler runs with: the given one, else cfg.spacing when the sampler is cfg's own
    (a checkpoint's recorded grid, e.g. a distilled student's), else the sampler's default (None for ddpm)."""
    if spacing:
        return spacing
    if sampler == cfg.sampler and cfg.spacing:
        return cfg.spacing
    return DEFAULT_SPACING.get(sampler)


def sample(diffusion: GaussianDiffusion, model: nn.Module, labels: Tensor, geometry: Tensor,
           sampler: str = "ddim", steps: int = 50, eta: float = 0.0, spacing: str | None = None, **kw) -> Tensor:
    """Dispatch to dpmpp2m_sample or unipc_sample (steps), ddim_sample (steps, eta) or ddpm_sample (always all
    T steps; steps/eta unused). spacing: time-step spacing of ddim/dpmpp2m/unipc (None: DEFAULT_SPACING of the sampler).
    kw: guidance_scale, generator, progress, clip_x0, noise. Returns (B, 2, P)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "ddpm":
        return ddpm_sample(diffusion, model, labels, geometry, **kw)
    spacing = spacing or DEFAULT_SPACING[sampler]
    if sampler in ("dpmpp2m", "unipc"):
        solver = dpmpp2m_sample if sampler == "dpmpp2m" else unipc_sample
        return solver(diffusion, model, labels, geometry, steps=steps, spacing=spacing, **kw)
    return ddim_sample(diffusion, model, labels, geometry, steps=steps, eta=eta, spacing=spacing, **kw)


# --- RePaint -----------------------------------------------------------------------------------
def repaint_schedule(steps: int, jump_length: int, resample: int) -> list[int]:
    """RePaint's time sequence over indices steps-1 .. -1 (Lugmayr et al. 2022, get_schedule_jump):
    going down one index is a reverse step; going up is a forward re-noising step. Every
    `jump_length` indices the last jump_length steps are undone and redone, resample - 1 times."""
    if jump_length < 1 or resample < 1:
        raise ConfigError(f"RePaint needs jump_length >= 1 and resample >= 1, got {jump_length}, {resample}")
    jumps = {j: resample - 1 for j in range(0, steps - jump_length, jump_length)}
    t, ts = steps, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    return ts + [-1]


def repaint_sample(diffusion: GaussianDiffusion, model: nn.Module, x_known: Tensor, known_mask: Tensor,
                   labels: Tensor, geometry: Tensor, *, steps: int | None = None, jump_length: int = 10,
                   resample: int = 5, guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                   progress: Progress | None = None, clip_x0: tuple | None = None) -> Tensor:
    """Inpaint the unobserved DOMs of x_known (B, 2, P) normalized; known_mask (P,) or (B, P) bool,
    True = observed. After every reverse step the observed DOMs are replaced by x_known noised to the
    new step; steps (default T) strides the DDPM schedule; clip_x0 as in ddpm_sample (without it a
    poorly trained model's x0 at large t can run away over the many resampling jumps). Returns
    (B, 2, P) with the observed DOMs exactly equal to x_known."""
    device, labels, geometry, shape = _setup(model, labels, geometry)
    x_known = x_known.to(device, torch.float32)
    mask = known_mask.to(device).bool().reshape(-1, 1, shape[-1]).expand(shape)
    taus = ddim_timesteps(diffusion.T, steps or diffusion.T)[::-1]  # index k -> diffusion step taus[k]

    def step_of(k: int) -> Tensor:  # (B,) diffusion step of schedule index k; -1 = clean data
        return torch.full((shape[0],), taus[k] if k >= 0 else -1, device=device, dtype=torch.long)

    ks = repaint_schedule(len(taus), jump_length, resample)
    with _sampling_mode(model):
        x = _randn(shape, generator, device)
        cond = condition(model, labels, geometry, guidance_scale)
        for done, (k, k_next) in enumerate(zip(ks[:-1], ks[1:]), start=1):
            t, t_next = step_of(k), step_of(k_next)
            if k_next < k:
                x0, _ = _predict(diffusion, model, x, t, labels, geometry, guidance_scale, clip_x0, cond)
                x = _posterior_step(diffusion, x, x0, t, t_next, generator, last=k_next < 0)
                known = x_known if k_next < 0 else diffusion.q_sample(x_known, t_next, _randn(shape, generator, device))
                x = torch.where(mask, known, x)
            else:  # jump back up: x_{t_next} ~ q(x_{t_next} | x_t)
                ratio = diffusion.alpha_bar(t_next, x) / diffusion.alpha_bar(t, x)
                x = ratio.sqrt() * x + (1 - ratio).sqrt() * _randn(shape, generator, device)
            if progress is not None:
                progress(done, len(ks) - 1)
    return x
