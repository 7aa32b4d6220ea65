"""The voxel score map as a DICOM Parametric Map on the source series' own frames (highdicom).

A viewer (OHIF, 3D Slicer) shows it as a scrollable heatmap over the source series. Pixels are
32-bit floats, the scores themselves; the real-world value mapping is the identity and names
the quantity, so a viewer's probe reads score units. The default window runs from the SEG's
voxel threshold to the map's maximum: what a viewer shows bright is what the SEG outlines.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from cs3f.io.dicom_seg import derived_instance, source_frames
from cs3f.io.result_uids import DerivedUIDs

__all__ = ["QUANTITY", "SCORE_UNIT", "score_map"]

SCORE_UNIT = Code("1", "UCUM", "no units")
"""The score is a distance between feature vectors: a number without a physical unit."""
QUANTITY = Code("ANOMALY_SCORE", "99CS3F", "CS3F anomaly score")
"""A code of this program's own (private) scheme: DICOM has no code for the quantity."""


def score_map(
    source_slices: Sequence[Dataset],
    scores: np.ndarray,
    encoder_name: str,
    threshold: float,
    series_number: int = 9902,
    uids: DerivedUIDs | None = None,
) -> hd.pm.ParametricMap:
    """The Parametric Map of ``scores`` (columns, rows, slices; float) on the grid of
    ``source_slices`` (in slice order, or one multi-frame instance), frames in the source's
    order, like :func:`cs3f.io.dicom_seg.anomaly_segmentation`, with the source's anatomy.

    Args:
        threshold: the batch's voxel threshold (score units), the lower end of the window.
        uids: the map's series and instance UIDs (new ones if None).
    """
    frames = source_frames(source_slices, np.asarray(scores, dtype=np.float32))
    low, high = float(frames.min()), float(frames.max())
    top = max(high, threshold + 1e-6)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="CS3F score",
        lut_explanation=f"CS3F anomaly score, encoder {encoder_name}"[:64],
        unit=SCORE_UNIT,
        value_range=(low, high),
        slope=1.0,
        intercept=0.0,
        quantity_definition=QUANTITY,
    )
    parametric_map = hd.pm.ParametricMap(
        **derived_instance(source_slices, series_number, uids),
        pixel_array=frames,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(
                window_center=(threshold + top) / 2,
                window_width=top - threshold,
                window_explanation="voxel threshold to maximum",
                voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT,
            )
        ],
        content_label="ANOMALY_SCORE",
        content_description=f"CS3F anomaly score map, encoder {encoder_name}"[:64],
        series_description="CS3F anomaly score",
    )
    _copy_anatomy(source_slices[0], parametric_map)
    return parametric_map


def _copy_anatomy(source: Dataset, parametric_map: hd.pm.ParametricMap) -> None:
    """The source's anatomy onto the map: BodyPartExamined of a single-frame source, the
    FrameAnatomySequence (region and frame laterality) of a multi-frame one, shared by all
    frames. DICOM's Laterality rule (General Series module) depends on them."""
    if source.get("BodyPartExamined"):
        parametric_map.BodyPartExamined = source.BodyPartExamined
    groups = [
        *source.get("SharedFunctionalGroupsSequence", []),
        *source.get("PerFrameFunctionalGroupsSequence", [])[:1],
    ]
    anatomy = next((g.FrameAnatomySequence for g in groups if "FrameAnatomySequence" in g), None)
    if anatomy is not None:
        parametric_map.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = anatomy
