"""Dinov2Encoder against facebookresearch's DINOv2 model code, with the same random weights.

The reference is the ``dinov2`` package from PyPI (0.0.1.dev2, a copy of facebookresearch's
``dinov2/models`` and ``dinov2/layers``, installed by ``.ci/install`` without its dependencies;
without xFormers its attention is the plain softmax(q k^T / sqrt(d)) v). Each case builds the
reference ViT the way the hub's ``dinov2_vits14``-style constructors do (image 518, patch 14,
LayerScale 1.0, MLP feed-forward, no block chunks), gives every parameter seeded random values,
converts the state dict to the Hugging Face checkpoint layout (the names the Hub's
``facebook/dinov2-*`` folders use), and loads that folder through :func:`load_encoder`, the
product's only path. The same slices, preprocessed as the product documents (bilinear antialiased
resize to 224, three channels, ImageNet mean and std), go through the reference's
``get_intermediate_layers(x, n=<every block>, norm=True)``; its patch tokens of the blocks the
product reads, as 16 x 16 grids, must equal ``encode()``'s within ``ATOL``, and differ from the
neighbouring block's. (Without ``reference_position_table`` the cases without registers miss by
about 1: transformers' ``Dinov2Model`` resamples the 37 x 37 position table differently.)

The 0.0.1.dev2 copy predates registers (Darcet et al., "Vision Transformers Need Registers"), so
``RegisterReference`` adds them as facebookresearch's later code does: ``num_register_tokens``
learned tokens inserted after the CLS token once position embeddings are added (registers carry
none), and, as the hub's ``*_reg`` models are built (``interpolate_antialias=True``,
``interpolate_offset=0``), position embeddings resampled to the exact patch grid with an
antialiased bicubic filter instead of the original ``scale_factor = (grid + 0.1) / M`` rule.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cs3f.encoders import load_encoder

vits = pytest.importorskip("dinov2.models.vision_transformer")
layers = pytest.importorskip("dinov2.layers")

ATOL = 1e-4
IMAGE_SIZE, PATCH = 518, 14
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class RegisterReference(vits.DinoVisionTransformer):
    """The reference ViT with ``registers`` register tokens; see the module docstring."""

    def __init__(self, registers: int, **shape: object) -> None:
        super().__init__(**shape)
        self.num_register_tokens = registers
        self.register_tokens = torch.nn.Parameter(torch.zeros(1, registers, self.embed_dim))

    def interpolate_pos_encoding(self, x: torch.Tensor, w: int, h: int) -> torch.Tensor:
        """(1, 1 + M * M, D) table -> (1, 1 + (w/14) * (h/14), D), antialiased bicubic to size."""
        m = round((self.pos_embed.shape[1] - 1) ** 0.5)
        grid = (w // self.patch_size, h // self.patch_size)
        if grid == (m, m):
            return self.pos_embed
        table = self.pos_embed.float()
        patches = table[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", antialias=True)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return torch.cat((table[:, :1], patches), dim=1).to(x.dtype)

    def prepare_tokens_with_masks(
        self, x: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + R + N, D): CLS, the R registers, then the patch tokens."""
        tokens = super().prepare_tokens_with_masks(x, masks)
        registers = self.register_tokens.expand(len(tokens), -1, -1)
        return torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)


