"""Native volume -> the standard-space regions of its task (brain MRI or lung CT)."""

from __future__ import annotations

from cs3f.brain import preprocess_brain
from cs3f.lungs import preprocess_lungs
from cs3f.standard_space import PreprocessSettings, Standardised
from cs3f.volume import Volume

__all__ = ["TASKS", "preprocess"]

TASKS = ("brain-mri", "lung-ct")


def preprocess(volume: Volume, task: str, settings: PreprocessSettings) -> list[Standardised]:
    """The regions of one study: ``[brain]`` for brain MRI, ``[left lung, right lung]`` for CT.

    Raises:
        PreprocessingFailed: the study cannot be brought into the standard space.
    """
    if task == "brain-mri":
        return [preprocess_brain(volume, settings)]
    if task == "lung-ct":
        return preprocess_lungs(volume, settings)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
