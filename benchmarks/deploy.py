"""Deployment on a CPU: ONNX Runtime and ExecuTorch (fp32, int8) against PyTorch eager, what int8 costs in top-1,
and what each format's export costs (--what onnx,phone,sizes,accuracy: any of them, comma-separated).

    python benchmarks/deploy.py --dataset ../shared/data/cifar10 [--what onnx,phone,sizes,accuracy] [--json]

- onnx: `trainer.benchmark` on vit_tiny_patch16_224 at 224 (10 classes), three ways (PyTorch eager fp32, ONNX Runtime
  fp32, ONNX Runtime int8), interleaved --repeats times; medians of batch-1 latency and batch-32 throughput.
- phone: the same model exported once each way (ONNX Runtime fp32/int8, ExecuTorch XNNPACK fp32/int8), then batch-1
  latency at each of --threads (default 1 and 4, a phone app's budget) with PyTorch eager fp32 beside them,
  interleaved --repeats times, medians: et_int8_vs_torch_1_thread (target >= 2).
- sizes: export time and file size of each format (onnx, executorch, coreml; fp32 and int8) for vit_tiny and
  vit_base at 224 (random weights; ExecuTorch's int8 calibrated on 8 random images, so its time leaves out the
  calibration on a run's training images).
- accuracy: the small ViT (patch 4, depth 4, 32 px) trained on CIFAR-10 (200 per class, 5 epochs), then
  `trainer.export --int8` to ONNX and to ExecuTorch on its 1,000 eval images: top-1 of PyTorch and of each file.
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trainer.commands.benchmark import main as benchmark_main  # noqa: E402
from trainer.commands.train import main_cls  # noqa: E402
from trainer.deploy.export import export_run  # noqa: E402

WAYS = {"torch_fp32": ["--runtime", "torch"], "ort_fp32": ["--runtime", "onnxruntime"],
        "ort_int8": ["--runtime", "onnxruntime", "--precision", "int8"]}


def quietly(fn, *args, **kwargs):
    """fn's result, its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def onnx_runtimes(args: argparse.Namespace) -> dict[str, object]:
    """ONNX Runtime fp32/int8 against PyTorch eager through trainer.benchmark: batch-1 latency, batch-32 images/s."""
    figures: dict[str, dict[str, list[float]]] = {w: {"latency_ms_bs1": [], "images_per_s_bs32": []} for w in WAYS}
    for repeat in range(args.repeats):  # interleaved: drift of the machine hits every way alike
        for way, extra in WAYS.items():
            out = quietly(benchmark_main, ["--model", args.model, "--batch-size", "32", "--device", "cpu",
                                           "--iters", str(args.iters), *extra])
            figures[way]["latency_ms_bs1"].append(out["cpu_latency_ms_bs1"])
            figures[way]["images_per_s_bs32"].append(out["images_per_s"])
            say(args, f"{repeat + 1}/{args.repeats} {way}: batch 1 {out['cpu_latency_ms_bs1']:.1f} ms, batch 32 "
                      f"{out['images_per_s']:.1f} images/s")
    result: dict[str, object] = {w: {k: round(statistics.median(v), 2) for k, v in f.items()}
                                 for w, f in figures.items()}
    med = {w: {k: statistics.median(v) for k, v in f.items()} for w, f in figures.items()}
    result["ort_fp32_latency_vs_torch"] = round(med["torch_fp32"]["latency_ms_bs1"] / med["ort_fp32"]["latency_ms_bs1"], 3)
    result["ort_fp32_throughput_vs_torch"] = round(
        med["ort_fp32"]["images_per_s_bs32"] / med["torch_fp32"]["images_per_s_bs32"], 3)
    result["int8_vs_fp32_throughput"] = round(
        med["ort_int8"]["images_per_s_bs32"] / med["ort_fp32"]["images_per_s_bs32"], 3)
    result["int8_vs_fp32_latency"] = round(med["ort_fp32"]["latency_ms_bs1"] / med["ort_int8"]["latency_ms_bs1"], 3)
    return result


