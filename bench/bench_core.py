"""Core-library benchmark: prints one JSON document to stdout (progress goes to stderr).

    python bench/bench_core.py                 # full run (about 15 min on a 2-core CPU)
    python bench/bench_core.py --quick         # small sizes, about a minute
    python bench/bench_core.py --only rss180   # one section

Sections:
- ``matmul``: plain float32 matmul GFLOP/s (the roofline scoring is judged against).
- ``scoring``: ``mutual_scores`` GFLOP/s (2 * N_i * N_j * d per unordered pair of volumes).
- ``scaling_b`` / ``scaling_n``: scoring time against the batch size B and tokens per volume N.
- ``c2f``: coarse-to-fine against exhaustive fine scoring on the same tokens.
- ``multiscale``: scoring time of variant MS (coarse and coarse-to-fine fine scores, one coarse
  block per pair) against variant C (coarse scores only) on the same tokens: a batch of 10
  volumes shaped like the brain grid (the template brain mask on the 224^3, 156 mm grid, smooth
  random texture inside), tokenised by the ``histogram`` encoder (3 axes, coarse + fine).
- ``tokenize``: encoder slices/s bare and inside tokenisation (same slices), for the pixel
  encoder and a DINOv2 ViT-S/14 architecture with random weights.
- ``voxel_map``: seconds to turn one volume's MS token scores (3 axes x 2 levels) into its
  standard-space voxel map, for a batch of 3 random volumes with a spherical mask.
- ``rss180``: one (axis, layer) of a 180-volume batch, 4096 tokens each, d = 128, from a
  disk-backed fp16 store written by this process, then opened and scored in a child process
  whose peak RSS (and its RSS right after imports) is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provenance import commit

from cs3f import __version__
from cs3f.encoders import load_encoder
from cs3f.encoders.dinov2 import write_random_checkpoint
from cs3f.method.batch_scorer import BatchScorer
from cs3f.method.pairs import NearestTokens
from cs3f.method.scoring import multiscale_scores, mutual_scores
from cs3f.method.tokens import Tokenizer, TokenSettings
from cs3f.preprocess.standard_space import cube_grid
from cs3f.preprocess.template import template_centre, template_on


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def random_sets(n_volumes: int, n_tokens: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n_tokens, dim), dtype=np.float32) for _ in range(n_volumes)]


def pair_flops(sizes: list[int], dim: int) -> float:
    total = sum(sizes)
    return float(total * total - sum(n * n for n in sizes)) * dim  # 2 * sum_{i<j} N_i N_j d


def bench_matmul(n: int = 4096, dim: int = 128) -> dict:
    a, b = torch.randn(n, dim), torch.randn(n, dim)
    out = torch.empty(n, n)
    seconds = best_of(lambda: torch.mm(a, b.T, out=out), 5)
    return {"shape": [n, dim, n], "seconds": seconds, "gflops": 2 * n * n * dim / seconds / 1e9}


def bench_scoring(n_volumes: int, n_tokens: int, dim: int = 128) -> dict:
    sets = random_sets(n_volumes, n_tokens, dim)
    search = NearestTokens("cpu")
    seconds = best_of(lambda: mutual_scores(sets, search=search), 1)
    flops = pair_flops([n_tokens] * n_volumes, dim)
    return {
        "B": n_volumes,
        "N": n_tokens,
        "d": dim,
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
    }


def bench_c2f(
    n_volumes: int, n_coarse: int, children: int, dim: int = 128, n_routes: int = 16
) -> dict:
    rng = np.random.default_rng(1)
    coarse = random_sets(n_volumes, n_coarse, dim, seed=2)
    parents = [np.repeat(np.arange(n_coarse), children) for _ in range(n_volumes)]
    fine = [
        c[p] + 0.3 * rng.standard_normal((len(p), dim), dtype=np.float32)
        for c, p in zip(coarse, parents)
    ]
    start = time.perf_counter()
    _, routed = multiscale_scores(coarse, fine, parents, n_routes=n_routes, k=1)
    c2f_seconds = time.perf_counter() - start
    start = time.perf_counter()
    exhaustive = mutual_scores(fine, k=1)
    exhaustive_seconds = time.perf_counter() - start
    gap = np.concatenate([r - e for r, e in zip(routed, exhaustive)])
    return {
        "B": n_volumes,
        "N_coarse": n_coarse,
        "N_fine": n_coarse * children,
        "L": n_routes,
        "c2f_seconds": c2f_seconds,
        "exhaustive_seconds": exhaustive_seconds,
        "speedup": exhaustive_seconds / c2f_seconds,
        "tokens_with_larger_score": float((gap > 1e-5).mean()),
        "mean_relative_excess": float((gap / np.concatenate(exhaustive)).mean()),
    }


def brain_token_batch(n_volumes: int, side: int) -> dict:
    """{(axis, level): B token sets} of ``n_volumes`` brain-shaped volumes (see ``multiscale``)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    mask = template_on((side,) * 3, cube_grid(template_centre(), 156.0, side))
    tokenizer = Tokenizer(load_encoder("histogram", device="cpu"), TokenSettings())
    batch: dict = {}
    for _ in range(n_volumes):
        texture = gaussian_filter(rng.standard_normal(mask.shape, dtype=np.float32), 2.0)
        volume = (mask * (0.5 + 2.0 * texture)).clip(0, 1).astype(np.float32)
        for key, tokens in tokenizer.tokenize(volume, mask).items():
            batch.setdefault((key.axis, key.level), []).append(tokens)
    return batch


