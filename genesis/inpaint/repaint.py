"""RePaint inpainting with a diffusion model (Lugmayr et al. 2022; `genesis.diffusion.repaint_sample`): it
re-noises and redoes every `jump_length` steps `resample` times in all, steps * resample network evaluations
in total (`repaint_evaluations`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genesis.errors import CheckpointError
from genesis.inpaint.masks import mask_tensor

REPAINT_STEPS, REPAINT_JUMP_LENGTH, REPAINT_RESAMPLE = 50, 5, 3


def run_repaint(model: nn.Module, x_known: torch.Tensor, mask: Any, labels: torch.Tensor,
                 geometry_n: torch.Tensor, diffusion: Any = None, **settings: Any) -> torch.Tensor:
    """RePaint with a diffusion model; known_mask passed as (P,) bool, True = observed DOM."""
    if diffusion is None:
        raise CheckpointError("method 'repaint' needs diffusion=GaussianDiffusion(...) built from the "
                              "checkpoint's diffusion config")
    from genesis.diffusion import repaint_sample  # lazy: diffusion.py is only needed for this method

    known = ~mask_tensor(mask, x_known)
    return repaint_sample(diffusion, model, x_known, known, labels, geometry_n, **settings)


def repaint_evaluations(steps: int, jump_length: int = REPAINT_JUMP_LENGTH, resample: int = REPAINT_RESAMPLE) -> int:
    """Network evaluations of one RePaint run (its reverse steps, re-noising jumps included)."""
    from genesis.diffusion import repaint_schedule

    ks = repaint_schedule(steps, jump_length, resample)
    return sum(1 for k, k_next in zip(ks[:-1], ks[1:]) if k_next < k)
