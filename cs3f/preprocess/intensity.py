"""Nyul histogram standardisation (Nyul, Udupa & Zhang 2000) with TorchIO, against fixed landmarks.

The landmarks shipped in ``cs3f/preprocess/data/t1_nyul_landmarks.npy`` were made with
``python -m cs3f_tools.landmarks`` (see ``cs3f/preprocess/data/README.md``); after
standardisation the 1st..99th brain percentiles span 0..100, and :func:`nyul_unit` puts that
span at [0, 1 / HEADROOM] of the unit range (TorchIO extends the mapping linearly beyond the
landmarks). The headroom above the 99th percentile keeps hyper-intense tissue apart from the
brightest normal white matter: clipped at the 99th percentile as before, 79-83 % of the voxels of
a hyper-intense synthetic lesion read exactly 1.0, like the top 1 % of every normal brain
(bench/RESULTS.md, issue 13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["LANDMARKS", "load_landmarks", "nyul_unit"]

LANDMARKS = Path(__file__).parent / "data" / "t1_nyul_landmarks.npy"
STANDARD_TOP = 100.0  # TorchIO's standard range is (0, 100)
HEADROOM = 2.0  # the 99th brain percentile lands at 1 / HEADROOM; up to twice that stays distinct


def load_landmarks(path: str | Path = "") -> np.ndarray:
    """The landmark array at ``path`` (empty = the shipped T1 landmarks)."""
    return np.load(Path(path) if path else LANDMARKS)


def nyul_unit(volume: np.ndarray, mask: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1]: Nyul-standardised inside ``mask``, 0 outside; the brain's
    1st..99th percentiles at 0..0.5, brighter values up to 1 (clipped above).

    Percentiles are taken over the mask's voxels only, so background never shifts them.
    """
    import torchio as tio

    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.from_numpy(np.asarray(volume, np.float32)[None])),
        mask=tio.LabelMap(tensor=torch.from_numpy(np.asarray(mask, np.uint8)[None])),
    )
    transform = tio.HistogramStandardization({"image": landmarks}, masking_method="mask")
    standard = transform(subject)["image"].data[0].numpy()
    return (np.clip(standard / (STANDARD_TOP * HEADROOM), 0.0, 1.0) * mask).astype(np.float32)
