"""Describe a checkpoint or a config without training, as one JSON-serialisable report.

`inspect_checkpoint(path, batch_size)` / `inspect_config(path, batch_size)` return a dict with sections
source, model, config (flattened), parameters, normalization, data_flow (+ data_flow_method), memory,
provenance (and legacy for legacy files); `render_text(report, verbose)` prints it for the CLI and the
dashboard renders the same dict as tables. `compare_reports` and `normalization_mismatch` compare reports.

Legacy checkpoints of the original GENESIS trainer are described through genesis.legacy's reader, which
never imports or runs anything from the file.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genesis import checkpoint, config, paths
from genesis.data.normalization import Normalization
from genesis.errors import CheckpointError, ConfigError, DataError
from genesis.legacy import Placeholder, TensorStub, _short, check_archive, read_legacy, to_plain

DEFAULT_N_DOMS = 5160
MB = 2**20
MEASURE_BATCH = 2  # batch of the activation measurement, scaled linearly to the requested batch
MAX_MEASURED_TOKENS = 256  # above this, activations are measured at 60 and 120 tokens and extrapolated
AFFINE_CHANNELS = ("npe", "time", "x", "y", "z")
LABEL_CHANNELS = ("energy", "zenith", "azimuth", "x", "y", "z")
NORMALIZATION_KEYS = ("representation", "time_transform", "time_reference", "npe_transform", "npe_reference",
                      "energy_transform",
                      "affine_offsets", "affine_scales", "label_offsets", "label_scales")
ASINH_KEYS = ("time_center_ns", "time_width_ns")  # of the 'asinh' time transform; not in foreign checkpoints
PHYSICS_KEYS = ("refractive_index",)  # of the light model (time reference, physics features); not in foreign checkpoints
NORMALIZATION_BUFFERS = ("affine_offsets", "affine_scales", "label_offsets", "label_scales")


# === model reports ================================================================================
def _arch(cfg: config.RunConfig) -> Any:
    return cfg.model if cfg.kind == "diffusion" else cfg.flow


def _label_dim(cfg: config.RunConfig) -> int:
    return cfg.model.label_dim if cfg.kind == "diffusion" else 6


def _inputs(cfg: config.RunConfig, n_doms: int, batch: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Random normalized inputs in the order forward() takes them."""
    x = torch.randn(batch, cfg.data.normalization.channels, n_doms, device=device)
    labels, geometry = torch.randn(batch, _label_dim(cfg), device=device), torch.randn(3, n_doms, device=device)
    if cfg.kind == "diffusion":
        return x, torch.randint(0, cfg.diffusion.timesteps, (batch,), device=device), labels, geometry
    return x, labels, geometry


def _by_type(groups: dict[str, list[int]], total: int) -> list[dict[str, Any]]:
    return [{"type": t, "count": c, "params": n, "share_pct": 100.0 * n / max(total, 1)}
            for t, (c, n) in sorted(groups.items(), key=lambda kv: -kv[1][1])]


def _parameters(model: nn.Module) -> dict[str, Any]:
    """Totals, parameters grouped by module class (leaf modules and modules owning parameters), all modules."""
    total = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    groups: dict[str, list[int]] = {}
    modules = []
    for name, m in model.named_modules():
        own = list(m.named_parameters(recurse=False))
        n_own = sum(p.numel() for _, p in own)
        if n_own or next(m.children(), None) is None:
            g = groups.setdefault(type(m).__name__, [0, 0])
            g[0], g[1] = g[0] + 1, g[1] + n_own
        modules.append({"name": name or "(model)", "type": type(m).__name__,
                        "params": sum(p.numel() for p in m.parameters()),
                        "shape": ", ".join(f"{k} {tuple(p.shape)}" for k, p in own)})
    return {"total": total, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "buffers": buffers, "size_mb": 4 * (total + buffers) / MB, "grouping": "module class",
            "by_type": _by_type(groups, total), "modules": modules}


