"""Encoders: the weight-free pixel encoder and DINOv2 loaded through the real loader."""

import hashlib
import json

import numpy as np
import pytest
import torch

from cs3f.encoders import EncoderError, SliceEncoder, load_encoder
from cs3f.encoders.dinov2 import default_blocks, write_random_checkpoint


def test_pixel_features_are_the_patch_intensities():
    encoder = load_encoder("pixels", device="cpu")
    assert isinstance(encoder, SliceEncoder) and encoder.weights_sha256 is None
    slices = torch.rand(2, 224, 224)  # already 224: no resize, features are exact pixels
    (features,) = encoder.encode(slices)
    assert features.shape == (2, 16, 16, 196)
    torch.testing.assert_close(features[1, 3, 5], slices[1, 42:56, 70:84].reshape(-1))


def test_default_blocks():
    assert default_blocks(24) == (6, 12, 18, 24)
    assert default_blocks(12) == (3, 6, 9, 12)
    assert default_blocks(40) == (10, 20, 30, 40)
    assert default_blocks(3) == (1, 2, 3)


def test_tiny_dinov2_matches_a_direct_forward(tiny_dinov2):
    from transformers import Dinov2Model

    encoder = load_encoder("dinov2", tiny_dinov2.parent, device="cpu")  # finds the one subfolder
    assert encoder.name == "dinov2-vit32d" and encoder.layer_names == (
        "block1",
        "block2",
        "block3",
        "block4",
    )
    digest = hashlib.sha256(
        b"model.safetensors" + (tiny_dinov2 / "model.safetensors").read_bytes()
    ).hexdigest()
    assert encoder.weights_sha256 == digest

    slices = torch.rand(3, 40, 50)
    layers = encoder.encode(slices)
    assert [tuple(x.shape) for x in layers] == [(3, 16, 16, 32)] * 4

    model = Dinov2Model.from_pretrained(tiny_dinov2).eval()
    x = torch.nn.functional.interpolate(
        slices[:, None], size=(224, 224), mode="bilinear", antialias=True
    )
    x = (
        x.expand(-1, 3, -1, -1) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    ) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states
    want = model.layernorm(hidden[2])[:, 1:].reshape(3, 16, 16, 32)
    torch.testing.assert_close(layers[1], want, rtol=1e-4, atol=1e-4)


def test_register_tokens_are_dropped(tmp_path):
    write_random_checkpoint(
        tmp_path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, registers=4
    )
    encoder = load_encoder("dinov2", tmp_path, device="cpu")
    assert encoder.n_prefix == 5 and encoder.name.endswith("-reg")
    assert [tuple(x.shape) for x in encoder.encode(torch.rand(2, 30, 30))] == [(2, 16, 16, 32)] * 2


def test_missing_and_malformed_checkpoints_say_what_and_where(tmp_path, tiny_dinov2):
    with pytest.raises(EncoderError, match="no model path"):
        load_encoder("dinov2", None)
    with pytest.raises(EncoderError, match=r"not a folder.*config\.json"):
        load_encoder("dinov2", tmp_path / "absent")
    with pytest.raises(EncoderError, match=f"no DINOv2 checkpoint under {tmp_path}"):
        load_encoder("dinov2", tmp_path)

    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(EncoderError, match="no DINOv2 checkpoint"):
        load_encoder("dinov2", other)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_dinov2 / "config.json").read_text())
    with pytest.raises(EncoderError, match="no weight files"):
        load_encoder("dinov2", no_weights)

    from safetensors.numpy import load_file, save_file

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_dinov2 / "config.json").read_text())
    weights = load_file(tiny_dinov2 / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if "layer.3." not in k},
        partial / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(EncoderError, match="refusing to run with random weights"):
        load_encoder("dinov2", partial)

    with pytest.raises(EncoderError, match="unknown encoder"):
        load_encoder("resnet")


def test_tiny_dinov2_runs_end_to_end(tiny_dinov2):
    from conftest import smooth_volume

    from cs3f.method.batch_scorer import BatchScorer, ScoringSettings
    from cs3f.method.tokens import TokenSettings

    encoder = load_encoder("dinov2", tiny_dinov2, device="cpu")
    scorer = BatchScorer(encoder, TokenSettings(q_coarse=6, q_fine=2, dim=16), ScoringSettings(k=1))
    masks = []
    for seed in range(3):
        volume, mask = smooth_volume((12, 14, 10), seed)
        scorer.add(volume, mask)
        masks.append(mask)
    result = scorer.score()
    assert len(result.token_scores) == 3 * 4 * 2  # axes x blocks x levels
    maps = [result.voxel_map(i, m) for i, m in enumerate(masks)]
    assert all(np.isfinite(m).all() and m.max() > 0 and not m[~masks[0]].any() for m in maps)
