"""A benchmark cohort's registered studies, warped onto MNI152 by a deformable registration.

    .venv/bin/python bench/bench_deformable.py --cohort bench/out/cohort40 --out bench/out/cohort40d
    .venv/bin/python bench/bench_cohort.py --cohort bench/out/cohort40d --coarse-only \
        --only "three axes, d=128, B=all"

A measurement of issue 13's "optional deformable registration as a preprocessing choice", not
a product feature: the product registers affinely, and bringing maps back to a study's own grid
through a deformation is not built. ``bench_cohort`` fills ``<cohort>/registered/`` with each
study after the product's affine registration, brain extraction and bias correction (before
intensity standardisation). This script reads that cache and writes the same files to
``<out>/registered/``, each volume and brain mask resampled through a diffeomorphic demons
deformation (SimpleITK) onto the MNI152 template on the standard grid; ``<out>/studies`` and
``<out>/truth`` link to the cohort's. ``bench_cohort`` then scores ``<out>`` unchanged.

Its voxel figures are approximate: maps go back to the source grid through the affine alone,
so they sit off by the deformation (3-5 voxels of 0.7 mm on average on the benchmark cohort).
Patient scores and base-brain AUROCs do not depend on that.

The deformation is estimated at half resolution (every second voxel) after matching the
study's intensity histogram to the template's, in two levels (4 and 2 grid voxels), with the
update field smoothed by a Gaussian of ``--sigma`` standard-grid voxels (default 3, 2.1 mm).
One line per study on stderr: seconds, mean and 99th-percentile displacement (standard-grid
voxels), intensity correlation with the template inside its mask before and after, and the
lesion's volume on the standard grid before and after (voxels), which shows what the warp does
to lesions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_cohort import read_cached

from cs3f.io.nifti_io import load_nifti
from cs3f.preprocess.standard_space import PreprocessSettings, cube_grid
from cs3f.preprocess.template import template_brain, template_centre, template_on
from cs3f.volume import resample


def _image(array: np.ndarray, spacing: float = 1.0) -> sitk.Image:
    """A SimpleITK image of ``array``; physical units are standard-grid voxels (origin 0)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing((spacing,) * 3)
    return image


def template_on_grid(shape: tuple[int, int, int]) -> np.ndarray:
    """MNI152's skull-stripped T1 on the standard grid (the grid the affine registration fills)."""
    settings = PreprocessSettings()
    grid = cube_grid(template_centre(), settings.crop_mm, settings.size)
    template = template_brain(1)
    fixed = resample(template.array, template.affine, shape, grid, order=1)
    return fixed * template_on(shape, grid)


def demons_field(fixed: np.ndarray, moving: np.ndarray, sigma: float) -> sitk.Image:
    """Displacement field on the full grid, in grid voxels, taking ``fixed`` points to
    ``moving`` ones: diffeomorphic demons on every second voxel, two levels, the update field
    smoothed by a Gaussian of ``sigma`` grid voxels."""
    fixed_half = _image(fixed[::2, ::2, ::2], 2.0)
    moving_half = _image(moving[::2, ::2, ::2], 2.0)
    moving_half = sitk.HistogramMatching(moving_half, fixed_half, 256, 15, True)
    field = None
    for shrink, iterations in ((2, 60), (1, 40)):
        f = sitk.Shrink(fixed_half, [shrink] * 3) if shrink > 1 else fixed_half
        m = sitk.Shrink(moving_half, [shrink] * 3) if shrink > 1 else moving_half
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetNumberOfIterations(iterations)
        demons.SetStandardDeviations(sigma)
        if field is None:
            field = demons.Execute(f, m)
        else:
            field = demons.Execute(f, m, _resampled_field(field, f))
    return _resampled_field(field, _image(np.zeros(fixed.shape, np.float32)))


def _resampled_field(field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A displacement field interpolated onto ``reference``'s grid (same physical units)."""
    identity = sitk.Transform()
    return sitk.Resample(field, reference, identity, sitk.sitkLinear, 0.0, field.GetPixelID())


def warp(array: np.ndarray, transform: sitk.Transform) -> np.ndarray:
    """``array`` resampled through ``transform`` (trilinear, 0 outside)."""
    image = _image(array)
    return sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", type=Path, required=True, help="bench_cohort's cohort folder")
    parser.add_argument("--out", type=Path, required=True, help="new cohort folder to write")
    parser.add_argument(
        "--sigma", type=float, default=3.0, help="field smoothing, standard-grid voxels (0.7 mm)"
    )
    args = parser.parse_args()
    source, target = args.cohort / "registered", args.out / "registered"
    if not source.is_dir():
        sys.exit(f"{source} is missing: run bench_cohort.py on {args.cohort} first")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("studies", "truth"):
        link = args.out / name
        if not (link.exists() or link.is_symlink()):
            link.symlink_to((args.cohort / name).resolve())
    for failed in sorted(source.glob("*.failed")):
        (target / failed.name).write_bytes(failed.read_bytes())
    fixed = None
    for path in sorted(source.glob("*.npz")):
        start = time.perf_counter()
        data, mask = read_cached(path)
        shape = mask.shape
        volume = np.where(mask, data["volume"], 0).astype(np.float32)
        if fixed is None:
            fixed = template_on_grid(shape)
        field = demons_field(fixed, volume, args.sigma)
        displacement = np.linalg.norm(sitk.GetArrayFromImage(field), axis=-1)
        transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
        moved_mask = warp(mask, transform) > 0.5
        moved = np.where(moved_mask, warp(volume, transform), 0)
        inside = fixed > 0
        correlation = [np.corrcoef(v[inside], fixed[inside])[0, 1] for v in (volume, moved)]
        moved_displacement = displacement[moved_mask]
        line = (
            f"{path.stem}: {time.perf_counter() - start:.0f} s, displacement mean "
            f"{moved_displacement.mean():.1f} p99 {np.percentile(moved_displacement, 99):.1f}"
            f" voxels, correlation {correlation[0]:.3f} -> {correlation[1]:.3f}"
        )
        truth = args.cohort / "truth" / "masks" / f"{data['uid']}.nii.gz"
        if truth.is_file():
            lesion = load_nifti(truth)
            if lesion.array.any():
                lesion_mask = (lesion.array > 0).astype(np.float32)
                on_grid = resample(
                    lesion_mask, data["source_affine"], shape, data["target_affine"], order=1
                )
                on_grid = on_grid > 0.5
                moved_lesion = warp(on_grid, transform) > 0.5
                line += f", lesion {on_grid.sum()} -> {moved_lesion.sum()} voxels"
        data["volume"] = moved.astype(data["volume"].dtype)
        data["mask"] = np.packbits(moved_mask)
        np.savez(target / path.name, **data)
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
