"""End-to-end time per volume of CS3F-C and CS3F-MS on a GPU; prints one JSON document.

    python bench/bench_gpu.py                   # GPU: ViT-L/14, B = 180 volumes of 224^3
    python bench/bench_gpu.py --volumes 40      # a shorter GPU run
    python bench/bench_gpu.py --toy             # CPU or GPU: a 4-block ViT, 3 volumes of 28^3

For each variant the library runs as the app does, one volume at a time: tokenise with a
DINOv2-architecture ViT (random weights: the timing does not depend on them), keep the tokens
in a disk-backed fp16 store, score every token against the other volumes, and build each
volume's voxel map. The volumes are brain-shaped (the template brain mask on the standard grid,
smooth random texture inside), generated on the device and not timed.

Reported per variant: seconds per volume end to end and per stage (encoder forward, the rest of
tokenisation, scoring, voxel maps) with each stage's share; the encoder's achieved TFLOP/s
(analytic ViT FLOPs of the slices it encoded over its forward time) and, for a known GPU, the
fraction of its dense bf16 peak; the peak GPU memory (PyTorch's allocator, plus the device-wide
use at the end, which includes FAISS's own buffers and the CUDA context). The DESIGN targets on
an H100: C <= 0.25 s/volume, MS <= 0.5 s/volume, peak VRAM <= 8 GB, encoder >= 50 % of peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provenance import commit

from cs3f import __version__
from cs3f.encoders.dinov2 import Dinov2Encoder
from cs3f.method.batch_scorer import BatchScorer, ScoringSettings
from cs3f.method.store import TokenStore
from cs3f.method.tokens import TokenSettings
from cs3f.preprocess.standard_space import cube_grid
from cs3f.preprocess.template import template_centre, template_on

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched
# against torch.cuda.get_device_name(); --peak-tflops overrides.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
}
ARCHITECTURES = {  # hidden size, blocks, heads
    "vitl14": (1024, 24, 16),
    "vitb14": (768, 12, 12),
    "vits14": (384, 12, 6),
    "toy": (32, 4, 2),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bf16_peak(device_name: str) -> float | None:
    """The table's peak for the first (longest-first) name contained in ``device_name``."""
    for name in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if name in device_name:
            return BF16_PEAK_TFLOPS[name]
    return None


