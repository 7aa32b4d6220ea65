"""Brain extraction with deepbet (Fisch et al. 2024; MIT; weights ship inside the PyPI wheel)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from cs3f.preprocess.standard_space import PreprocessingFailed

__all__ = ["brain_mask"]


@lru_cache(maxsize=1)
def _extractor():
    from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=not torch.cuda.is_available())


def brain_mask(array: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(X, Y, Z) bool brain mask of a T1-like head volume on a 1 mm RAS grid.

    deepbet's two networks (a bounding-box net at 128^3, then the mask net at 256^3 inside the
    box), then its own clean-up: the largest component with its voids filled.

    Raises:
        PreprocessingFailed: the image is blank, or deepbet finds no brain in it.
    """
    if not np.ptp(array) > 0:
        raise PreprocessingFailed("the image is blank (one value everywhere): no brain to extract")
    extractor = _extractor()
    try:
        probability = extractor.run_model(np.array(array, dtype=np.float32))
    except ValueError as exc:  # deepbet's clean-up takes the argmax of an empty component list
        raise PreprocessingFailed("brain extraction (deepbet) found no brain in the image") from exc
    return np.asarray(extractor.postprocess(probability > threshold), dtype=bool)
