"""Test-time throughput, measured the way timm's benchmark.py does; the last stdout line is JSON.

    python -m trainer.benchmark --model vit_tiny_patch16_224 --batch-size 32 --device cpu
    python -m trainer.benchmark --checkpoint runs/part3 --device cuda --precision bf16 --compile
    python -m trainer.benchmark --checkpoint runs/part3 --runtime onnxruntime --precision int8
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import nullcontext
from typing import Any, Optional, Sequence, cast

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .argparsing import OneLineParser, parse_kwargs
from .augment import View, preprocess
from .data import default_cache_dir, load_eval_split
from .errors import UsageError, exit_on_usage_error
from .export import (INPUT, ONNX_FILE, OUTPUT, export_onnx, input_spec, int8_path, ort_session, quantize_int8,
                     require_deploy)
from .models import count_params, create_model, input_view, load_run, num_classes, run_view
from .placement import place_splits

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing brackets)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(model: torch.nn.Module, batch: torch.Tensor, precision: str, warmup: int, iters: int) -> float:
    """Seconds per batch: warm-up calls, then timed calls bracketed by device synchronisation."""
    device = batch.device
    autocast = (torch.autocast(device.type, dtype=DTYPES[precision]) if DTYPES[precision] is not None
                else nullcontext())
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(batch)
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(batch)
        sync(device)
    return (time.perf_counter() - start) / iters


def throughput(model: torch.nn.Module, img_size: int, batch_size: int, device: torch.device, precision: str = "fp32",
               channels_last: bool = False, warmup: int = 5, iters: int = 20) -> dict:
    """Images per second on a synthetic batch; halves the batch after an out-of-memory error."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    while True:
        try:
            batch = torch.randn(batch_size, 3, img_size, img_size, device=device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            seconds = time_batches(model, batch, precision, warmup, iters)
            return {"batch_size": batch_size, "images_per_s": batch_size / seconds, "ms_per_batch": seconds * 1e3}
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            torch.cuda.empty_cache()
            batch_size //= 2


def onnx_file(model: torch.nn.Module, view: View, folder: str, int8: bool) -> str:
    """The model exported to ONNX in folder (and quantised to int8 if asked), as trainer.export writes it."""
    path = os.path.join(folder, ONNX_FILE)
    export_onnx(model, input_spec(view, [str(k) for k in range(num_classes(model))]), path)
    if int8:
        quantize_int8(path, int8_path(path))
        path = int8_path(path)
    return path


def ort_seconds(session: Any, img_size: int, batch_size: int, warmup: int, iters: int) -> float:
    """Seconds per batch through an ONNX Runtime session: warm-up calls, then timed calls."""
    x = np.random.default_rng(0).standard_normal((batch_size, 3, img_size, img_size), dtype=np.float32)
    for _ in range(warmup):
        session.run([OUTPUT], {INPUT: x})
    start = time.perf_counter()
    for _ in range(iters):
        session.run([OUTPUT], {INPUT: x})
    return (time.perf_counter() - start) / iters


def ort_benchmark(model: torch.nn.Module, view: View, batch_size: int, int8: bool, warmup: int, iters: int,
                  latency: bool) -> dict[str, Any]:
    """The PyTorch runtime's figures (batched throughput, batch-1 latency) through ONNX Runtime on the CPU,
    with as many threads as torch uses, so that the two compare by one method."""
    require_deploy()
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(onnx_file(model.float().eval(), view, tmp, int8), torch.get_num_threads())
        out: dict[str, Any] = {}
        if latency:
            out["cpu_latency_ms_bs1"] = ort_seconds(session, view.size, 1, min(warmup, 5), iters) * 1e3
        seconds = ort_seconds(session, view.size, batch_size, warmup, iters)
    return {**out, "batch_size": batch_size, "images_per_s": batch_size / seconds, "ms_per_batch": seconds * 1e3}


def train_flops_per_image(model: torch.nn.Module, img_size: int, device: torch.device) -> float:
    """Matmul FLOPs of one training step (forward + backward) per image, for model FLOP utilisation."""
    # torch counts fused attention on CUDA but not its CPU kernel: count timm's explicit-matmul attention
    # instead, so the figure is the same on every device. Norms, softmax and GELU are not counted (MFU convention).
    fused: list[tuple[Any, bool]] = [(m, bool(m.fused_attn)) for m in model.modules() if hasattr(m, "fused_attn")]
    for m, _ in fused:
        m.fused_attn = False
    try:
        x = torch.randn(2, 3, img_size, img_size, device=device)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x).float().sum().backward()
    finally:
        for m, was in fused:
            m.fused_attn = was
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def cpu_latency_ms(model: torch.nn.Module, img_size: int, warmup: int = 5, iters: int = 20) -> float:
    """Batch-1 latency on the CPU in fp32: the number that matters on a phone or a small board."""
    model = model.to("cpu").eval()
    return time_batches(model, torch.randn(1, 3, img_size, img_size), "fp32", warmup, iters) * 1e3


