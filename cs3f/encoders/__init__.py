"""Slice encoders: a batch of 2D slices in, one patch-feature grid per layer out.

Every encoder has the same small interface (:class:`SliceEncoder`), so tokenisation, scoring
and fusion never care which one ran. The implementations:

- ``histogram``, ``filterbank``, ``gabor`` (:class:`~cs3f.encoders.texture.TextureEncoder`):
  weight-free; a patch's features are soft histograms of local image responses. ``histogram``
  is the offline default (it detects: bench/RESULTS.md compares the three).
- ``pixels`` (:class:`~cs3f.encoders.pixels.PixelEncoder`): weight-free; a patch's features
  are its raw intensities. The "no foundation model, no texture statistics" ablation.
- ``deepbet`` (:class:`~cs3f.encoders.deepbet_net.DeepbetEncoder`): the trained encoder of
  deepbet's brain-extraction network (weights inside deepbet's wheel), reduced to 2D slices.
- ``histogram+deepbet`` (:class:`~cs3f.encoders.stacked.StackedEncoder`): both, their maps
  averaged.
- ``dinov2`` (:class:`~cs3f.encoders.dinov2.Dinov2Encoder`): a frozen DINOv2 ViT read from a
  local Hugging Face checkpoint folder (the app's model path).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cs3f.encoders.base import EncoderError, SliceEncoder, resize_slices
from cs3f.encoders.deepbet_net import DeepbetEncoder
from cs3f.encoders.dinov2 import Dinov2Encoder
from cs3f.encoders.pixels import PixelEncoder
from cs3f.encoders.stacked import StackedEncoder
from cs3f.encoders.texture import RESPONSES, TextureEncoder

__all__ = ["ENCODERS", "REGISTRY", "EncoderError", "SliceEncoder", "load_encoder", "resize_slices"]

Factory = Callable[[Path | None, str, int | None], SliceEncoder]
"""Called as ``factory(model_path, device, batch_size)``."""

REGISTRY: dict[str, Factory] = {
    "dinov2": lambda path, device, batch: Dinov2Encoder.from_folder(
        path, device=device, batch_size=batch, family="dinov2"
    ),
    "dinov3": lambda path, device, batch: Dinov2Encoder.from_folder(
        path, device=device, batch_size=batch, family="dinov3"
    ),
    **{
        kind: (lambda path, device, batch, kind=kind: TextureEncoder(kind, device=device))
        for kind in RESPONSES
    },
    "pixels": lambda path, device, batch: PixelEncoder(device=device),
    "deepbet": lambda path, device, batch: DeepbetEncoder(device=device),
    "histogram+deepbet": lambda path, device, batch: StackedEncoder(
        TextureEncoder("histogram", device=device), DeepbetEncoder(device=device)
    ),
}
"""Encoder name -> factory; a new encoder is one entry here (and its module)."""

ENCODERS = tuple(REGISTRY)


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
    if name not in REGISTRY:
        raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return REGISTRY[name](Path(model_path) if model_path is not None else None, device, batch_size)
