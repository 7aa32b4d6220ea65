"""Preprocessing in worker processes: the same bytes at 1 and 2 workers, errors per study."""

import numpy as np
import pytest

from cs3f.preprocess.parallel import preprocess_all
from cs3f.preprocess.standard_space import PreprocessSettings
from cs3f.preprocess.template import template_brain
from cs3f.volume import Volume

SETTINGS = PreprocessSettings(size=96)


def _brains() -> list[Volume]:
    """MNI152 at 2 mm, and a copy shifted 6 mm and rotated 5 degrees (a second 'patient')."""
    brain = template_brain(2)
    angle = np.deg2rad(5.0)
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    turn[:3, 3] = (6.0, 0.0, 0.0)
    return [brain, Volume(brain.array.copy(), turn @ brain.affine)]


def _run(volumes, workers):
    return [f.result() for f in preprocess_all(volumes, "brain-mri", SETTINGS, workers)]


def test_one_and_two_workers_give_the_same_bytes():
    volumes = _brains()
    one, two = _run(volumes, 1), _run(volumes, 2)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        (ra,), (rb,) = a, b
        assert np.asarray(ra.volume).tobytes() == np.asarray(rb.volume).tobytes()
        assert np.array_equal(ra.mask, rb.mask) and np.array_equal(ra.affine, rb.affine)
        assert ra.details == rb.details


def test_a_failing_study_raises_at_its_own_result_and_the_rest_go_on():
    empty = Volume(np.zeros((40, 40, 40), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    futures = list(preprocess_all([empty, _brains()[0]], "brain-mri", SETTINGS, 2))
    with pytest.raises(ValueError):  # an all-zero series: no brain to find
        futures[0].result()
    assert futures[1].result()[0].mask.any()


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        next(preprocess_all([], "brain-mri", SETTINGS, 0))
    with pytest.raises(ValueError, match="workers"):
        PreprocessSettings(workers=-1)
