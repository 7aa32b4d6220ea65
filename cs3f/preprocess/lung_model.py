"""Lung masks from the lungmask R231 U-Net (Hofmanninger et al. 2020), when its weights are given.

lungmask downloads its weights from GitHub on first use, which a hospital host and CI cannot
reach, so here they always come as a file: ``preprocess.lung_model``, or one ``.pth`` state dict
(e.g. lungmask's ``unet_r231-d5d2fc3d.pth``) in a ``lungmask/`` folder of the app's model path.
Without weights the lung path uses the classical mask of :mod:`cs3f.preprocess.lungs`.

R231 works on axial slices of an LPS image and labels 1 = right lung, 2 = left lung; the image
is handed over as a SimpleITK image with its geometry, so lungmask orients it itself.

The weight file is unpickled with torch's weights-only loader whatever the environment says
(lungmask calls ``torch.load`` without ``weights_only``, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
turns into a full unpickle that can run code from a crafted file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from cs3f.preprocess.registration import to_sitk
from cs3f.volume import Volume

__all__ = ["LungModelError", "find_weights", "load_lung_model", "model_lung_masks"]

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


class LungModelError(ValueError):
    """The lungmask weight file cannot be used (not a plain state dict of the R231 U-Net)."""


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside runs weights-only, even where the environment forces the
    opposite (torch reads both variables at each call)."""
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


@lru_cache(maxsize=1)
def load_lung_model(weights: str):
    """The lungmask inferer for ``weights``, loaded once per process; call it before any work to
    refuse a bad file up front.

    Raises:
        LungModelError: the file does not unpickle weights-only, or is not an R231 state dict.
    """
    from lungmask import LMInferer

    try:
        with _weights_only_loads():
            return LMInferer(
                modelpath=weights, force_cpu=not torch.cuda.is_available(), tqdm_disable=True
            )
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError, ...
        raise LungModelError(
            f"lungmask weights {Path(weights).name} cannot be loaded as a plain R231 state dict "
            f"({type(exc).__name__})"
        ) from exc


def model_lung_masks(hu: np.ndarray, affine: np.ndarray, weights: str) -> dict[str, np.ndarray]:
    """{"left lung", "right lung"}: bool (X, Y, Z) masks of ``hu`` (HU on ``affine``, RAS mm).

    A side the model did not find gets an empty mask.
    """
    image = sitk.Cast(to_sitk(Volume(np.rint(hu), affine)), sitk.sitkInt16)  # HU as read from DICOM
    labels = np.asarray(load_lung_model(str(weights)).apply(image)).T
    return {"left lung": labels == LEFT, "right lung": labels == RIGHT}
