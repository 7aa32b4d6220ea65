"""Lung masks from the lungmask R231 U-Net (Hofmanninger et al. 2020), when its weights are given.

lungmask downloads its weights from GitHub on first use, which a hospital host and CI cannot
reach, so here they always come as a file: ``preprocess.lung_model``, or one ``.pth`` state dict
(e.g. lungmask's ``unet_r231-d5d2fc3d.pth``) in a ``lungmask/`` folder of the app's model path.
Without weights the lung path uses the classical mask of :mod:`cs3f.preprocess.lungs`.

R231 works on axial slices of an LPS image and labels 1 = right lung, 2 = left lung; the image
is handed over as a SimpleITK image with its geometry, so lungmask orients it itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from cs3f.preprocess.registration import to_sitk
from cs3f.volume import Volume

__all__ = ["find_weights", "model_lung_masks"]

RIGHT, LEFT = 1, 2


def find_weights(model_folder: Path) -> Path | None:
    """The one ``*.pth`` file in ``model_folder/lungmask/``; None when there is none.

    Raises:
        ValueError: several candidates (which one is meant is not guessable).
    """
    found = sorted((Path(model_folder) / "lungmask").glob("*.pth"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(f"several lungmask weight files in {model_folder}/lungmask: {names}")
    return found[0] if found else None


@lru_cache(maxsize=1)
def _inferer(weights: str):
    from lungmask import LMInferer

    return LMInferer(modelpath=weights, force_cpu=not torch.cuda.is_available(), tqdm_disable=True)


def model_lung_masks(hu: np.ndarray, affine: np.ndarray, weights: str) -> dict[str, np.ndarray]:
    """{"left lung", "right lung"}: bool (X, Y, Z) masks of ``hu`` (HU on ``affine``, RAS mm).

    A side the model did not find gets an empty mask.
    """
    image = sitk.Cast(to_sitk(Volume(np.rint(hu), affine)), sitk.sitkInt16)  # HU as read from DICOM
    labels = np.asarray(_inferer(str(weights)).apply(image)).T
    return {"left lung": labels == LEFT, "right lung": labels == RIGHT}
