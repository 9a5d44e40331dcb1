"""Test-time throughput and latency, measured the way timm's benchmark.py does (synthetic batch, eval mode, warm-up,
then timed calls between device synchronisations), in PyTorch, ONNX Runtime or ExecuTorch; and a training step's
FLOPs for MFU."""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
from typing import Any, Optional, Sequence, cast

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data.augment import View, preprocess
from ..data.loading import default_cache_dir, load_eval_split
from ..data.placement import place_splits
from ..errors import UsageError
from ..models import count_params, create_model, explicit_attention, input_view, load_trained, num_classes
from .executorch import EXECUTORCH
from .formats import ExportFormat, Runner, input_spec
from .onnx import ONNX

PHONE_THREADS = (1, 4)  # a phone app's CPU budget: one core, or the big cores
RUNTIMES: dict[str, ExportFormat] = {"onnxruntime": ONNX, "executorch": EXECUTORCH}  # --runtime: its file's format
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


def exported_file(fmt: ExportFormat, model: torch.nn.Module, view: View, folder: str, int8: bool) -> str:
    """The model as fmt's file in folder, as trainer.export writes it, or its int8 copy (calibrated on a few random
    images where the format calibrates: that sets the scales, not the arithmetic that is timed)."""
    fmt.require()
    spec = fmt.spec_for(input_spec(view, [str(k) for k in range(num_classes(model))]))
    path = os.path.join(folder, fmt.file)
    if not (int8 and fmt.calibrated):  # a calibrated format quantises the model, the others quantise the fp32 file
        fmt.write(model, spec, path)
    if not int8:
        return path
    noise = lambda: [torch.randn(8, 3, view.size, view.size, generator=torch.Generator().manual_seed(0))]  # noqa: E731
    fmt.write_int8(model, spec, path, fmt.int8_path(path), noise)
    return fmt.int8_path(path)


def runner_seconds(run: Runner, img_size: int, batch_size: int, warmup: int, iters: int) -> float:
    """Seconds per batch through an exported file's runner: warm-up calls, then timed calls."""
    x = np.random.default_rng(0).standard_normal((batch_size, 3, img_size, img_size), dtype=np.float32)
    for _ in range(warmup):
        run(x)
    start = time.perf_counter()
    for _ in range(iters):
        run(x)
    return (time.perf_counter() - start) / iters


def exported_benchmark(fmt: ExportFormat, model: torch.nn.Module, view: View, batch_size: int, int8: bool,
                       warmup: int, iters: int, latency: bool, threads: int) -> dict[str, Any]:
    """Batched throughput and batch-1 latency of the model exported as fmt's file, in fmt's runtime on the CPU with
    `threads`, measured as PyTorch's are so that the runtimes compare by one method."""
    with tempfile.TemporaryDirectory() as tmp:
        run = fmt.runner(exported_file(fmt, model.float().eval(), view, tmp, int8), threads)
        assert run is not None  # RUNTIMES holds only formats that run here
        out: dict[str, Any] = {}
        if latency:
            out["cpu_latency_ms_bs1"] = runner_seconds(run, view.size, 1, min(warmup, 5), iters) * 1e3
        seconds = runner_seconds(run, view.size, batch_size, warmup, iters)
    return {**out, "batch_size": batch_size, "images_per_s": batch_size / seconds, "ms_per_batch": seconds * 1e3}


def phone_latency(model: torch.nn.Module, folder: str, size: int, threads: Sequence[int] = PHONE_THREADS,
                  warmup: int = 2, iters: int = 10) -> dict[str, dict[str, float]]:
    """Batch-1 latency (ms) at each thread count: PyTorch eager fp32 and each of the folder's exported files as
    trainer.export names them (ONNX Runtime and ExecuTorch, fp32 and int8, those that are there); the caller's thread
    count given back."""
    before, out = torch.get_num_threads(), {}
    try:
        for count in threads:
            torch.set_num_threads(count)
            row = {"torch_fp32": cpu_latency_ms(model, size, warmup, iters)}
            for name, fmt in (("ort", ONNX), ("et", EXECUTORCH)):
                for precision, file in (("fp32", fmt.file), ("int8", fmt.int8_path(fmt.file))):
                    path = os.path.join(folder, file)
                    if os.path.exists(path):
                        run = fmt.runner(path, count)  # ExecuTorch's one pool per process is resized here
                        assert run is not None
                        row[f"{name}_{precision}"] = runner_seconds(run, size, 1, warmup, iters) * 1e3
            out[str(count)] = row
    finally:
        torch.set_num_threads(before)
    return out


