"""Batch-calibrated voxel threshold: a percentile of all foreground voxel scores of the batch.

The batch's voxels do not fit in memory at scale (180 x 224^3), so values stream into a fixed
histogram over a known range and the percentile is read from its cumulative counts, linearly
interpolated inside the bin. Where values are dense the error is within one bin width,
(high - low) / bins; in a sparse tail it is within the gap between neighbouring values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["StreamingPercentile"]


class StreamingPercentile:
    """Percentiles of values in [low, high] seen in chunks; memory is ``bins`` counters."""

    def __init__(self, low: float, high: float, bins: int = 1 << 16) -> None:
        if not high > low:
            high = low + 1e-6
        self.low, self.high, self.bins = float(low), float(high), bins
        self.counts = np.zeros(bins, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (any shape); values outside [low, high] are clipped to it."""
        scaled = (np.asarray(values, dtype=np.float64).ravel() - self.low) / (self.high - self.low)
        index = np.clip((scaled * self.bins).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(index, minlength=self.bins)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of everything added."""
        if self.total == 0:
            raise ValueError("no values added")
        target = q / 100.0 * self.total
        cumulative = np.cumsum(self.counts)
        b = int(np.searchsorted(cumulative, target, side="left"))
        b = min(b, self.bins - 1)
        before = cumulative[b - 1] if b else 0
        inside = (target - before) / max(self.counts[b], 1)
        width = (self.high - self.low) / self.bins
        return float(self.low + (b + min(max(inside, 0.0), 1.0)) * width)