def vit_flops_per_image(hidden: int, blocks: int, patch: int = 14, side: int = 224) -> float:
    """Forward FLOPs (2 per multiply-add) of one image: patch embedding, then per block the
    QKV and output projections (4 C^2 per token), the MLP (8 C^2 per token, ratio 4) and the
    two attention products (2 T^2 C); T = (side / patch)^2 + 1 tokens."""
    tokens = (side // patch) ** 2 + 1
    embed = 2 * (side // patch) ** 2 * (3 * patch * patch) * hidden
    per_block = 2 * (12 * tokens * hidden**2 + 2 * tokens**2 * hidden)
    return float(embed + blocks * per_block)


class TimedEncoder:
    """Wraps an encoder: counts encoded slices and the forward's wall time (synchronised)."""

    def __init__(self, encoder: Dinov2Encoder) -> None:
        self.inner = encoder
        self.name, self.weights_sha256 = encoder.name, encoder.weights_sha256
        self.grid, self.layer_names, self.device = encoder.grid, encoder.layer_names, encoder.device
        self.slices, self.seconds = 0, 0.0

    def encode(self, slices: torch.Tensor) -> list[torch.Tensor]:
        synchronise(self.device)
        start = time.perf_counter()
        out = self.inner.encode(slices)
        synchronise(self.device)
        self.seconds += time.perf_counter() - start
        self.slices += slices.shape[0]
        return out


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_vit(arch: str, device: str) -> Dinov2Encoder:
    """A DINOv2-architecture ViT with seeded random weights, built in memory."""
    from transformers import Dinov2Config, Dinov2Model

    hidden, blocks, heads = ARCHITECTURES[arch]
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        patch_size=14,
        image_size=224,
        attn_implementation="sdpa",
    )
    return Dinov2Encoder(Dinov2Model(config), device=device, name=f"dinov2-{arch}-random")


def brain_volumes(n_volumes: int, side: int, device: torch.device):
    """Yields ``n_volumes`` (volume, mask) pairs: float32 (side,)*3 in [0, 1], bool mask."""
    mask = template_on((side,) * 3, cube_grid(template_centre(), 156.0, side))
    mask_t = torch.from_numpy(mask).to(device)
    generator = torch.Generator(device=device).manual_seed(4)
    for _ in range(n_volumes):
        noise = torch.randn((1, 1) + (side,) * 3, generator=generator, device=device)
        texture = F.avg_pool3d(noise, 5, stride=1, padding=2)[0, 0] * 4.0
        volume = (mask_t * (0.5 + texture)).clamp(0, 1)
        yield volume.float().cpu().numpy(), mask


def run_variant(variant: str, args, encoder: TimedEncoder, device: torch.device) -> dict:
    encoder.slices, encoder.seconds = 0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stages = dict.fromkeys(("tokenise", "score", "maps"), 0.0)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder:
        scorer = BatchScorer(
            encoder,
            TokenSettings(),
            ScoringSettings(variant=variant, device=args.device),
            TokenStore(folder),
        )
        masks = []
        for index, (volume, mask) in enumerate(brain_volumes(args.volumes, args.side, device)):
            start = time.perf_counter()
            scorer.add(volume, mask)
            stages["tokenise"] += time.perf_counter() - start
            masks.append(mask)
            if (index + 1) % max(1, args.volumes // 10) == 0:
                log(f"{variant}: tokenised {index + 1}/{args.volumes}")
        start = time.perf_counter()
        scores = scorer.score()
        synchronise(device)
        stages["score"] = time.perf_counter() - start
        log(f"{variant}: scored in {stages['score']:.1f} s")
        start = time.perf_counter()
        for index, mask in enumerate(masks):
            scores.voxel_map(index, mask)
        stages["maps"] = time.perf_counter() - start
    per_stage = {
        "encoder": encoder.seconds,
        "tokenise_other": stages["tokenise"] - encoder.seconds,
        "score": stages["score"],
        "maps": stages["maps"],
    }
    total = sum(per_stage.values())
    flops = vit_flops_per_image(*ARCHITECTURES[args.arch][:2]) * encoder.slices
    tflops = flops / encoder.seconds / 1e12
    result = {
        "seconds_per_volume": total / args.volumes,
        "stage_seconds_per_volume": {k: v / args.volumes for k, v in per_stage.items()},
        "stage_share": {k: v / total for k, v in per_stage.items()},
        "slices_encoded_per_volume": encoder.slices / args.volumes,
        "encoder_tflops": tflops,
        "encoder_fraction_of_bf16_peak": tflops / args.peak_tflops if args.peak_tflops else None,
    }
    if device.type == "cuda":
        free, total_memory = torch.cuda.mem_get_info(device)
        result["peak_vram_gb_torch"] = torch.cuda.max_memory_allocated(device) / 1e9
        result["vram_in_use_gb_at_end"] = (total_memory - free) / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--volumes", type=int, default=180, help="batch size B (default 180)")
    parser.add_argument("--side", type=int, default=224, help="voxels per volume side")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="vitl14")
    parser.add_argument("--variants", nargs="+", choices=("C", "MS"), default=["C", "MS"])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument(
        "--toy", action="store_true", help="3 volumes of 28^3 and a 4-block ViT (CPU in seconds)"
    )
    args = parser.parse_args()
    if args.toy:
        args.volumes, args.side, args.arch = 3, 28, "toy"
    if args.volumes < 2:
        parser.error("--volumes must be at least 2 (scoring compares volumes)")
    encoder = TimedEncoder(random_vit(args.arch, args.device))
    device = encoder.device
    encoder.inner.encode(torch.zeros(encoder.inner.batch_size, args.side, args.side))  # warm-up
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = bf16_peak(device_name)
    log(f"{args.arch} on {device_name}, B = {args.volumes} volumes of {args.side}^3")
    result = {
        "cs3f_version": __version__,
        "commit": commit(),
        "device": device_name,
        "torch": torch.__version__,
        "arch": args.arch,
        "weights": "random (timing only)",
        "volumes": args.volumes,
        "side": args.side,
        "bf16_peak_tflops": args.peak_tflops,
        "variants": {v: run_variant(v, args, encoder, device) for v in args.variants},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
