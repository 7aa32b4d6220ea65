"""Nyul histogram standardisation (Nyul, Udupa & Zhang 2000) with TorchIO, against fixed landmarks.

The landmarks shipped in ``cs3f/data/t1_nyul_landmarks.npy`` were made with
``python -m cs3f.intensity`` from reference brains that install from registries (see
``cs3f/data/README.md``); after standardisation the 1st..99th brain percentiles span 0..100,
which :func:`nyul_unit` scales to [0, 1].

    python -m cs3f.intensity --out cs3f/data/t1_nyul_landmarks.npy \
        --native raw_t1.nii.gz ... --atlas registered_t1.nii.gz ...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["LANDMARKS", "load_landmarks", "nyul_unit", "train_landmarks"]

LANDMARKS = Path(__file__).parent / "data" / "t1_nyul_landmarks.npy"
STANDARD_TOP = 100.0  # TorchIO's standard range is (0, 100)


def load_landmarks(path: str | Path = "") -> np.ndarray:
    """The landmark array at ``path`` (empty = the shipped T1 landmarks)."""
    return np.load(Path(path) if path else LANDMARKS)


def nyul_unit(volume: np.ndarray, mask: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1]: Nyul-standardised inside ``mask``, 0 outside.

    Percentiles are taken over the mask's voxels only, so background never shifts them.
    """
    import torchio as tio

    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.from_numpy(np.asarray(volume, np.float32)[None])),
        mask=tio.LabelMap(tensor=torch.from_numpy(np.asarray(mask, np.uint8)[None])),
    )
    transform = tio.HistogramStandardization({"image": landmarks}, masking_method="mask")
    standard = transform(subject)["image"].data[0].numpy()
    return (np.clip(standard / STANDARD_TOP, 0.0, 1.0) * mask).astype(np.float32)


def train_landmarks(volumes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Average Nyul landmarks of (volume, mask) pairs, all already in standard space."""
    import nibabel as nib
    import torchio as tio

    with tempfile.TemporaryDirectory() as folder:
        images, masks = [], []
        for n, (volume, mask) in enumerate(volumes):
            images.append(Path(folder) / f"image{n}.nii.gz")
            masks.append(Path(folder) / f"mask{n}.nii.gz")
            nib.save(nib.Nifti1Image(np.asarray(volume, np.float32), np.eye(4)), images[-1])
            nib.save(nib.Nifti1Image(np.asarray(mask, np.uint8), np.eye(4)), masks[-1])
        return tio.HistogramStandardization.train(images, mask_path=masks, progress=False)


def main(argv: list[str] | None = None) -> None:
    from cs3f.brain import preprocess_brain
    from cs3f.nifti_io import load_nifti
    from cs3f.standard_space import PreprocessSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="landmarks .npy to write")
    parser.add_argument("--native", type=Path, nargs="*", default=[], help="raw T1 NIfTI volumes")
    parser.add_argument(
        "--atlas", type=Path, nargs="*", default=[], help="registered, skull-stripped T1 volumes"
    )
    args = parser.parse_args(argv)
    pairs = []
    for mode, paths in (("native", args.native), ("atlas", args.atlas)):
        for path in sorted(paths):
            region = preprocess_brain(
                load_nifti(path), PreprocessSettings(input=mode), standardise_intensity=False
            )
            pairs.append((region.volume, region.mask))
    if not pairs:
        parser.error("give at least one volume with --native or --atlas")
    landmarks = train_landmarks(pairs)
    np.save(args.out, landmarks)
    print(" ".join(f"{v:.3f}" for v in landmarks))


if __name__ == "__main__":
    main()