def phone(args: argparse.Namespace) -> dict[str, object]:
    """Batch-1 latency at a phone's thread counts: each file exported once into one folder, as a study's run folder
    holds them, then the study's phone_latency --repeats times (the ways interleaved), medians."""
    from trainer.deploy.executorch import EXECUTORCH
    from trainer.deploy.onnx import ONNX
    from trainer.deploy.timing import exported_file, phone_latency
    from trainer.models import create_model, input_view

    model, _ = create_model(args.model, 10)
    model.eval()
    view = input_view(model)
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in (ONNX, EXECUTORCH):
            say(args, f"exporting {args.model} for {fmt.title} (fp32 and int8)")
            exported_file(fmt, model, view, tmp, int8=False)
            exported_file(fmt, model, view, tmp, int8=True)
        for repeat in range(args.repeats):
            for threads, row in phone_latency(model, tmp, view.size, args.threads, 3, args.iters).items():
                for way, ms in row.items():
                    times.setdefault(threads, {}).setdefault(way, []).append(ms)
                say(args, f"{threads} thread(s), {repeat + 1}/{args.repeats}: " + ", ".join(
                    f"{w} {ms:.1f} ms" for w, ms in row.items()))
    med = {t: {w: round(statistics.median(v), 2) for w, v in ways.items()} for t, ways in times.items()}
    out: dict[str, object] = {"latency_ms_bs1": med, "cores": os.cpu_count()}
    if "1" in med:
        out["et_int8_vs_torch_1_thread"] = round(med["1"]["torch_fp32"] / med["1"]["et_int8"], 3)
        out["et_fp32_vs_torch_1_thread"] = round(med["1"]["torch_fp32"] / med["1"]["et_fp32"], 3)
    return out


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
    return os.path.getsize(path)


def sizes(args: argparse.Namespace) -> dict[str, object]:
    """Export seconds and megabytes of each format, fp32 and int8, for each of --size-models."""
    from trainer.deploy.export import FORMATS
    from trainer.deploy.formats import input_spec
    from trainer.models import create_model, input_view

    out: dict[str, object] = {}
    for name in args.size_models:
        model, _ = create_model(name, 10)
        model.eval()
        view = input_view(model)
        rows: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in FORMATS.values():
                spec = fmt.spec_for(input_spec(view, [str(k) for k in range(10)]))
                path = os.path.join(tmp, fmt.file)
                start = time.perf_counter()
                fmt.write(model, spec, path)
                fp32_s = time.perf_counter() - start
                noise = lambda size=view.size: [torch.randn(8, 3, size, size)]  # noqa: E731
                start = time.perf_counter()
                fmt.write_int8(model, spec, path, fmt.int8_path(path), noise)
                int8_s = time.perf_counter() - start
                rows[fmt.name] = {"export_s": round(fp32_s, 1), "mb": round(_size(path) / 1e6, 1),
                                  "int8_export_s": round(int8_s, 1),
                                  "int8_mb": round(_size(fmt.int8_path(path)) / 1e6, 1)}
                say(args, f"{name} {fmt.name}: {rows[fmt.name]}")
        out[name] = rows
    return out


def accuracy(args: argparse.Namespace) -> dict[str, object]:
    """The small ViT trained on CIFAR-10 and exported with --int8 to ONNX and ExecuTorch: top-1 of each file."""
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        say(args, "training the small ViT on CIFAR-10 (200 per class, 5 epochs)")
        quietly(main_cls, ["--dataset", args.dataset, "--samples-per-class", "200", "--eval-samples-per-class",
                           "100", "--epochs", "5", "--batch-size", "64", "--lr", "1e-3", "--model",
                           "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=4",
                           "depth=4", "--log-every", "0", "--no-progress", "--output-dir", run])
        out: dict[str, object] = {}
        for fmt in ("onnx", "executorch"):
            parity = export_run(run, int8=True, format=fmt)
            out[fmt] = {k: parity[k] for k in ("num_samples", "top1_torch", f"top1_{fmt}", "top1_int8", "agreement",
                                               "agreement_int8", "max_abs_logit_diff")}
            out[fmt]["int8_top1_change"] = round(100 * (parity["top1_int8"] - parity["top1_torch"]), 2)
            say(args, f"{fmt}: {out[fmt]}")
    return out


def say(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--what", default="onnx,phone,sizes,accuracy", help="onnx, phone, sizes, accuracy (comma-separated)")
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="phone: thread counts")
    p.add_argument("--size-models", nargs="+", default=["vit_tiny_patch16_224", "vit_base_patch16_224"])
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args()
    parts = {"onnx": onnx_runtimes, "phone": phone, "sizes": sizes, "accuracy": accuracy}
    result: dict[str, object] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "torch": torch.__version__}
    for what in args.what.split(","):
        result[what] = parts[what](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
