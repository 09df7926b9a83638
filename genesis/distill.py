"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
Models") of a trained diffusion checkpoint into a few-step DDIM student.

A run with `distill.teacher` set trains a student of the teacher's architecture, initialised from the teacher's
(EMA) weights, in rounds. In each round the student learns to do in one deterministic DDIM step (eta = 0) what
the round's teacher does in two; the next round's teacher is the student (its EMA weights) and the number of
steps halves, down to `distill.student_steps`. Per training example (Algorithm 2 of the paper):

    x ~ data, interval k ~ U{0..n-1} of the student's grid, t = grid[k], s = grid[k+1], m = the teacher's
    point between them;  z_t = alpha_t x + sigma_t eps;
    z_m = DDIM_teacher(z_t, t -> m);  z_s = DDIM_teacher(z_m, m -> s)
    x_target = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)
    loss = max(SNR_t, 1) || x_student(z_t) - x_target ||^2        ("truncated SNR" weighting)

x_target is the x0 prediction with which one DDIM step of the student from t lands exactly on z_s. Notation as
in genesis.diffusion: alpha_t = sqrt(alpha_bar[t]), sigma_t = sqrt(1 - alpha_bar[t]), index -1 = clean data.

Step grids. The student is sampled by genesis.diffusion.ddim_sample with `student_steps` on the grid of
`distill.spacing` (recorded as its diffusion.spacing), so the final grid is timesteps(T, student_steps, spacing)
followed by -1. Each earlier round's grid inserts the midpoint of every interval of the next one (an interval of
one index cannot be split: the teacher takes one step there), so each round's teacher grid nests its student's.
The default, trailing (999, 749, 499, 249 for 4 steps), gives every step a real interval; DDIM's evenly spaced
linspace grid (999, 666, 333, 0) refines to 7, 13, 25, 49 steps but ends with an almost free step from index 0 to
clean data, which is never split, so its 4-step student has three working steps.

Solver teacher (distill.teacher_sampler = unipc). One round on the student's final grid: the teacher solves each
student interval t -> s with `teacher_substeps` UniPC steps (genesis.diffusion.unipc_solve) on sub_grid(t, s),
denser towards s as the quadratic grid is, and z_s is that solution; the target and the loss are as above. The
teacher is always the trained checkpoint, so no round's error is passed on to the next, at the price of
`teacher_substeps` network calls per example instead of two.

Why progressive rather than consistency distillation: the student here is an ordinary checkpoint of the same
model family that the existing DDIM sampler, the Sample page and `genesis sample` run unchanged at its own
step count; a consistency model needs its own parameterisation (skip scalings) and its own multistep sampler.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from genesis import checkpoint, config, paths
from genesis.data.normalization import Normalization
from genesis import diffusion as diffusion_mod
from genesis.diffusion import GaussianDiffusion
from genesis.errors import CheckpointError, ConfigError

log = logging.getLogger("genesis.distill")

TAG_TEACHER_RUN = "genesis.teacher_run_id"
TAG_TEACHER_PATH = "genesis.teacher_path"
RECORD_KEY = "distillation"        # checkpoint key of the distillation record
TEACHER_WEIGHTS_KEY = "distill_teacher"  # checkpoint key of the current round's teacher weights (exact resume)


# --- teacher and the composed config ---------------------------------------------------------------------------
def resolve_teacher(path: str | Path) -> Path:
    """A teacher path as given: absolute, from the current folder, from the project home, or from the package
    root (the shipped demo genesis/resources/demo/demo-diffusion.pt); CheckpointError when none exists."""
    candidate = Path(path).expanduser()
    for where in (candidate, paths.home() / candidate, paths.PACKAGE_ROOT / candidate):
        if where.is_file():
            return where.resolve()
    raise CheckpointError(f"distill.teacher {path}: checkpoint file not found (looked in the current folder, "
                          f"{paths.home()} and {paths.PACKAGE_ROOT}); pick a diffusion checkpoint")