def bench_multiscale(n_volumes: int, side: int, n_routes: int = 16) -> dict:
    batch = brain_token_batch(n_volumes, side)
    c_seconds = ms_seconds = 0.0
    for axis in (0, 1, 2):
        coarse = [t.features for t in batch[(axis, "coarse")]]
        fine = batch[(axis, "fine")]
        start = time.perf_counter()
        mutual_scores(coarse, k=1)
        c_seconds += time.perf_counter() - start
        start = time.perf_counter()
        multiscale_scores(
            coarse, [t.features for t in fine], [t.parents for t in fine], n_routes, k=1
        )
        ms_seconds += time.perf_counter() - start
    return {
        "B": n_volumes,
        "side": side,
        "N_coarse": float(np.mean([len(t.features) for t in batch[(0, "coarse")]])),
        "N_fine": float(np.mean([len(t.features) for t in batch[(0, "fine")]])),
        "L": n_routes,
        "C_seconds": c_seconds,
        "MS_seconds": ms_seconds,
        "MS_over_C": ms_seconds / c_seconds,
    }


def bench_tokenize(encoder, side: int) -> dict:
    """Bare encoder forward on exactly the slices tokenisation encodes, then tokenisation."""
    rng = np.random.default_rng(3)
    volume = rng.random((side, side, side), dtype=np.float32)
    mask = np.ones(volume.shape, dtype=bool)
    slices = [torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, a, 0))) for a in range(3)]
    chunk = 28  # the tokeniser's chunk at q = 14 / 2 and chunk_slices = 32

    def bare():
        for axis_slices in slices:
            for start in range(0, side, chunk):
                encoder.encode(axis_slices[start : start + chunk])

    tokenizer = Tokenizer(encoder, TokenSettings())
    bare_seconds = best_of(bare, 1)
    tokenize_seconds = best_of(lambda: tokenizer.tokenize(volume, mask), 1)
    n_slices = 3 * side
    return {
        "encoder": encoder.name,
        "volume": [side] * 3,
        "slices": n_slices,
        "bare_slices_per_s": n_slices / bare_seconds,
        "tokenize_slices_per_s": n_slices / tokenize_seconds,
        "tokenize_overhead": tokenize_seconds / bare_seconds - 1,
    }


def bench_voxel_map(side: int) -> dict:
    """One voxel map of a scored MS batch of three random (side^3) volumes, best of three."""
    rng = np.random.default_rng(5)
    centre = (side - 1) / 2
    distance = np.linalg.norm(np.indices((side,) * 3) - centre, axis=0)
    mask = distance < 0.4 * side
    scorer = BatchScorer(load_encoder("pixels", device="cpu"))
    for _ in range(3):
        scorer.add(rng.random(mask.shape, dtype=np.float32) * mask, mask)
    scores = scorer.score()
    return {"volume": [side] * 3, "seconds": best_of(lambda: scores.voxel_map(0, mask))}


