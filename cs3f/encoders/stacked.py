"""Several encoders side by side: their layers together, for score-level fusion over all of them."""

from __future__ import annotations

import hashlib

import torch

from cs3f.encoders.base import EncoderError, SliceEncoder

__all__ = ["StackedEncoder"]


class StackedEncoder:
    """The layers of ``parts`` in order, as one encoder.

    Tokenisation, scoring and fusion treat every layer alike, so the maps of all the parts'
    layers are averaged (CS3F's score-level fusion). The parts must share the patch grid and
    device, and their layer names must differ.
    """

    def __init__(self, *parts: SliceEncoder) -> None:
        if len(parts) < 2:
            raise EncoderError("a stacked encoder needs at least two encoders")
        if len({p.grid for p in parts}) != 1 or len({str(p.device) for p in parts}) != 1:
            raise EncoderError(
                "stacked encoders must share grid and device, got "
                + ", ".join(f"{p.name}: {p.grid} on {p.device}" for p in parts)
            )
        self.parts = parts
        self.layer_names = tuple(name for p in parts for name in p.layer_names)
        if len(set(self.layer_names)) != len(self.layer_names):
            raise EncoderError(f"stacked encoders repeat a layer name: {self.layer_names}")
        self.name = "+".join(p.name for p in parts)
        self.grid = parts[0].grid
        self.device = parts[0].device
        digests = [p.weights_sha256 for p in parts if p.weights_sha256 is not None]
        self.weights_sha256 = (
            hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None
        )

    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """(S, H, W) float32 in [0, 1] -> every part's layers, in order."""
        return [layer for part in self.parts for layer in part.encode(slices)]