@functools.lru_cache(maxsize=8)
def _teacher_meta(path: str, mtime_ns: int) -> dict[str, Any]:
    """Everything but the weights of a teacher checkpoint (cached by path and mtime: the launcher, the trainer
    and the tags all ask)."""
    state = checkpoint.load_state(path)
    if state.get("kind") != "diffusion":
        raise ConfigError(f"distill.teacher {path}: a {state.get('kind')} checkpoint; only diffusion checkpoints "
                          "can be distilled")
    keep = ("config", "normalization", "step", "mlflow", "n_doms", "data", RECORD_KEY)
    return copy.deepcopy({k: state.get(k) for k in keep})


def teacher_meta(path: str | Path) -> dict[str, Any]:
    """Config, normalization, step, mlflow record, n_doms and data record of a teacher checkpoint."""
    path = resolve_teacher(path)
    return _teacher_meta(str(path), path.stat().st_mtime_ns)


def student_config(cfg: config.RunConfig) -> config.RunConfig:
    """The run config of a distillation run: the teacher's model and diffusion sections, normalization and
    detector-noise radius (the student has the teacher's architecture and sees the same normalized, cleaned data),
    sampled by DDIM at distill.student_steps with eta 0 and no guidance; name, experiment, data (path, split) and
    train stay the run's. Unchanged without a teacher; idempotent (the launcher and the trainer both call it)."""
    if not cfg.distill.teacher:
        return cfg
    path = resolve_teacher(cfg.distill.teacher)
    meta = teacher_meta(path)
    try:
        teacher = config.from_dict(config.RunConfig, meta["config"])
        norm = Normalization.from_dict(meta["normalization"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"distill.teacher {path}: its embedded config is not valid here ({exc})") from exc
    if teacher.diffusion.objective != "v":
        raise ConfigError(f"distill.teacher {path} predicts {teacher.diffusion.objective!r}; progressive "
                          "distillation needs a v-objective teacher (diffusion.objective=v): with eps the x0 of a "
                          "one-step student at high noise is the network's error divided by alpha ~ 0 "
                          "(Salimans & Ho 2022, section 4)")
    if cfg.distill.student_steps > teacher.diffusion.timesteps:
        raise ConfigError(f"distill.student_steps ({cfg.distill.student_steps}) exceeds the teacher's "
                          f"diffusion.timesteps ({teacher.diffusion.timesteps})")
    diffusion = dataclasses.replace(teacher.diffusion, sampler="ddim", sampling_steps=cfg.distill.student_steps,
                                    spacing=cfg.distill.spacing, eta=0.0, guidance_scale=1.0)
    # the run ends after its last round unless train.max_steps says otherwise
    rounds = rounds_of(cfg.distill)
    train = cfg.train if cfg.train.max_steps else dataclasses.replace(
        cfg.train, max_steps=rounds * cfg.distill.steps_per_round)
    return dataclasses.replace(cfg, kind="diffusion", model=teacher.model, diffusion=diffusion, train=train,
                               data=dataclasses.replace(cfg.data, normalization=norm,
                                                        noise_radius_m=teacher.data.noise_radius_m),
                               distill=dataclasses.replace(cfg.distill, teacher=str(path)))


def run_tags(cfg: config.RunConfig) -> dict[str, str]:
    """MLflow tags of a distillation run: the teacher's path and run id ('' when the teacher has no run, e.g.
    the shipped demo); {} for other runs."""
    if not cfg.distill.teacher:
        return {}
    meta = teacher_meta(cfg.distill.teacher)
    return {TAG_TEACHER_PATH: str(resolve_teacher(cfg.distill.teacher)),
            TAG_TEACHER_RUN: str((meta.get("mlflow") or {}).get("run_id") or "")}


# --- step grids -------------------------------------------------------------------------------------------------
SPACING = "trailing"  # the student's default grid (config.DistillConfig.spacing)


def final_grid(diffusion: GaussianDiffusion, steps: int, spacing: str = SPACING) -> list[int]:
    """The grid DDIM samples a `steps`-step student on: its `steps` time steps, then -1 (clean data)."""
    return diffusion_mod.timesteps(diffusion, steps, spacing) + [-1]


def refine(grid: list[int]) -> list[int]:
    """`grid` with the (rounded) midpoint of every interval longer than one index inserted."""
    out = []
    for a, b in zip(grid[:-1], grid[1:]):
        out.append(a)
        if a - b >= 2:
            out.append(int(round((a + b) / 2)))
    return out + [grid[-1]]


@dataclass(frozen=True)
class Round:
    """One round: the student learns each interval of `student_grid` from two teacher steps on `teacher_grid`."""

    index: int
    student_grid: tuple[int, ...]
    teacher_grid: tuple[int, ...]

    @property
    def student_steps(self) -> int:
        return len(self.student_grid) - 1

    @property
    def teacher_steps(self) -> int:
        return len(self.teacher_grid) - 1


def number_of_rounds(student_steps: int, start_steps: int) -> int:
    """Halvings from start_steps down to student_steps (at least one)."""
    return max(1, int(round(math.log2(start_steps / student_steps))))


def rounds_of(cfg: config.DistillConfig) -> int:
    """Rounds of a distillation: the halvings of progressive distillation, one with a solver teacher."""
    return 1 if cfg.teacher_sampler == "unipc" else number_of_rounds(cfg.student_steps, cfg.start_steps)


def sub_grid(a: int, b: int, substeps: int) -> list[int]:
    """`substeps` points from a down towards b, b + (a - b) (1 - j / substeps)^2 for j < substeps (denser near b,
    as the quadratic grid is near clean data), then b; fewer where rounding makes two equal."""
    points = [int(round(b + (a - b) * (1 - j / substeps) ** 2)) for j in range(substeps)]
    return sorted({p for p in points if b < p <= a} | {a}, reverse=True) + [b]


def solver_round(diffusion: GaussianDiffusion, student_steps: int, substeps: int, spacing: str = SPACING) -> Round:
    """The one round of a solver teacher: the final grid, and the teacher's sub-grids of its intervals."""
    grid = final_grid(diffusion, student_steps, spacing)
    teacher = [p for a, b in zip(grid[:-1], grid[1:]) for p in sub_grid(a, b, substeps)[:-1]] + [-1]
    return Round(0, tuple(grid), tuple(teacher))


def schedule(diffusion: GaussianDiffusion, student_steps: int, start_steps: int, spacing: str = SPACING
             ) -> list[Round]:
    """The rounds, first to last; the last one's student grid is final_grid(diffusion, student_steps)."""
    n = number_of_rounds(student_steps, start_steps)
    grids = [final_grid(diffusion, student_steps, spacing)]
    for _ in range(n):
        grids.append(refine(grids[-1]))
    return [Round(r, tuple(grids[n - 1 - r]), tuple(grids[n - r])) for r in range(n)]


# --- the loss ---------------------------------------------------------------------------------------------------
def ddim_step(diffusion: GaussianDiffusion, x0: Tensor, eps: Tensor, s: Tensor) -> Tensor:
    """Deterministic DDIM update (eta = 0) to step s (B,) from the (x0, eps) predictions (B, C, P) at x_t."""
    a_s = diffusion.alpha_bar(s, x0)
    return a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps


def x0_target(diffusion: GaussianDiffusion, z_t: Tensor, t: Tensor, z_s: Tensor, s: Tensor) -> Tensor:
    """The x0 prediction at (z_t, t) with which one DDIM step lands on z_s at s (Salimans & Ho, Algorithm 2)."""
    a_t, a_s = diffusion.alpha_bar(t, z_t).double(), diffusion.alpha_bar(s, z_t).double()
    ratio = (1 - a_s).sqrt() / (1 - a_t).sqrt()
    x = (z_s.double() - ratio * z_t.double()) / (a_s.sqrt() - ratio * a_t.sqrt())
    return x.to(z_t.dtype)


class TeacherSteps:
    """The teacher's DDIM steps, exactly as genesis.diffusion.ddim_sample takes them (x0 clipped to `clip` and
    eps made consistent with it; classifier-free guidance at `guidance`)."""

    def __init__(self, diffusion: GaussianDiffusion, model: nn.Module, guidance: float = 1.0,
                 clip: tuple[Tensor, Tensor] | None = None) -> None:
        self.diffusion, self.model, self.guidance, self.clip = diffusion, model, guidance, clip

    def predict(self, z: Tensor, t: Tensor, labels: Tensor, geometry: Tensor, cond=None) -> tuple[Tensor, Tensor]:
        """(x0, eps) at z (B, C, P), t (B,); cond: the model's conditioning made once for both steps."""
        x0, eps = self.diffusion.predict_x0_and_eps(self.model, z, t, labels, geometry, self.guidance, cond)
        x0, eps = x0.float(), eps.float()
        if self.clip is not None:
            x0 = torch.maximum(torch.minimum(x0, self.clip[1]), self.clip[0])
            eps = self.diffusion.eps_from_x0(z, t, x0)
        return x0, eps

    @torch.no_grad()
    def two_steps(self, z_t: Tensor, t: Tensor, m: Tensor, s: Tensor, labels: Tensor, geometry: Tensor) -> Tensor:
        """z_s after the DDIM steps t -> m -> s (m == t: one step t -> s)."""
        cond = diffusion_mod.condition(self.model, labels, geometry, self.guidance)
        x0, eps = self.predict(z_t, t, labels, geometry, cond)
        z_m = ddim_step(self.diffusion, x0, eps, m)
        x0, eps = self.predict(z_m, m, labels, geometry, cond)
        return ddim_step(self.diffusion, x0, eps, s)

    def z_s(self, z_t: Tensor, interval: Tensor, rnd: Round, labels: Tensor, geometry: Tensor) -> Tensor:
        """The teacher's z at the end of each example's student interval (B,), from z_t (B, C, P) at its start."""
        t, m, s = (v[interval] for v in round_intervals(rnd, z_t.device))
        return self.two_steps(z_t, t, m, s, labels, geometry)


class TeacherSolver(TeacherSteps):
    """The teacher's UniPC solution over each student interval's part of the round's teacher grid."""

    @torch.no_grad()
    def z_s(self, z_t: Tensor, interval: Tensor, rnd: Round, labels: Tensor, geometry: Tensor) -> Tensor:
        """As TeacherSteps.z_s; examples are solved in groups of one interval (the solver's grid is per call)."""
        out = torch.empty_like(z_t)
        for k in interval.unique().tolist():
            a, b = rnd.student_grid[k], rnd.student_grid[k + 1]
            grid = [g for g in rnd.teacher_grid if b <= g <= a]
            rows = (interval == k).nonzero().squeeze(1)
            geo = geometry[rows] if geometry.dim() == 3 else geometry
            cond = diffusion_mod.condition(self.model, labels[rows], geo, self.guidance)
            out[rows] = diffusion_mod.unipc_solve(self.diffusion, self.model, z_t[rows].float(), grid, labels[rows],
                                                  geo, guidance_scale=self.guidance, clip_x0=self.clip,
                                                  cond=cond).to(z_t.dtype)
        return out


def round_intervals(rnd: Round, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(t, m, s) tensors (n,) per student interval: its start, the teacher's point inside it (t itself where
    the interval cannot be split) and its end."""
    t, s = torch.tensor(rnd.student_grid[:-1]), torch.tensor(rnd.student_grid[1:])
    inside = {g for g in rnd.teacher_grid}
    m = [next((g for g in inside if b < g < a), a) for a, b in zip(rnd.student_grid[:-1], rnd.student_grid[1:])]
    return t.to(device), torch.tensor(m).to(device), s.to(device)


def distillation_loss(diffusion: GaussianDiffusion, student: nn.Module, teacher: TeacherSteps, rnd: Round,
                      x0: Tensor, labels: Tensor, geometry: Tensor, generator: torch.Generator | None = None,
                      weights: Tensor | None = None, interval: Tensor | None = None) -> Tensor:
    """max(SNR_t, 1)-weighted MSE between the student's x0 and the teacher's target (two DDIM steps or a solve).

    x0 (B, C, P) normalized data, labels (B, 6), geometry (3, P); student outputs the diffusion target (v) and is
    called without label dropout. weights: optional (B, C, P) element weights (0 = not learned), the loss is
    sum(w_t w err^2) / sum(w). interval: optional (B,) student interval indices (default: uniform draws).
    """
    B, device = x0.shape[0], x0.device
    t_k, _, s_k = round_intervals(rnd, device)
    if interval is None:
        interval = torch.randint(0, len(t_k), (B,), generator=generator, device=device)
    t, s = t_k[interval], s_k[interval]
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    z_t = diffusion.q_sample(x0, t, noise)
    z_s = teacher.z_s(z_t, interval, rnd, labels, geometry)
    target = x0_target(diffusion, z_t, t, z_s, s)
    out = student(z_t, t, labels, geometry, drop_labels=torch.zeros(B, dtype=torch.bool, device=device))
    x_student, _ = diffusion.output_to_x0_eps(out.float(), z_t, t)
    a = diffusion.alpha_bar(t, x_student)
    w_t = (a / (1 - a)).clamp(min=1.0)  # truncated SNR weighting
    err = (x_student - target.float()) ** 2
    w = torch.ones_like(err) if weights is None else weights.float().expand_as(err)
    return (w_t * w * err).sum() / w.sum().clamp_min(1e-12)


# --- the trainer's view ----------------------------------------------------------------------------------------
class Distiller:
    """The training objective of a distillation run (called like train.Objective) and its round schedule.

    Construction loads the teacher and copies its EMA weights into `student` (before the trainer makes its EMA
    copy and DDP wrapper). The trainer calls `begin_step(step, ema)` before each step: at a round boundary the
    student's EMA weights become the teacher (the paper's eta <- theta, with the weights sampling uses)."""

    def __init__(self, cfg: config.RunConfig, student: nn.Module, n_doms: int, device: torch.device,
                 weights: Callable[[Tensor], Tensor | None] | None = None) -> None:
        from genesis.sampling import clip_range

        path = resolve_teacher(cfg.distill.teacher)
        state = checkpoint.load_state(path, map_location=device)
        if int(state["n_doms"]) != n_doms:
            raise ConfigError(f"distill.teacher {path} models P = {state['n_doms']} DOMs but the data has "
                              f"{n_doms}; distill on data of the teacher's detector")
        teacher_cfg = config.from_dict(config.RunConfig, state["config"])
        weights_key = "ema" if state.get("ema") is not None else "model"
        try:
            student.load_state_dict(state[weights_key])
        except RuntimeError as exc:
            raise CheckpointError(f"distill.teacher {path}: its weights do not fit the student ({exc})") from exc
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        clip = clip_range(state.get("data"), device, getattr(student, "channels", 2))
        d = cfg.distill
        solver = d.teacher_sampler == "unipc"
        self.steps = (TeacherSolver if solver else TeacherSteps)(
            self.diffusion, self.teacher, teacher_cfg.diffusion.guidance_scale, clip)
        self.rounds = ([solver_round(self.diffusion, d.student_steps, d.teacher_substeps, d.spacing)] if solver
                       else schedule(self.diffusion, d.student_steps, d.start_steps, d.spacing))
        self.steps_per_round = cfg.distill.steps_per_round
        self.round = 0
        self.weights = weights
        self.record = {"teacher_path": str(path), "teacher_run_id": (state.get("mlflow") or {}).get("run_id") or "",
                       "teacher_step": int(state.get("step", 0)), "teacher_steps": self.rounds[0].teacher_steps,
                       "target_steps": cfg.distill.student_steps, "rounds": len(self.rounds),
                       "spacing": d.spacing, "teacher_sampler": d.teacher_sampler}
        log.info("distilling %s (step %s) in %d rounds: %s %s steps", path, self.record["teacher_step"],
                 len(self.rounds), d.teacher_sampler, " -> ".join(str(r.teacher_steps) for r in self.rounds[:1])
                 + "".join(f" -> {r.student_steps}" for r in self.rounds))

    @property
    def current(self) -> Round:
        return self.rounds[self.round]

    def round_of(self, step: int) -> int:
        return min(step // self.steps_per_round, len(self.rounds) - 1)

    def begin_step(self, step: int, ema: nn.Module) -> bool:
        """Before training step `step`: True when a new round starts (the EMA student became the teacher)."""
        r = self.round_of(step)
        if r == self.round:
            return False
        self.teacher.load_state_dict(ema.state_dict())
        self.round = r
        log.info("distillation round %d/%d at step %d: %d -> %d DDIM steps", r + 1, len(self.rounds), step,
                 self.current.teacher_steps, self.current.student_steps)
        return True

    def __call__(self, net, signal: Tensor, labels: Tensor, geometry: Tensor, generator=None, train: bool = True
                 ) -> tuple[Tensor, dict[str, float]]:
        """signal (B, C, P), labels (B, 6), geometry (3, P) -> (distillation loss, {round, student_steps})."""
        weights = self.weights(signal) if self.weights is not None else None
        loss = distillation_loss(self.diffusion, net, self.steps, self.current, signal, labels, geometry,
                                 generator, weights)
        return loss, {"round": float(self.round + 1), "student_steps": float(self.current.student_steps)}

    def lr_lambda(self, warmup: int, total: int) -> Callable[[int], float]:
        """LR factor: linear warm-up, then a cosine from 1 to 0.1 within each round (the last round runs to
        `total`), so every round, the last one above all, starts at the full rate."""
        def f(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            r = self.round_of(step)
            start = r * self.steps_per_round
            end = total if r == len(self.rounds) - 1 else start + self.steps_per_round
            progress = min(1.0, max(0.0, (step - start) / max(1, end - start)))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return f

    def checkpoint_config(self, cfg: config.RunConfig) -> config.RunConfig:
        """The config a checkpoint of this round carries: it samples with the round's own step count."""
        return dataclasses.replace(cfg, diffusion=dataclasses.replace(
            cfg.diffusion, sampling_steps=self.current.student_steps))

    def checkpoint_extra(self) -> dict[str, Any]:
        """Checkpoint keys: the distillation record, and the round's teacher weights (for an exact resume)."""
        record = {**self.record, "student_steps": self.current.student_steps, "round": self.round + 1,
                  "grid": list(self.current.student_grid)}
        return {RECORD_KEY: record, TEACHER_WEIGHTS_KEY: self.teacher.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        """Resume: the saved round and its teacher."""
        record = state.get(RECORD_KEY) or {}
        if TEACHER_WEIGHTS_KEY not in state or "round" not in record:
            raise CheckpointError("cannot resume a distillation run from a checkpoint without its distillation "
                                  f"record ('{RECORD_KEY}', '{TEACHER_WEIGHTS_KEY}')")
        self.round = min(int(record["round"]) - 1, len(self.rounds) - 1)
        self.teacher.load_state_dict(state[TEACHER_WEIGHTS_KEY])


def describe(state: dict[str, Any]) -> dict[str, Any] | None:
    """The distillation record of a checkpoint (None for ordinary checkpoints), for inspect and the pages."""
    record = state.get(RECORD_KEY)
    return dict(record) if isinstance(record, dict) else None