def vit_s14_random(folder: Path):
    """A DINOv2 ViT-S/14-architecture checkpoint with random weights, loaded like a real one."""
    write_random_checkpoint(folder, hidden_size=384, num_layers=12, num_heads=6)
    return load_encoder("dinov2", folder, device="cpu")


def write_fp16_batch(root: Path, n_volumes: int, n_tokens: int, dim: int) -> None:
    """One ``.npy`` float16 token file per volume, written one volume at a time."""
    rng = np.random.default_rng(4)
    for i in range(n_volumes):
        out = np.lib.format.open_memmap(
            root / f"{i:05d}.npy", mode="w+", dtype=np.float16, shape=(n_tokens, dim)
        )
        out[:] = rng.standard_normal((n_tokens, dim), dtype=np.float32)
        out.flush()
        del out


def rss180_child(root: Path) -> dict:
    """Open a disk-backed fp16 batch and score it; runs in its own process."""
    rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sets = [np.load(path, mmap_mode="r") for path in sorted(root.glob("*.npy"))]
    start = time.perf_counter()
    scores = mutual_scores(
        sets, progress=lambda d, t: d % 20 == 0 and log(f"rss180: {d}/{t} volumes")
    )
    seconds = time.perf_counter() - start
    n_tokens, dim = sets[0].shape
    return {
        "B": len(sets),
        "N": n_tokens,
        "d": dim,
        "store": "fp16 memmap",
        "seconds": seconds,
        "gflops": pair_flops([n_tokens] * len(sets), dim) / seconds / 1e9,
        "peak_rss_mb_after_imports": rss_after_imports,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "score_shape": [len(scores), int(scores[0].shape[0])],
    }


def bench_rss180(n_volumes: int, n_tokens: int, dim: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cs3f-bench-") as root:
        write_fp16_batch(Path(root), n_volumes, n_tokens, dim)
        cmd = [sys.executable, __file__, "--rss-child", root]
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--only", help="comma-separated sections to run")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(rss180_child(Path(args.rss_child))))
        return

    quick = args.quick
    sections = set(args.only.split(",")) if args.only else None
    want = lambda name: sections is None or name in sections
    result: dict = {
        "cs3f_version": __version__,
        "commit": commit(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "quick": quick,
    }
    if want("matmul") or want("scoring"):
        log("matmul")
        result["matmul"] = bench_matmul()
    if want("scoring"):
        log("scoring")
        result["scoring"] = bench_scoring(6 if quick else 20, 4096)
        result["scoring"]["fraction_of_matmul"] = (
            result["scoring"]["gflops"] / result["matmul"]["gflops"]
        )
    if want("scaling_b"):
        result["scaling_b"] = []
        for n_volumes in (5, 10) if quick else (10, 20, 40, 80):
            log(f"scaling_b B={n_volumes}")
            result["scaling_b"].append(bench_scoring(n_volumes, 1024 if quick else 4096))
    if want("scaling_n"):
        result["scaling_n"] = []
        for n_tokens in (256, 512, 1024) if quick else (1024, 2048, 4096, 8192):
            log(f"scaling_n N={n_tokens}")
            result["scaling_n"].append(bench_scoring(10, n_tokens))
    if want("c2f"):
        log("c2f")
        result["c2f"] = bench_c2f(5 if quick else 10, 256 if quick else 1024, 7)
    if want("multiscale"):
        log("multiscale")
        result["multiscale"] = bench_multiscale(5 if quick else 10, 112 if quick else 224)
    if want("tokenize"):
        result["tokenize"] = []
        side = 56 if quick else 112
        log("tokenize pixels")
        result["tokenize"].append(bench_tokenize(load_encoder("pixels", device="cpu"), side))
        with tempfile.TemporaryDirectory() as folder:
            log("tokenize dinov2 vit-s/14 (random weights)")
            entry = bench_tokenize(vit_s14_random(Path(folder)), side)
            entry["weights"] = "random (architecture benchmark only)"
            result["tokenize"].append(entry)
    if want("voxel_map"):
        log("voxel_map")
        result["voxel_map"] = bench_voxel_map(112 if quick else 224)
    if want("rss180") and not quick:
        log("rss180 (about 10 minutes)")
        result["rss180"] = bench_rss180(180, 4096, 128)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
