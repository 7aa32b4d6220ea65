"""Lung CT preprocessing: a synthetic chest phantom with known lungs, and the real (abdominal)
CT series in ../shared/data, which holds only slivers of lung base."""

import os

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA

from cs3f.io.dicom_volume import series_volume
from cs3f.preprocess.lungs import lung_masks, preprocess_lungs
from cs3f.preprocess.standard_space import PreprocessingFailed, PreprocessSettings
from cs3f.volume import Volume, aligned_grid, resample

CT = SHARED_DATA / "dicom" / "ct_abdomen"
SMALL = PreprocessSettings(lung_crop=(96, 128, 160))


def chest_phantom(seed=0):
    """An axial chest CT in HU on a DICOM-like grid (i to the patient's left, j posterior):
    body, two lungs joined by a trachea, a spine, a gas bubble under the left lung, air outside.
    The patient's left is DICOM +x, so -x in the RAS world of the Volume.
    Returns the Volume and the true left and right lung masks."""
    rng = np.random.default_rng(seed)
    shape, step = (200, 160, 90), (1.5, 1.5, 2.5)
    affine = np.diag([-step[0], -step[1], step[2], 1.0])
    affine[:3, 3] = [150.0, 120.0, -100.0]
    world = (
        np.einsum("ij,jxyz->ixyz", affine[:3, :3], np.indices(shape))
        + affine[:3, 3, None, None, None]
    )
    x, y, z = world
    hu = np.full(shape, -1000.0)
    body = (x / 140) ** 2 + (y / 100) ** 2 < 1
    hu[body] = 40.0
    lungs = {}
    for name, cx in (("left lung", -65.0), ("right lung", 65.0)):
        lungs[name] = ((x - cx) / 50) ** 2 + (y / 70) ** 2 + ((z - 20) / 85) ** 2 < 1
        hu[lungs[name]] = -850.0
    trachea = (x**2 + (y - 20) ** 2 < 64) & (z > 40)
    hu[trachea & body] = -1000.0
    bridge = (np.abs(x) < 60) & ((y - 20) ** 2 < 25) & (np.abs(z - 40) < 4)
    hu[bridge & body] = -1000.0
    hu[(x**2 + (y + 75) ** 2 < 300)] = 400.0  # spine
    hu[((x + 50) ** 2 + (y - 40) ** 2 + (z + 85) ** 2 < 100)] = -1000.0  # gas below the diaphragm
    hu += rng.normal(0, 15, shape)
    return Volume(hu.astype(np.float32), affine), lungs


def test_phantom_lungs_are_found_on_the_right_sides():
    volume, truth = chest_phantom()
    shape, affine = aligned_grid(volume.shape, volume.affine, 1.0)
    hu = resample(volume.array, volume.affine, shape, affine, cval=-1024)
    masks = lung_masks(hu, affine, -400.0)
    for name, mask in masks.items():
        expected = resample(truth[name].astype(np.uint8), volume.affine, shape, affine, 0) > 0
        dice = 2 * (mask & expected).sum() / (mask.sum() + expected.sum())
        centroid_x = affine[0, 0] * np.argwhere(mask)[:, 0].mean() + affine[0, 3]
        print(f"{name}: Dice {dice:.3f}, centroid x {centroid_x:+.0f} mm")
        assert dice > 0.95
        assert (centroid_x < 0) == (name == "left lung")  # RAS: +x is the patient's right


def test_phantom_crops_have_the_exact_size_and_map_back_onto_the_source():
    volume, truth = chest_phantom()
    regions = preprocess_lungs(volume, SMALL)
    assert [r.region for r in regions] == ["left lung", "right lung"]
    combined = np.zeros(volume.shape, np.float32)
    for region in regions:
        assert region.volume.shape == region.mask.shape == (96, 128, 160)
        np.testing.assert_allclose(np.linalg.norm(region.affine[:3, :3], axis=0), 1.0)
        assert 0 <= region.volume.min() and region.volume.max() <= 1
        back = region.transform.to_source(region.mask.astype(np.float32)) > 0.5
        assert back.shape == volume.shape
        inside = (back & truth[region.region]).sum() / back.sum()
        assert inside > 0.9, (region.region, inside)
        combined = np.maximum(combined, region.transform.to_source(region.mask.astype(np.float32)))
    lungs = truth["left lung"] | truth["right lung"]
    dice = 2 * ((combined > 0.5) & lungs).sum() / ((combined > 0.5).sum() + lungs.sum())
    assert dice > 0.9


def test_no_lungs_means_no_chest_ct():
    volume, _ = chest_phantom()
    with pytest.raises(PreprocessingFailed, match="chest CT"):
        preprocess_lungs(
            Volume(np.where(volume.array < -500, 40.0, volume.array), volume.affine), SMALL
        )


@pytest.mark.skipif(not CT.is_dir(), reason="../shared/data absent")
def test_real_abdominal_ct():
    """The shared CT is an upper abdomen with only slivers of lung: the default settings refuse
    it as not a chest CT; with the size check off, the masks come out non-empty and each on its
    own side of the body, the crops have the exact size and map back onto the source grid."""
    volume, _ = series_volume([pydicom.dcmread(p) for p in sorted(CT.iterdir())])
    with pytest.raises(PreprocessingFailed, match="chest CT"):
        preprocess_lungs(volume, SMALL)
    regions = preprocess_lungs(volume, PreprocessSettings(lung_crop=(96, 128, 160), min_lung_ml=0))
    world_x = {}
    for region in regions:
        assert region.volume.shape == (96, 128, 160) and region.mask.any()
        back = region.transform.to_source(region.mask.astype(np.float32)) > 0.5
        assert back.shape == volume.shape and back.any()
        index = np.argwhere(back)
        world_x[region.region] = (volume.affine[:3, :3] @ index.T + volume.affine[:3, 3:]).T[:, 0]
    # DICOM's +x (LPS) is the patient's left, so RAS x = -DICOM x is lower on the left
    assert world_x["left lung"].max() < world_x["right lung"].min()