def _saved_activation_bytes(cfg: config.RunConfig, n_doms: int, batch: int) -> int:
    """Bytes of the distinct storages autograd saves in one training-mode forward of a fresh model on CPU
    (parameters, buffers and the inputs themselves excluded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = checkpoint.build_model(cfg, n_doms, cfg.data.normalization).train()
        inputs = _inputs(cfg, n_doms, batch)
        skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers(), *inputs)}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in skip:
                saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(*inputs)
    return sum(saved.values())


def _activations(cfg: config.RunConfig, n_doms: int) -> tuple[float, str]:
    """Activation bytes at MEASURE_BATCH and how they were obtained."""
    patch = _arch(cfg).patch_size
    tokens = n_doms // patch
    how = (f"saved tensors of one training-mode forward on CPU at batch {MEASURE_BATCH} (torch.autograd.graph."
           "saved_tensors_hooks, distinct storages), scaled linearly to the batch size")
    if tokens <= MAX_MEASURED_TOKENS:
        return float(_saved_activation_bytes(cfg, n_doms, MEASURE_BATCH)), how
    a1, a2 = (_saved_activation_bytes(cfg, patch * t, MEASURE_BATCH) for t in (60, 120))
    return a1 + (a2 - a1) * (tokens - 60) / 60, how + f"; measured at 60 and 120 tokens, extrapolated to {tokens}"


def _memory(cfg: config.RunConfig, n_doms: int, params: dict[str, Any], batch: int) -> dict[str, Any]:
    """Training memory estimate in MB (fp32 weights, AdamW, EMA) for `batch` events."""
    act, how = _activations(cfg, n_doms)
    p, tr, buf = params["total"], params["trainable"], params["buffers"]
    m: dict[str, Any] = {
        "batch_size": batch, "parameters_mb": 4 * p / MB, "buffers_mb": 4 * buf / MB, "gradients_mb": 4 * tr / MB,
        "optimizer_mb": 8 * tr / MB, "ema_mb": 4 * (p + buf) / MB, "input_mb": 4 * batch * 2 * n_doms / MB,
        "geometry_mb": 4 * 3 * n_doms / MB, "labels_mb": 4 * batch * _label_dim(cfg) / MB,
        "activations_mb": act * batch / MEASURE_BATCH / MB,
    }
    static = sum(v for k, v in m.items() if k.endswith("_mb") and k != "activations_mb")
    m["total_fp32_mb"] = static + m["activations_mb"]
    m["total_bf16_mb"] = static + m["activations_mb"] / 2
    m["method"] = (f"activations: {how}. bf16 autocast: activations about halved; weights, gradients and AdamW "
                   "states (2 x params) stay fp32. Excludes the CUDA context and allocator overhead (~0.5 GB); "
                   "GPU flash/memory-efficient attention saves about what the CPU kernel saves.")
    return m


_STAGE_NOTES = {
    "TimestepEmbedder": "sinusoidal features of t -> MLP",
    "LabelEmbedder": "labels -> MLP (learned null embedding where labels are dropped: guidance)",
    "PatchEmbed": "patchify {patched} -> Linear",
    "geometry_film": "SiLU -> Linear: FiLM scale and shift of the signal tokens from the geometry embedding",
    "DiTBlock": "adaLN-Zero block: self-attention over tokens + MLP, modulated and gated by c",
    "FinalLayer": "adaLN LayerNorm -> Linear: patch_size x 2 values per token",
    "ContextEncoder": "geometry patches -> Linear, + label MLP on every token: context for all couplings",
    "ActNorm": "per-channel affine (data-initialised); + log|det| (B,)",
    "AffineCoupling": "masked affine coupling; shift, log-scale from a transformer conditioner; + log|det| (B,)",
}
_COND_NOTE = "c = t_embedder(t) + y_embedder(labels)"


def _fmt(shape: Any) -> str:
    """(8, 2, 120) / (8,): a shape as Python prints a tuple."""
    return str(tuple(int(s) for s in shape))


def _stage(stage: str, shape: Any, note: str) -> dict[str, str]:
    return {"stage": stage, "shape": shape if isinstance(shape, str) else _fmt(shape), "note": note}


def _io_stages(cfg: config.RunConfig, n_doms: int, batch: int) -> tuple[list[dict], list[dict]]:
    """Input and output stages of the forward pass."""
    B, P, diffusion = batch, n_doms, cfg.kind == "diffusion"
    C = cfg.data.normalization.channels
    channels = "hit (+1/-1), npe, first-hit time" if C == 3 else "npe, first-hit time"
    ins = [_stage("input x_t" if diffusion else "input x", (B, C, P),
                  f"normalized signal per DOM: {channels}" + (" (noised)" if diffusion else "")),
           _stage("geometry", (3, P), "normalized DOM positions x, y, z (shared by the batch)"),
           _stage("labels", (B, _label_dim(cfg)), "normalized energy, zenith, azimuth, vertex x, y, z")]
    if diffusion:
        ins.append(_stage("timestep t", (B,), f"diffusion step in [0, {cfg.diffusion.timesteps})"))
        return ins, [_stage("unpatchify -> output", (B, C, P), f"predicted {cfg.diffusion.objective}")]
    return ins, [_stage("output z, log|det|", f"{_fmt((B, 2, P))} + {_fmt((B,))}",
                        "standard-normal latent and log|det dz/dx| (inverse() maps z back to events)")]


def _traced_stages(cfg: config.RunConfig, n_doms: int, batch: int) -> list[dict]:
    """Output shapes of the top-level children (and of each ModuleList element) in call order, from one
    forward pass of a model built on the meta device (shapes only: no memory, no compute)."""
    with torch.device("meta"):
        model = checkpoint.build_model(cfg, n_doms, cfg.data.normalization).eval()
    for m in model.modules():  # data-dependent initialisation (ActNorm) cannot run on meta tensors
        if "initialized" in m._buffers:
            m._buffers["initialized"] = torch.tensor(True)
    records: list[tuple[str, str, str, str, str]] = []

    def hook(group: str, name: str, module: nn.Module, args: tuple, out: Any) -> None:
        first = out[0] if isinstance(out, tuple) else out
        shape = _fmt(first.shape) + (" + log|det|" if isinstance(out, tuple) and len(out) > 1 else "")
        note = _STAGE_NOTES.get(group) or _STAGE_NOTES.get(type(module).__name__, "")
        if "{patched}" in note and args and isinstance(args[0], torch.Tensor) and hasattr(module, "patch_size"):
            (b, c, p), k = args[0].shape, module.patch_size
            note = note.format(patched=f"{_fmt(args[0].shape)} -> {_fmt((b, p // k, c * k))}")
        records.append((group, name, type(module).__name__, shape, note))

    handles = []
    for name, child in model.named_children():
        subs = list(enumerate(child)) if isinstance(child, nn.ModuleList) else [(None, child)]
        handles += [c.register_forward_hook(lambda m, a, o, g=name, n=name if i is None else f"{name}[{i}]":
                                              hook(g, n, m, a, o))
                    for i, c in subs]
    try:
        with torch.no_grad():
            model(*_inputs(cfg, n_doms, batch, "meta"))
    finally:
        for h in handles:
            h.remove()
    return _collapse(records, cfg)


def _collapse(records: list[tuple[str, str, str, str, str]], cfg: config.RunConfig) -> list[dict]:
    """Stages from hook records (group, name, type, shape, note): repeated ModuleList elements are merged
    (blocks x depth; [ActNorm, AffineCoupling] x couplings) and the steps that are not modules added."""
    runs = [list(g) for _, g in itertools.groupby(records, key=lambda r: r[0])]
    fused_after = max((i for i, run in enumerate(runs) if run[0][0] in ("signal_embed", "geometry_film")), default=-1)
    tokens = next((run[-1][3] for run in runs if run[0][0] == "signal_embed"), "")
    out: list[dict] = []
    for i, run in enumerate(runs):
        group, n = run[0][0], len(run)
        if n > 1 and run[0][1].endswith("]"):
            key = [(r[2], r[3]) for r in run]
            k = next(k for k in range(1, n + 1) if n % k == 0 and key == key[:k] * (n // k))
            out += [_stage(f"{group} x{n // k}" + (f": {r[2]}" if k > 1 else f" ({r[2]})"), r[3], r[4])
                    for r in run[:k]]
        else:
            out += [_stage(f"{group} ({r[2]})", r[3], r[4]) for r in run]
        if cfg.kind == "diffusion" and group == "t_embedder":  # c = step + label embedding (labels embedded first)
            out.append(_stage("conditioning c", run[-1][3], _COND_NOTE))
        if cfg.kind == "diffusion" and i == fused_after:
            out.append(_stage("fused tokens", tokens, f"signal + geometry embeddings ({cfg.model.fusion}) + pos_embed"))
    return out


def _static_stages(cfg: config.RunConfig, n_doms: int, batch: int) -> list[dict]:
    """The forward pass described from the config alone (fallback when tracing fails)."""
    a, B = _arch(cfg), batch
    T, H, p = n_doms // a.patch_size, a.hidden_size, a.patch_size
    if cfg.kind == "flow":
        return [_stage("context", (B, T, H), _STAGE_NOTES["ContextEncoder"]),
                *[_stage(f"transforms x{a.num_couplings}: {t}", (B, 2, n_doms), _STAGE_NOTES[t])
                  for t in ("ActNorm", "AffineCoupling")]]
    film = [_stage("geometry_film", (1, T, 2 * H), _STAGE_NOTES["geometry_film"])] if a.fusion == "film" else []
    # PMTDiT.condition (labels and geometry, once per batch) runs first, then the step and the signal
    return [_stage("geometry_embed", (1, T, H), f"patchify (1, {T}, {3 * p}) -> Linear"), *film,
            _stage("y_embedder", (B, H), _STAGE_NOTES["LabelEmbedder"]),
            _stage("t_embedder", (B, H), _STAGE_NOTES["TimestepEmbedder"]),
            _stage("conditioning c", (B, H), _COND_NOTE),
            _stage("signal_embed", (B, T, H), f"patchify ({B}, {T}, {2 * p}) -> Linear"),
            _stage("fused tokens", (B, T, H), f"signal + geometry embeddings ({a.fusion}) + pos_embed"),
            _stage(f"blocks x{a.depth} (DiTBlock)", (B, T, H), _STAGE_NOTES["DiTBlock"]),
            _stage("final_layer", (B, T, 2 * p), _STAGE_NOTES["FinalLayer"])]


def _data_flow(cfg: config.RunConfig, n_doms: int, batch: int) -> tuple[list[dict], str]:
    ins, outs = _io_stages(cfg, n_doms, batch)
    try:
        return ins + _traced_stages(cfg, n_doms, batch) + outs, "traced: forward hooks on one pass on the meta device"
    except (RuntimeError, NotImplementedError, TypeError, ValueError, StopIteration) as exc:
        return ins + _static_stages(cfg, n_doms, batch) + outs, f"static description (tracing failed: {exc})"


def _model_report(cfg: config.RunConfig, model: nn.Module, n_doms: int, batch: int) -> dict[str, Any]:
    """Sections model, config, parameters, data_flow, memory for a built model."""
    a = _arch(cfg)
    section: dict[str, Any] = {"type": type(model).__name__, "kind": cfg.kind, "n_doms": n_doms,
                               "n_tokens": n_doms // a.patch_size, "architecture": config.to_dict(a)}
    if cfg.kind == "diffusion":
        section["diffusion"] = config.to_dict(cfg.diffusion)
    else:
        section["flow"] = {"steps": f"[ActNorm, AffineCoupling] x {a.num_couplings}",
                           "mask_kinds": list(getattr(model, "mask_kinds", []))}
        if a.hit_head:  # not on the forward pass traced below: flow MAP and the training loss call it
            section["flow"]["hit_head"] = (f"HitHead (width {a.hit_head}): P(hit) and a normal density of npe and "
                                           "time per DOM given the observed DOMs; used by flow MAP")
    params = _parameters(model)
    stages, method = _data_flow(cfg, n_doms, batch)
    return {"model": section, "config": config.flatten(config.to_dict(cfg)), "parameters": params,
            "data_flow": stages, "data_flow_method": method, "memory": _memory(cfg, n_doms, params, batch)}


def _normalization(d: dict[str, Any]) -> dict[str, Any]:
    # files from before representations (npe and time channels only), time and npe references and the refractive index
    d = {"representation": "legacy", "time_reference": "none", "npe_reference": "none",
         "refractive_index": Normalization().refractive_index, **d}
    return {k: to_plain(d[k]) for k in NORMALIZATION_KEYS + ASINH_KEYS + PHYSICS_KEYS if k in d}


def _checkpoint_report(path: Path, state: dict[str, Any], batch: int) -> dict[str, Any]:
    try:
        cfg = config.from_dict(config.RunConfig, state["config"])
        norm = Normalization.from_dict(state["normalization"])
        n_doms = int(state["n_doms"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: the embedded config or normalization is not valid here ({exc})") from exc
    model = checkpoint.build_model(cfg, n_doms, norm)
    problems, notes = [], []
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        problems.append(f"weights do not match the embedded config: {str(exc).splitlines()[0]}")
    if state.get("format_version", 0) > checkpoint.FORMAT_VERSION:
        problems.append(f"written by a newer GENESIS (format {state['format_version']}); upgrade to load it")
    weights = state.get("model") or {}
    if any(k in weights and not np.allclose(weights[k].tolist(), state["normalization"][k])
           for k in NORMALIZATION_BUFFERS):
        notes.append("the normalization dict and the model's normalization buffers disagree")
    mlflow, best = state.get("mlflow") or {}, state.get("best_val_loss")
    report: dict[str, Any] = {"source": {"path": str(path), "file": "checkpoint", "kind": cfg.kind,
                                         "size_mb": path.stat().st_size / MB, "loadable": not problems,
                                         "notes": problems + notes}}
    report.update(_model_report(cfg, model, n_doms, batch))
    report["normalization"] = _normalization(state["normalization"])
    report["provenance"] = {
        "run_id": mlflow.get("run_id"), "tracking_uri": mlflow.get("tracking_uri"), "step": state.get("step"),
        "epoch": state.get("epoch"), "best_val_loss": best if best is None or math.isfinite(best) else None,
        "data": to_plain(state.get("data") or {}), "versions": to_plain(state.get("versions") or {}),
        "created": state.get("created"), "format_version": state.get("format_version"),
        "geometry": (state.get("geometry") or {}).get("name"), "has_ema": state.get("ema") is not None,
        "has_optimizer": state.get("optimizer") is not None,
    }
    if isinstance(state.get("distillation"), dict):  # a distilled student: its teacher (genesis.distill)
        report["distillation"] = to_plain(state["distillation"])
    return report


# === legacy reports ===============================================================================
_LEGACY_STATE_KEYS = ("model_state_dict", "state_dict", "model", "ema_state_dict", "ema", "net")
_LEGACY_CONFIG_KEYS = ("config", "cfg", "args", "hparams", "hyper_parameters", "opt", "params", "settings")
_LEGACY_PROVENANCE = ("epoch", "step", "global_step", "iteration", "best_val_loss", "best_loss", "val_loss", "loss")
_LEGACY_NORM_NAMES = {"affine_offset": "affine_offsets", "affine_scale": "affine_scales",
                      "label_offset": "label_offsets", "label_scale": "label_scales"}


def _norm_key(name: str) -> str | None:
    """'module.affine_offset' -> 'affine_offsets'; None when `name` is no normalization entry."""
    last = name.rsplit(".", 1)[-1]
    key = _LEGACY_NORM_NAMES.get(last, last)
    return key if key in NORMALIZATION_KEYS else None


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, TensorStub))


def _describe(v: Any) -> Any:
    if isinstance(v, dict):
        return f"dict ({len(v)} entries, {sum(_is_tensor(x) for x in v.values())} tensors)"
    if isinstance(v, Placeholder):
        return f"object of {v.pickle_global} (its code was not loaded)"
    if _is_tensor(v):
        return f"tensor {_fmt(v.shape)}"
    return to_plain(v) if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__


def _legacy_report(path: Path, obj: Any, names: list[str], reason: str, batch: int) -> dict[str, Any]:
    """Report for a file that is not a GENESIS checkpoint: the config values, normalization buffers and
    parameter counts found in it. It cannot be loaded for sampling."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint dictionary (the file holds {_describe(obj)})")
    sd_key = next((k for k in _LEGACY_STATE_KEYS if isinstance(obj.get(k), dict)), None)
    tensors = {str(k): v for k, v in (obj[sd_key] if sd_key else obj).items() if _is_tensor(v)}
    cfg_key = next((k for k in _LEGACY_CONFIG_KEYS if k in obj), None)
    cfg_plain = to_plain(obj[cfg_key]) if cfg_key else {}
    cfg_flat = {k: v for k, v in config.flatten(cfg_plain if isinstance(cfg_plain, dict) else {"value": cfg_plain})
                .items() if not k.endswith("__class__")}
    norm: dict[str, Any] = {}
    for name, t in tensors.items():
        if (key := _norm_key(name)) and key not in norm:
            norm[key] = [float(v) for v in (t.materialize() if isinstance(t, TensorStub) else t).reshape(-1)]
    for k, v in cfg_flat.items():  # normalization kept in the config rather than in buffers
        if key := _norm_key(k):
            norm.setdefault(key, v)
    weights = {n: t for n, t in tensors.items() if not _norm_key(n) and t.dtype.is_floating_point}
    total = sum(t.numel() for t in weights.values())
    groups: dict[str, list[int]] = {}
    for n, t in weights.items():
        g = groups.setdefault(n.removeprefix("module.").removeprefix("_orig_mod.").split(".")[0], [0, 0])
        g[0], g[1] = g[0] + 1, g[1] + t.numel()
    missing = [k for k in NORMALIZATION_KEYS if k not in norm]
    p_mb = 4 * total / MB
    notes = [f"cannot be loaded for sampling: {reason}. GENESIS loads only plain-data checkpoints; convert it where "
             "the original code is available (save model_state_dict and the config as plain dicts) or retrain."]
    notes += [f"normalization not recorded: {', '.join(missing)}"] if missing else []
    return {
        "source": {"path": str(path), "file": "legacy checkpoint", "kind": "legacy",
                   "size_mb": path.stat().st_size / MB, "loadable": False, "notes": notes},
        "model": {"type": cfg_plain.get("__class__", "unknown") if isinstance(cfg_plain, dict) else "unknown",
                  "kind": "legacy", "state_dict_key": sd_key, "config_key": cfg_key, "n_tensors": len(tensors)},
        "config": cfg_flat,
        "parameters": {"total": total, "trainable": None, "buffers": sum(t.numel() for t in tensors.values()) - total,
                       "size_mb": 4 * sum(t.numel() for t in tensors.values()) / MB,
                       "grouping": "top-level name (module classes are unknown without the code)",
                       "by_type": _by_type(groups, total),
                       "modules": [{"name": n, "type": str(t.dtype).removeprefix("torch."), "params": t.numel(),
                                    "shape": _fmt(t.shape)} for n, t in tensors.items()]},
        "normalization": norm,
        "data_flow": [], "data_flow_method": "unknown without the model code",
        "memory": {"batch_size": batch, "parameters_mb": p_mb, "gradients_mb": p_mb, "optimizer_mb": 2 * p_mb,
                   "ema_mb": p_mb, "activations_mb": None, "total_fp32_mb": None, "total_bf16_mb": None,
                   "method": "weights only (fp32, AdamW, EMA); activations are unknown without the model code"},
        "provenance": {**{k: to_plain(obj[k]) for k in _LEGACY_PROVENANCE if k in obj}, "format_version": None},
        "legacy": {"reason": reason, "globals": names, "keys": {str(k): _describe(v) for k, v in obj.items()}},
    }


