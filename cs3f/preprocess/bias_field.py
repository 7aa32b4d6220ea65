"""MR bias-field (coil sensitivity) correction: N4 (Tustison et al. 2010) with SimpleITK."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from cs3f.preprocess.registration import to_sitk
from cs3f.volume import Volume

__all__ = ["log_bias_field"]


def log_bias_field(volume: Volume, mask: np.ndarray, shrink: int = 4) -> np.ndarray:
    """(X, Y, Z) float32 log bias field on ``volume``'s grid, fitted inside ``mask``.

    N4 runs on a copy shrunk ``shrink`` times per axis (the field is smooth, so this loses
    nothing and takes seconds); the field is then evaluated on the full grid. Corrected values
    are ``volume / exp(field)``; being smooth, the field can be resampled onto any other grid.
    """
    image = to_sitk(Volume(np.maximum(volume.array, 0), volume.affine))
    inside = sitk.Cast(to_sitk(Volume(mask.astype(np.float32), volume.affine)), sitk.sitkUInt8)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([20, 20, 20])
    corrector.Execute(sitk.Shrink(image, [shrink] * 3), sitk.Shrink(inside, [shrink] * 3))
    field = corrector.GetLogBiasFieldAsImage(image)
    return sitk.GetArrayFromImage(field).transpose(2, 1, 0).astype(np.float32)
