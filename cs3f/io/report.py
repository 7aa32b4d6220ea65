"""``report.html``: one self-contained page a person can read without other files or a network.

It holds the ranked table, a plot of the batch's patient scores with the SEG threshold and the
flag line, and for each of the top-ranked studies three orthogonal slices through its
highest-scoring voxel. A slice shows the source image (reoriented for display, pixels scaled to
mm) with the anomaly score in colour only where it is above the voxel threshold (the voxels the
SEG marks, whose outline is drawn in green), a shared colour bar, orientation letters and the
slice's position in mm. Studies are named by a pseudonym (a short hash of the study's UID, the
tag of run.log) and the study date; patient ID, name and accession number appear only when the
run asks for them (``show_identifiers``). Images are PNGs embedded as base64.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from cs3f.io.outputs import IDENTIFYING, StudyRow
from cs3f.volume import Volume, spacing

__all__ = ["Panel", "StudyFigure", "figure_threshold", "report_html", "study_figure"]

PIXELS_PER_MM = 1.2
OVERLAY_OPACITY = 0.7
SCORE_UNITS = "anomaly score (feature distance, no unit)"
_HOT_KNOTS = (0.0, 0.3, 0.5, 0.8, 1.0)  # where _hot bends: a gradient through them is exact
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # RAS+: (negative, positive) per world axis


@dataclass(frozen=True)
class Panel:
    """One slice of a figure: ``png`` (base64), its view, where it cuts and the letters at its
    edges (top, bottom, left, right)."""

    view: str
    png: str
    position: str
    edges: tuple[str, str, str, str]


@dataclass(frozen=True)
class StudyFigure:
    """Three panels through ``peak_ras`` (mm, RAS+ scanner coordinates); ``map_max`` is the
    largest value of the source-grid map drawn."""

    panels: tuple[Panel, ...]
    peak_ras: tuple[float, float, float]
    map_max: float


def _hot(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, dark red through orange to yellow."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.concatenate([0.4 + 1.2 * v, 2 * v - 0.6, 0 * v], axis=-1)
    return (255 * np.clip(rgb, 0, 1)).astype(np.uint8)


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _panel_image(image, heat, mask, mm_per_pixel, threshold: float, vmax: float) -> Image.Image:
    """One slice (rows = display top to bottom) as an RGB image scaled to mm: grey image, the
    score in colour where above ``threshold`` (colour scale [threshold, vmax]), SEG outline."""
    lo, hi = np.percentile(image, (1, 99.5))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat((255 * grey)[..., None], 3, axis=-1)
    above = heat > threshold
    colour = _hot((heat - threshold) / max(vmax - threshold, 1e-12))
    rgb[above] = (1 - OVERLAY_OPACITY) * rgb[above] + OVERLAY_OPACITY * colour[above]
    outline = mask & ~ndimage.binary_erosion(mask)
    rgb[outline] = (0, 255, 0)
    panel = Image.fromarray(rgb.astype(np.uint8))
    size = (
        max(1, round(panel.width * mm_per_pixel[1] * PIXELS_PER_MM)),
        max(1, round(panel.height * mm_per_pixel[0] * PIXELS_PER_MM)),
    )
    return panel.resize(size, Image.Resampling.NEAREST)


def _position(axis: int, mm: float) -> str:
    """World coordinate ``mm`` on RAS axis ``axis`` as a viewer writes it: "S 12.0 mm"."""
    negative, positive = _AXIS_LETTERS[axis]
    return f"{positive if mm >= 0 else negative} {abs(mm):.1f} mm"


def figure_threshold(scores: Sequence[float], count: int) -> float:
    """The lowest patient score that still gets a figure when the ``count`` top-ranked studies
    do (``count`` 0: none, +inf)."""
    ranked = sorted(scores, reverse=True)
    return ranked[min(count, len(ranked)) - 1] if count > 0 and ranked else float("inf")


def study_figure(
    source: Volume, score_map: np.ndarray, mask: np.ndarray, threshold: float, vmax: float
) -> StudyFigure:
    """Axial, coronal and sagittal slices through the map's maximum.

    ``score_map`` (score units) and ``mask`` (bool) are on the source grid; the colour scale
    runs from ``threshold`` (the voxel threshold: nothing below it is coloured) to ``vmax``.
    Display is radiological: patient right on the image left, superior and anterior up,
    sagittal with anterior to the right.
    """
    shape = np.asarray(source.array).shape
    ornt = nib.orientations.io_orientation(source.affine)
    image, heat, seg = (
        nib.orientations.apply_orientation(np.asarray(a), ornt)
        for a in (source.array, score_map, mask)
    )
    ras_affine = source.affine @ nib.orientations.inv_ornt_aff(ornt, shape)  # display voxels
    step = spacing(source.affine)[np.argsort(ornt[:, 0])]  # mm along R, A, S
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    peak_ras = (ras_affine @ [*peak, 1.0])[:3]
    views = [  # (name, slicer, cut axis, row axis, column axis, mirror, edge letters)
        ("axial", (slice(None), slice(None), peak[2]), 2, 1, 0, True, ("A", "P", "R", "L")),
        ("coronal", (slice(None), peak[1], slice(None)), 1, 2, 0, True, ("S", "I", "R", "L")),
        ("sagittal", (peak[0], slice(None), slice(None)), 0, 2, 1, False, ("S", "I", "P", "A")),
    ]
    panels = []
    for name, where, cut, row_axis, col_axis, mirror, edges in views:
        planes = [np.flipud(a[where].T) for a in (image, heat, seg.astype(bool))]
        planes = [np.fliplr(p) for p in planes] if mirror else planes
        picture = _panel_image(*planes, (step[row_axis], step[col_axis]), threshold, vmax)
        panels.append(Panel(name, _png(picture), _position(cut, peak_ras[cut]), edges))
    return StudyFigure(
        tuple(panels), tuple(round(float(v), 1) for v in peak_ras), float(heat.max())
    )


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def colour_bar(threshold: float, vmax: float) -> str:
    """An inline SVG colour bar for the overlay: [threshold, vmax] in score units."""
    colours = _hot(np.asarray([_HOT_KNOTS]))[0]
    stops = "".join(
        f'<stop offset="{o}" stop-color="#{r:02x}{g:02x}{b:02x}"/>'
        for o, (r, g, b) in zip(_HOT_KNOTS, colours, strict=True)
    )
    ticks = "".join(  # the bar starts 40 px in, so that a centred end label is never cut off
        f'<text x="{40 + 300 * f:.0f}" y="38" text-anchor="middle">'
        f"{_number(threshold + f * (vmax - threshold))}</text>"
        for f in (0.0, 0.5, 1.0)
    )
    return (
        '<svg class="bar" width="380" height="60" role="img" aria-label="colour bar">'
        f'<defs><linearGradient id="hot">{stops}</linearGradient></defs>'
        '<rect x="40" y="8" width="300" height="16" fill="url(#hot)"/>'
        f'{ticks}<text x="190" y="55" text-anchor="middle">{SCORE_UNITS}</text></svg>'
    )


def score_plot(rows: Sequence[StudyRow], run: dict) -> str:
    """An inline SVG strip plot of the scored studies' patient scores (a dot per study, red when
    flagged, linked to its figure), with the voxel (SEG) threshold and the flag line."""
    scored = [r for r in rows if r.score is not None]
    if not scored:
        return ""
    lines = {
        "SEG threshold": (run.get("voxel_threshold"), "#2a2"),
        "flag": (run.get("flag_threshold"), "#c00"),
    }
    values = [r.score for r in scored] + [v for v, _ in lines.values() if v is not None]
    lo, hi = min(0.0, min(values)), max(values) * 1.05 or 1.0
    width, left, right = 640, 20, 20

    def x(value: float) -> float:
        return left + (width - left - right) * (value - lo) / (hi - lo)

    parts = [f'<line x1="{left}" y1="90" x2="{width - right}" y2="90" stroke="#444"/>']
    for f in np.linspace(0, 1, 5):
        value = lo + f * (hi - lo)
        parts.append(f'<text x="{x(value):.1f}" y="106" text-anchor="middle">{value:.3g}</text>')
    for n, (label, (value, colour)) in enumerate(lines.items()):
        if value is not None:
            parts.append(
                f'<line x1="{x(value):.1f}" y1="10" x2="{x(value):.1f}" y2="90" '
                f'stroke="{colour}" stroke-dasharray="4 3"/>'
                f'<text x="{x(value) + 3:.1f}" y="{20 + 12 * n}" fill="{colour}">'
                f"{label} {value:.3g}</text>"
            )
    for r in scored:
        dot = (
            f'<circle cx="{x(r.score):.1f}" cy="{80 - 10 * ((r.rank or 0) % 5)}" r="4" '
            f'fill="{"#c00" if r.flagged else "#888"}"><title>#{r.rank} {html.escape(r.pseudonym)}'
            f" score {r.score:.3g}</title></circle>"
        )
        parts.append(f'<a href="#{html.escape(r.key)}">{dot}</a>')
    return (
        f'<svg class="plot" width="{width}" height="122" role="img" '
        f'aria-label="patient scores of the batch">{"".join(parts)}'
        f'<text x="{width / 2}" y="120" text-anchor="middle">patient score</text></svg>'
    )


def _figure_html(row: StudyRow, figure: StudyFigure, bar: str) -> str:
    esc = html.escape
    panels = "".join(
        f'<figure class="panel"><div class="frame"><img alt="{p.view} slice" '
        f'src="data:image/png;base64,{p.png}"><span class="t">{p.edges[0]}</span>'
        f'<span class="b">{p.edges[1]}</span><span class="l">{p.edges[2]}</span>'
        f'<span class="r">{p.edges[3]}</span></div>'
        f"<figcaption>{p.view}, {esc(p.position)}</figcaption></figure>"
        for p in figure.panels
    )
    r, a, s = figure.peak_ras
    return (
        f'<section id="{esc(row.key)}"><h3>#{row.rank} study {esc(row.pseudonym)}'
        f"{' · ' + esc(row.study_date) if row.study_date else ''} · score {row.score:.3g}"
        f"{' · flagged' if row.flagged else ''}</h3>"
        f'<div class="panels">{panels}</div>{bar}'
        f"<p>Peak at {_position(0, r)}, {_position(1, a)}, {_position(2, s)} (scanner "
        f"coordinates). Largest value on the source grid {figure.map_max:.3g}; "
        f"SEG voxels {row.details.get('seg_voxels', 0):,}.</p></section>"
    )


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:72em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}
td.n{text-align:right}.warn{color:#a00}.panels{display:flex;gap:12px;flex-wrap:wrap}
.panel{margin:0}.frame{position:relative;background:#000;line-height:0}
.frame span{position:absolute;color:#fff;font:bold 13px sans-serif;line-height:1}
.t{top:3px;left:50%}.b{bottom:3px;left:50%}.l{left:3px;top:50%}.r{right:3px;top:50%}
figcaption{font-size:90%;text-align:center}svg text{font:11px sans-serif}"""


