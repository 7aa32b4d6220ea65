"""The brains synthetic subjects are built from: individual skull-stripped T1 host brains
(Colin27, MS subjects with their lesions in-painted, or the MNI152 template when there is no
individual) and the MS subjects' real lesions as donors, all on the MNI152 2 mm grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cs3f.io.nifti_io import load_nifti
from cs3f.volume import resample

__all__ = ["COLIN27", "SHARED_MS", "Brain", "Donor", "Sources", "load_sources"]

SHARED_MS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nifti" / "ms"
COLIN27 = Path("/usr/share/mricron/templates/ch2bet.nii.gz")  # Debian mricron-data


@dataclass(frozen=True)
class Brain:
    """A real skull-stripped T1 brain on the MNI152 2 mm grid: ``image`` scaled so that the brain's
    99th percentile is 1, ``mask`` its brain (bool), ``size`` its linear size relative to the
    MNI152 brain (cube root of the mask volumes' ratio)."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    size: float


@dataclass(frozen=True)
class Donor:
    """Real MS lesions on the same grid: ``ratio`` is the donor's T1 over its own surrounding
    tissue (1 outside lesions), ``labels`` the 18-connected lesion components."""

    name: str
    ratio: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Sources:
    """What subjects are built from: host brains, MS lesion donors, the grid."""

    brains: tuple[Brain, ...]
    donors: tuple[Donor, ...]
    affine: np.ndarray


def _on_grid(path: Path, shape, affine, order: int) -> np.ndarray:
    volume = load_nifti(path)
    return resample(volume.array, volume.affine, shape, affine, order=order)


def _scaled(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (image / np.percentile(image[mask], 99) * mask).astype(np.float32)


def load_sources(ms_folder: Path | None = None, colin27: Path | None = COLIN27) -> Sources:
    """The individual brains: Colin27 (``colin27``, Debian ``mricron-data``'s by default) when
    the file is there, and the MS subjects ``ms_folder/<subject>/{T1_mni,lesion_gt_mni}.nii.gz``
    (when given and present) with their lesions in-painted; those MS lesions are also the
    donors. Only when there is no individual at all, nilearn's MNI152 2009 population template
    is the one host: ``load_sources(None, None)`` depends on nothing but the Python packages, so
    it is the same on every machine."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=2)
    shape, affine = template.shape, template.affine
    mni_mask = load_mni152_brain_mask(resolution=2).get_fdata() > 0
    brains, donors = [], []

    def brain(name: str, image: np.ndarray) -> Brain:
        """The filled foreground above 5 % of the maximum is the brain."""
        mask = ndimage.binary_fill_holes(image > 0.05 * image.max())
        return Brain(name, _scaled(image, mask), mask, (mask.sum() / mni_mask.sum()) ** (1 / 3))

    if colin27 and Path(colin27).is_file():
        brains.append(brain("colin27", _on_grid(colin27, shape, affine, 1)))
    for folder in (
        sorted(Path(ms_folder).iterdir()) if ms_folder and Path(ms_folder).is_dir() else []
    ):
        t1, lesion = folder / "T1_mni.nii.gz", folder / "lesion_gt_mni.nii.gz"
        if t1.is_file() and lesion.is_file():
            donor, healed = _donor(
                folder.name,
                _on_grid(t1, shape, affine, 1),
                _on_grid(lesion, shape, affine, 1) > 0.5,
            )
            donors.append(donor)
            brains.append(brain(folder.name, healed))
    if not brains:
        brains.append(Brain("mni152", _scaled(template.get_fdata(), mni_mask), mni_mask, 1.0))
    return Sources(tuple(brains), tuple(donors), affine)


def _donor(name: str, t1: np.ndarray, lesions: np.ndarray) -> tuple[Donor, np.ndarray]:
    """The lesions' intensity relative to the white matter around them (normalised convolution,
    6 mm), and the T1 with its lesions replaced by that white matter (a lesion-free brain).

    White matter is the tissue above the brain's 60th intensity percentile (T1: the brightest
    class). Averaging all surrounding tissue instead pulled in the CSF of the ventricles that
    periventricular lesions touch: the filled lesions were 10 % (patient07) and 24 % (patient19)
    darker than the white matter beside them, a lesion-shaped hotspot in every copy.
    """
    brain = t1 > 0
    level = np.percentile(t1[brain & ~lesions], 60)
    tissue = brain & ~ndimage.binary_dilation(lesions) & (t1 > level)
    weight = ndimage.gaussian_filter(tissue.astype(np.float32), 3.0)
    around = ndimage.gaussian_filter(t1 * tissue, 3.0) / np.maximum(weight, 1e-3)
    inside = lesions & (weight > 0.05)
    ratio = np.where(inside, t1 / np.maximum(around, 1e-6), 1.0)
    labels, _ = ndimage.label(lesions, ndimage.generate_binary_structure(3, 2))
    # the lesions and their partial-volume rim; CSF in the rim (under half the white matter's
    # intensity, as T1 shows it) stays CSF
    rim = ndimage.binary_dilation(lesions) & brain & (t1 > 0.5 * around)
    healed = np.where(lesions | rim, around, t1)
    return Donor(name, np.clip(ratio, 0.2, 3.0).astype(np.float32), labels), healed
