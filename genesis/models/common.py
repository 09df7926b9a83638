"""Normalization metadata carried by every model (metadata, never used by forward())."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from genesis.data.normalization import Normalization


BUFFERS = ("affine_offsets", "affine_scales", "label_offsets", "label_scales")
# every other normalization field is extra state; checkpoints from before a field existed meant its default
_OLD_STATE = {f.name: getattr(Normalization(), f.name) for f in fields(Normalization) if f.name not in BUFFERS}


class NormalizationMetadata(nn.Module):
    """Mixin module: buffers affine_offsets (5), affine_scales (5), label_offsets (6), label_scales (6)
    and the transforms as extra state, so `state_dict()` alone can denormalize samples."""

    def init_normalization(self, norm: Normalization) -> None:
        for k in BUFFERS:
            self.register_buffer(k, torch.tensor(getattr(norm, k), dtype=torch.float64))
        self._transforms = {k: getattr(norm, k) for k in _OLD_STATE}

    def get_extra_state(self) -> dict[str, Any]:
        return dict(self._transforms)

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._transforms = {**_OLD_STATE, **state}

    def get_normalization_params(self) -> dict[str, Any]:
        """Dict with affine_offsets, affine_scales, label_offsets, label_scales (lists) and transforms."""
        return {
            "affine_offsets": self.affine_offsets.tolist(),
            "affine_scales": self.affine_scales.tolist(),
            "label_offsets": self.label_offsets.tolist(),
            "label_scales": self.label_scales.tolist(),
            **self._transforms,
        }

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.get_normalization_params())

    def _apply(self, fn, recurse: bool = True):
        # Keep the metadata buffers in float64 on .to(dtype)/.half(): only move their device.
        saved = {k: getattr(self, k) for k in BUFFERS}
        out = super()._apply(fn, recurse)
        for k, v in saved.items():
            moved = fn(v)
            self._buffers[k] = v.to(moved.device)
        return out


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, P) -> (B, N, C * patch_size), N = P / patch_size: tokens of consecutive DOMs (a whole
    string when patch_size = 60 and the DOMs are ordered by string, then DOM)."""
    B, C, P = x.shape
    return x.reshape(B, C, P // patch_size, patch_size).transpose(1, 2).reshape(B, P // patch_size, C * patch_size)


def unpatchify(tokens: Tensor, channels: int) -> Tensor:
    """(B, N, C * patch_size) -> (B, C, N * patch_size); inverse of `patchify`."""
    B, N, D = tokens.shape
    return tokens.reshape(B, N, channels, D // channels).transpose(1, 2).reshape(B, channels, N * (D // channels))