def report_html(
    rows: Sequence[StudyRow],
    figures: dict[str, StudyFigure],
    run: dict,
    show_identifiers: bool = False,
) -> str:
    """The page. ``figures`` maps a row's ``key`` to its figure; ``run`` is scores.json's
    (``voxel_threshold``, ``flag_threshold``, ``encoder``, counts, warnings)."""
    esc = html.escape
    identifying = IDENTIFYING if show_identifiers else ()
    head = ["rank", "study", "date", *identifying, "score", "percentile", "flagged", "status"]
    table = [
        "<tr>" + "".join(f"<th>{h.replace('_', ' ')}</th>" for h in head) + "<th>reason</th></tr>"
    ]
    for r in rows:
        name = esc(r.pseudonym)
        cells = [
            f'<td class="n">{r.rank or ""}</td>',
            f'<td><a href="#{esc(r.key)}">{name}</a></td>'
            if r.key in figures
            else f"<td>{name}</td>",
            f"<td>{esc(r.study_date)}</td>",
            *(f"<td>{esc(getattr(r, field))}</td>" for field in identifying),
            f'<td class="n">{_number(r.score)}</td>',
            f'<td class="n">{"" if r.batch_percentile is None else f"{r.batch_percentile:.0f}"}</td>',
            f"<td>{'yes' if r.flagged else ''}</td>",
            f"<td>{esc(r.status)}</td><td>{esc(r.reason)}</td>",
        ]
        table.append("<tr>" + "".join(cells) + "</tr>")
    threshold = run.get("voxel_threshold")
    scores = [r.score for r in rows if r.score is not None]
    bar = colour_bar(threshold, max(scores)) if threshold is not None and scores else ""
    sections = [_figure_html(r, figures[r.key], bar) for r in rows if r.key in figures]
    warnings = "".join(f"<p class=warn>{esc(w)}</p>" for w in run.get("warnings", []))
    flag = run.get("flag_threshold")
    rules = run.get("settings", {}).get("screening", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CS3F screening report</title>
<style>{_STYLE}</style></head><body>
<h1>CS3F screening report</h1>
<p>{esc(str(run.get("n_scored")))} of {esc(str(run.get("n_studies")))} studies scored with the
encoder <b>{esc(str(run.get("encoder", {}).get("name")))}</b>. Research use; not a diagnosis.</p>
<p>A study's <b>score</b> is the largest voxel score of its map in standard space; a voxel's score
is how far its region is from the nearest look-alikes in the other studies of this batch. Voxels
above the <b>SEG threshold</b> {_number(threshold)} (the {_number(rules.get("voxel_percentile"))} %
point of the batch's voxel scores) form the SEG. A study is <b>flagged</b> when its score is above
{_number(flag) if flag is not None else "(no flag: the scores do not spread)"}, the batch median
plus {_number(rules.get("flag_mad"))} robust standard deviations. The maps on the source grid
(figures, Parametric Map, SEG) are the standard-space map interpolated back, so their largest
value is at most the score.</p>
{warnings}{score_plot(rows, run)}
<table>{"".join(table)}</table>
<p>Figures: colour = score above the SEG threshold, green = SEG outline; slices through each
study's highest score, shown radiologically (patient right on the image left).</p>
{"".join(sections)}
</body></html>
"""
