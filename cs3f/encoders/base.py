"""What every slice encoder is: the interface tokenisation relies on, and shared slice resizing."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = ["EncoderError", "SliceEncoder", "resize_slices"]


class EncoderError(RuntimeError):
    """An encoder could not be built; the message says what was expected and where."""


@runtime_checkable
class SliceEncoder(Protocol):
    """What tokenisation needs from an encoder.

    Attributes:
        name: identifies the encoder in every output, e.g. ``"pixels-p14"`` or
            ``"dinov2-vitl14"``.
        weights_sha256: SHA-256 of the weight files, or ``None`` for a weight-free encoder.
        grid: P, patches per slice side; a slice becomes a P x P grid.
        layer_names: one name per returned feature layer.
        device: where ``encode`` returns its tensors.
    """

    name: str
    weights_sha256: str | None
    grid: int
    layer_names: tuple[str, ...]
    device: torch.device

    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """Encode (S, H, W) float32 slices with intensities in [0, 1].

        Returns one float32 tensor of shape (S, P, P, C_l) per layer, on ``self.device``.
        """
        ...


def resize_slices(slices: torch.Tensor, size: int) -> torch.Tensor:
    """(S, H, W) -> (S, 1, size, size), bilinear with antialiasing (no aliasing on shrink)."""
    x = slices.unsqueeze(1)
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
