"""Train the Nyul landmarks that brain preprocessing standardises every T1 to.

    python -m cs3f_tools.landmarks --out cs3f/preprocess/data/t1_nyul_landmarks.npy \
        --native raw_t1.nii.gz ... --atlas registered_t1.nii.gz ...

The volumes are brought into standard space by the product's own brain preprocessing (without
its intensity step), so the landmarks describe exactly the volumes they will be applied to.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cs3f.io.nifti_io import load_nifti
from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.standard_space import PreprocessSettings

__all__ = ["train_landmarks"]


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