# === entry points =================================================================================
def inspect_checkpoint(path: str | Path, batch_size: int = 64) -> dict[str, Any]:
    """Report for a checkpoint file; legacy files are read with the safe reader (nothing from them runs)."""
    path = check_archive(path)
    try:
        state = checkpoint.load(path)
    except CheckpointError:
        legacy = read_legacy(path)
        plumbing = ("torch", "collections", "_codecs", "builtins", "__builtin__", "copyreg", "copy_reg")
        foreign = [g for g in legacy.globals if g.split(".")[0] not in plumbing]
        if not foreign:  # refused for another reason than code: report torch's error
            raise
        return _legacy_report(path, legacy.obj, legacy.globals, f"it pickles objects of {', '.join(foreign)}",
                              batch_size)
    if isinstance(state, dict) and state.get("format") == checkpoint.FORMAT:
        return _checkpoint_report(path, state, batch_size)
    return _legacy_report(path, state, [], f"it is not a GENESIS checkpoint (no format '{checkpoint.FORMAT}')",
                          batch_size)


def _n_doms_for(cfg: config.RunConfig) -> tuple[int, str]:
    """P from the config's data file (relative to the working folder or the project home), else 5160."""
    from genesis.data import schema

    data = Path(cfg.data.path)
    for p in [data] + ([] if data.is_absolute() else [paths.home() / data]):
        if p.is_file():
            try:
                return schema.file_info(p)[1], f"n_doms from {p}"
            except DataError as exc:
                return DEFAULT_N_DOMS, f"data file {p} unreadable ({exc}); assumed P = {DEFAULT_N_DOMS}"
    return DEFAULT_N_DOMS, f"data file {cfg.data.path} not found; assumed P = {DEFAULT_N_DOMS} (IceCube-86)"


