"""Inpainting runs: one method on normalized events (`run_inpainting`), and whole jobs on physical events
(`inpaint_events`): the method's fill, the baselines, and every fill scored the one way (`metrics`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from genesis.data.normalization import Normalization
from genesis.errors import CheckpointError, ConfigError, DataError
from genesis.geometry import Geometry
from genesis.inpaint.baselines import BASELINES, baseline_fill, neighbour_fill, zero_fill
from genesis.inpaint.flow_map import flow_map_fill, require_flow
from genesis.inpaint.metrics import improvement_ratios, inpaint_metrics, same_fills
from genesis.inpaint.repaint import REPAINT_JUMP_LENGTH, REPAINT_RESAMPLE, run_repaint
from genesis.inpaint.restarts import MapFill, restart_spread
from genesis.models.flow import ConditionalFlow

METHODS = ("flow-map", "repaint", "neighbours", "zero")
METHOD_KIND = {"flow-map": "flow", "repaint": "diffusion"}  # the checkpoint kind a method needs; baselines need none
_SETTINGS = {
    "flow-map": {"steps", "lr", "restarts", "init", "generator", "progress", "fill"},
    "repaint": {"diffusion", "steps", "jump_length", "resample", "generator", "clip_x0"},
    "neighbours": set(),
    "zero": set(),
}


def run_inpainting(method: str, model: nn.Module | None, x_true: torch.Tensor, mask: Any, labels: torch.Tensor,
                   geometry: Geometry, normalization: Normalization | None = None, **settings: Any
                   ) -> tuple[torch.Tensor, list[float]]:
    """Fill the masked DOMs of normalized events x_true (B, 2, P) with `method`; the method never sees
    the true values at masked DOMs (they are zeroed first).

    model: ConditionalFlow for "flow-map", the diffusion network for "repaint" (then pass
    diffusion=GaussianDiffusion(...)), ignored for the baselines. geometry: the physical detector;
    models get it normalized with their own normalization metadata. normalization: that of x_true
    (defaults to the model's, else the original defaults); it defines the 'no hit' value.
    Returns (x_filled (B, 2, P), trace), trace being the flow-map log-prob curve ([] otherwise).
    """
    filled, trace, _ = _inpaint(method, model, x_true, mask, labels, geometry, normalization, **settings)
    return filled, trace


def _inpaint(method: str, model: nn.Module | None, x_true: torch.Tensor, mask: Any, labels: torch.Tensor,
             geometry: Geometry, normalization: Normalization | None = None, **settings: Any
             ) -> tuple[torch.Tensor, list[float], MapFill | None]:
    """`run_inpainting`, plus the flow-map restarts (MapFill; None for the other methods)."""
    if method not in METHODS:
        raise ConfigError(f"unknown inpainting method {method!r}; choose one of {list(METHODS)}")
    unknown = sorted(set(settings) - _SETTINGS[method])
    if unknown:
        raise ConfigError(f"method '{method}' does not take setting(s) {unknown}; it takes {sorted(_SETTINGS[method])}")
    if normalization is None and hasattr(model, "get_normalization_params"):
        normalization = model.normalization
    x_known = zero_fill(x_true, mask, normalization)
    if method == "zero":
        return x_known, [], None
    if method == "neighbours":
        return neighbour_fill(x_known, mask, geometry, normalization), [], None
    if method == "flow-map":
        require_flow(model, method)
    elif isinstance(model, ConditionalFlow) or not isinstance(model, nn.Module):
        raise CheckpointError(f"method 'repaint' needs a diffusion checkpoint, got {type(model).__name__}; "
                              "use 'flow-map' for flows")
    if not hasattr(model, "get_normalization_params"):
        raise CheckpointError(f"{type(model).__name__} carries no normalization metadata; load it from a checkpoint")
    geometry_n = model.normalization.normalize_geometry(torch.as_tensor(geometry.positions)).to(x_true)
    if method == "flow-map":
        out = flow_map_fill(model, x_known, mask, labels, geometry_n, **settings)
        return out.filled, out.trace, out
    return run_repaint(model, x_known, mask, labels, geometry_n, **settings), [], None


@dataclass
class InpaintResult:
    """Physical events (B, 2, P): masked (masked DOMs zeroed), filled and true; labels (B, 6); mask (P,)."""

    masked: np.ndarray
    filled: np.ndarray
    true: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    method: str
    metrics: dict[str, dict[str, float]]
    ratios: dict[str, float]
    trace: list[float]
    seconds: float
    uncertainty: np.ndarray | None = None  # (B, 3, P) flow-map restarts: see restart_spread; None otherwise
    fills: dict[str, np.ndarray] | None = None  # flow-map: physical fill (B, 2, P) of every way to combine restarts


def _method_settings(method: str, loaded, steps: int, restarts: int, seed: int, device,
                     progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    generator = torch.Generator(device=device).manual_seed(seed)
    if method == "flow-map":
        return {"steps": steps, "restarts": restarts, "generator": generator, "progress": progress}
    if method == "repaint":
        from genesis.diffusion import GaussianDiffusion
        from genesis.sampling import clip_range

        diffusion_cfg = loaded.config.diffusion
        return {"diffusion": GaussianDiffusion(diffusion_cfg), "steps": min(steps, diffusion_cfg.timesteps),
                "jump_length": REPAINT_JUMP_LENGTH, "resample": REPAINT_RESAMPLE, "generator": generator,
                "clip_x0": clip_range(loaded.state.get("data"), device)}
    return {}



def _model_fill(loaded, signal: np.ndarray, labels: np.ndarray, mask: np.ndarray, method: str, geometry: Geometry,
                settings: dict[str, Any]) -> tuple[np.ndarray, list[float], MapFill | None, Any]:
    """(physical fill (B, 2, P), trace, flow-MAP restarts or None, fill maker) of a model method; the fill
    maker turns any normalized fill of this checkpoint into a physical one (observed DOMs as recorded)."""
    from genesis.sampling import clip_range, postprocess

    norm, model = loaded.normalization, loaded.model
    device = next(model.parameters()).device
    x_true = norm.normalize_signal(torch.from_numpy(signal).to(device), torch.from_numpy(labels).to(device),
                                   geometry.positions)
    lab = norm.normalize_labels(torch.from_numpy(labels).to(device))
    filled, trace, map_fill = _inpaint(method, model, x_true, torch.as_tensor(mask, device=device), lab, geometry,
                                       normalization=norm, **settings)

    def physical(filled_n: torch.Tensor) -> np.ndarray:
        # like sampling: stay in the training range so that the inverse transforms stay finite
        lo, hi = clip_range(loaded.state.get("data"), filled_n.device)
        filled_n = torch.maximum(torch.minimum(filled_n.float(), hi), lo)
        out = postprocess(norm.denormalize_signal(filled_n.cpu(), torch.from_numpy(labels), geometry.positions).numpy())
        out[:, :, ~mask] = signal[:, :, ~mask]  # observed DOMs stay exactly as recorded
        return out

    return physical(filled), trace, map_fill, physical


def inpaint_events(loaded, signal: np.ndarray, labels: np.ndarray, mask: np.ndarray, method: str, geometry: Geometry,
                   *, steps: int = 200, restarts: int = 3, seed: int = 0, compare_baselines: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> InpaintResult:
    """Fill the masked DOMs of physical events (B, 2, P) with `method` (a checkpoint is needed for
    flow-map/repaint), and the zero/neighbour baselines when asked (in the scoring space, the same whatever
    the checkpoint), and score every fill the one way (`metrics.inpaint_metrics`, physical, on the masked
    DOMs); a method whose fill is identical to an earlier one's carries 'same_fill_as' in its metrics."""
    if method not in METHODS:
        raise ConfigError(f"unknown inpainting method {method!r}; choose one of {list(METHODS)}")
    if method in METHOD_KIND and loaded is None:
        raise CheckpointError(f"method '{method}' needs a checkpoint (--checkpoint)")
    if loaded is not None and loaded.geometry.n_doms != geometry.n_doms:
        raise DataError(f"the data has P = {geometry.n_doms} DOMs but the checkpoint was trained on "
                        f"P = {loaded.geometry.n_doms}; use data on the checkpoint's detector")
    signal, mask = np.asarray(signal, dtype=np.float32), np.asarray(mask, dtype=bool)
    methods = [method] + ([m for m in ("zero", "neighbours") if m != method] if compare_baselines else [])
    fills, trace, seconds, uncertainty, combined = {}, [], 0.0, None, None
    for m in methods:
        t0 = time.perf_counter()
        if m in BASELINES:
            fills[m] = baseline_fill(m, signal, mask, geometry)
        else:
            device = next(loaded.model.parameters()).device
            settings = _method_settings(m, loaded, steps, restarts, seed, device, progress)
            fills[m], trace, map_fill, physical = _model_fill(loaded, signal, labels, mask, m, geometry, settings)
            if map_fill is not None:  # both ways to combine the restarts, from the same restarts
                uncertainty = restart_spread(map_fill.restarts, mask, loaded.normalization, map_fill.hit_probability)
                combined = {k: physical(v) for k, v in map_fill.fills.items()}
        if m == method:
            seconds = time.perf_counter() - t0
    twins = same_fills(fills)
    metrics = {m: {**inpaint_metrics(fill, signal, mask), **({"same_fill_as": twins[m]} if m in twins else {})}
               for m, fill in fills.items()}
    masked = signal.copy()
    masked[:, :, mask] = 0.0
    ratios = improvement_ratios(metrics, method) if len(metrics) > 1 else {}
    return InpaintResult(masked, fills[method], signal, labels, mask, method, metrics, ratios, trace, seconds,
                         uncertainty, combined)
