"""Affine registration of a skull-stripped brain to the template, with SimpleITK.

SimpleITK works in LPS physical coordinates; cs3f in RAS. The conversions live here and nowhere
else. The result is one 4x4 matrix from template RAS mm to subject RAS mm (the direction a
resampler needs: for each template-space point, where to read in the subject).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import SimpleITK as sitk

from cs3f.volume import Volume, spacing

__all__ = ["Registration", "RegistrationFailed", "register_affine", "to_sitk"]

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEED = 1  # ITK seeds the jitter of "regular" samples from the clock when the seed is 0
# Each stage starts from the last one's result: (transform, shrink factors, smoothing sigmas in mm).
STAGES = (
    (sitk.Euler3DTransform, [4, 2], [2.0, 1.0]),
    (sitk.Similarity3DTransform, [4, 2], [2.0, 1.0]),
    (partial(sitk.AffineTransform, 3), [2, 1], [1.0, 0.0]),
)


class RegistrationFailed(RuntimeError):
    """The optimiser lost the overlap between the images (ITK's message attached)."""


@dataclass(frozen=True)
class Registration:
    """Attributes:
    matrix: (4, 4) template RAS mm -> subject RAS mm.
    metric: final Mattes mutual information (negative; lower is better).
    iterations: optimiser iterations at the last level.
    """

    matrix: np.ndarray
    metric: float
    iterations: int

    @property
    def scale(self) -> float:
        """Mean linear scale of the mapping (cube root of its determinant)."""
        return float(abs(np.linalg.det(self.matrix[:3, :3])) ** (1 / 3))


def to_sitk(volume: Volume) -> sitk.Image:
    """A float32 SimpleITK image with the volume's geometry (RAS affine -> LPS image)."""
    lps = RAS_TO_LPS @ volume.affine
    step = spacing(lps)
    image = sitk.GetImageFromArray(
        np.ascontiguousarray(volume.array.transpose(2, 1, 0), np.float32)
    )
    image.SetSpacing(step.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / step).ravel().tolist())
    return image


def _ras_matrix(transform: sitk.Transform) -> np.ndarray:
    """A SimpleITK affine (LPS, with centre) as a 4x4 RAS matrix."""
    affine = sitk.AffineTransform(transform)
    linear = np.array(affine.GetMatrix()).reshape(3, 3)
    centre, shift = np.array(affine.GetCenter()), np.array(affine.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = linear
    lps[:3, 3] = shift + centre - linear @ centre
    return RAS_TO_LPS @ lps @ RAS_TO_LPS


@contextmanager
def _one_itk_thread() -> Iterator[None]:
    """ITK's thread count for the duration (it is process-wide, so it is put back afterwards).

    With more than one thread the Mattes metric and the image pyramid add up partial results in
    whatever order the threads finish, and the optimiser carries those rounding differences
    into a different matrix (measured: up to 0.5 mm and 0.36 in a matrix entry between runs).
    """
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _run(fixed, moving, transform, shrink, smooth, moving_fov, iterations) -> tuple[float, int]:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.1, seed=SEED)  # ITK jitters regular samples
    method.SetMetricMovingMask(moving_fov)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsConjugateGradientLineSearch(
        learningRate=1.0,
        numberOfIterations=iterations,
        convergenceMinimumValue=1e-6,
        convergenceWindowSize=10,
        lineSearchUpperLimit=2.0,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as exc:  # ITK reports a lost overlap or a degenerate metric this way
        raise RegistrationFailed(str(exc).strip().splitlines()[-1]) from exc
    return float(method.GetMetricValue()), int(method.GetOptimizerIteration())


def register_affine(
    moving: Volume, fixed: Volume, moving_fov: np.ndarray, iterations: int = 50
) -> Registration:
    """12-parameter affine from ``fixed`` (the template) to ``moving`` (the subject's brain).

    Both should be skull-stripped (zero outside the brain). ``moving_fov`` (bool, the moving
    grid) marks where the scan has data: the metric ignores points outside it, so a brain cut by
    a small field of view is not stretched to fill the template.

    Mattes mutual information (contrast-agnostic) on a regular 10 % sample of the template's
    voxels; conjugate-gradient line search; rigid (centre-of-mass start), then similarity, then
    affine (:data:`STAGES`). The similarity stage settles the overall size before the affine
    stage may scale each axis: without it, a brain cut by the field of view was shrunk along
    the cut. Deterministic: a fixed seed for ITK's sample jitter and one thread for the metric,
    so a study gives the same matrix from run to run.
    """
    fixed_image, moving_image = to_sitk(fixed), to_sitk(moving)
    fov = sitk.Cast(to_sitk(Volume(moving_fov.astype(np.float32), moving.affine)), sitk.sitkUInt8)
    transform = sitk.CenteredTransformInitializer(
        fixed_image,
        moving_image,
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    with _one_itk_thread():
        for kind, shrink, smooth in STAGES:
            start = transform
            transform = kind()
            transform.SetCenter(start.GetCenter())
            transform.SetMatrix(start.GetMatrix())
            transform.SetTranslation(start.GetTranslation())
            metric, steps = _run(
                fixed_image, moving_image, transform, shrink, smooth, fov, iterations
            )
    return Registration(_ras_matrix(transform), metric, steps)
