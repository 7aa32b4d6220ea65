"""The whole app in-process on a small synthetic cohort with deliberately bad input mixed in."""

import contextlib
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import on_grid
from PIL import Image
from pydicom.uid import generate_uid

from app.__main__ import main
from cs3f.io.dicom_volume import series_volume
from cs3f.io.nifti_io import InputError, input_format
from cs3f_tools.cohort import make_cohort
from cs3f_tools.cohort_dicom import write_series

FAST = ["--encoder", "pixels", "--set", "preprocess.size=112", "--set", "report_studies=2"]


def _run(tmp_path, source, *extra):
    out = tmp_path / "out"
    code = main(["-i", str(source), "-o", str(out), *FAST, *extra])
    return code, out


def _rows(out):
    with open(out / "scores.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _write_dicomdir(path):
    """A DICOMDIR-like index (Media Storage Directory): no StudyInstanceUID, no pixels."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.FileSetID = "SCREENING"
    ds.save_as(path, enforce_file_format=True)


def _retag(folder, **tags):
    """Set ``tags`` on every instance of the study in ``folder``, in place."""
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _copy_study(source, target, **tags):
    """A copy of a study with new UIDs and ``tags`` set on every instance."""
    target.mkdir()
    study, series = generate_uid(), generate_uid()
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(target / path.name)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """6 synthetic studies, plus: a corrupt file, a text file, a DICOMDIR, a second (smaller)
    candidate series in study 0 with one file truncated, a PatientID full of path characters
    in study 1, a single-component PatientName in study 2, an empty SeriesNumber in study 4,
    two instances of study 5 twice (new SOP Instance UIDs, same positions), and two copies of
    study 3: one with a malformed PatientBirthDate, one with a StudyInstanceUID holding '/'
    and '..'. The run's stderr is kept in ``stderr.txt`` beside ``out``."""
    root = tmp_path_factory.mktemp("messy")
    make_cohort(root, n_normal=5, n_abnormal=1, seed=3)
    studies = root / "studies"
    (studies / "notes.txt").write_text("not a DICOM file")
    _write_dicomdir(studies / "DICOMDIR")
    (studies / "000" / "broken.dcm").write_bytes(b"DICM" + bytes(300))
    extra = studies / "000-extra"
    extra.mkdir()
    series_uid = generate_uid()
    for n, path in enumerate(sorted((studies / "000").glob("0*.dcm"))[:10]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(extra / f"{n}.dcm")
    cut = extra / "9.dcm"  # truncated inside its pixel data: skipped and counted
    cut.write_bytes(cut.read_bytes()[:-100])
    _retag(studies / "001", PatientID="../../evil/..:id")
    # highdicom warns about a one-part PatientName, quoting it
    _retag(studies / "002", PatientName="Kowalczyk", PatientBirthDate="19700321")
    for n, path in enumerate(sorted((studies / "005").glob("0*.dcm"))[:2]):  # duplicates
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(studies / "005" / f"duplicate-{n}.dcm")
    _retag(studies / "004", SeriesNumber="")  # optional, empty: the series must stay
    _copy_study(studies / "003", studies / "bad-date", PatientBirthDate="1970-13-45")
    _copy_study(studies / "003", studies / "bad-uid", StudyInstanceUID="1.2.826.0.1/../7")
    out = root / "out"
    (root / "inputs.json").write_text(json.dumps(_fingerprint(studies)))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["-i", str(studies), "-o", str(out), *FAST])
    (root / "stderr.txt").write_text(stderr.getvalue())
    return code, studies, out


def _fingerprint(folder):
    """Every file under ``folder``: its SHA-256 and modification time (ns)."""
    return {
        str(p.relative_to(folder)): [
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        ]
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_input_is_never_touched(messy):
    _, studies, out = messy
    before = json.loads((out.parent / "inputs.json").read_text())
    assert _fingerprint(studies) == before  # same files, bytes and modification times


def test_outputs_exactly_as_specified(messy):
    code, _, out = messy
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "maps",
        "report.html",
        "run.log",
        "scores.csv",
        "scores.json",
        "seg",
        "sr",
    ]
    rows = _rows(out)
    assert list(rows[0]) == [
        "rank",
        "pseudonym",
        "study_date",
        "study_instance_uid",
        "series_instance_uid",
        "score",
        "batch_percentile",
        "flagged",
        "status",
        "reason",
    ]
    assert len(rows) == 8 and [r["status"] for r in rows] == ["scored"] * 6 + ["failed"] * 2
    scored = rows[:6]
    scores = [float(r["score"]) for r in scored]
    assert scores == sorted(scores, reverse=True)
    assert [int(r["rank"]) for r in scored] == list(range(1, 7))
    for r in scored:
        assert (out / "seg" / f"{r['study_instance_uid']}.dcm").is_file()
        assert (out / "maps" / f"{r['study_instance_uid']}.nii.gz").is_file()
        assert (out / "maps" / f"{r['study_instance_uid']}.dcm").is_file()
        assert (out / "sr" / f"{r['study_instance_uid']}.dcm").is_file()
    assert len(list((out / "seg").iterdir())) == 6 and len(list((out / "maps").iterdir())) == 12
    assert len(list((out / "sr").iterdir())) == 6
    report = json.loads((out / "scores.json").read_text())
    run = report["run"]
    assert run["encoder"]["name"] == "pixels-p14" and "weights_sha256" in run["encoder"]
    assert run["settings"]["preprocess"]["size"] == 112
    for row in report["studies"][:6]:
        brain = row["details"]["preprocessing"]["brain"]
        assert 800 < brain["brain_ml"] < 2500 and brain["registration"]["template_mask_dice"] > 0.7
    assert run["files"]["skipped_files"] == 4 and run["batch_size"] == 6  # text, broken, cut, DIR
    assert run["files"]["without_study_uid"] == []
    assert any("quality drops" in w for w in run["warnings"])
    assert {"tokenize", "preprocess", "voxel maps", "write outputs"} <= set(run["timings_s"])
    assert "<table>" in (out / "report.html").read_text()


def test_scores_and_maps_add_up(messy):
    """The patient score is the standard-space map's maximum; the maps on the source grid are
    that map interpolated back, so their maximum (``source_map_max``) is at most the score."""
    _, _, out = messy
    studies = json.loads((out / "scores.json").read_text())["studies"]
    scored = [s for s in studies if s["status"] == "scored"]
    for study in scored:
        source_map = nib.load(out / "maps" / f"{study['key']}.nii.gz").get_fdata()
        assert study["details"]["source_map_max"] == pytest.approx(source_map.max(), rel=1e-6)
        assert source_map.max() <= study["score"] * (1 + 1e-6)
        assert source_map.max() > 0.5 * study["score"]  # the same map, not another one


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_report_renders_in_a_real_browser(messy, tmp_path):
    """Headless Chromium, every network name unresolvable, opens the run's report.html: a
    screenshot with content and no console message (no script error, no failed resource)."""
    _, _, out = messy
    shot = tmp_path / "report.png"
    browser = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            (out / "report.html").resolve().as_uri(),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert browser.returncode == 0, browser.stderr[-2000:]
    assert not [line for line in browser.stderr.splitlines() if ":CONSOLE" in line]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280) and pixels.std() > 10  # not a blank page
    assert (pixels < 30).mean() > 0.02  # the figures' dark backgrounds are on it


