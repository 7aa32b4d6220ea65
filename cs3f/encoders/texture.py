"""Weight-free texture encoders: per-patch distributions of local image responses.

A slice is resized to (grid * patch) pixels (224 at the defaults, as for DINOv2) and turned into
one or more *response maps* (the intensity itself, or filter responses). Each response is
population-coded: every pixel votes into ``bins`` triangular bins over a fixed value range, and
the votes are averaged over each patch x patch tile, giving a soft histogram per patch. A patch's
feature is the square root of its histograms (the Hellinger embedding: Euclidean distance between
features is the Hellinger distance between the distributions), over the patch itself and over
its 3 x 3-patch neighbourhood, for every response, scaled so the whole vector has unit norm.

Why distributions and not raw values: tokenisation L2-normalises pooled features before
projecting them, so a feature that scales with intensity (raw pixels, filter means) loses its
level: a uniformly darker patch becomes the same token as a brighter one. A histogram keeps the
level in *which* bins are filled and has unit norm to begin with; pooled over a 10 mm tile it is
also insensitive to the few millimetres of misalignment an affine registration leaves.

Three encoders share this machinery and differ only in their responses:

- ``histogram``: the intensity alone (32 bins over [0, 1]: 16 over the normal brain's range,
  16 above it for hyper-intensities, see :mod:`cs3f.preprocess.intensity`).
- ``filterbank``: intensity, plus Gaussian-smoothed intensity (sigma 2 and 4 px), scale-normalised
  gradient magnitude (sigma 1 and 2 px) and Laplacian of Gaussian (sigma 2 and 4 px), 8 bins each.
- ``gabor``: intensity, plus the modulus of complex Gabor (Morlet-like) responses at two scales
  and four orientations, 8 bins each: first-order wavelet-scattering coefficients, unaveraged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cs3f.device import resolve_device
from cs3f.encoders.base import resize_slices

__all__ = ["Response", "TextureEncoder", "filterbank_responses", "gabor_responses"]


@dataclass(frozen=True)
class Response:
    """One family of response maps and how it is binned.

    Attributes:
        name: what it is, e.g. ``"log2"`` (Laplacian of Gaussian, sigma 2 px).
        compute: ``blur`` -> (S, R, H, W) responses, where ``blur(sigma)`` is the (S, 1, H, W)
            slices in [0, 1] smoothed by a Gaussian of ``sigma`` px (``blur(0)``: unsmoothed;
            each sigma is computed once per batch of slices).
        low, high: value range spread over the bins; values outside count in the end bins.
        bins: number of triangular bins.
    """

    name: str
    compute: Callable[[Callable[[float], torch.Tensor]], torch.Tensor]
    low: float
    high: float
    bins: int


def soft_histograms(values: torch.Tensor, response: Response, patch: int) -> torch.Tensor:
    """(S, R, H, W) responses -> (S, R * bins, H / patch, W / patch) soft histograms per patch,
    divided by R: after the square root every response family has unit norm, whatever its R.

    Triangular bins centred at ``bins`` evenly spaced points of [low, high]: a value between two
    centres splits its vote linearly between them, so each pixel's votes sum to 1. The votes are
    added into their patch's bins directly (two per pixel), never as a per-pixel bin tensor.
    """
    s, r, h, w = values.shape
    bins, grid_h, grid_w = response.bins, h // patch, w // patch
    position = (values - response.low) / (response.high - response.low) * (bins - 1)
    position = position.clamp(0, bins - 1)
    lower = position.floor().clamp(max=bins - 2)
    upper_weight = position - lower
    rows = torch.arange(h, device=values.device) // patch
    cols = torch.arange(w, device=values.device) // patch
    cell = (rows[:, None] * grid_w + cols[None, :]).expand(s, r, h, w)  # patch of each pixel
    maps = torch.arange(s * r, device=values.device).view(s, r, 1, 1) * (bins * grid_h * grid_w)
    target = maps + lower.long() * (grid_h * grid_w) + cell
    counts = torch.zeros(s * r * bins * grid_h * grid_w, device=values.device)
    counts.index_add_(0, target.flatten(), (1 - upper_weight).flatten())
    counts.index_add_(0, (target + grid_h * grid_w).flatten(), upper_weight.flatten())
    return counts.view(s, r * bins, grid_h, grid_w) / (patch * patch * r)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (S, 1, H, W), edges replicated."""
    kernel = _gaussian_kernel(sigma).to(x.device)
    r = kernel.numel() // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kernel.view(1, 1, -1, 1))


def _derivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Central differences of (S, 1, H, W): d/dx, d/dy, d2/dx2, d2/dy2."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    centre = p[..., 1:-1, 1:-1]
    dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    dy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    dxx = p[..., 1:-1, 2:] - 2 * centre + p[..., 1:-1, :-2]
    dyy = p[..., 2:, 1:-1] - 2 * centre + p[..., :-2, 1:-1]
    return dx, dy, dxx, dyy


def _intensity(blur: Callable[[float], torch.Tensor]) -> torch.Tensor:
    return blur(0)


def _blurred(sigma: float) -> Callable[[Callable[[float], torch.Tensor]], torch.Tensor]:
    return lambda blur: blur(sigma)


def _gradient(sigma: float) -> Callable[[Callable[[float], torch.Tensor]], torch.Tensor]:
    """sigma * |grad(G_sigma * x)|: scale-normalised, so the scales share one value range."""

    def compute(blur: Callable[[float], torch.Tensor]) -> torch.Tensor:
        dx, dy, _, _ = _derivatives(blur(sigma))
        return sigma * torch.sqrt(dx**2 + dy**2)

    return compute


