"""The reference-bank commands end to end, on small atlas-space NIfTI studies (no registration,
so seconds): build, describe, screen one study alone, add, remove, and every bad input refused
with its documented exit code before any work."""

import json

import nibabel as nib
import numpy as np
import pytest

from app.__main__ import main
from app.settings import load_settings
from cs3f.encoders import load_encoder
from cs3f.preprocess.template import template_brain, template_mask

FAST = [
    "--encoder", "pixels",
    "--set", "preprocess.input=atlas",
    "--set", "preprocess.size=64",
    "--set", "tokens.q_coarse=8",
    "--set", "tokens.dim=32",
]  # fmt: skip


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three normal brains for the bank and a fourth with a bright block (MNI152, 2 mm)."""
    root = tmp_path_factory.mktemp("studies")
    brain, mask = template_brain(2), template_mask(2).array
    rng = np.random.default_rng(0)
    for n in range(4):
        image = mask * brain.array * (1 + 0.05 * rng.standard_normal(mask.shape))
        if n == 3:
            image[40:50, 50:60, 40:50] *= 1.8
        folder = root / ("normal" if n < 3 else "new")
        folder.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(image.astype(np.float32), brain.affine), folder / f"s{n}.nii.gz")
    return root


def _describe(bank, capsys):
    capsys.readouterr()
    assert main(["bank", "describe", "--bank", str(bank)]) == 0
    return capsys.readouterr().out


def test_build_screen_alone_add_and_remove(studies, tmp_path, capsys):
    bank = tmp_path / "bank"
    assert main(["bank", "build", "-i", str(studies / "normal"), "--bank", str(bank), *FAST]) == 0
    text = _describe(bank, capsys)
    assert "volumes: 3" in text and '"dim": 32' in text and "pixels-p14" in text
    built = json.loads((bank / "bank.json").read_text())["calibration"]

    out = tmp_path / "out"
    code = main(["-i", str(studies / "new"), "-o", str(out), "--bank", str(bank), *FAST])
    assert code == 0
    scores = json.loads((out / "scores.json").read_text())
    (study,) = scores["studies"]
    assert study["status"] == "scored" and study["flagged"]  # the bright block, against normals
    reference = {"bank": str(bank), "volumes": 3, "search": "pairwise", "exact": True}
    assert scores["run"]["reference"] == reference  # MS: coarse-to-fine routes per volume
    assert "index: none" in text  # nor does an MS bank keep one
    assert scores["run"]["voxel_threshold"] == pytest.approx(built["voxel_threshold"])
    assert list((out / "seg").glob("*.nii.gz")) or list((out / "seg").iterdir())

    assert main(["bank", "add", "-i", str(studies / "new"), "--bank", str(bank), *FAST]) == 0
    assert "volumes: 4" in _describe(bank, capsys)
    pseudonym = study["pseudonym"]
    assert main(["bank", "remove", "--bank", str(bank), "--volume", pseudonym]) == 0
    assert "volumes: 3" in _describe(bank, capsys)
    again = json.loads((bank / "bank.json").read_text())["calibration"]
    # the remaining three scored again from their stored tokens: the statistics built with them
    assert again["voxel_threshold"] == pytest.approx(built["voxel_threshold"], rel=1e-5)
    assert again["reference_scores"] == pytest.approx(built["reference_scores"], rel=1e-5)


def test_bad_banks_and_inputs_stop_before_any_work(studies, tmp_path, capsys):
    bank = tmp_path / "bank"
    assert main(["bank", "build", "-i", str(studies / "normal"), "--bank", str(bank), *FAST]) == 0
    capsys.readouterr()
    out = tmp_path / "out"

    def refused(*argv) -> str:
        assert main(list(argv)) == 2
        assert not out.exists()
        return capsys.readouterr().err

    other = [*FAST[:-1], "tokens.dim=64"]
    message = refused("-i", str(studies / "new"), "-o", str(out), "--bank", str(bank), *other)
    assert "tokens.dim: bank 32, this run 64" in message
    message = refused(
        "-i", str(studies / "new"), "-o", str(out), "--bank", str(bank), *FAST,
        "--set", "scoring.bank_index=ivf",
    )  # fmt: skip
    assert "bank_index 'ivf' serves variant C only" in message
    message = refused("bank", "add", "-i", str(studies / "new"), "--bank", str(bank), *other)
    assert "tokens.dim: bank 32, this run 64" in message
    message = refused("bank", "build", "-i", str(studies / "new"), "--bank", str(bank), *FAST)
    assert "already exists" in message
    assert "not a readable reference bank" in refused(
        "-i", str(studies / "new"), "-o", str(out), "--bank", str(tmp_path / "nothing"), *FAST
    )
    assert "no volume 'deadbeef'" in refused(
        "bank", "remove", "--bank", str(bank), "--volume", "deadbeef"
    )
    assert "searched pairwise" in refused("bank", "index", "--bank", str(bank))  # an MS bank
    features = min(bank.glob("volumes/*/brain/*coarse.features.npy"))
    features.write_bytes(features.read_bytes()[:-64])  # cut short
    assert "is damaged" in refused("bank", "describe", "--bank", str(bank))


def test_a_variant_c_bank_keeps_an_index_and_an_empty_folder_is_a_clear_error(
    studies, tmp_path, capsys
):
    bank, empty, out = tmp_path / "bank", tmp_path / "empty", tmp_path / "out"
    c = [*FAST, "--set", "scoring.variant=C"]
    assert main(["bank", "build", "-i", str(studies / "normal"), "--bank", str(bank), *c]) == 0
    text = _describe(bank, capsys)
    assert "index: 0001" in text and "held-out recall" in text
    ivf = [*c, "--set", "scoring.bank_index=ivf"]
    assert main(["-i", str(studies / "new"), "-o", str(out), "--bank", str(bank), *ivf]) == 0
    reference = json.loads((out / "scores.json").read_text())["run"]["reference"]
    assert reference["search"] == "ivf" and reference["exact"] is False
    assert reference["index"] == "0001" and len(reference["layouts"]) == 3  # one per axis
    assert all(0.98 <= layout["recall"] <= 1 for layout in reference["layouts"])
    assert main(["bank", "index", "--bank", str(bank)]) == 0  # trained again, same settings
    assert "index: 0002" in _describe(bank, capsys)
    lists = min(bank.glob("index/0002/*.lists.npy"))
    lists.write_bytes(lists.read_bytes()[:-40])  # cut short
    for argv in (["bank", "describe"], ["-i", str(studies / "new"), "-o", str(out), *ivf]):
        assert main([*argv, "--bank", str(bank)]) == 2
        assert "index of" in capsys.readouterr().err  # damaged, and `bank index` rebuilds it
    assert main(["bank", "index", "--bank", str(bank)]) == 0
    assert "index: 0003" in _describe(bank, capsys)

    empty.mkdir()
    assert main(["-i", str(empty), "-o", str(out), "--bank", str(bank), "--overwrite", *c]) == 1
    error = json.loads((out / "scores.json").read_text())["run"]["error"]
    assert error == "no scorable study to screen against the bank"


def test_a_bank_of_one_study_is_not_built(studies, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    (one / "s0.nii.gz").write_bytes((studies / "normal" / "s0.nii.gz").read_bytes())
    assert main(["bank", "build", "-i", str(one), "--bank", str(tmp_path / "bank"), *FAST]) == 1
    assert "needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "bank").exists()


def test_files_named_by_the_settings_count_by_their_contents(tmp_path):
    """The lung model and the Nyul landmarks are part of a bank's identity by SHA-256: the same
    file elsewhere is the same identity, another file of the same name is not."""
    encoder = load_encoder("pixels", device="cpu")
    for folder, values in (("a", [1.0, 2.0]), ("b", [1.0, 3.0])):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "landmarks.npy", np.array(values))
        (tmp_path / folder / "lungs.pth").write_bytes(folder.encode())
    (tmp_path / "copy.npy").write_bytes((tmp_path / "a" / "landmarks.npy").read_bytes())

    def identity(landmarks: str, lungs: str = "a") -> dict:
        lung_model = tmp_path / lungs / "lungs.pth"
        sets = [f"preprocess.landmarks={landmarks}", f"preprocess.lung_model={lung_model}"]
        return load_settings(None, sets).identity(encoder)["preprocess"]

    same = identity(str(tmp_path / "a" / "landmarks.npy"))
    assert same["landmarks"].startswith("sha256:") and same["lung_model"].startswith("sha256:")
    assert identity(str(tmp_path / "copy.npy")) == same
    assert identity(str(tmp_path / "b" / "landmarks.npy"))["landmarks"] != same["landmarks"]
    assert identity(str(tmp_path / "copy.npy"), "b")["lung_model"] != same["lung_model"]
