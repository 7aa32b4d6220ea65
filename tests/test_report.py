"""report.html's figures and page: overlay only above the threshold, orientation, positions,
rounding and identifiers. (The page in a real browser: tests/test_app.py.)"""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from cs3f.decisions import Calibration
from cs3f.io.outputs import StudyRow, rank
from cs3f.io.report import PIXELS_PER_MM, colour_bar, report_html, study_figure
from cs3f.volume import Volume

LPS_LIKE = np.array(  # a DICOM axial series: i to patient left, j to posterior, 2 mm slices
    [[-1.0, 0, 0, 40], [0, -1.0, 0, 50], [0, 0, 2.0, -10], [0, 0, 0, 1]]
)


def _pixels(panel) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(panel.png))).convert("RGB"), int)


def _coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are not grey (overlay or outline)."""
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 10


@pytest.fixture
def study():
    """A 40 x 50 x 20 volume; a bright block and a score blob on the patient's right
    (low i: RAS x = 40 - i is large), the blob's peak at voxel (8, 25, 10)."""
    image = np.full((40, 50, 20), 100.0)
    image[5:12, 20:30, 8:13] = 300.0
    i, j, k = np.meshgrid(*(np.arange(n) for n in image.shape), indexing="ij")
    score = np.exp(-((i - 8) ** 2 + (j - 25) ** 2 + (k - 10) ** 2) / 8.0)
    return Volume(image, LPS_LIKE), score


def test_the_peak_and_slice_positions_are_in_scanner_mm(study):
    volume, score = study
    figure = study_figure(volume, score, score > 0.5, threshold=0.5, vmax=1.0)
    assert figure.peak_ras == tuple(LPS_LIKE[:3] @ [8, 25, 10, 1])  # (32, 25, 10) mm RAS
    assert [(p.view, p.position) for p in figure.panels] == [
        ("axial", "S 10.0 mm"),
        ("coronal", "A 25.0 mm"),
        ("sagittal", "R 32.0 mm"),
    ]
    assert figure.panels[0].edges == ("A", "P", "R", "L")
    assert figure.map_max == pytest.approx(1.0)


def test_radiological_display_puts_the_patients_right_on_the_left(study):
    volume, score = study
    axial = _pixels(study_figure(volume, score, score > 0.5, 0.5, 1.0).panels[0])
    columns = np.flatnonzero(_coloured(axial).any(axis=0))
    assert columns.size and columns.max() < axial.shape[1] / 2


def test_the_heatmap_is_drawn_only_above_the_threshold(study):
    volume, score = study
    mask = np.zeros(score.shape, bool)
    axial = _pixels(study_figure(volume, score, mask, threshold=0.5, vmax=1.0).panels[0])
    area = _coloured(axial).sum() / PIXELS_PER_MM**2  # pixels -> mm^2 (1 mm voxels)
    expected = (score[:, :, 10] > 0.5).sum()
    assert area == pytest.approx(expected, rel=0.15)
    nothing = study_figure(volume, score, mask, threshold=1.5, vmax=2.0).panels
    assert not any(_coloured(_pixels(p)).any() for p in nothing)


def test_colour_bar_matches_the_overlay_colours():
    bar = colour_bar(0.2, 1.2)
    stops = re.findall(r'offset="([\d.]+)" stop-color="#(\w{6})"', bar)
    assert stops[0] == ("0.0", "660000") and stops[-1] == ("1.0", "ffff00")
    assert ">0.2<" in bar and ">0.7<" in bar and ">1.2<" in bar
    ticks = [int(x) for x in re.findall(r'<text x="(\d+)" y="38"', bar)]
    width = int(re.search(r'<svg[^>]* width="(\d+)"', bar).group(1))
    assert min(ticks) >= 40 and width - max(ticks) >= 40  # room for a centred "0.2084"


def _rows():
    rows = [
        StudyRow("k1", "1.1", patient_id="P-1", patient_name="Doe^Jane", score=0.812345678),
        StudyRow("k2", "1.2", patient_id="P-2", study_date="2024-01-02", score=0.3),
        StudyRow("k3", "1.3", patient_id="P-3", score=0.31),
    ]
    return rank(rows, Calibration(0.123456789, (0.3, 0.31, 0.812345678), 3.0))


def test_the_page_is_pseudonymous_unless_asked(study):
    rows = _rows()
    run = {"voxel_threshold": 0.123456789, "flag_threshold": 0.34, "n_scored": 3}
    page = report_html(rows, {}, run)
    assert "P-1" not in page and "Doe" not in page and "1.1" not in page
    assert all(r.pseudonym in page for r in rows) and "2024-01-02" in page
    shown = report_html(rows, {}, run, show_identifiers=True)
    assert "P-1" in shown and "Doe^Jane" in shown


def test_numbers_are_rounded_and_the_plot_marks_every_study(study):
    rows = _rows()
    volume, score = study
    figures = {"k1": study_figure(volume, score, score > 0.5, 0.123456789, 0.812345678)}
    page = report_html(rows, figures, {"voxel_threshold": 0.123456789, "flag_threshold": 0.34})
    assert "0.123456789" not in page and "0.812345678" not in page
    assert "0.123" in page and "0.812" in page
    assert page.count("<circle") == 3 and "flag 0.34" in page and "SEG threshold 0.123" in page
    assert page.count('<section id="k1">') == 1 and page.count("data:image/png;base64,") == 3
    assert "http" not in page  # opens offline: nothing to fetch
