"""trainer.benchmark: timm-style throughput with a JSON last line, out-of-memory fallback, run folders."""
from __future__ import annotations

import json

import pytest
import torch

from trainer.commands import benchmark
from trainer.deploy.timing import throughput

from .helpers import run_here


def test_cli_prints_json_last(capsys):
    res = run_here(benchmark.main, "--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs",
                   "patch_size=8", "depth=1", "--batch-size", "8", "--device", "cpu", "--warmup", "1", "--iters", "3",
                   capsys=capsys)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("model", "batch_size", "precision", "device", "images_per_s", "ms_per_batch", "cpu_latency_ms_bs1"):
        assert key in out
    assert out["batch_size"] == 8 and out["device"] == "cpu" and out["precision"] == "fp32"
    assert out["images_per_s"] == pytest.approx(8 / (out["ms_per_batch"] / 1e3), rel=1e-6)
    lines = res.stdout.strip().splitlines()
    assert any(line.startswith("benchmark: throughput: 1 + 3 calls of batch 8") for line in lines)  # said before timing
    assert "images/s at batch 8" in lines[-2] and "batch-1 CPU latency" in lines[-2]  # a line a person reads


def test_out_of_memory_halves_the_batch():
    class Picky(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 4:
                raise torch.cuda.OutOfMemoryError("too big")
            return x.mean((1, 2, 3))

    res = throughput(Picky(), 8, 32, torch.device("cpu"), warmup=1, iters=2)
    assert res["batch_size"] == 4


def test_training_flops_match_the_vit_formula():
    """The MFU numerator: 3 x the forward's matmul FLOPs (the input layer needs no input gradient)."""
    import timm

    from trainer.deploy.timing import train_flops_per_image

    dim, depth, patch, size, classes = 192, 2, 4, 32, 10
    model = timm.create_model("vit_tiny_patch16_224", num_classes=classes, img_size=size, patch_size=patch,
                              depth=depth)
    n = (size // patch) ** 2 + 1
    block = n * dim * 3 * dim + n * dim * dim + 2 * n * dim * 4 * dim + 2 * n * n * dim  # qkv, proj, mlp, attention
    patch_embed = (n - 1) * 3 * patch * patch * dim
    macs = 3 * (depth * block + dim * classes) + 2 * patch_embed
    got = train_flops_per_image(model, size, torch.device("cpu"))
    assert got == pytest.approx(2 * macs, rel=1e-3)
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))  # restored


def test_end_to_end_reads_the_eval_split_through_a_store(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_TRAINER_CACHE", str(tmp_path))
    out = benchmark.main(["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=8",
                          "depth=1", "--batch-size", "16", "--device", "cpu", "--warmup", "1", "--iters", "2",
                          "--no-latency", "--dataset", str(toy_dataset)])
    assert out["end_to_end_images_per_s"] > 0 and "cpu_latency_ms_bs1" not in out
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".npy"]) == 1  # the eval split, decoded once