def train_flops_per_image(model: torch.nn.Module, img_size: int, device: torch.device) -> float:
    """Matmul FLOPs of one training step (forward + backward) per image, for model FLOP utilisation."""
    # torch counts fused attention on CUDA but not its CPU kernel: count timm's explicit-matmul attention
    # instead, so the figure is the same on every device. Norms, softmax and GELU are not counted (MFU convention).
    x = torch.randn(2, 3, img_size, img_size, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with explicit_attention(model), counter:
            model(x).float().sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def cpu_latency_ms(model: torch.nn.Module, img_size: int, warmup: int = 5, iters: int = 20) -> float:
    """Batch-1 latency on the CPU in fp32: the number that matters on a phone or a small board."""
    model = model.to("cpu").eval()
    return time_batches(model, torch.randn(1, 3, img_size, img_size), "fp32", warmup, iters) * 1e3


def end_to_end(model: torch.nn.Module, view: View, dataset: str, device: torch.device, batch_size: int, precision: str,
               split: str = "test", limit: int = 2000) -> float:
    """Images per second through the real eval input pipeline (the store's batches -> frame/resize -> model)."""
    data, _ = load_eval_split(dataset, split, crop=view.eval_crop, cache_dir=default_cache_dir())
    place_splits([data], "auto", device)
    n = min(limit, len(data))
    autocast = (torch.autocast(device.type, dtype=DTYPES[precision]) if DTYPES[precision] is not None
                else nullcontext())
    model = model.to(device).eval()
    with torch.inference_mode(), autocast:
        model(preprocess(data.images.span(0, min(batch_size, n)), view, data.squares))  # warm-up
        sync(device)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            model(preprocess(data.images.span(i, min(i + batch_size, n)), view, data.squares)).argmax(-1)
        sync(device)
    return n / (time.perf_counter() - start)


def benchmark_device(runtime: str = "torch", precision: str = "fp32", device: Optional[str] = None,
                     compile: bool = False, dataset: Optional[str] = None, batch_size: int = 256, warmup: int = 5,
                     iters: int = 20) -> torch.device:
    """The device a benchmark runs on; UsageError on options that cannot be measured together."""
    for name, value, least in (("batch-size", batch_size, 1), ("warmup", warmup, 0), ("iters", iters, 1)):
        if value < least:
            raise UsageError(f"--{name} must be positive, got {value}")
    exported = runtime in RUNTIMES
    if exported and (device == "cuda" or precision not in ("fp32", "int8") or compile or dataset):
        raise UsageError(f"--runtime {runtime} runs on the CPU in fp32 or int8, without --compile or --dataset: "
                         "drop those options or use --runtime torch")
    if not exported and precision == "int8":
        raise UsageError("--precision int8 is the exported files' quantisation: add --runtime onnxruntime or "
                         "--runtime executorch")
    dev = torch.device("cpu" if exported else device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here; use --device cpu")
    return dev


def model_to_time(run: Optional[str], name: Optional[str], num_classes: int = 10, img_size: Optional[int] = None,
                  model_kwargs: Optional[dict] = None) -> tuple[torch.nn.Module, View]:
    """The model to time and its input: a finished run's, rebuilt from its folder, or a fresh timm model."""
    if run:
        trained = load_trained(run, "--run")
        return trained.model, trained.config.view
    assert name is not None
    model, _ = create_model(name, num_classes, img_size=img_size, model_kwargs=model_kwargs)
    return model, input_view(model, img_size)


def benchmark(model: torch.nn.Module, view: View, device: torch.device, *, label: str, runtime: str = "torch",
              precision: str = "fp32", batch_size: int = 256, channels_last: bool = False, compile: bool = False,
              warmup: int = 5, iters: int = 20, latency: bool = True, dataset: Optional[str] = None,
              eval_split: str = "test", progress: bool = False, threads: Optional[int] = None) -> dict[str, Any]:
    """What trainer.benchmark prints: throughput at batch_size, batch-1 CPU latency, optionally the real eval pipeline's
    images/s; in PyTorch (fp32/fp16/bf16), ONNX Runtime or ExecuTorch (fp32/int8, on the CPU; see benchmark_device),
    with `threads` CPU threads (default: torch's). progress: a line before each timing (a large model on a CPU takes
    minutes)."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:  # the caller's thread count comes back: a run after this one computes as it would have
        return _benchmark(model, view, device, label, runtime, precision, batch_size, channels_last, compile, warmup,
                          iters, latency, dataset, eval_split, progress)
    finally:
        torch.set_num_threads(before)


def _benchmark(model: torch.nn.Module, view: View, device: torch.device, label: str, runtime: str, precision: str,
               batch_size: int, channels_last: bool, compile: bool, warmup: int, iters: int, latency: bool,
               dataset: Optional[str], eval_split: str, progress: bool) -> dict[str, Any]:
    say = (lambda line: print(f"benchmark: {line}", flush=True)) if progress else (lambda line: None)
    out: dict[str, Any] = {"model": label, "img_size": view.size, "num_params": count_params(model), "runtime": runtime,
           "precision": precision, "device": device.type, "channels_last": channels_last, "compile": compile,
           "threads": torch.get_num_threads()}
    if runtime in RUNTIMES:
        fmt = RUNTIMES[runtime]
        say(f"exporting to {fmt.title}{' and quantising to int8' if precision == 'int8' else ''}, then {warmup} + "
            f"{iters} calls of batch {batch_size}")
        return {**out, **exported_benchmark(fmt, model, view, batch_size, precision == "int8", warmup, iters, latency,
                                            torch.get_num_threads())}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    if latency:
        say(f"batch-1 CPU latency: {min(warmup, 5)} + {iters} calls")
        out["cpu_latency_ms_bs1"] = cpu_latency_ms(model, view.size, min(warmup, 5), iters)
    timed = cast(torch.nn.Module, torch.compile(model)) if compile else model
    say(f"throughput: {warmup} + {iters} calls of batch {batch_size} on {device.type} in {precision}")
    out.update(throughput(timed, view.size, batch_size, device, precision, channels_last, warmup, iters))
    if dataset:
        say(f"the eval pipeline on {dataset}'s split '{eval_split}'")
        out["end_to_end_images_per_s"] = end_to_end(timed, view, dataset, device, out["batch_size"], precision,
                                                    eval_split)
    return out
