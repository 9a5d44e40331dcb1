"""Deployment on a CPU: ONNX Runtime fp32 and int8 against PyTorch eager, and what int8 costs in top-1.

    python benchmarks/deploy.py --dataset ../shared/data/cifar10 [--json]

1. `trainer.benchmark` on vit_tiny_patch16_224 at 224 (10 classes), three ways (PyTorch eager fp32, ONNX Runtime
   fp32, ONNX Runtime int8), interleaved --repeats times; medians of batch-1 latency and batch-32 throughput.
2. The small ViT (patch 4, depth 4, 32 px) trained on CIFAR-10 (200 per class, 5 epochs), then
   `trainer.export --int8` on its 1,000 eval images: top-1 of PyTorch, ONNX fp32 and int8.
The last stdout line is one JSON object: per runtime latency_ms_bs1 and images_per_s_bs32 (medians),
ort_fp32_latency_vs_torch (torch ms / ort ms: > 1 is faster), int8_vs_fp32_throughput (int8 images/s over ORT
fp32 at batch 32), and the export's top1_torch, top1_onnx, top1_int8, agreement, int8_top1_change (points).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.commands.benchmark import main as benchmark_main  # noqa: E402
from trainer.commands.train import main_cls  # noqa: E402
from trainer.deploy.export import export_run  # noqa: E402

WAYS = {"torch_fp32": ["--runtime", "torch"], "ort_fp32": ["--runtime", "onnxruntime"],
        "ort_int8": ["--runtime", "onnxruntime", "--precision", "int8"]}


def quietly(fn, *args, **kwargs):
    """fn's result, its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--skip-export", action="store_true", help="only the runtime comparison")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args()
    figures: dict[str, dict[str, list[float]]] = {w: {"latency_ms_bs1": [], "images_per_s_bs32": []} for w in WAYS}
    for repeat in range(args.repeats):  # interleaved: drift of the machine hits every way alike
        for way, extra in WAYS.items():
            out = quietly(benchmark_main, ["--model", args.model, "--batch-size", "32", "--device", "cpu",
                                           "--iters", str(args.iters), *extra])
            figures[way]["latency_ms_bs1"].append(out["cpu_latency_ms_bs1"])
            figures[way]["images_per_s_bs32"].append(out["images_per_s"])
            if not args.json:
                print(f"{repeat + 1}/{args.repeats} {way}: batch 1 {out['cpu_latency_ms_bs1']:.1f} ms, batch 32 "
                      f"{out['images_per_s']:.1f} images/s", flush=True)
    result: dict[str, object] = {w: {k: round(statistics.median(v), 2) for k, v in f.items()}
                                 for w, f in figures.items()}
    med = {w: {k: statistics.median(v) for k, v in f.items()} for w, f in figures.items()}
    result["ort_fp32_latency_vs_torch"] = round(med["torch_fp32"]["latency_ms_bs1"] / med["ort_fp32"]["latency_ms_bs1"], 3)
    result["ort_fp32_throughput_vs_torch"] = round(
        med["ort_fp32"]["images_per_s_bs32"] / med["torch_fp32"]["images_per_s_bs32"], 3)
    result["int8_vs_fp32_throughput"] = round(
        med["ort_int8"]["images_per_s_bs32"] / med["ort_fp32"]["images_per_s_bs32"], 3)
    result["int8_vs_fp32_latency"] = round(med["ort_fp32"]["latency_ms_bs1"] / med["ort_int8"]["latency_ms_bs1"], 3)
    if not args.skip_export:
        with tempfile.TemporaryDirectory() as tmp:
            run = os.path.join(tmp, "run")
            quietly(main_cls, ["--dataset", args.dataset, "--samples-per-class", "200", "--eval-samples-per-class",
                               "100", "--epochs", "5", "--batch-size", "64", "--lr", "1e-3", "--model",
                               "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=4",
                               "depth=4", "--log-every", "0", "--no-progress", "--output-dir", run])
            parity = export_run(run, int8=True)
        result.update({k: parity[k] for k in ("num_samples", "top1_torch", "top1_onnx", "top1_int8", "agreement",
                                              "agreement_int8", "max_abs_logit_diff")})
        result["int8_top1_change"] = round(100 * (parity["top1_int8"] - parity["top1_onnx"]), 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
