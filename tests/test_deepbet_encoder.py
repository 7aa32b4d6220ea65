"""The deepbet encoder is the trained 3D network on depth-constant input; stacking encoders."""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cs3f.encoders import EncoderError, SliceEncoder, load_encoder
from cs3f.encoders.deepbet_net import DeepbetEncoder, deepbet_weights_path
from cs3f.encoders.stacked import StackedEncoder
from cs3f.encoders.texture import TextureEncoder


@pytest.fixture(scope="module")
def traced():
    """deepbet's own network, as its wheel ships it."""
    return torch.jit.load(str(deepbet_weights_path()), map_location="cpu").eval()


def _brain_like_slice(size: int) -> torch.Tensor:
    """(size, size) in [0, 1]: a bright ring (cortex) around a mid-grey disc with two dark spots."""
    y, x = np.mgrid[:size, :size] / (size - 1) * 2 - 1
    r = np.hypot(x / 0.8, y / 0.9)
    image = np.where(r < 1, 0.55, 0.0) + np.where((r > 0.8) & (r < 1), 0.3, 0.0)
    image -= 0.4 * (np.hypot(x - 0.2, y) < 0.12) + 0.3 * (np.hypot(x + 0.3, y + 0.3) < 0.08)
    return torch.from_numpy(image.clip(0, 1).astype(np.float32))


def test_a_depth_summed_kernel_is_the_3d_convolution_of_a_depth_constant_volume(traced):
    image = _brain_like_slice(48)
    volume = image[None, None, None].repeat(1, 1, 32, 1, 1)  # (N, C, D, H, W), constant in D
    with torch.no_grad():
        full = getattr(traced.init, "0")(volume)  # the 7^3, stride-2 first convolution
    encoder = DeepbetEncoder(stages=("down0",), grid=4, device="cpu")
    reduced = F.conv2d(image[None, None], encoder._w["init.0"], stride=2, padding=3)
    torch.testing.assert_close(full[:, :, 8], reduced, rtol=1e-4, atol=1e-4)


def _stage_errors(traced, encoder: DeepbetEncoder, image: torch.Tensor, depth: int) -> list:
    """Per stage: (max abs difference / max abs value, correlation) between ``encoder``'s layers
    and the traced 3D network's middle slice of ``image`` repeated ``depth`` times, put on the
    patch grid the same way."""
    layers = encoder.encode(image[None])
    relu = getattr(traced.conv, "2")
    x = image[None, None, None].repeat(1, 1, depth, 1, 1)
    errors = []
    with torch.no_grad():
        x = traced.init(relu, x)
        for stage, layer in zip(("down0", "down1", "down2", "down3"), layers, strict=True):
            x = getattr(traced, stage)(relu, x)
            want = encoder._to_grid(x[:, :, x.shape[2] // 2])
            assert layer.shape == want.shape
            relative = float((layer - want).abs().max() / want.abs().max())
            errors.append((relative, float(np.corrcoef(layer.flatten(), want.flatten())[0, 1])))
    return errors


def test_every_stage_tends_to_the_trained_network_on_a_deep_depth_constant_volume(traced):
    # The 3D network pads depth with zeros and its instance norms see the two ends of the volume,
    # so it only tends to the 2D reduction as the depth grows: the difference halves when the
    # depth doubles, and at 4096 slices the middle slice agrees to about 1 % (down3, at 2 x 2 px
    # here, converges slower).
    image = _brain_like_slice(64)
    encoder = DeepbetEncoder(stages=("down0", "down1", "down2", "down3"), grid=4, device="cpu")
    half, full = (_stage_errors(traced, encoder, image, depth) for depth in (2048, 4096))
    for stage, (before, after) in zip(("down0", "down1", "down2"), zip(half, full)):
        assert after[0] <= 0.015 and after[0] <= 0.6 * before[0], (stage, before, after)
        assert after[1] >= 0.9999, stage
    assert full[3][1] >= 0.99 and full[3][0] < half[3][0]


def test_the_registered_encoder_names_its_stage_and_the_weights(traced):
    encoder = load_encoder("deepbet", device="cpu")
    assert isinstance(encoder, SliceEncoder)
    assert encoder.name == "deepbet-down2" and encoder.layer_names == ("deepbet-down2",)
    digest = hashlib.sha256(deepbet_weights_path().read_bytes()).hexdigest()
    assert encoder.weights_sha256 == digest
    slices = torch.rand(3, 90, 110)
    (features,) = encoder.encode(slices)
    assert features.shape == (3, 16, 16, 64) and features.dtype == torch.float32
    torch.testing.assert_close(encoder.encode(slices)[0], features, rtol=0, atol=0)


def test_bad_stages_and_missing_weights_say_what(tmp_path):
    with pytest.raises(EncoderError, match="stages must be among"):
        DeepbetEncoder(stages=("down7",), device="cpu")
    with pytest.raises(EncoderError, match="even grid"):
        DeepbetEncoder(grid=15, device="cpu")
    missing = tmp_path / "model.pt"
    missing.write_bytes(b"not a network")
    with pytest.raises(EncoderError, match=str(missing)):
        DeepbetEncoder(weights=missing, device="cpu")


def test_a_stacked_encoder_returns_every_part_s_layers_in_order():
    histogram = TextureEncoder("histogram", device="cpu")
    deepbet = DeepbetEncoder(device="cpu")
    stacked = load_encoder("histogram+deepbet", device="cpu")
    assert stacked.name == "histogram-p14+deepbet-down2"
    assert stacked.layer_names == ("histogram", "deepbet-down2")
    assert stacked.weights_sha256 == hashlib.sha256(deepbet.weights_sha256.encode()).hexdigest()
    slices = torch.rand(2, 64, 64)
    got = stacked.encode(slices)
    want = histogram.encode(slices) + deepbet.encode(slices)
    assert len(got) == 2
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_stacked_encoders_must_agree_on_grid_and_layer_names():
    with pytest.raises(EncoderError, match="share grid"):
        StackedEncoder(
            TextureEncoder("histogram", device="cpu"), DeepbetEncoder(grid=8, device="cpu")
        )
    with pytest.raises(EncoderError, match="repeat a layer name"):
        StackedEncoder(TextureEncoder("histogram", device="cpu"), TextureEncoder(device="cpu"))
    with pytest.raises(EncoderError, match="at least two"):
        StackedEncoder(TextureEncoder("histogram", device="cpu"))
