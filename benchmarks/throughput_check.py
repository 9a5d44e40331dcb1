"""Cross-check trainer.benchmark against a timm-benchmark-style measurement of the same model.

    python benchmarks/throughput_check.py --model vit_tiny_patch16_224 --batch-size 32 --device cpu

The reference follows timm's benchmark.py (InferenceBenchmarkRunner): torch.no_grad(), 10 warm-up
iterations, 40 timed ones with a synchronising timestamp after each step, samples_per_sec = samples /
elapsed. The last stdout line is JSON with both figures and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.commands.benchmark import main as trainer_benchmark  # noqa: E402


def timm_style(model_name: str, batch_size: int, img_size: int, device: torch.device, warm: int = 10,
               bench: int = 40) -> float:
    """Images per second, measured like timm's InferenceBenchmarkRunner (fp32)."""
    import timm

    def timestamp(sync: bool = False) -> float:
        if sync and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    model = timm.create_model(model_name, num_classes=10, img_size=img_size).to(device).eval()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    with torch.no_grad():
        for _ in range(warm):
            model(x)
        timestamp(sync=True)
        t_run_start = timestamp()
        num_samples = 0
        for _ in range(bench):
            model(x)
            timestamp(sync=True)
            num_samples += batch_size
        t_run_end = timestamp(sync=True)
    return num_samples / (t_run_end - t_run_start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median of each side is reported")
    args = p.parse_args()
    device = torch.device(args.device)
    references, ours_runs = [], []
    for _ in range(args.rounds):  # interleaved, so that drift in clock speed hits both sides alike
        references.append(timm_style(args.model, args.batch_size, args.img_size, device))
        ours_runs.append(trainer_benchmark([
            "--model", args.model, "--batch-size", str(args.batch_size), "--img-size", str(args.img_size),
            "--device", args.device, "--no-latency", "--warmup", "10", "--iters", "40"])["images_per_s"])
    reference, ours = sorted(references)[len(references) // 2], sorted(ours_runs)[len(ours_runs) // 2]
    print(json.dumps({"benchmark": "throughput_check", "model": args.model, "batch_size": args.batch_size,
                      "device": args.device, "threads": torch.get_num_threads(),
                      "rounds": args.rounds, "timm_style_images_per_s": round(reference, 2),
                      "ours_images_per_s": round(ours, 2), "ratio": round(ours / reference, 3)}))


if __name__ == "__main__":
    main()