def inspect_config(path: str | Path, batch_size: int = 64) -> dict[str, Any]:
    """Report for the model a YAML config would train (no weights, no provenance)."""
    cfg = config.load(path)
    n_doms, how = _n_doms_for(cfg)
    model = checkpoint.build_model(cfg, n_doms, cfg.data.normalization)
    report: dict[str, Any] = {"source": {"path": str(path), "file": "config", "kind": cfg.kind, "size_mb": None,
                                         "loadable": False, "notes": [how]}}
    report.update(_model_report(cfg, model, n_doms, batch_size))
    report["normalization"] = _normalization(model.get_normalization_params())
    report["provenance"] = {}
    return report


# === comparison ===================================================================================
def _same(a: Any, b: Any, rtol: float = 1e-6) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, rtol) for x, y in zip(a, b))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
    return a == b


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Side-by-side rows {section, key, a, b, differs}. Normalization rows come first: a mismatch there means
    samples of one model would be denormalized wrongly with the other's metadata."""
    def pick(r: dict, section: str) -> dict[str, Any]:
        d = r.get(section) or {}
        if section == "parameters":
            d = {k: v for k, v in d.items() if k not in ("by_type", "modules")}
        if section == "source":
            d = {k: d.get(k) for k in ("kind", "file", "loadable")}
        return config.flatten(d)

    rows = []
    for section in ("normalization", "source", "model", "parameters", "memory", "provenance", "config"):
        fa, fb = pick(a, section), pick(b, section)
        for key in list(fa) + [k for k in fb if k not in fa]:
            va, vb = fa.get(key), fb.get(key)
            rows.append({"section": section, "key": key, "a": va, "b": vb, "differs": not _same(va, vb)})
    return rows