def test_outputs_are_pseudonymous_by_default(messy):
    """No patient ID, name or accession number in scores or report unless asked for; studies
    are named by the run.log tag and the study date."""
    _, _, out = messy
    written = "".join((out / n).read_text() for n in ("scores.csv", "scores.json", "report.html"))
    assert "evil" not in written and "Kowalczyk" not in written and "Synthetic" not in written
    studies = json.loads((out / "scores.json").read_text())["studies"]
    assert not {"patient_id", "patient_name", "accession_number"} & set(studies[0])
    scored = [s for s in studies if s["status"] == "scored"]
    assert all(re.fullmatch(r"[0-9a-f]{8}", s["pseudonym"]) for s in studies)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", s["study_date"]) for s in scored)
    report = (out / "report.html").read_text()
    assert all(s["pseudonym"] in report for s in scored)


def test_bad_input_is_contained(messy):
    _, studies, out = messy
    rows = {r["study_instance_uid"]: r for r in _rows(out)}
    two = [r for r in rows.values() if "2 series matched" in r["reason"]]
    assert len(two) == 1  # study 0: the full series was chosen over the 10-slice copy
    first = pydicom.dcmread(min((studies / "000").glob("0*.dcm")))
    assert two[0]["series_instance_uid"] == first.SeriesInstanceUID
    every = [p.relative_to(out) for p in out.rglob("*")]
    assert not any("evil" in str(p) or ".." in p.parts for p in every)
    log = (out / "run.log").read_text()
    assert "SYN" not in log and "Synthetic" not in log and "evil" not in log
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no work or temp files left


