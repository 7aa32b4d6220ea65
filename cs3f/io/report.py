"""``report.html``: one self-contained page, the ranked table and per study three slices.

Each figure shows the source image (reoriented for display, pixels scaled to mm) with the
anomaly map in colour and the SEG outline in green, through the study's highest-scoring voxel.
Images are PNGs embedded as base64, so the page opens anywhere without other files.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from cs3f.io.outputs import StudyRow
from cs3f.volume import Volume, spacing

__all__ = ["figure_threshold", "report_html", "study_figure"]

PIXELS_PER_MM = 1.5


def _hot(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, dark red to yellow."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.concatenate([0.4 + 1.2 * v, 2 * v - 0.6, 0 * v], axis=-1)
    return (255 * np.clip(rgb, 0, 1)).astype(np.uint8)


def _panel(image, heat, mask, mm_per_pixel) -> Image.Image:
    """One slice (rows = display top to bottom) as an RGB image scaled to mm."""
    lo, hi = np.percentile(image, (1, 99.5))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((255 * grey)[..., None], 3, axis=-1)
    alpha = 0.6 * (heat > 0.05)[..., None]
    rgb = (1 - alpha) * rgb + alpha * _hot(heat)
    outline = mask & ~ndimage.binary_erosion(mask)
    rgb[outline] = (0, 255, 0)
    panel = Image.fromarray(rgb.astype(np.uint8))
    size = (
        max(1, round(panel.width * mm_per_pixel[1] * PIXELS_PER_MM)),
        max(1, round(panel.height * mm_per_pixel[0] * PIXELS_PER_MM)),
    )
    return panel.resize(size, Image.Resampling.NEAREST)


def figure_threshold(scores: Sequence[float], count: int) -> float:
    """The lowest patient score that still gets a figure when the ``count`` top-ranked studies
    do (``count`` 0: none, +inf)."""
    ranked = sorted(scores, reverse=True)
    return ranked[min(count, len(ranked)) - 1] if count > 0 and ranked else float("inf")


def study_figure(source: Volume, score_map: np.ndarray, mask: np.ndarray, vmax: float) -> str:
    """Axial, coronal and sagittal slices through the map's maximum, as a base64 PNG.

    ``score_map`` and ``mask`` are on the source grid; the colour scale is [0, vmax].
    """
    ornt = nib.orientations.io_orientation(source.affine)
    image, heat, seg = (
        nib.orientations.apply_orientation(np.asarray(a), ornt)
        for a in (source.array, score_map / max(vmax, 1e-12), mask)
    )
    step = spacing(source.affine)[np.argsort(ornt[:, 0])]  # mm along R, A, S
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    views = [  # (slicer, row axis, column axis, mirror): superior/anterior up, radiological
        ((slice(None), slice(None), peak[2]), 1, 0, True),  # axial
        ((slice(None), peak[1], slice(None)), 2, 0, True),  # coronal
        ((peak[0], slice(None), slice(None)), 2, 1, False),  # sagittal, anterior to the right
    ]
    panels = []
    for where, row_axis, col_axis, mirror in views:
        planes = [np.flipud(a[where].T) for a in (image, heat, seg.astype(bool))]
        planes = [np.fliplr(p) for p in planes] if mirror else planes
        panels.append(_panel(*planes, (step[row_axis], step[col_axis])))
    width = sum(p.width for p in panels) + 8 * len(panels)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def report_html(rows: Sequence[StudyRow], figures: dict[str, str], run: dict) -> str:
    """The page. ``figures`` maps a row's ``key`` to its base64 PNG; ``run`` is scores.json's."""
    esc = html.escape
    head = ["rank", "study", "patient", "score", "percentile", "flagged", "status", "reason"]
    table = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [
            r.rank or "",
            f'<a href="#{esc(r.key)}">{esc(r.study_instance_uid or r.key)}</a>'
            if r.key in figures
            else esc(r.study_instance_uid or r.key),
            esc(r.patient_id),
            "" if r.score is None else f"{r.score:.4g}",
            "" if r.batch_percentile is None else f"{r.batch_percentile:.1f}",
            "yes" if r.flagged else "",
            esc(r.status),
            esc(r.reason),
        ]
        table.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    sections = [
        f'<h3 id="{esc(r.key)}">#{r.rank} {esc(r.study_instance_uid)} score {r.score:.4g}</h3>'
        f'<img alt="axial, coronal, sagittal" src="data:image/png;base64,{figures[r.key]}">'
        for r in rows
        if r.key in figures
    ]
    warnings = "".join(f"<p class=warn>{esc(w)}</p>" for w in run.get("warnings", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CS3F screening report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}.warn{{color:#a00}}
img{{background:#000}}</style></head><body>
<h1>CS3F screening report</h1>
<p>{esc(str(run.get("n_scored")))} of {esc(str(run.get("n_studies")))} studies scored.
Encoder <b>{esc(str(run.get("encoder", {}).get("name")))}</b>, voxel threshold
{esc(str(run.get("voxel_threshold")))}. Research use; not a diagnosis. Overlays: colour = anomaly
score, green = SEG outline; slices through each study's highest score, shown radiologically
(patient right on the image left; sagittal: anterior to the right).</p>{warnings}
<table>{"".join(table)}</table>
{"".join(sections)}
</body></html>
"""