def build_reference(
    hidden: int, depth: int, heads: int, registers: int, seed: int
) -> vits.DinoVisionTransformer:
    """A reference ViT (patch 14, image 518) in eval mode with every parameter seeded-random.

    Random LayerNorm affines, LayerScale gammas, biases and a position table as large as the
    patch embeddings, so that a swapped or dropped tensor in the conversion cannot go unseen.
    """
    shape = {
        "img_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "embed_dim": hidden,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": 4,
        "init_values": 1.0,
        "ffn_layer": "mlp",
        "block_chunks": 0,
        "block_fn": partial(layers.NestedTensorBlock, attn_class=layers.MemEffAttention),
    }
    model = (
        RegisterReference(registers, **shape) if registers else vits.DinoVisionTransformer(**shape)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith((".gamma", "norm1.weight", "norm2.weight", "norm.weight")):
                param.copy_(1.0 + 0.2 * noise)
            elif name in ("pos_embed", "cls_token", "register_tokens", "mask_token"):
                param.copy_(0.5 * noise)
            else:
                param.copy_((0.02 if param.ndim > 1 else 0.1) * noise)
    return model.eval()


def to_hf(reference: vits.DinoVisionTransformer) -> dict[str, torch.Tensor]:
    """Reference state dict -> Hugging Face DINOv2 checkpoint names (the Hub's layout).

    The mapping of transformers' ``convert_dinov2_to_hf.py``: fused ``attn.qkv`` split into
    query, key and value; ``ls1/ls2.gamma`` -> ``layer_scale1/2.lambda1``; ``norm`` ->
    ``layernorm``.
    """
    out: dict[str, torch.Tensor] = {}
    renames = {
        "cls_token": "embeddings.cls_token",
        "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings",
        "register_tokens": "embeddings.register_tokens",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    block_renames = {
        "attn.proj": "attention.output.dense",
        "ls1.gamma": "layer_scale1.lambda1",
        "ls2.gamma": "layer_scale2.lambda1",
    }
    for name, tensor in reference.state_dict().items():
        tensor = tensor.detach().clone().contiguous()
        if name in renames:
            out[renames[name]] = tensor
            continue
        _, index, rest = name.split(".", 2)  # "blocks.<i>.<rest>"
        prefix = f"encoder.layer.{index}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[f"{prefix}attention.attention.{part}.{kind}"] = chunk.contiguous()
            continue
        for old, new in block_renames.items():
            rest = rest.replace(old, new)
        out[prefix + rest] = tensor
    return out


def write_hf_folder(reference: vits.DinoVisionTransformer, folder: Path, registers: int) -> Path:
    """Save the reference's weights as a Hugging Face DINOv2 checkpoint folder; returns it."""
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    shape = {
        "hidden_size": reference.embed_dim,
        "num_hidden_layers": reference.n_blocks,
        "num_attention_heads": reference.num_heads,
        "mlp_ratio": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "layerscale_value": 1.0,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "use_swiglu_ffn": False,
    }
    config = (
        Dinov2WithRegistersConfig(**shape, num_register_tokens=registers)
        if registers
        else Dinov2Config(**shape)
    )
    config.save_pretrained(folder)
    save_file(to_hf(reference), folder / "model.safetensors", metadata={"format": "pt"})
    assert json.loads((folder / "config.json").read_text())["model_type"] == config.model_type
    return folder


def preprocess(slices: torch.Tensor) -> torch.Tensor:
    """(S, H, W) in [0, 1] -> (S, 3, 224, 224): bilinear antialiased resize, ImageNet norm."""
    x = F.interpolate(
        slices[:, None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False
    )
    return (x.expand(-1, 3, -1, -1) - IMAGENET_MEAN) / IMAGENET_STD


CASES = {
    # name: (hidden, depth, heads, registers, the blocks the product must read)
    "vits14": (384, 12, 6, 0, (3, 6, 9, 12)),
    "vits14-reg4": (384, 12, 6, 4, (3, 6, 9, 12)),
    "vitl14-depth-narrow": (64, 24, 2, 0, (6, 12, 18, 24)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_features_equal_the_reference_dinov2(case: str, tmp_path: Path) -> None:
    hidden, depth, heads, registers, blocks = CASES[case]
    reference = build_reference(hidden, depth, heads, registers, seed=depth + registers)
    encoder = load_encoder("dinov2", write_hf_folder(reference, tmp_path, registers), device="cpu")
    assert encoder.blocks == blocks and encoder.grid == 16
    assert encoder.layer_names == tuple(f"block{b}" for b in blocks)

    generator = torch.Generator().manual_seed(1)
    slices = torch.rand(3, 90, 110, generator=generator)
    got = encoder.encode(slices)

    with torch.no_grad():
        every_block = reference.get_intermediate_layers(
            preprocess(slices), n=range(depth), norm=True
        )
    # the package's copy keeps registers in the patch tokens; drop them as the later code does
    want = [out[:, registers:].reshape(3, 16, 16, hidden) for out in every_block]

    for layer, block in zip(got, blocks):
        assert layer.shape == (3, 16, 16, hidden) and layer.dtype == torch.float32
        diff = (layer - want[block - 1]).abs().max().item()
        print(f"{case} block {block}: max abs diff {diff:.2e}")
        assert diff <= ATOL, f"{case} block {block}: max abs diff {diff:.3g} > {ATOL}"
        neighbour = want[block - 2] if block > 1 else want[block]
        assert (layer - neighbour).abs().max().item() > 100 * ATOL  # blocks are told apart
