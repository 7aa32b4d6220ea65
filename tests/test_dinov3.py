"""DINOv3 ViT checkpoints through the same loader as DINOv2: random weights saved in HF format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cs3f.encoders import EncoderError, load_encoder
from cs3f.encoders.dinov2 import write_random_checkpoint

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tiny_dinov3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block DINOv3 ViT (patch 16, 4 registers) with random weights, via save_pretrained."""
    folder = tmp_path_factory.mktemp("models") / "dinov3-tiny"
    return write_random_checkpoint(
        folder,
        hidden_size=32,
        num_layers=4,
        num_heads=2,
        intermediate_size=64,
        registers=4,
        family="dinov3",
    )


def test_tiny_dinov3_matches_a_direct_forward(tiny_dinov3: Path) -> None:
    from transformers import DINOv3ViTModel

    encoder = load_encoder("dinov3", tiny_dinov3.parent, device="cpu")  # finds the one subfolder
    assert encoder.name == "dinov3-vit32d"
    assert encoder.layer_names == ("block1", "block2", "block3", "block4")
    assert (encoder.grid, encoder.resolution, encoder.n_prefix) == (16, 256, 5)
    digest = hashlib.sha256(
        b"model.safetensors" + (tiny_dinov3 / "model.safetensors").read_bytes()
    ).hexdigest()
    assert encoder.weights_sha256 == digest

    slices = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    layers = encoder.encode(slices)
    assert [tuple(x.shape) for x in layers] == [(3, 16, 16, 32)] * 4
    assert all(x.dtype == torch.float32 for x in layers)

    model = DINOv3ViTModel.from_pretrained(tiny_dinov3).eval()
    x = F.interpolate(slices[:, None], size=(256, 256), mode="bilinear", antialias=True)
    x = (x.expand(-1, 3, -1, -1) - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states
    assert len(hidden) == 5  # the embeddings, then one per block
    for block, layer in enumerate(layers, start=1):
        want = model.norm(hidden[block])[:, 5:].reshape(3, 16, 16, 32)  # CLS + 4 registers off
        torch.testing.assert_close(layer, want, rtol=1e-4, atol=1e-4)


def test_dinov3_features_are_deterministic(tiny_dinov3: Path, tmp_path: Path) -> None:
    slices = torch.rand(2, 30, 30, generator=torch.Generator().manual_seed(1))
    first = load_encoder("dinov3", tiny_dinov3, device="cpu")
    second = load_encoder("dinov3", tiny_dinov3, device="cpu")
    for a, b, c in zip(first.encode(slices), first.encode(slices), second.encode(slices)):
        assert torch.equal(a, b) and torch.equal(a, c)

    shape = {"hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64}
    again = write_random_checkpoint(tmp_path / "again", **shape, registers=4, family="dinov3")
    other = write_random_checkpoint(tmp_path / "b", **shape, registers=4, seed=1, family="dinov3")
    assert load_encoder("dinov3", again, device="cpu").weights_sha256 == first.weights_sha256
    assert load_encoder("dinov3", other, device="cpu").weights_sha256 != first.weights_sha256


def test_dinov3_vits16_is_named_by_its_size(tmp_path: Path) -> None:
    write_random_checkpoint(
        tmp_path, hidden_size=384, num_layers=1, num_heads=6, registers=4, family="dinov3"
    )
    encoder = load_encoder("dinov3", tmp_path, device="cpu")
    assert encoder.name == "dinov3-vits16" and encoder.layer_names == ("block1",)
    assert [tuple(x.shape) for x in encoder.encode(torch.rand(1, 20, 20))] == [(1, 16, 16, 384)]


def test_missing_or_mismatched_dinov3_checkpoints_say_what_and_where(
    tmp_path: Path, tiny_dinov3: Path, tiny_dinov2: Path
) -> None:
    from safetensors.numpy import load_file, save_file

    with pytest.raises(EncoderError, match="no model path given for the dinov3 encoder"):
        load_encoder("dinov3", None)
    with pytest.raises(EncoderError, match=f"no DINOv3 checkpoint under {tmp_path}"):
        load_encoder("dinov3", tmp_path)
    with pytest.raises(EncoderError, match="holds a DINOv2 one: use the dinov2 encoder"):
        load_encoder("dinov3", tiny_dinov2)
    with pytest.raises(EncoderError, match="holds a DINOv3 one: use the dinov3 encoder"):
        load_encoder("dinov2", tiny_dinov3)

    config = json.loads((tiny_dinov3 / "config.json").read_text())
    assert config["model_type"] == "dinov3_vit" and config["patch_size"] == 16
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="no weight files"):
        load_encoder("dinov3", no_weights)

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps(config))
    weights = load_file(tiny_dinov3 / "model.safetensors")
    kept = {k: v for k, v in weights.items() if "layer.3." not in k}
    assert len(kept) < len(weights)
    save_file(kept, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EncoderError, match="DINOv3 checkpoint .* refusing to run with random"):
        load_encoder("dinov3", partial)
