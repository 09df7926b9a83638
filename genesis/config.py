"""Run configuration: one frozen dataclass per component, composed into `RunConfig`.

YAML files and `--set a.b=value` overrides go through `from_dict`, which rejects unknown keys and wrong
types with a ConfigError naming the key. Field metadata (help, choices, minimum) drives the dashboard's
generated form.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genesis.data.normalization import Normalization
from genesis.errors import ConfigError

KINDS = ("diffusion", "flow")


def option(default: Any, help: str, choices: tuple | None = None, minimum: float | None = None) -> Any:
    """A dataclass field with form metadata."""
    meta = {"help": help, "choices": choices, "minimum": minimum}
    if isinstance(default, (list, dict, Normalization)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DiTConfig:
    """PMT diffusion transformer (DiT blocks over patches of DOMs along strings)."""

    hidden_size: int = option(64, "token width", minimum=8)
    depth: int = option(4, "number of DiT blocks", minimum=1)
    num_heads: int = option(4, "attention heads (must divide hidden_size)", minimum=1)
    patch_size: int = option(60, "consecutive DOMs per token (60 = one token per string, 1 = per DOM)", minimum=1)
    fusion: str = option("sum", "how signal and geometry embeddings combine", choices=("sum", "film"))
    label_dim: int = option(6, "number of conditioning labels", minimum=1)
    time_embed_dim: int = option(256, "sinusoidal frequency embedding size of the diffusion step", minimum=8)
    mlp_ratio: float = option(4.0, "MLP width / hidden_size", minimum=1.0)
    dropout: float = option(0.0, "dropout in attention and MLP", minimum=0.0)
    label_dropout: float = option(0.1, "probability of dropping labels in training (classifier-free guidance)", minimum=0.0)
    conditioning: str = option("labels", "labels: the six labels as one vector; physics: direction as a unit vector "
                               "plus per-DOM light geometry (distances, expected arrival time)",
                               choices=("labels", "physics"))
    dom_head_width: int = option(0, "width of a per-DOM output head next to the token output (0 = off)", minimum=0)
    light_feature: bool = option(False, "physics conditioning: every DOM also gets the log of its expected charge "
                                 "from the energy and the light path (genesis.models.physics.expected_light)")
    dom_head_conditioning: bool = option(False, "the per-DOM head is modulated (FiLM) by the step and label "
                                         "embedding, so the labels reach it directly, not only through its token")


@dataclass(frozen=True)
class DiffusionConfig:
    """Gaussian diffusion process and default sampler."""

    timesteps: int = option(1000, "number of diffusion steps T", minimum=2)
    schedule: str = option("cosine", "noise schedule", choices=("cosine", "linear"))
    objective: str = option("eps", "what the network predicts", choices=("eps", "v"))
    sampler: str = option("ddim", "default sampler", choices=("dpmpp2m", "unipc", "ddim", "ddpm"))
    sampling_steps: int = option(50, "DDIM steps", minimum=1)
    spacing: str = option("", "time steps of the default sampler: empty = the sampler's own (ddim linspace, "
                          "dpmpp2m and unipc trailing), or linspace, trailing, logsnr, quadratic "
                          "(genesis.diffusion.timesteps)",
                          choices=("", "linspace", "trailing", "logsnr", "quadratic"))
    eta: float = option(0.0, "DDIM eta (0 = deterministic)", minimum=0.0)
    guidance_scale: float = option(1.0, "classifier-free guidance scale (1 = off)", minimum=0.0)
    redraw_untriggered: bool = option(True, "draw an event again while it has fewer hit DOMs than any training event "
                                      "(the simulator's trigger does the same; checkpoints record that minimum)")
    min_snr_gamma: float = option(0.0, "min-SNR loss weighting gamma (Hang et al. 2023; 0 = off, 5 is usual)", minimum=0.0)
    hit_weight: float = option(1.0, "loss weight of hit DOMs relative to DOMs without a hit", minimum=0.0)
    no_hit_weight: float = option(0.1, "hit representation: loss weight of npe and time at DOMs without a hit, which "
                                  "learn the neutral value 0 (0 = not learned: sampling then feeds the network "
                                  "values it never saw)", minimum=0.0)
    dequantize_npe: bool = option(False, "whole-pe training data: learn npe + u, u ~ U(0, 1), of every hit DOM (a "
                                  "density instead of point masses at 1, 2, 3 pe) and take the floor when sampling")


@dataclass(frozen=True)
class FlowConfig:
    """Conditional normalizing flow over the whole event (affine couplings, ActNorm, permutations)."""

    num_couplings: int = option(8, "number of affine coupling layers", minimum=1)
    hidden_size: int = option(64, "width of the coupling networks", minimum=8)
    depth: int = option(2, "transformer layers in each coupling network", minimum=1)
    num_heads: int = option(4, "attention heads in the coupling networks", minimum=1)
    patch_size: int = option(60, "DOMs per token in the coupling networks", minimum=1)
    scale_bound: float = option(2.0, "tanh bound of the log-scales", minimum=0.1)
    dequant_noise: float = option(0.01, "uniform dequantization noise width (normalized units)", minimum=0.0)
    hit_threshold: float = option(0.5, "sampled npe below this (pe) is a no-hit DOM", minimum=0.0)
    conditioning: str = option("labels", "labels: geometry and labels per token; physics: plus every DOM's "
                               "light geometry for the labels (genesis.models.physics)", choices=("labels", "physics"))
    dom_width: int = option(0, "width of the per-DOM network of each coupling (0 = none)", minimum=0)
    inpaint_fill: str = option("best", "flow MAP result per masked DOM: best (restart with the highest objective) or "
                               "vote (hit if most restarts hit; npe, time averaged over those)", choices=("best", "vote"))
    dom_neighbours: bool = option(False, "the per-DOM networks also read the values of the DOMs above and below on the "
                                  "string (needs dom_width > 0)")
    hit_head: int = option(0, "width of the hit head (0 = none): per masked DOM, given the observed ones, P(hit) and a "
                           "density of a hit's npe and time, trained with the flow on random masks; flow MAP takes hit "
                           "/ no hit from it", minimum=0)
    light_feature: bool = option(False, "physics conditioning: every DOM also gets the log of its expected charge "
                                 "from the energy and the light path (genesis.models.physics.expected_light), and "
                                 "the hit head's npe of a hit is a correction to that charge")


@dataclass(frozen=True)
class DataConfig:
    """Dataset, split and normalization."""

    path: str = option("data/demo.h5", "HDF5 training file")
    geometry: str = option("", "geometry CSV (empty = positions stored in the data file)")
    val_fraction: float = option(0.1, "fraction of events for validation", minimum=0.0)
    test_fraction: float = option(0.1, "fraction of events held out for evaluation", minimum=0.0)
    split_seed: int = option(0, "seed of the train/val/test split", minimum=0)
    in_memory: str = option("auto", "load the dataset into memory", choices=("auto", "always", "never"))
    max_events: int = option(0, "use at most this many events (0 = all)", minimum=0)
    num_workers: int = option(0, "DataLoader workers when streaming from disk", minimum=0)
    noise_radius_m: float = option(0.0, "detector noise kept apart (genesis.noise; diffusion only): hits with no other "
                                   "hit DOM within this radius [m] are taken out of the training events and drawn "
                                   "again at sampling from a noise model fitted on them (0 = off: the model learns "
                                   "them)", minimum=0.0)
    normalization: Normalization = option(Normalization(), "offsets, scales and transforms")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, checkpointing and logging."""

    device: str = option("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    batch_size: int = option(64, "events per step (per process)", minimum=1)
    lr: float = option(3e-4, "peak learning rate", minimum=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay", minimum=0.0)
    warmup_steps: int = option(50, "linear warm-up steps", minimum=0)
    epochs: int = option(5, "number of epochs", minimum=1)
    max_steps: int = option(0, "stop after this many steps (0 = no limit)", minimum=0)
    max_minutes: float = option(0.0, "stop after this wall time (0 = no limit)", minimum=0.0)
    grad_clip: float = option(1.0, "gradient norm clip (0 = off)", minimum=0.0)
    ema_decay: float = option(0.999, "EMA decay of the weights", minimum=0.0)
    checkpoint_every: int = option(200, "steps between last.pt saves (also saved each epoch)", minimum=1)
    log_every: int = option(10, "steps between metric logs", minimum=1)
    patience: int = option(0, "early stop after this many epochs without improvement (0 = off)", minimum=0)
    seed: int = option(0, "random seed", minimum=0)
    amp: bool = option(True, "bf16 autocast on CUDA")
    val_weights: str = option("ema", "weights scored by validation and best.pt: ema (those sampling uses) or raw",
                              choices=("ema", "raw"))
    eval_events: int = option(0, "evaluate physics quality on this many test events at the end (0 = off)", minimum=0)
    fail_at_step: int = option(0, "testing aid: make the loss NaN at this step (0 = off)", minimum=0)


@dataclass(frozen=True)
class DistillConfig:
    """Progressive distillation (Salimans & Ho 2022) of a trained diffusion checkpoint into a few-step student
    (genesis.distill). With a teacher set, the run's model and diffusion sections and the normalization are the
    teacher's; data and train stay the run's own."""

    teacher: str = option("", "teacher diffusion checkpoint (.pt); empty = an ordinary training run")
    student_steps: int = option(4, "DDIM steps of the final student (its diffusion.sampling_steps)", minimum=1)
    start_steps: int = option(64, "DDIM steps of the teacher in the first round; each round halves the steps, "
                              "round(log2(start_steps / student_steps)) rounds in all", minimum=2)
    steps_per_round: int = option(500, "training steps per round; the run ends after the last round unless "
                                  "train.max_steps says otherwise", minimum=1)
    spacing: str = option("trailing", "time steps of the student's DDIM grid (its diffusion.spacing): trailing "
                          "(T-1, ..., T/steps) gives every step a real interval; linspace ends on t = 0, whose step "
                          "does almost nothing; quadratic (as the sampler's) is denser near clean data",
                          choices=("linspace", "trailing", "quadratic"))
    teacher_sampler: str = option("ddim", "how the teacher makes the targets: ddim = progressive rounds (two "
                                  "teacher DDIM steps per student step, the steps halving from start_steps); unipc "
                                  "= one round, the teacher solves each student step's interval with "
                                  "teacher_substeps UniPC steps", choices=("ddim", "unipc"))
    teacher_substeps: int = option(4, "UniPC steps of the teacher per student step (teacher_sampler unipc)",
                                   minimum=1)


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs."""

    kind: str = option("diffusion", "model family", choices=KINDS)
    name: str = option("", "run name shown in MLflow")
    experiment: str = option("genesis", "MLflow experiment")
    model: DiTConfig = option(DiTConfig(), "diffusion transformer")
    diffusion: DiffusionConfig = option(DiffusionConfig(), "diffusion process")
    flow: FlowConfig = option(FlowConfig(), "normalizing flow")
    data: DataConfig = option(DataConfig(), "data")
    train: TrainConfig = option(TrainConfig(), "training")
    distill: DistillConfig = option(DistillConfig(), "distillation of a teacher checkpoint (off without a teacher)")

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that single fields cannot express."""
    m, f = cfg.model, cfg.flow
    if m.hidden_size % m.num_heads:
        raise ConfigError(f"model.num_heads ({m.num_heads}) must divide model.hidden_size ({m.hidden_size})")
    if f.hidden_size % f.num_heads:
        raise ConfigError(f"flow.num_heads ({f.num_heads}) must divide flow.hidden_size ({f.hidden_size})")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 0.9:
        raise ConfigError("data.val_fraction + data.test_fraction must leave at least 10% for training")
    if cfg.diffusion.sampling_steps > cfg.diffusion.timesteps:
        raise ConfigError("diffusion.sampling_steps cannot exceed diffusion.timesteps")
    if cfg.distill.teacher and cfg.kind != "diffusion":
        raise ConfigError("distill.teacher is set but kind is 'flow': only diffusion checkpoints can be distilled")
    if (cfg.distill.teacher and cfg.distill.teacher_sampler == "ddim"
            and cfg.distill.start_steps <= cfg.distill.student_steps):
        raise ConfigError(f"distill.start_steps ({cfg.distill.start_steps}) must exceed distill.student_steps "
                          f"({cfg.distill.student_steps}): each round halves the teacher's steps")
    norm = cfg.data.normalization
    if cfg.diffusion.dequantize_npe and (cfg.kind != "diffusion" or norm.representation != "hit"
                                         or norm.npe_reference != "none"):
        raise ConfigError("diffusion.dequantize_npe needs kind 'diffusion', data.normalization.representation 'hit' "
                          f"and npe_reference 'none' (got '{cfg.kind}', '{norm.representation}', "
                          f"'{norm.npe_reference}')")
    if cfg.kind == "flow" and cfg.data.noise_radius_m > 0:
        raise ConfigError("data.noise_radius_m applies to diffusion models (a flow inpaints observed events, noise "
                          "and all); set it to 0 for kind 'flow'")
    if cfg.kind == "flow" and cfg.data.normalization.representation != "legacy":
        raise ConfigError("flows model the 2-channel 'legacy' representation only; "
                          "set data.normalization.representation=legacy for kind 'flow'")


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Coerce value to the field type or raise ConfigError naming the key."""
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads '1e-3' as a string
            number = float(value)
        except (ValueError, OverflowError):
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
            return number
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is str and value is None:
        return ""
    raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping, got {data!r}")
    if cls is Normalization:
        try:
            return Normalization.from_dict(data)
        except TypeError as exc:
            raise ConfigError(f"config section '{prefix.rstrip('.')}': {exc}") from exc
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key, tp, value = prefix + f.name, hints[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, value, key + ".")
        else:
            kwargs[f.name] = _check_type(key, value, tp)
        choices = f.metadata.get("choices")
        if choices and kwargs[f.name] not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
        minimum = f.metadata.get("minimum")
        if minimum is not None and kwargs[f.name] < minimum:
            raise ConfigError(f"config key '{key}' must be >= {minimum}, got {value!r}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (lists, not tuples) of a config dataclass."""
    if isinstance(cfg, Normalization):
        return cfg.to_dict()
    return {f.name: to_dict(v) if dataclasses.is_dataclass(v := getattr(cfg, f.name)) else v
            for f in dataclasses.fields(cfg)}


def set_in(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Copy of nested dict `data` with `dotted` key set to value."""
    out = dict(data)
    head, _, rest = dotted.partition(".")
    if rest:
        sub = out.get(head, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"config key '{head}' is not a section; cannot set '{dotted}'")
        out[head] = set_in(sub, rest, value)
    else:
        out[head] = value
    return out


def yaml_reason(exc: yaml.YAMLError) -> str:
    """A one-line reason for a YAML parse error: the problem and where it is."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings (value parsed as YAML) to a nested dict."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({yaml_reason(exc)})") from exc
        data = set_in(data, key.strip(), value)
    return data


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """RunConfig from a YAML file (or defaults when None) plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({yaml_reason(exc)})") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config as text ({exc}); is it a YAML file?") from exc
    return from_dict(RunConfig, apply_overrides(data, overrides or []))


def save(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (lists kept as values), for MLflow params and diff tables."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def field_specs(cls: type, prefix: str = "") -> list[dict[str, Any]]:
    """Flat description of every leaf field (key, type, default, help, choices, minimum) for forms."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(tp) and tp is not Normalization:
            specs.extend(field_specs(tp, f"{prefix}{f.name}."))
        else:
            specs.append({"key": prefix + f.name, "type": tp, "default": default, **f.metadata})
    return specs

