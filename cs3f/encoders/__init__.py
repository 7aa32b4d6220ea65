"""Slice encoders: a batch of 2D slices in, one patch-feature grid per layer out.

Every encoder has the same small interface (:class:`SliceEncoder`), so tokenisation, scoring
and fusion never care which one ran. The implementations:

- ``histogram``, ``filterbank``, ``gabor`` (:class:`~cs3f.encoders.texture.TextureEncoder`):
  weight-free; a patch's features are soft histograms of local image responses. ``histogram``
  is the offline default (it detects: bench/RESULTS.md compares the three).
- ``pixels`` (:class:`~cs3f.encoders.pixels.PixelEncoder`): weight-free; a patch's features
  are its raw intensities. The "no foundation model, no texture statistics" ablation.
- ``dinov2`` (:class:`~cs3f.encoders.dinov2.Dinov2Encoder`): a frozen DINOv2 ViT read from a
  local Hugging Face checkpoint folder (the app's model path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = ["ENCODERS", "EncoderError", "SliceEncoder", "load_encoder", "resize_slices"]

TEXTURE_ENCODERS = ("histogram", "filterbank", "gabor")
ENCODERS = ("dinov2", "dinov3", *TEXTURE_ENCODERS, "pixels")


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


def load_encoder(
    name: str,
    model_path: str | Path | None = None,
    *,
    device: str = "auto",
    batch_size: int | None = None,
) -> SliceEncoder:
    """Build the encoder called ``name`` (one of :data:`ENCODERS`).

    ``dinov2`` and ``dinov3`` read their checkpoint from ``model_path`` and raise
    :class:`EncoderError` when it is missing or malformed; they never fall back to another
    encoder.
    """
    if name == "pixels":
        from cs3f.encoders.pixels import PixelEncoder

        return PixelEncoder(device=device)
    if name in TEXTURE_ENCODERS:
        from cs3f.encoders.texture import TextureEncoder

        return TextureEncoder(name, device=device)
    if name in ("dinov2", "dinov3"):
        from cs3f.encoders.dinov2 import Dinov2Encoder

        return Dinov2Encoder.from_folder(
            model_path, device=device, batch_size=batch_size, family=name
        )
    raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