class _SidedLungmask:
    """Stands in for lungmask's R231 inferer with its contract: a SimpleITK image in, labels in
    the image's array order out, 1 = right lung, 2 = left lung. It labels air inside the body by
    the DICOM (LPS) x of each voxel, +x being the patient's left."""

    def apply(self, image):
        import SimpleITK as sitk

        hu = sitk.GetArrayFromImage(image)  # (Z, Y, X)
        index = np.indices(hu.shape)[::-1].reshape(3, -1)  # (i, j, k) per voxel
        direction = np.reshape(image.GetDirection(), (3, 3))
        lps = direction @ (np.reshape(image.GetSpacing(), (3, 1)) * index)
        lps_x = (lps[0] + image.GetOrigin()[0]).reshape(hu.shape)
        lungs = (hu < -400) & (hu > -950) & (np.abs(lps_x) < 120)
        return np.where(lungs, np.where(lps_x > 0, 2, 1), 0).astype(np.uint8)


def test_lungmask_labels_reach_the_right_regions(tmp_path, monkeypatch):
    """With weights given, the lung path uses lungmask's labels; the image handed over carries
    the geometry, so its 1/2 labels land on the patient's right/left lung."""
    import cs3f.preprocess.lung_model

    weights = tmp_path / "unet_r231.pth"
    weights.write_bytes(b"")
    monkeypatch.setattr(
        cs3f.preprocess.lung_model, "load_lung_model", lambda path: _SidedLungmask()
    )
    volume, truth = chest_phantom()
    settings = PreprocessSettings(lung_crop=(96, 128, 160), lung_model=str(weights))
    regions = preprocess_lungs(volume, settings)
    for region in regions:
        assert "lungmask R231 (unet_r231.pth)" in region.details["steps"][1]
        back = region.transform.to_source(region.mask.astype(np.float32)) > 0.5
        inside = (back & truth[region.region]).sum() / back.sum()
        assert inside > 0.9, (region.region, inside)


def test_lungmask_weights_load_through_the_same_code(tmp_path):
    """A random-weight R231 U-Net saved as a state dict loads and runs through
    model_lung_masks; the masks come back on the input grid (their content is noise)."""
    import torch
    from lungmask.resunet import UNet

    from cs3f.preprocess.lung_model import model_lung_masks

    torch.manual_seed(0)
    net = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True)
    weights = tmp_path / "random_r231.pth"
    torch.save(net.state_dict(), weights)
    volume, _ = chest_phantom()
    shape, affine = aligned_grid(volume.shape, volume.affine, 4.0)
    hu = resample(volume.array, volume.affine, shape, affine, cval=-1024)[:, :, 25:29]
    masks = model_lung_masks(hu, affine, str(weights))  # four slices: the U-Net is slow on a CPU
    assert set(masks) == {"left lung", "right lung"}
    for mask in masks.values():
        assert mask.shape == hu.shape and mask.dtype == bool
    assert not (masks["left lung"] & masks["right lung"]).any()


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_weight_file_never_runs_code(tmp_path, monkeypatch):
    """lungmask calls torch.load without weights_only, which this variable turns into a full
    unpickle; the file is still loaded weights-only and refused, and its code never runs."""
    import torch

    from cs3f.preprocess.lung_model import LungModelError, load_lung_model

    marker = tmp_path / "pwned"
    crafted = tmp_path / "unet_r231.pth"
    torch.save({"model": _Payload(marker)}, crafted)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(LungModelError, match="plain R231 state dict"):
        load_lung_model(str(crafted))
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # the environment is restored
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_a_bad_weight_file_stops_the_run_before_any_work(tmp_path, capsys):
    from app.__main__ import main

    (tmp_path / "in").mkdir()
    (tmp_path / "models" / "lungmask").mkdir(parents=True)
    (tmp_path / "models" / "lungmask" / "unet_r231.pth").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    argv = ["-i", str(tmp_path / "in"), "-o", str(out), "-m", str(tmp_path / "models")]
    assert main([*argv, "--task", "lung-ct", "--encoder", "pixels"]) == 2
    assert "unet_r231.pth cannot be loaded" in capsys.readouterr().err and not out.exists()


def test_the_app_finds_lungmask_weights_in_the_model_folder(tmp_path):
    from app.settings import SettingsError, load_settings, with_lung_weights

    (tmp_path / "lungmask").mkdir()
    lung = load_settings(task="lung-ct")
    assert with_lung_weights(lung, tmp_path).preprocess.lung_model == ""
    (tmp_path / "lungmask" / "unet_r231-d5d2fc3d.pth").write_bytes(b"")
    found = with_lung_weights(lung, tmp_path).preprocess.lung_model
    assert found == str(tmp_path / "lungmask" / "unet_r231-d5d2fc3d.pth")
    assert with_lung_weights(load_settings(), tmp_path).preprocess.lung_model == ""
    (tmp_path / "lungmask" / "other.pth").write_bytes(b"")
    with pytest.raises(SettingsError, match="several"):
        with_lung_weights(lung, tmp_path)