def test_a_series_that_could_not_carry_a_valid_seg_fails_before_preprocessing(messy):
    """A malformed attribute the SEG copies, or a UID it would reference, is refused when the
    volume is read, with a reason naming the attribute and never its value."""
    _, _, out = messy
    failed = [r for r in _rows(out) if r["status"] == "failed"]
    reasons = sorted(r["reason"] for r in failed)
    assert reasons[0].startswith("volume: SourceError: PatientBirthDate of the source")
    assert reasons[1].startswith("volume: SourceError: StudyInstanceUID of the source")
    assert not any("1970-13-45" in r or "/../" in r for r in reasons)
    studies = json.loads((out / "scores.json").read_text())["studies"]
    assert not any("preprocessing" in r["details"] for r in studies if r["status"] == "failed")


def test_left_out_instances_are_said(messy):
    _, studies, out = messy
    uid = pydicom.dcmread(next((studies / "005").glob("0*.dcm"))).StudyInstanceUID
    row = next(r for r in _rows(out) if r["study_instance_uid"] == uid)
    total = len(list((studies / "005").glob("*.dcm")))
    assert row["status"] == "scored"
    assert row["reason"] == (
        f"2 of the series' {total} instances left out "
        "(a second instance at one slice position, or unparsable)"
    )


def test_no_identifier_of_any_input_reaches_a_log(messy):
    _, studies, out = messy
    identifiers = set()
    for path in studies.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        name = str(ds.get("PatientName", ""))
        values = [name, *name.split("^"), ds.get("PatientID", ""), ds.get("PatientBirthDate", "")]
        values += [ds.get("AccessionNumber", ""), ds.StudyInstanceUID, ds.SeriesInstanceUID]
        identifiers |= {str(v) for v in values if len(str(v)) > 2}
        identifiers.add(str(ds.SOPInstanceUID))
    assert {"Kowalczyk", "19700321", "../../evil/..:id"} <= identifiers
    logs = {
        "run.log": (out / "run.log").read_text(),
        "stderr": (out.parent / "stderr.txt").read_text(),
    }
    assert "single component" in logs["run.log"]  # the highdicom warning arrived, redacted
    leaks = {(stream, v) for stream, text in logs.items() for v in identifiers if v in text}
    assert not leaks


def test_seg_matches_map_and_references_source(messy):
    _, studies, out = messy
    threshold = json.loads((out / "scores.json").read_text())["run"]["voxel_threshold"]
    folder = studies / "002"
    source = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    volume, slices = series_volume(source)
    uid = source[0].StudyInstanceUID
    score_map = nib.load(out / "maps" / f"{uid}.nii.gz")
    assert score_map.shape == volume.shape
    np.testing.assert_allclose(score_map.affine, volume.affine, atol=1e-4)
    expected = np.asarray(score_map.dataobj) > threshold
    seg = hd.seg.segread(out / "seg" / f"{uid}.dcm")
    assert seg.SeriesInstanceUID != source[0].SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "CS3F" in algorithm.AlgorithmName and algorithm.AlgorithmVersion
    frames = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in slices],
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )[..., 0]
    np.testing.assert_array_equal(frames.transpose(2, 1, 0) > 0, expected)
    assert expected.any()
    parametric_map = hd.imread(out / "maps" / f"{uid}.dcm")
    assert (
        parametric_map.ReferencedSeriesSequence[0].SeriesInstanceUID == referenced.SeriesInstanceUID
    )
    values = on_grid(parametric_map.get_volume(), volume.affine, volume.shape)
    np.testing.assert_array_equal(values, np.asarray(score_map.dataobj))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) absent")
