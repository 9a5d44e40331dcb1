"""GPU figures: training images/s and model FLOP utilisation (MFU) of vit_base and vit_tiny, and the wall
time of the whole hw2 study.

    python benchmarks/gpu_study.py --dataset DIR [--precision bf16] [--compile] [--study] [--peak-tflops 989]

The synthetic figures time a step built like the trainer's (autocast, fused AdamW, gradient clipping) on a
batch already on the GPU: the ceiling. FLOPs per image come from torch's FlopCounterMode on one forward +
backward (matmuls and attention, the same count on every device); MFU = achieved FLOP/s / --peak-tflops
(dense bf16/fp16 peak: H100 SXM 989, A100 312, T4 65; the JSON names the peak it used). --study also times
`python -m trainer.study --preset hw2 --stand-in` on the local CIFAR-10 copy and reports, for each of its
runs, the images/s the trainer itself achieved (summary.json: training time, evaluation excluded) and that
run's MFU (the student's own forward + backward; a cached teacher adds nothing per step).
--study-dir keeps the study there (complete runs are not repeated). Last stdout line: JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.deploy.timing import DTYPES, train_flops_per_image  # noqa: E402


def train_throughput(name: str, kwargs: dict, img_size: int, batch_size: int, device: torch.device, precision: str,
                     compile_model: bool, steps: int, warmup: int, peak_tflops: float) -> dict:
    """Images/s of the training step, and the FLOP/s it achieves."""
    import timm
    import timm.optim

    model = timm.create_model(name, num_classes=10, img_size=img_size, **kwargs).to(device).train()
    flops = train_flops_per_image(model, img_size, device)
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05,
                                         **({"fused": True} if device.type == "cuda" else {}))
    step_model = torch.compile(model) if compile_model else model
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    autocast = torch.autocast(device.type, dtype=DTYPES[precision], enabled=DTYPES[precision] is not None)

    def step():
        with autocast:
            loss = torch.nn.functional.cross_entropy(step_model(x).float(), y)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        (scaler.step(opt), scaler.update()) if scaler else opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"model": name, "batch_size": batch_size, "precision": precision, "compile": compile_model,
            **utilisation(batch_size * steps / seconds, flops, peak_tflops)}


def utilisation(images_per_s: float, flops_per_image: float, peak_tflops: float) -> dict:
    """Images/s, FLOPs per image, achieved TFLOP/s and MFU against the stated peak."""
    achieved = images_per_s * flops_per_image / 1e12
    return {"images_per_s": round(images_per_s, 1), "train_gflop_per_image": round(flops_per_image / 1e9, 2),
            "achieved_tflops": round(achieved, 2), "mfu": round(achieved / peak_tflops, 3)}


def study_runs(out: str, device: torch.device, peak_tflops: float) -> list[dict]:
    """Images/s and MFU of every finished run of a study folder, from its summary.json."""
    from trainer.models import load_trained

    rows = []
    for run in sorted(os.listdir(out)):
        summary_path = os.path.join(out, run, "summary.json")
        if not os.path.exists(summary_path):
            continue
        with open(summary_path) as f:
            summary = json.load(f)
        trained = load_trained(os.path.join(out, run))
        flops = train_flops_per_image(trained.model.to(device).train(), trained.config.view.size, device)
        rows.append({"run": run, "model": summary["model"], "mixed_precision": summary["mixed_precision"],
                     **utilisation(summary["train_images_per_s"], flops, peak_tflops),
                     "train_time_s": summary["train_time_s"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", choices=list(DTYPES), default="bf16")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--model-kwargs", default="{}", help="JSON, e.g. '{\"depth\": 2}' for a smoke test")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16/fp16 peak")
    p.add_argument("--study", action="store_true", help="also time the whole hw2 study (stand-in weights)")
    p.add_argument("--study-dir", default=None, help="the study's folder (default: a temporary one)")
    p.add_argument("--preset", choices=["hw2", "demo"], default="hw2", help="demo: a CPU smoke test of --study")
    p.add_argument("--skip-synthetic", action="store_true", help="only the study")
    args = p.parse_args()
    device = torch.device(args.device)
    kwargs = json.loads(args.model_kwargs)
    result = {"benchmark": "gpu_study", "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "peak_tflops": args.peak_tflops, "runs": []}
    for name in () if args.skip_synthetic else ("vit_base_patch16_224", "vit_tiny_patch16_224"):
        run = train_throughput(name, kwargs, args.img_size, args.batch_size, device, args.precision, args.compile,
                               args.steps, args.warmup, args.peak_tflops)
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    if args.study:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.study_dir or tmp
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "trainer.study", "--preset", args.preset, "--output-dir", out,
                            "--no-progress", *(["--dataset", args.dataset, "--stand-in"] if args.preset == "hw2" else [])],
                           check=True)
            result["study_wall_s"] = round(time.perf_counter() - start, 1)
            result["study_runs"] = study_runs(out, device, args.peak_tflops)
            with open(os.path.join(out, "report.md")) as f:
                result["study_report"] = f.read()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
