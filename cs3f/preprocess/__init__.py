"""Native volume -> the standard-space regions of its task (brain MRI or lung CT).

Modules: ``brain`` and ``lungs`` (one pipeline per task), and the steps they share:
``registration``, ``bias_field``, ``skull_strip``, ``template``, ``intensity``, ``lung_model``;
``standard_space`` holds what they produce (:class:`Standardised`, the way back to the source).
"""

from __future__ import annotations

from collections.abc import Callable

from cs3f.preprocess.brain import preprocess_brain
from cs3f.preprocess.lungs import preprocess_lungs
from cs3f.preprocess.standard_space import PreprocessSettings, Standardised
from cs3f.volume import Volume

__all__ = ["PREPROCESSORS", "TASKS", "preprocess"]

PREPROCESSORS: dict[str, Callable[[Volume, PreprocessSettings], list[Standardised]]] = {
    "brain-mri": lambda volume, settings: [preprocess_brain(volume, settings)],
    "lung-ct": preprocess_lungs,
}
"""Task -> its preprocessing: the regions of one study (``[brain]``; ``[left lung, right
lung]``)."""

TASKS = tuple(PREPROCESSORS)


def preprocess(volume: Volume, task: str, settings: PreprocessSettings) -> list[Standardised]:
    """The standard-space regions of one study for ``task`` (one of :data:`TASKS`).

    Raises:
        PreprocessingFailed: the study cannot be brought into the standard space.
    """
    if task not in PREPROCESSORS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return PREPROCESSORS[task](volume, settings)