def _laplacian(sigma: float) -> Callable[[Callable[[float], torch.Tensor]], torch.Tensor]:
    """sigma^2 * Laplacian(G_sigma * x), scale-normalised."""

    def compute(blur: Callable[[float], torch.Tensor]) -> torch.Tensor:
        _, _, dxx, dyy = _derivatives(blur(sigma))
        return sigma**2 * (dxx + dyy)

    return compute


INTENSITY = Response("intensity", _intensity, 0.0, 1.0, 32)  # 16 over the normal brain's range


def filterbank_responses() -> tuple[Response, ...]:
    """Intensity plus multi-scale Gaussian-derivative responses (the ``filterbank`` encoder)."""
    return (
        INTENSITY,
        *(Response(f"gauss{s}", _blurred(s), 0.0, 1.0, 8) for s in (2, 4)),
        *(Response(f"grad{s}", _gradient(s), 0.0, 0.25, 8) for s in (1, 2)),
        *(Response(f"log{s}", _laplacian(s), -0.25, 0.25, 8) for s in (2, 4)),
    )


def _gabor_bank(scales: tuple[float, ...], orientations: int, size: int) -> torch.Tensor:
    """(len(scales) * orientations, size, size) complex Gabor kernels in the Fourier domain.

    Each is a Gaussian window (sigma ``s`` px) times a plane wave of 3 cycles per 2 pi sigma
    (a Morlet-like wavelet with its mean removed), centred on the image grid's frequency lattice.
    """
    frequency = torch.fft.fftfreq(size)
    fy, fx = torch.meshgrid(frequency, frequency, indexing="ij")
    kernels = []
    for sigma in scales:
        centre = 3.0 / (2 * math.pi * sigma)  # cycles per pixel
        window = torch.exp(-2 * math.pi**2 * sigma**2 * (fx**2 + fy**2))
        for k in range(orientations):
            theta = math.pi * k / orientations
            u = fx * math.cos(theta) + fy * math.sin(theta)
            v = -fx * math.sin(theta) + fy * math.cos(theta)
            band = torch.exp(-2 * math.pi**2 * sigma**2 * ((u - centre) ** 2 + v**2))
            kernels.append(band - math.exp(-2 * math.pi**2 * sigma**2 * centre**2) * window)
    return torch.stack(kernels)


def _gabor(
    scales: tuple[float, ...], orientations: int
) -> Callable[[Callable[[float], torch.Tensor]], torch.Tensor]:
    bank: dict[tuple[int, str], torch.Tensor] = {}

    def compute(blur: Callable[[float], torch.Tensor]) -> torch.Tensor:
        x = blur(0)
        size = x.shape[-1]
        key = (size, str(x.device))
        if key not in bank:
            bank[key] = _gabor_bank(scales, orientations, size).to(x.device)
        spectrum = torch.fft.fft2(x)  # (S, 1, H, W)
        return torch.fft.ifft2(spectrum * bank[key]).abs()  # (S, R, H, W)

    return compute


def gabor_responses() -> tuple[Response, ...]:
    """Intensity plus Gabor moduli at 2 scales x 4 orientations (the ``gabor`` encoder)."""
    return (INTENSITY, Response("gabor", _gabor((2.0, 4.0), 4), 0.0, 0.2, 8))


RESPONSES: dict[str, Callable[[], tuple[Response, ...]]] = {
    "histogram": lambda: (INTENSITY,),
    "filterbank": filterbank_responses,
    "gabor": gabor_responses,
}


class TextureEncoder:
    """Soft histograms of ``responses`` per patch and per 3 x 3-patch neighbourhood.

    One layer with ``C = 2 * sum(R_i * bins_i)`` features. The slice grid is ``grid`` patches
    of ``patch`` pixels, the same as DINOv2-*/14 at 224 px by default.
    """

    weights_sha256 = None

    def __init__(
        self, kind: str = "histogram", patch: int = 14, grid: int = 16, device: str = "auto"
    ) -> None:
        if kind not in RESPONSES:
            raise ValueError(f"unknown texture encoder {kind!r}; one of {', '.join(RESPONSES)}")
        self.kind, self.patch, self.grid = kind, int(patch), int(grid)
        self.responses = RESPONSES[kind]()
        self.device = torch.device(resolve_device(device))
        self.name = f"{kind}-p{self.patch}"
        self.layer_names = (kind,)

    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """(S, H, W) float32 in [0, 1] -> [(S, P, P, C)]."""
        x = resize_slices(slices.to(self.device, torch.float32), self.grid * self.patch)
        blurred = {0.0: x}

        def blur(sigma: float) -> torch.Tensor:
            if sigma not in blurred:
                blurred[sigma] = _smooth(x, sigma)
            return blurred[sigma]

        per_patch = torch.cat(
            [soft_histograms(r.compute(blur), r, self.patch) for r in self.responses], dim=1
        )  # (S, C/2, P, P); each response family's histograms sum to 1 per patch
        around = F.avg_pool2d(per_patch, 3, stride=1, padding=1, count_include_pad=False)
        features = torch.cat([per_patch, around], dim=1).clamp_min(0).sqrt()
        features = F.normalize(features, dim=1)
        return [features.permute(0, 2, 3, 1).contiguous()]
