"""The GPU benchmark's CPU toy run, so the script cannot rot where no GPU is; and its FLOP count
against PyTorch's own counter."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_gpu

        yield bench_gpu
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("arch", ["toy", "vits14"])
def test_vit_flops_match_pytorchs_flop_counter(bench_gpu, arch):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Dinov2Config, Dinov2Model

    hidden, blocks, heads = bench_gpu.ARCHITECTURES[arch]
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        attn_implementation="eager",  # the counter does not see inside fused CPU attention
    )
    model = Dinov2Model(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values=torch.zeros(1, 3, 224, 224))
    assert counter.get_total_flops() == bench_gpu.vit_flops_per_image(hidden, blocks)


def test_bf16_peaks_match_the_longest_name(bench_gpu):
    assert bench_gpu.bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert bench_gpu.bf16_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert bench_gpu.bf16_peak("Some Future GPU") is None


def test_toy_run_reports_every_stage_of_both_variants():
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu.py"), "--toy", "--device", "cpu"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout)
    assert result["device"] == "cpu" and result["volumes"] == 3 and result["side"] == 28
    assert set(result["variants"]) == {"C", "MS"}
    for variant in result["variants"].values():
        stages = variant["stage_seconds_per_volume"]
        assert set(stages) == {"encoder", "tokenise_other", "score", "maps"}
        assert all(seconds > 0 for seconds in stages.values())
        assert sum(stages.values()) == pytest.approx(variant["seconds_per_volume"])
        assert sum(variant["stage_share"].values()) == pytest.approx(1.0)
        assert variant["slices_encoded_per_volume"] == 3 * 28  # every slice of every axis
        assert variant["encoder_tflops"] > 0
        assert variant["encoder_fraction_of_bf16_peak"] is None  # no peak known for a CPU