def normalization_mismatch(report: dict[str, Any], suggested: Normalization) -> list[str]:
    """Where the report's normalization differs from `suggested` (e.g. `genesis stats` of a data file)."""
    have = report.get("normalization") or {}
    if not have:
        return ["the checkpoint carries no normalization metadata"]
    out = []
    for key, want in suggested.to_dict().items():
        if key in ASINH_KEYS and suggested.time_transform != "asinh":
            continue  # unused by the other time transforms (and absent from older checkpoints)
        if key not in have:
            out.append(f"{key}: not recorded in the checkpoint (data suggests {want})")
        elif not _same(have[key], want, rtol=1e-3):
            out.append(f"{key}: checkpoint {_rounded(have[key])} vs data {_rounded(want)}")
    return out


def _rounded(value: Any) -> Any:
    """Numbers to 5 significant digits for messages (no 9.200000000000001)."""
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return float(f"{value:.5g}") if isinstance(value, float) else value


# === text =========================================================================================
def _num(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3g}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]], indent: str = "  ") -> list[str]:
    cells = [headers] + [[_num(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def _kv(d: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_num(v)}" for k, v in d.items())


def _tree_name(name: str) -> str:
    """'blocks.0.attn' -> indented 'attn' (module tree)."""
    return name if name == "(model)" else "  " * (name.count(".") + 1) + name.rsplit(".", 1)[-1]


def render_text(report: dict[str, Any], verbose: bool = False) -> str:
    """Human-readable report; `verbose` adds every module (or every tensor of a legacy file)."""
    src, model, params, norm, mem = (report[k] for k in ("source", "model", "parameters", "normalization", "memory"))
    built = "architecture" in model
    size = f", {src['size_mb']:.2f} MB" if src.get("size_mb") is not None else ""
    loadable = ", loadable" if src["loadable"] else ""
    lines = [f"{src['file'].capitalize()} {src['path']}  ({src['kind']}{size}{loadable})",
             *[f"  note: {n}" for n in src.get("notes", [])], "", f"Model  {model['type']} ({model['kind']})"]
    if built:
        extra = "diffusion" if "diffusion" in model else "flow"
        lines += [f"  n_doms={model['n_doms']}  n_tokens={model['n_tokens']}", f"  {_kv(model['architecture'])}",
                  f"  {extra}: {_kv(model[extra])}"]
    else:
        lines += [f"  config {k} = {_short(v, 80)}" for k, v in report["config"].items()] or ["  no config found"]
    lines += ["", f"Parameters  total {_num(params['total'])}  trainable {_num(params['trainable'])}  "
                  f"buffers {_num(params['buffers'])}  size {params['size_mb']:.2f} MB (fp32)",
              *_table([params["grouping"], "count", "params", "share %"],
                      [[r["type"], r["count"], r["params"], r["share_pct"]] for r in params["by_type"]]),
              "", "Normalization", *[f"  {k:<17}{norm[k]}" for k in NORMALIZATION_KEYS + ASINH_KEYS if k in norm]]
    lines += [] if norm else ["  none recorded"]
    if report["data_flow"]:
        lines += ["", f"Data flow (batch {mem['batch_size']}; {report['data_flow_method']})",
                  *_table(["stage", "shape", "note"], [list(s.values()) for s in report["data_flow"]])]
    lines += ["", f"Memory estimate for training at batch {mem['batch_size']} (MB)",
              *_table(["item", "MB"], [[k.removesuffix("_mb"), "unknown" if v is None else v]
                                       for k, v in mem.items() if k.endswith("_mb")]), f"  method: {mem['method']}"]
    if prov := config.flatten(report.get("provenance") or {}):
        width = max(map(len, prov)) + 2
        lines += ["", "Provenance", *[f"  {k:<{width}}{v if isinstance(v, str) else _short(v, 100)}"
                                      for k, v in prov.items()]]
    if distilled := report.get("distillation"):
        lines += ["", "Distillation (progressive, Salimans & Ho 2022)",
                  *[f"  {k:<16}{v if isinstance(v, str) else _short(v, 100)}" for k, v in distilled.items()]]
    if "legacy" in report:
        lines += ["", "Legacy file", f"  globals named: {', '.join(report['legacy']['globals']) or 'none'}",
                  *[f"  key {k}: {v}" for k, v in report["legacy"]["keys"].items()]]
    if verbose:
        lines += ["", "Modules" if built else "Tensors",
                  *_table(["name", "type", "params", "shape"],
                          [[_tree_name(r["name"]) if built else r["name"], r["type"], r["params"], r["shape"]]
                           for r in params["modules"]])]
    return "\n".join(lines)