def test_every_seg_and_parametric_map_passes_dciodvfy(messy):
    _, _, out = messy
    for path in sorted([*(out / "seg").glob("*.dcm"), *(out / "maps").glob("*.dcm")]):
        result = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, check=False
        )
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    code, out = _run(tmp_path, tmp_path / "in")
    assert code == 1
    assert "at least 2" in json.loads((out / "scores.json").read_text())["run"]["error"]


def test_single_study_is_a_clear_error_before_any_preprocessing(tmp_path):
    make_cohort(tmp_path / "one", n_normal=1, n_abnormal=0, seed=5)
    code, out = _run(tmp_path, tmp_path / "one" / "studies")
    assert code == 1
    rows = _rows(out)
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert rows[0]["reason"] == "batch too small to score"
    run = json.loads((out / "scores.json").read_text())["run"]
    assert "needs at least 2" in run["error"]
    assert "preprocess" not in run["timings_s"]  # refused before the expensive work


def test_the_work_folder_is_removed_when_the_run_crashes(tmp_path, monkeypatch):
    from app.app import ScreeningApp

    def crash(self):
        assert len(list(self.output_folder.glob(".work-*"))) == 1  # it existed during the run
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ScreeningApp, "run", crash)
    (tmp_path / "in").mkdir()
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path, tmp_path / "in")
    assert not list((tmp_path / "out").glob(".work-*"))


def test_missing_weights_stop_before_any_work(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    code = main(["-i", str(tmp_path / "in"), "-o", str(out), "-m", str(tmp_path / "nothing")])
    assert code == 2
    message = capsys.readouterr().err
    assert "-m" in message and "--encoder histogram" in message
    assert not out.exists()


def test_output_inside_input_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    code = main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "in" / "out"), *FAST])
    assert code == 2


def test_lung_ct_scores_each_lung_and_maps_back_onto_the_source(tmp_path):
    """Three chest phantoms (NIfTI input): each lung is its own region, the map combines both
    on the source grid, and --save-preprocessed writes each lung's crop and mask."""
    from test_preprocess_lungs import chest_phantom

    from cs3f.io.nifti_io import save_nifti

    source = tmp_path / "in"
    truths = {}
    for seed in range(3):
        volume, truth = chest_phantom(seed)
        save_nifti(volume.array, volume.affine, source / f"chest{seed}.nii.gz")
        truths[f"chest{seed}"] = (volume, truth["left lung"] | truth["right lung"])
    code, out = _run(
        tmp_path,
        source,
        "--task",
        "lung-ct",
        "--set",
        "preprocess.lung_crop=[96, 128, 160]",
        "--save-preprocessed",
    )
    assert code == 0
    rows = json.loads((out / "scores.json").read_text())["studies"]
    assert [r["status"] for r in rows] == ["scored"] * 3
    for key, (volume, lungs) in truths.items():
        image = nib.load(out / "maps" / f"{key}.nii.gz")
        assert image.shape == volume.shape
        np.testing.assert_allclose(image.affine, volume.affine, atol=1e-5)
        values = image.get_fdata()
        assert values[lungs].mean() > 0 and (values[~lungs] > 0).mean() < 0.05
        for side in ("left_lung", "right_lung"):
            crop = nib.load(out / "preprocessed" / f"{key}_{side}.nii.gz")
            assert crop.shape == (96, 128, 160)
            assert (out / "preprocessed" / f"{key}_{side}_mask.nii.gz").is_file()


def test_a_stray_nifti_beside_dicom_studies_is_refused(tmp_path, capsys):
    """One .nii.gz at the top of a DICOM folder used to switch the run to NIfTI mode and drop
    every DICOM study without a row; a mixed folder is now refused before any work."""
    source = tmp_path / "in"
    image, affine = np.zeros((12, 10, 8)), np.eye(4)
    write_series(image, affine, source / "study", {"PatientID": "P"}, uid_seed="stray")
    assert input_format(source) == "dicom"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), source / "stray.nii.gz")
    with pytest.raises(InputError, match="1 NIfTI volume"):
        input_format(source)
    code, out = _run(tmp_path, source)
    assert code == 2 and "one kind" in capsys.readouterr().err and not out.exists()
    shutil.rmtree(source / "study")
    assert input_format(source) == "nifti"