def end_to_end(model: torch.nn.Module, view: View, dataset: str, device: torch.device, batch_size: int, precision: str,
               split: str = "test", limit: int = 2000) -> float:
    """Images per second through the real eval input pipeline (the store's batches -> frame/resize -> model)."""
    data, _ = load_eval_split(dataset, split, frame=view.frame, cache_dir=default_cache_dir())
    place_splits([data], "auto", device)
    n = min(limit, len(data))
    autocast = (torch.autocast(device.type, dtype=DTYPES[precision]) if DTYPES[precision] is not None
                else nullcontext())
    model = model.to(device).eval()
    with torch.inference_mode(), autocast:
        model(preprocess(data.images.span(0, min(batch_size, n)), view, data.framed))  # warm-up
        sync(device)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            model(preprocess(data.images.span(i, min(i + batch_size, n)), view, data.framed)).argmax(-1)
        sync(device)
    return n / (time.perf_counter() - start)


def build_parser() -> OneLineParser:
    """The command line of trainer.benchmark."""
    p = OneLineParser(prog="python -m trainer.benchmark", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a timm model name")
    src.add_argument("--checkpoint", help="a train_cls.py/train_kd.py run folder")
    p.add_argument("--model-kwargs", nargs="*", default=[], metavar="K=V")
    p.add_argument("--num-classes", type=int, default=10, help="head size for --model")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=None, help="default: the model's own")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: the model exported to ONNX, run by ONNX Runtime on the CPU")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                   help="int8: ONNX Runtime's dynamic quantisation (with --runtime onnxruntime)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations")
    p.add_argument("--iters", type=int, default=20, help="timed iterations")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the batch-1 CPU latency")
    p.add_argument("--dataset", default=None, help="also time the real eval pipeline on this dataset's eval split")
    p.add_argument("--eval-split", default="test")
    return p


def build_model(args: argparse.Namespace) -> tuple[torch.nn.Module, int, View]:
    """The model to time: a fresh timm model, or a run rebuilt from its folder."""
    if args.checkpoint:
        model, cfg = load_run(args.checkpoint, "--checkpoint")
        view = run_view(cfg)
    else:
        model, _ = create_model(args.model, args.num_classes, img_size=args.img_size,
                                model_kwargs=parse_kwargs(args.model_kwargs))
        view = input_view(model, args.img_size)
    return model, view.size, view


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Measure and print one JSON line."""
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "warmup", "iters"):
        if getattr(args, name) < (1 if name != "warmup" else 0):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    onnx = args.runtime == "onnxruntime"
    if onnx and (args.device == "cuda" or args.precision not in ("fp32", "int8") or args.compile or args.dataset):
        raise UsageError("--runtime onnxruntime runs on the CPU in fp32 or int8, without --compile or --dataset: "
                         "drop those options or use --runtime torch")
    if not onnx and args.precision == "int8":
        raise UsageError("--precision int8 is ONNX Runtime's quantisation: add --runtime onnxruntime")
    device = torch.device("cpu" if onnx else args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here; use --device cpu")
    model, img_size, view = build_model(args)
    out = {"model": args.model or args.checkpoint, "img_size": img_size, "num_params": count_params(model),
           "runtime": args.runtime, "precision": args.precision, "device": device.type,
           "channels_last": args.channels_last, "compile": args.compile, "threads": torch.get_num_threads()}
    if onnx:
        out.update(ort_benchmark(model, view, args.batch_size, args.precision == "int8", args.warmup, args.iters,
                                 args.latency))
        print(json.dumps(out), flush=True)
        return out
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    if args.latency:
        out["cpu_latency_ms_bs1"] = cpu_latency_ms(model, img_size, min(args.warmup, 5), args.iters)
    timed = cast(torch.nn.Module, torch.compile(model)) if args.compile else model
    out.update(throughput(timed, img_size, args.batch_size, device, args.precision, args.channels_last,
                          args.warmup, args.iters))
    if args.dataset:
        out["end_to_end_images_per_s"] = end_to_end(timed, view, args.dataset, device, out["batch_size"],
                                                    args.precision, args.eval_split)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
