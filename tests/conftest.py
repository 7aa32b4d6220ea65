"""Shared fixtures: small synthetic volumes, a tiny DINOv2 checkpoint saved in HF format, and
single-frame series converted to one multi-frame instance, and a highdicom volume sampled on
the grid of one of ours."""

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedMRImage

from cs3f.io.dicom_volume import LPS_TO_RAS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Absolute tolerance for token distances computed in two different orders (a study first or
# last in a batch: rows or columns of a distance block). FAISS computes d^2 = |x|^2 + |y|^2 -
# 2 x.y in float32, where a rounding of about 1e-7 of |x|^2 + |y|^2 = 2 stays in d^2 whatever d
# is: 1e-7 / (2 d) in a distance d, 5e-6 at d = 0.01, and sqrt(2.4e-7) = 4.9e-4 for two equal
# tokens (both measured on an AMD EPYC: 6.3e-6, and 0 against 4.9e-4). A wrong K or a wrong
# reference set moves scores far more. The order-independent brute-force references keep their
# own tolerances.
DISTANCE_ATOL = 1e-3


def smooth_volume(shape, seed, noise=0.02):
    """A smooth textured volume in [0, 1] with a ball mask; the same anatomy for every seed."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    base = 0.5 + 0.3 * np.sin(6 * zz) * np.cos(5 * yy) + 0.2 * xx
    volume = np.clip(base + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    mask = (zz**2 + yy**2 + xx**2) < 0.8
    return volume, mask


def as_multiframe(datasets, path, order=None, transfer_syntax_uid=None):
    """The single-frame MR or CT ``datasets`` as one Legacy Converted Enhanced instance
    (highdicom: per-frame PlanePositionSequence, shared PlaneOrientationSequence,
    PixelMeasuresSequence and PixelValueTransformationSequence), its frames in ``order``
    (indices into ``datasets``; default as given), written to ``path`` and read back."""
    convert = {"CT": LegacyConvertedEnhancedCTImage, "MR": LegacyConvertedEnhancedMRImage}
    order = range(len(datasets)) if order is None else order
    enhanced = convert[datasets[0].Modality](
        [datasets[i] for i in order],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        include_dimension_index=False,  # keeps the frames in the order given
        transfer_syntax_uid=transfer_syntax_uid,
    )
    enhanced.save_as(path)
    return pydicom.dcmread(path)


def on_grid(volume: hd.Volume, affine: np.ndarray, shape) -> np.ndarray:
    """highdicom's ``volume`` sampled at every voxel of the grid (``affine``: RAS, ``shape``:
    columns, rows, slices), by world position; fails unless each voxel centre is one of its."""
    index = np.indices(shape).reshape(3, -1)
    world = LPS_TO_RAS @ affine @ np.vstack([index, np.ones(index.shape[1])])
    theirs = np.linalg.inv(volume.affine) @ world
    rounded = np.rint(theirs[:3]).astype(int)
    np.testing.assert_allclose(theirs[:3], rounded, atol=1e-3)
    assert (rounded >= 0).all() and (rounded.T < volume.shape).all()
    return volume.array[tuple(rounded)].reshape(shape)


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory):
    """A 4-block DINOv2 with random weights, written with save_pretrained like a real one."""
    from cs3f.encoders.dinov2 import write_random_checkpoint

    folder = tmp_path_factory.mktemp("models") / "dinov2-tiny"
    return write_random_checkpoint(
        folder, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64
    )
