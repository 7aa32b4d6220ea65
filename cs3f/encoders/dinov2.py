"""A frozen DINOv2 or DINOv3 ViT (any size, with or without registers) from a local HF folder.

The folder is what ``save_pretrained`` writes: ``config.json`` (``model_type`` ``dinov2`` or
``dinov2_with_registers`` for DINOv2, ``dinov3_vit`` for DINOv3) and ``model.safetensors`` (or
``pytorch_model.bin``, or shards). Nothing is downloaded: loading is ``local_files_only``.

Per slice: resize to 16 x patch size (224 x 224 for DINOv2's patch 14, 256 x 256 for DINOv3's
patch 16), replicate to 3 channels, ImageNet-normalise, run the ViT, and take the hidden states
after the chosen blocks (6, 12, 18, 24 for ViT-L; evenly spaced for other depths), each through
the model's final LayerNorm as DINOv2's own ``get_intermediate_layers`` does by default. The CLS
and register tokens are dropped, leaving a 16 x 16 patch grid.

DINOv2 without registers resamples its learned 37 x 37 position table to the 16 x 16 grid as
facebookresearch's code does (bicubic with scale factor (16 + 0.1) / 37), not as transformers'
``Dinov2Model`` does (bicubic to size 16, which moves the sampling points by up to 0.22 table
cells and changes the features by percents, not by rounding); the with-registers models resample
to size 16 with antialiasing in both, and DINOv3 has no table (RoPE).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from cs3f.device import resolve_device
from cs3f.encoders.base import EncoderError, resize_slices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FAMILIES = {"dinov2": ("dinov2", "dinov2_with_registers"), "dinov3": ("dinov3_vit",)}
LABELS = {"dinov2": "DINOv2", "dinov3": "DINOv3"}
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
GRID = 16
VIT_NAMES = {384: "vits14", 768: "vitb14", 1024: "vitl14", 1536: "vitg14"}
# DINOv3 sizes by (hidden size, gated MLP): the released ViT-S/16, S+/16, B/16, L/16, H+/16, 7B/16
DINOV3_NAMES = {
    (384, False): "vits16",
    (384, True): "vits16plus",
    (768, False): "vitb16",
    (1024, False): "vitl16",
    (1280, True): "vith16plus",
    (4096, True): "vit7b16",
}


def default_blocks(depth: int, count: int = 4) -> tuple[int, ...]:
    """``count`` evenly spaced block indices ending at the last block (1-based).

    24 blocks (ViT-L) -> (6, 12, 18, 24); 12 (ViT-S/B) -> (3, 6, 9, 12); 40 (ViT-g) ->
    (10, 20, 30, 40); fewer blocks than ``count`` -> every block.
    """
    count = min(count, depth)
    return tuple(round(depth * (i + 1) / count) for i in range(count))


def find_checkpoint(model_path: str | Path | None, family: str = "dinov2") -> Path:
    """The ``family`` (``"dinov2"`` or ``"dinov3"``) folder: ``model_path`` or its one subfolder.

    Raises:
        EncoderError: nothing there, no config of the family, several candidates, or no weights.
    """
    label, model_types = LABELS[family], FAMILIES[family]
    expected = (
        f"expected a Hugging Face {label} checkpoint folder (config.json with model_type "
        f"{' or '.join(model_types)}, plus model.safetensors or pytorch_model.bin)"
    )
    if model_path is None:
        raise EncoderError(f"no model path given for the {family} encoder: {expected}")
    root = Path(model_path)
    if not root.is_dir():
        raise EncoderError(f"model path {root} is not a folder: {expected}")
    candidates = (
        [root]
        if (root / "config.json").is_file()
        else sorted(p.parent for p in root.glob("*/config.json"))
    )
    found = {c: _model_type(c) for c in candidates}
    candidates = [c for c, model_type in found.items() if model_type in model_types]
    if not candidates:
        others = [f for f, types in FAMILIES.items() if set(types) & set(found.values())]
        hint = (
            f" (it holds a {LABELS[others[0]]} one: use the {others[0]} encoder)" if others else ""
        )
        raise EncoderError(f"no {label} checkpoint under {root}{hint}: {expected}")
    if len(candidates) > 1:
        names = ", ".join(str(c) for c in candidates)
        raise EncoderError(f"several {label} checkpoints under {root} ({names}); point at one")
    folder = candidates[0]
    if not _weight_files(folder):
        raise EncoderError(f"{folder} has a config.json but no weight files: {expected}")
    return folder


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as err:
        raise EncoderError(f"cannot read {folder / 'config.json'}: {err}") from err


def _weight_files(folder: Path) -> list[Path]:
    return sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the weight files of a checkpoint folder, in sorted name order."""
    digest = hashlib.sha256()
    for path in _weight_files(folder):
        digest.update(path.name.encode())
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(2**20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def reference_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """DINOv2's (1, 1 + M * M, D) position table resampled for a grid x grid patch input.

    As facebookresearch's ``interpolate_pos_encoding`` with its default ``interpolate_offset``
    0.1 (every DINOv2 model without registers): bicubic, no antialiasing, scale factor
    (grid + 0.1) / M, in float32. Returns (1, 1 + grid * grid, D) in ``table``'s dtype.
    """
    m = round((table.shape[1] - 1) ** 0.5)
    if m == grid:
        return table
    patches = table[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / m
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat((table[:, :1], patches.to(table.dtype)), dim=1)


class Dinov2Encoder:
    """Frozen DINOv2 or DINOv3 patch features after selected blocks; see the module docstring.

    Args:
        model: a loaded ``Dinov2Model``, ``Dinov2WithRegistersModel`` or ``DINOv3ViTModel``.
            A ``Dinov2Model``'s position table is replaced by
            :func:`reference_position_table`'s 16 x 16 one.
        blocks: 1-based block indices to read (default: :func:`default_blocks`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``. On CUDA the forward runs under bf16
            autocast with PyTorch's fused scaled-dot-product attention; on CPU it stays fp32.
        batch_size: slices per forward pass (default 64 on CUDA, 16 on CPU).
        name, sha256: identification written into every output.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        blocks: tuple[int, ...] | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        name: str = "dinov2",
        sha256: str | None = None,
    ) -> None:
        config = model.config
        self.device = torch.device(resolve_device(device))
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.blocks = tuple(blocks or default_blocks(config.num_hidden_layers))
        if not all(1 <= b <= config.num_hidden_layers for b in self.blocks):
            raise EncoderError(f"blocks {self.blocks} outside 1..{config.num_hidden_layers}")
        self.n_prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.grid = GRID
        self.resolution = GRID * config.patch_size
        self.final_norm = model.norm if config.model_type == "dinov3_vit" else model.layernorm
        if config.model_type == "dinov2":
            embeddings = self.model.embeddings
            embeddings.position_embeddings = torch.nn.Parameter(
                reference_position_table(embeddings.position_embeddings, GRID), requires_grad=False
            )
        self.layer_names = tuple(f"block{b}" for b in self.blocks)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 16)
        self.name, self.weights_sha256 = name, sha256
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_folder(
        cls,
        model_path: str | Path | None,
        blocks: tuple[int, ...] | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        family: str = "dinov2",
    ) -> Dinov2Encoder:
        """Load a ``family`` checkpoint folder (see :func:`find_checkpoint`), every weight present."""
        from transformers import AutoModel

        folder = find_checkpoint(model_path, family)
        label = LABELS[family]
        try:
            model, info = AutoModel.from_pretrained(
                folder, local_files_only=True, attn_implementation="sdpa", output_loading_info=True
            )
        except Exception as err:  # transformers raises many types for a bad folder
            raise EncoderError(f"cannot load the {label} checkpoint in {folder}: {err}") from err
        if info.get("missing_keys") or info.get("mismatched_keys"):
            missing = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
            raise EncoderError(
                f"the {label} checkpoint in {folder} lacks weights for {len(missing)} "
                f"parameters (e.g. {missing[:3]}); refusing to run with random weights"
            )
        config = model.config
        if family == "dinov3":
            gated = bool(config.use_gated_mlp)
            size = DINOV3_NAMES.get((config.hidden_size, gated), f"vit{config.hidden_size}d")
            name = f"dinov3-{size}"
        else:
            size = VIT_NAMES.get(config.hidden_size, f"vit{config.hidden_size}d")
            registers = "-reg" if getattr(config, "num_register_tokens", 0) else ""
            name = f"dinov2-{size}{registers}"
        return cls(
            model,
            blocks=blocks,
            device=device,
            batch_size=batch_size,
            name=name,
            sha256=weights_sha256(folder),
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        """(S, H, W) float32 in [0, 1] -> per block (S, P, P, C) float32 on ``self.device``."""
        outputs: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        for start in range(0, slices.shape[0], self.batch_size):
            batch = slices[start : start + self.batch_size].to(self.device, torch.float32)
            x = resize_slices(batch, self.resolution).expand(-1, 3, -1, -1)
            x = (x - self._mean) / self._std
            with self._autocast():
                hidden = self.model(pixel_values=x, output_hidden_states=True).hidden_states
                for out, block in zip(outputs, self.blocks):
                    patches = self.final_norm(hidden[block])[:, self.n_prefix :]
                    out.append(patches.float().reshape(len(batch), self.grid, self.grid, -1))
        return [torch.cat(out) for out in outputs]


def write_random_checkpoint(
    folder: Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int | None = None,
    registers: int = 0,
    seed: int = 0,
    family: str = "dinov2",
) -> Path:
    """Save a DINOv2- or DINOv3-architecture model with seeded random weights to ``folder``.

    For tests and benchmarks, which cannot download real weights: the checkpoint, in HF format,
    loads through :meth:`Dinov2Encoder.from_folder` exactly like a real one. ``family`` "dinov2":
    patch 14, image 224, ``registers`` > 0 gives the with-registers variant; "dinov3": patch 16,
    ``registers`` register tokens (the released models have 4). Returns ``folder``.
    """
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        DINOv3ViTConfig,
        DINOv3ViTModel,
    )

    shape = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": intermediate_size or 4 * hidden_size,
        "patch_size": 16 if family == "dinov3" else 14,
        "image_size": 224,
    }
    torch.manual_seed(seed)
    if family == "dinov3":
        model = DINOv3ViTModel(DINOv3ViTConfig(**shape, num_register_tokens=registers))
    elif registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(**shape, num_register_tokens=registers)
        )
    else:
        model = Dinov2Model(Dinov2Config(**shape))
    model.save_pretrained(folder)
    return Path(folder)
