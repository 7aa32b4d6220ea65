"""The weight-free encoder: a patch's features are its raw intensities."""

from __future__ import annotations

import torch

from cs3f.device import resolve_device
from cs3f.encoders.base import resize_slices


class PixelEncoder:
    """Slices resized to (grid * patch) pixels, cut into patch x patch tiles, each tile flattened.

    One layer, ``C = patch * patch`` features (196 at the defaults). Same grid as DINOv2-*/14
    at 224 px, so every downstream shape is the same as with the foundation model.
    """

    weights_sha256 = None
    layer_names = ("pixels",)

    def __init__(self, patch: int = 14, grid: int = 16, device: str = "auto") -> None:
        self.patch, self.grid = int(patch), int(grid)
        self.device = torch.device(resolve_device(device))
        self.name = f"pixels-p{self.patch}"

    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """(S, H, W) float32 in [0, 1] -> [(S, P, P, patch * patch)]."""
        p, g = self.patch, self.grid
        x = resize_slices(slices.to(self.device, torch.float32), g * p)[:, 0]  # (S, gp, gp)
        tiles = x.reshape(-1, g, p, g, p).permute(0, 1, 3, 2, 4)  # (S, g, g, p, p)
        return [tiles.reshape(-1, g, g, p * p).contiguous()]
