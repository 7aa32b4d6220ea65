"""The encoder half of deepbet's trained brain-MRI network, run on 2D slices.

deepbet (Fisch et al. 2024, MIT licence) ships the weights of ``LinkNet3d`` inside its PyPI wheel
(``site-packages/data/models/model.pt``, a traced TorchScript module): a ResNet-18-like 3D
encoder (a 7^3 stride-2 convolution and a max pool, then four stages of two residual blocks,
16 / 32 / 64 / 128 channels, instance norm without affine parameters, ReLU) and a decoder that
outputs the brain mask. It is the one trained brain-MRI network that reaches this product
through a package registry.

A 3D network sees a 2D slice as the volume that repeats that slice along the third axis: for
such a volume every 3D convolution equals a 2D convolution whose kernel is the 3D kernel
summed over depth, and instance norm, ReLU and max pooling act per slice. So the encoder here
is the 2D reduction of the trained 3D encoder, with the ``SliceEncoder`` interface: exact for an
unbounded volume, which the traced network approaches as its depth grows (the tests show it).

Slices are resized to ``16 * grid`` px (256 at the default grid); the stages then have
``4 * grid``, ``2 * grid``, ``grid`` and ``grid / 2`` pixels per side. Each chosen stage is
average-pooled (or, for ``down3``, upsampled) to the ``grid x grid`` patch grid and returned as
one layer. The default is ``down2`` alone (64 channels, one pixel per patch, a receptive field
of several centimetres): bench/RESULTS.md ("Fifth pass") compares the stages and the encoder
with ``histogram``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F

from cs3f.device import resolve_device
from cs3f.encoders.base import EncoderError, resize_slices

__all__ = ["DeepbetEncoder", "deepbet_weights_path"]

STAGES = ("down0", "down1", "down2", "down3")
"""The encoder's four stages, in order; stage i works at 1 / 2^(i + 2) of the input size."""


def deepbet_weights_path() -> Path:
    """Where deepbet's wheel installs the mask network's weights.

    Raises:
        EncoderError: deepbet is not installed, or its wheel has no ``model.pt``.
    """
    try:
        from deepbet.utils import DATA_PATH
    except ImportError as exc:
        raise EncoderError("the deepbet encoder needs the deepbet package") from exc
    path = Path(DATA_PATH) / "models" / "model.pt"
    if not path.is_file():
        raise EncoderError(f"deepbet's network weights are missing: expected {path}")
    return path


def _depth_summed(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, kd, kh, kw) 3D kernel -> (O, I, kh, kw), its response to depth-constant input."""
    return weight.sum(dim=2)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Instance norm without affine parameters, as in deepbet's network."""
    return F.instance_norm(x, eps=1e-5)


class DeepbetEncoder:
    """deepbet's trained 3D encoder reduced to 2D; one layer per chosen stage.

    Attributes beyond :class:`~cs3f.encoders.base.SliceEncoder`'s: ``stages``, the stages
    returned (names from :data:`STAGES`).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        stages: tuple[str, ...] = ("down2",),
        grid: int = 16,
        device: str = "auto",
    ) -> None:
        unknown = set(stages) - set(STAGES)
        if not stages or unknown:
            raise EncoderError(f"deepbet stages must be among {STAGES}, got {stages!r}")
        if grid % 2:
            raise EncoderError(f"the deepbet encoder needs an even grid, got {grid}")
        path = Path(weights) if weights is not None else deepbet_weights_path()
        self.device = torch.device(resolve_device(device))
        stored = path.read_bytes()
        try:
            state = torch.jit.load(io.BytesIO(stored), map_location="cpu").state_dict()
        except (RuntimeError, ValueError) as exc:
            raise EncoderError(f"cannot read deepbet's network from {path}: {exc}") from exc
        self._w = {
            key.removesuffix(".weight"): _depth_summed(value).to(self.device, torch.float32)
            for key, value in state.items()
            if key.split(".")[0] in ("init",) + STAGES and key.endswith(".weight")
        }
        self.weights_sha256 = hashlib.sha256(stored).hexdigest()
        self.grid = int(grid)
        self.stages = tuple(s for s in STAGES if s in stages)
        self.layer_names = tuple(f"deepbet-{s}" for s in self.stages)
        self.name = "deepbet-" + "+".join(self.stages)

    def _block(self, prefix: str, x: torch.Tensor, stride: int) -> torch.Tensor:
        """One residual block: conv-norm-ReLU-conv-norm, plus the (downsampled) input, ReLU."""
        w = self._w
        y = F.relu(_norm(F.conv2d(x, w[f"{prefix}.double_conv.0"], stride=stride, padding=1)))
        y = _norm(F.conv2d(y, w[f"{prefix}.double_conv.3"], padding=1))
        if f"{prefix}.downsample.0" in w:
            x = _norm(F.conv2d(x, w[f"{prefix}.downsample.0"], stride=stride))
        return F.relu(y + x)

    def _to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(S, C, h, w) stage output -> (S, P, P, C): averaged down, or upsampled when smaller."""
        if x.shape[-1] >= self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        else:
            x = F.interpolate(x, size=self.grid, mode="bilinear", align_corners=False)
        return x.permute(0, 2, 3, 1).contiguous()

    @torch.no_grad()
    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """(S, H, W) float32 in [0, 1] -> one (S, P, P, C_stage) tensor per chosen stage."""
        x = resize_slices(slices.to(self.device, torch.float32), 16 * self.grid)
        x = F.relu(_norm(F.conv2d(x, self._w["init.0"], stride=2, padding=3)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        out = []
        for stage in STAGES[: STAGES.index(self.stages[-1]) + 1]:
            x = self._block(f"{stage}.block1", x, 1 if stage == "down0" else 2)
            x = self._block(f"{stage}.block2", x, 1)
            if stage in self.stages:
                out.append(self._to_grid(x))
        return out
