"""GaussianDiffusion, DDPM/DDIM samplers, classifier-free guidance and RePaint on a tiny PMTDiT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from genesis.config import DiffusionConfig, DiTConfig
from genesis.data.normalization import Normalization
from genesis.diffusion import (SAMPLERS, SPACINGS, GaussianDiffusion, ddim_sample, ddim_timesteps, ddpm_sample,
                               dpmpp2m_sample, repaint_sample, repaint_schedule, resolve_spacing, sample, timesteps,
                               unipc_sample)
from genesis.errors import ConfigError
from genesis.models.dit import PMTDiT

P, B, T = 120, 2, 50


def make_model(seed: int = 0, **kw) -> PMTDiT:
    """Tiny PMTDiT with all weights perturbed, so that (unlike at zero init) its output is non-trivial."""
    torch.manual_seed(seed)
    cfg = DiTConfig(**{**dict(hidden_size=32, depth=2, num_heads=4, patch_size=15, time_embed_dim=32), **kw})
    model = PMTDiT(cfg, P, Normalization())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def cond(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 6, generator=g), torch.rand(3, P, generator=g)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(DiffusionConfig(timesteps=T))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_monotone_in_unit_interval(schedule):
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, schedule=schedule))
    ab = d.alphas_cumprod
    assert ab.dtype == np.float64 and ab.shape == (T,)
    assert np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] > 0
    assert ab[-1] < 0.01  # the last step is (almost) pure noise


def test_linear_schedule_matches_ddpm_at_1000_steps():
    betas = GaussianDiffusion(DiffusionConfig(timesteps=1000, schedule="linear")).betas
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)


def test_q_sample_and_posterior(diffusion):
    x0, noise = torch.randn(B, 2, P), torch.randn(B, 2, P)
    t = torch.tensor([0, T - 1])
    x_t = diffusion.q_sample(x0, t, noise)
    a = torch.tensor(diffusion.alphas_cumprod[[0, T - 1]], dtype=torch.float32).view(-1, 1, 1)
    torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    # posterior to clean data (t_prev = -1) is x0 exactly, with zero variance
    mean, var = diffusion.q_posterior(x0, x_t, torch.tensor([0, 0]), torch.tensor([-1, -1]))
    torch.testing.assert_close(mean, x0)
    assert float(var.abs().max()) < 1e-7


class Oracle(nn.Module):
    """Returns the exact target for known x0/noise; conditional and unconditional outputs differ by `gap`."""

    def __init__(self, diffusion, x0, noise, t, gap=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.target = diffusion.target(x0, t, noise)
        self.gap, self.batches = gap, []

    def forward(self, x, t, labels, geometry, drop_labels=None):
        self.batches.append(x.shape[0])
        reps = x.shape[0] // self.target.shape[0]
        return self.target.repeat(reps, 1, 1) + self.gap * drop_labels.float().view(-1, 1, 1)


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_parameterisation_recovers_x0_and_eps(objective):
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, objective=objective))
    x0, noise, t = torch.randn(B, 2, P), torch.randn(B, 2, P), torch.tensor([3, 40])
    oracle = Oracle(d, x0, noise, t)
    x0_hat, eps_hat = d.predict_x0_and_eps(oracle, d.q_sample(x0, t, noise), t, *cond())
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, noise, atol=1e-4, rtol=1e-4)
    assert oracle.batches == [B]  # guidance_scale 1: conditional pass only


def test_guidance_combines_cond_and_uncond_in_one_batch(diffusion):
    x0, noise, t = torch.randn(B, 2, P), torch.randn(B, 2, P), torch.tensor([5, 5])
    oracle = Oracle(diffusion, x0, noise, t, gap=1.0)  # eps_uncond = eps_cond + 1
    _, eps = diffusion.predict_x0_and_eps(oracle, diffusion.q_sample(x0, t, noise), t, *cond(), guidance_scale=3.0)
    torch.testing.assert_close(eps, noise - 2.0)  # uncond + 3 (cond - uncond) = cond - 2
    assert oracle.batches == [2 * B]


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_training_loss_decreases(objective):
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, objective=objective))
    torch.manual_seed(0)
    model = PMTDiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, patch_size=15, time_embed_dim=32,
                             label_dropout=0.0), P, Normalization())
    x0 = torch.sin(torch.linspace(0, 6, P)).expand(4, 2, P).clone()
    labels, geo = torch.rand(4, 6), torch.rand(3, P)

    def eval_loss() -> float:  # same t and noise every time
        with torch.no_grad():
            return float(d.training_loss(model, x0, labels, geo, generator=gen(123)))

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = gen(0)
    for _ in range(30):
        loss = d.training_loss(model, x0, labels, geo, generator=g)
        assert loss.dim() == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.7 * before


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_reproducible_by_seed(model, diffusion, sampler):
    labels, geo = cond()
    run = lambda seed: sample(diffusion, model, labels, geo, sampler=sampler, steps=10, generator=gen(seed))  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (B, 2, P) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ddpm_runs_all_steps_and_restores_mode(model, diffusion):
    calls = []
    model.train()
    ddpm_sample(diffusion, model, *cond(), generator=gen(0), progress=lambda d, n: calls.append((d, n)),
                clip_x0=(-1.0, 1.0))
    assert calls[-1] == (T, T) and len(calls) == T
    assert model.training  # eval only during sampling
    model.eval()


def test_ddim_eta0_deterministic_given_xT(model, diffusion):
    labels, geo = cond()
    x_T = torch.randn(B, 2, P, generator=gen(5))
    run = lambda eta, seed: ddim_sample(diffusion, model, labels, geo, steps=10, eta=eta, generator=gen(seed),  # noqa: E731
                                        noise=x_T)
    assert torch.equal(run(0.0, 0), run(0.0, 1))  # eta = 0 uses no randomness beyond x_T
    assert not torch.allclose(run(1.0, 0), run(1.0, 1))


def test_ddim_eta1_all_steps_equals_ddpm(model, diffusion):
    """DDIM with eta = 1 over all T steps is ancestral DDPM (Song et al. 2021, sec. 4.1)."""
    labels, geo = cond()
    x_T = torch.randn(B, 2, P, generator=gen(5))
    ddim = ddim_sample(diffusion, model, labels, geo, steps=T, eta=1.0, generator=gen(2), noise=x_T)
    ddpm = ddpm_sample(diffusion, model, labels, geo, generator=gen(2), noise=x_T)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


def test_ddim_steps(model, diffusion):
    assert ddim_timesteps(T, 5) == [49, 37, 24, 12, 0]
    assert ddim_timesteps(T, T) == list(range(T - 1, -1, -1))
    calls = []
    out = ddim_sample(diffusion, model, *cond(), steps=1, generator=gen(0), progress=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 1)] and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="steps"):
        ddim_sample(diffusion, model, *cond(), steps=T + 1)
    with pytest.raises(ConfigError, match="sampler"):
        sample(diffusion, model, *cond(), sampler="euler")


def test_guidance_scale_changes_samples(model, diffusion):
    labels, geo = cond()
    plain = ddim_sample(diffusion, model, labels, geo, steps=5, generator=gen(0))
    guided = ddim_sample(diffusion, model, labels, geo, steps=5, generator=gen(0), guidance_scale=3.0)
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided)


def test_v_objective_sampling():
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, objective="v"))
    out = sample(d, make_model(), *cond(), sampler="ddim", steps=8, generator=gen(0))
    assert out.shape == (B, 2, P) and torch.isfinite(out).all()


def test_repaint_schedule():
    ts = repaint_schedule(20, jump_length=5, resample=3)
    assert ts[0] == 19 and ts[-1] == -1
    assert all(abs(a - b) == 1 for a, b in zip(ts, ts[1:]))
    down = sum(b < a for a, b in zip(ts, ts[1:]))
    assert down == 20 + 3 * 2 * 5  # jumps at 0, 5, 10, each redone resample - 1 = 2 times
    assert repaint_schedule(10, 5, 1) == list(range(9, -2, -1))


@pytest.mark.parametrize("mask_shape", ["P", "BP"])
def test_repaint_keeps_known_doms(model, diffusion, mask_shape):
    labels, geo = cond()
    x_known = torch.randn(B, 2, P, generator=gen(9))
    mask = torch.rand(P, generator=gen(3)) < 0.7
    if mask_shape == "BP":
        mask = torch.stack([mask, ~mask])
    run = lambda seed: repaint_sample(diffusion, model, x_known, mask, labels, geo, steps=10, jump_length=3,  # noqa: E731
                                      resample=2, generator=gen(seed))
    a, b, c = run(0), run(0), run(1)
    m = mask.expand(B, P).unsqueeze(1).expand(B, 2, P)
    assert a.shape == (B, 2, P) and torch.isfinite(a).all()
    assert torch.equal(a[m], x_known[m])
    assert torch.equal(a, b)
    assert not torch.allclose(a[~m], c[~m])


class GaussianOracle(nn.Module):
    """Exact E[eps | x_t] (or v) when every value of x0 is i.i.d. N(mu, s^2): samplers must recover the data."""

    def __init__(self, diffusion, mu=0.5, s=0.3):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.d, self.mu, self.s = diffusion, mu, s

    def forward(self, x, t, labels, geometry, drop_labels=None):
        a = self.d.alpha_bar(t, x)
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return eps if self.d.objective == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0


@pytest.mark.parametrize("how", ["ddpm", "ddim-eta0", "ddim-eta0-v", "dpmpp2m-v", "unipc-v", "repaint"])
def test_samplers_recover_gaussian_data(how):
    """With the exact denoiser, samplers reproduce N(0.5, 0.3^2) (T = 1000; the oracle is cheap)."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=1000, schedule="linear" if how in ("ddpm", "repaint") else "cosine",
                                          objective="v" if how.endswith("-v") else "eps"))
    oracle, n = GaussianOracle(d), 32
    labels, geo = torch.zeros(n, 6), torch.zeros(3, P)
    if how == "ddpm":
        x = ddpm_sample(d, oracle, labels, geo, generator=gen(0))
    elif how.startswith("ddim"):
        x = ddim_sample(d, oracle, labels, geo, steps=200, eta=0.0, generator=gen(0))
    elif how.startswith("dpmpp2m"):
        x = dpmpp2m_sample(d, oracle, labels, geo, steps=20, generator=gen(0))
    elif how.startswith("unipc"):
        x = unipc_sample(d, oracle, labels, geo, steps=20, generator=gen(0))
    else:  # known DOMs hold garbage; the i.i.d. unknown DOMs must still follow the data distribution
        mask = torch.arange(P) < P // 2
        x = repaint_sample(d, oracle, torch.full((n, 2, P), 5.0), mask, labels, geo, jump_length=10, resample=2,
                           generator=gen(0))
        assert torch.equal(x[..., mask], torch.full_like(x[..., mask], 5.0))
        x = x[..., ~mask]
    assert float(x.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(x.std()) == pytest.approx(0.3, abs=0.01)


class SharedValueOracle(nn.Module):
    """Exact eps for events whose P values (per event and channel) all equal one c ~ N(0, 1)."""

    def __init__(self, diffusion):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.d = diffusion

    def forward(self, x, t, labels, geometry, drop_labels=None):
        a = self.d.alpha_bar(t, x)
        c = (a.sqrt() * x.sum(-1, keepdim=True) / (1 - a)) / (1 + x.shape[-1] * a / (1 - a))  # E[c | x_t]
        return (x - a.sqrt() * c) / (1 - a).sqrt()


def test_repaint_harmonises_unknown_with_known_doms():
    """A quarter of the DOMs is known to be 0.9, so the rest must be 0.9 too; RePaint's resampling gets
    there, plain replacement (resample = 1) does not (Lugmayr et al. 2022, fig. 3)."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=1000))
    oracle, mask, n = SharedValueOracle(d), torch.arange(P) < P // 4, 8
    known, labels, geo = torch.full((n, 2, P), 0.9), torch.zeros(n, 6), torch.zeros(3, P)
    error = lambda r: float((repaint_sample(d, oracle, known, mask, labels, geo, steps=50, jump_length=5,  # noqa: E731
                                           resample=r, generator=gen(0))[..., ~mask] - 0.9).abs().max())
    assert error(5) < 0.05
    assert error(1) > 0.1


def test_schedule_lookup_stays_on_the_step_device():
    """Steps are looked up where they live (no copy to the host and back, no GPU-to-host sync): on the
    meta device, which has no data, any host round trip would raise."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=T))
    t = torch.tensor([0, 3, T - 1], device="meta")
    a = d.alpha_bar(t, torch.empty(3, 2, P, device="meta"))
    assert a.device.type == "meta" and a.shape == (3, 1, 1)
    assert d.table(torch.device("cpu")).dtype == torch.float64
    expected = torch.from_numpy(d.alphas_cumprod[[0, 3, T - 1]]).float()
    assert torch.allclose(d.alpha_bar(torch.tensor([0, 3, T - 1]), torch.empty(3, 2, P)).flatten(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_step_has_no_host_sync_on_cuda():
    d = GaussianDiffusion(DiffusionConfig(timesteps=T))
    model = PMTDiT(DiTConfig(hidden_size=32, depth=1, num_heads=4, patch_size=15, time_embed_dim=32),
                   P, Normalization()).cuda()
    x0, labels, geo = torch.randn(4, 2, P, device="cuda"), torch.rand(4, 6, device="cuda"), torch.rand(3, P, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    d.training_loss(model, x0, labels, geo, g, label_dropout=0.1)  # warm-up: the table's one-time copy
    torch.cuda.set_sync_debug_mode("error")
    try:
        d.training_loss(model, x0, labels, geo, g, label_dropout=0.1).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_weighted_loss_ignores_zero_weight_elements_and_min_snr_weights_events():
    """Elements with weight 0 (npe and time of DOMs without a hit) never enter the loss."""
    class Echo(torch.nn.Module):  # a network whose output is chosen by the test
        def __init__(self):
            super().__init__()
            self.out = None

        def forward(self, x, t, labels, geometry, drop_labels=None):
            return self.out

    d = GaussianDiffusion(DiffusionConfig(timesteps=T))
    x0, labels, geo = torch.randn(2, 3, P), torch.rand(2, 6), torch.rand(3, P)
    w = torch.ones(2, 3, P)
    w[:, 1:, : P // 2] = 0
    net = Echo()
    net.out = torch.zeros(2, 3, P)
    base = d.training_loss(net, x0, labels, geo, gen(1), weights=w)
    net.out[:, 1:, : P // 2] = 100.0  # wild predictions where the weight is 0
    assert d.training_loss(net, x0, labels, geo, gen(1), weights=w) == base
    net.out[:, 0, 0] = 100.0
    assert d.training_loss(net, x0, labels, geo, gen(1), weights=w) > base
    snr = GaussianDiffusion(DiffusionConfig(timesteps=T, min_snr_gamma=1.0))  # low-noise steps count less
    x0, labels, net.out = torch.randn(32, 3, P), torch.rand(32, 6), torch.zeros(32, 3, P)
    assert snr.training_loss(net, x0, labels, geo, gen(1)) != d.training_loss(net, x0, labels, geo, gen(1))


def ode_error(objective: str):
    """(sampler function, steps, spacing) -> largest deviation from the exact probability-flow ODE solution on
    the exact denoiser of Gaussian data N(mu, s^2): x0 = mu + s (x_T - sqrt(a_T) mu) / sqrt(a_T s^2 + 1 - a_T)."""
    d = GaussianDiffusion(DiffusionConfig(timesteps=1000, schedule="cosine", objective=objective))
    oracle, labels, geo = GaussianOracle(d), torch.zeros(4, 6), torch.zeros(3, P)
    x_T = torch.randn(4, 2, P, generator=gen(3))
    a_T, mu, s = float(d.alphas_cumprod[-1]), oracle.mu, oracle.s
    exact = mu + s * (x_T - a_T**0.5 * mu) / (a_T * s**2 + 1 - a_T) ** 0.5
    return lambda fn, n, spacing: float((fn(d, oracle, labels, geo, steps=n, spacing=spacing, noise=x_T)
                                         - exact).abs().max())


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_dpmpp2m_is_second_order(objective):
    """On the exact denoiser of Gaussian data N(mu, s^2) the probability-flow ODE's solution is known:
    x0 = mu + s (x_T - sqrt(a_T) mu) / sqrt(a_T s^2 + 1 - a_T). DPM-Solver++(2M) lands far closer to it
    than DDIM at 10 steps, and doubling its steps cuts its error by more than 4 (second order; DDIM's by
    about 2, first order)."""
    err = ode_error(objective)
    assert err(dpmpp2m_sample, 10, "logsnr") < err(ddim_sample, 10, "logsnr") / 5
    dpm20, dpm40 = err(dpmpp2m_sample, 20, "trailing"), err(dpmpp2m_sample, 40, "trailing")
    ddim20, ddim40 = err(ddim_sample, 20, "trailing"), err(ddim_sample, 40, "trailing")
    assert dpm40 < dpm20 / 4 and ddim40 > ddim20 / 2.5


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_unipc_corrector_lands_closer_to_the_ode_solution_than_dpmpp2m(objective):
    """UniPC's predictor is DPM-Solver++(2M)'s update; its corrector reuses each new evaluation to redo the step
    that led there. On the exact denoiser of Gaussian data it lands closer to the known ODE solution at 5 and
    10 steps, and converges with the steps."""
    err = ode_error(objective)
    assert err(unipc_sample, 5, "quadratic") < err(dpmpp2m_sample, 5, "quadratic") / 3
    assert err(unipc_sample, 10, "logsnr") < err(dpmpp2m_sample, 10, "logsnr")
    assert err(unipc_sample, 40, "trailing") < err(unipc_sample, 10, "trailing") / 10


def test_timestep_spacings():
    d = GaussianDiffusion(DiffusionConfig(timesteps=1000, schedule="cosine"))
    assert timesteps(d, 4, "trailing") == [999, 749, 499, 249]
    assert timesteps(d, 5, "linspace") == ddim_timesteps(1000, 5)
    for spacing in SPACINGS:
        for n in (1, 2, 7, 50, 1000):
            ts = timesteps(d, n, spacing)
            assert len(ts) == n and ts[0] == 999 and all(a > b >= 0 for a, b in zip(ts, ts[1:])), (spacing, n)
    with pytest.raises(ConfigError, match="spacing"):
        timesteps(d, 4, "cubic")
    assert timesteps(d, 6, "quadratic") == [999, 693, 443, 249, 110, 27]
    assert SAMPLERS[0] == "dpmpp2m" and set(SAMPLERS) == {"dpmpp2m", "unipc", "ddim", "ddpm"}


class NoCache(nn.Module):
    """The model behind a plain forward (no `condition`): the network recomputes its conditioning each step."""

    def __init__(self, model):
        super().__init__()
        self.model, self.channels = model, model.channels

    def forward(self, x, t, labels, geometry, drop_labels=None):
        return self.model(x, t, labels, geometry, drop_labels=drop_labels)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m", "unipc"])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_conditioning_made_once_gives_the_same_samples(sampler, guidance):
    """Samplers make the conditioning once per call: the samples equal those of a model that makes
    it at every step (physics conditioning, per-DOM head and FiLM: everything that is cached)."""
    norm = Normalization(representation="hit", energy_transform="log10",
                         label_offsets=(3.0, 0.0, 0.0, -600.0, -550.0, -550.0))
    model = make_model(conditioning="physics", dom_head_width=8, fusion="film", patch_size=60)
    model = PMTDiT(model.config, P, norm).eval()
    with torch.no_grad():
        for p_ in model.parameters():
            p_.add_(0.1 * torch.randn(p_.shape, generator=gen(1)))
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, objective="v"))
    labels, geo = cond()
    run = lambda net: sample(d, net, labels, geo, sampler=sampler, steps=4, guidance_scale=guidance,  # noqa: E731
                             generator=gen(0))
    cached = run(model)
    assert cached.shape == (B, 3, P) and torch.isfinite(cached).all()
    assert torch.equal(cached, run(NoCache(model)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m", "unipc", "ddpm"])
def test_sampling_loop_has_no_host_sync_on_cuda(sampler):
    d = GaussianDiffusion(DiffusionConfig(timesteps=T, objective="v"))
    model = PMTDiT(DiTConfig(hidden_size=32, depth=1, num_heads=4, patch_size=60, time_embed_dim=32,
                             conditioning="physics", dom_head_width=8),
                   P, Normalization(representation="hit", energy_transform="log10")).cuda()
    labels, geo = torch.rand(4, 6, device="cuda"), torch.rand(3, P, device="cuda")
    clip = (torch.full((1, 3, 1), -1.0, device="cuda"), torch.full((1, 3, 1), 3.0, device="cuda"))
    run = lambda: sample(d, model, labels, geo, sampler=sampler, steps=5, guidance_scale=2.0,  # noqa: E731
                         generator=torch.Generator(device="cuda").manual_seed(0), clip_x0=clip)
    run()  # warm-up: the schedule table's one-time copy
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_spacing_is_the_given_one_then_the_recorded_one_for_its_sampler_then_the_samplers_default():
    student = DiffusionConfig(sampler="ddim", sampling_steps=4, spacing="trailing")
    assert resolve_spacing(student, "ddim") == "trailing"
    assert resolve_spacing(student, "ddim", "logsnr") == "logsnr"
    assert resolve_spacing(student, "dpmpp2m") == "trailing"  # dpmpp2m's own default
    assert resolve_spacing(DiffusionConfig(sampler="ddim"), "ddim") == "linspace"
    assert resolve_spacing(DiffusionConfig(sampler="dpmpp2m", spacing="logsnr"), "ddim") == "linspace"
    assert resolve_spacing(student, "ddpm") is None


def test_config_offers_every_sampler_and_spacing():
    """The config's choices (genesis.config cannot import the sampler module) name exactly the samplers and grids."""
    from dataclasses import fields

    from genesis.config import DiffusionConfig as Cfg

    choices = {f.name: f.metadata.get("choices") for f in fields(Cfg)}
    assert set(choices["sampler"]) == set(SAMPLERS)
    assert set(choices["spacing"]) == {"", *SPACINGS}
