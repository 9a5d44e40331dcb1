"""What the study measures beside its runs: test-time throughput and CPU latency of both models (through ONNX
Runtime in fp32 and int8 with the [deploy] extra; through ExecuTorch in fp32 and int8 at a phone's 1 and 4 threads
with the [mobile] extra), and each small model's agreement with the part-2 teacher."""
from __future__ import annotations

import os
import platform
from typing import Any, Optional

import torch

from ..deploy.executorch import EXECUTORCH
from ..deploy.export import export_run, previous_export
from ..deploy.onnx import ONNX
from ..deploy.timing import PHONE_THREADS, cpu_latency_ms, phone_latency, runner_seconds, throughput
from ..errors import UsageError
from ..evaluation.runs import evaluate_run
from ..models import load_trained
from ..run_files import SUMMARY_FILE
from .presets import Preset

ONNX_CHECK_IMAGES = 1000  # ONNX Runtime runs on the CPU: the int8 top-1 of a 224-px vit_base on 10,000 images takes long
RUNS = ("part1_base_scratch", "part2_base_pretrained", "part3_tiny_pretrained", "part4_tiny_distilled",
        "part4_tiny_feature", "part4_tiny_scratch")
DISTILLED = {"part4_tiny_distilled": "soft", "part4_tiny_feature": "feature"}  # run -> --kd-type, at the same budget


def device_words() -> str:
    """The hardware the study ran on, in words."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"CPU: {os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}"


def say(line: str) -> None:
    """A progress line of the study's own (the runs speak for themselves)."""
    print(f"study: {line}", flush=True)


def first_finished(out_dir: str, *runs: str) -> Optional[str]:
    """The first of the runs that finished, as a folder."""
    return next((os.path.join(out_dir, r) for r in runs if os.path.exists(os.path.join(out_dir, r, SUMMARY_FILE))),
                None)


def measure_throughput(out_dir: str, p: Preset, device: Optional[str], cache_dir: Optional[str] = None,
                       notes: Optional[list[str]] = None) -> dict[str, Any]:
    """Test-time images/s of the part-2 (base) and part-3 (tiny) models, their batch-1 CPU latency, and, with the
    [deploy] extra, the same through ONNX Runtime in fp32 and int8 with the int8 model's top-1."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {}
    for key, runs in (("base", ("part2_base_pretrained", "part1_base_scratch")),
                      ("tiny", ("part3_tiny_pretrained", "part4_tiny_scratch"))):
        folder = first_finished(out_dir, *runs)
        if folder is None:
            continue
        trained = load_trained(folder)
        model, size = trained.model, trained.config.view.size
        say(f"measuring the test-time throughput of {os.path.basename(folder)} ({p.bench_precision}, batch "
            f"{p.bench_batch_size} on {dev.type}) and its batch-1 CPU latency")
        res = throughput(model, size, p.bench_batch_size, dev, p.bench_precision, warmup=3, iters=10)
        res.update(device=dev.type, precision=p.bench_precision, run=os.path.basename(folder),
                   cpu_latency_ms_bs1=cpu_latency_ms(model, size, warmup=2, iters=10))
        for what, figures in (("ONNX Runtime", onnx_figures), ("ExecuTorch", executorch_figures)):
            try:
                res.update(figures(folder, size, cache_dir))
            except UsageError as err:  # an extra is missing: the study goes on without these figures
                if notes is not None and not any(str(err) in n for n in notes):
                    notes.append(f"{what} figures not measured: {err}")
        if "et_int8_top1" in res:
            say(f"measuring {os.path.basename(folder)}'s batch-1 latency at {' and '.join(map(str, PHONE_THREADS))} "
                "threads in PyTorch, ONNX Runtime and ExecuTorch")
            res["phone_latency_ms_bs1"] = phone_latency(model, folder, size)
        out[key] = res
    return out


def onnx_figures(folder: str, size: int, cache_dir: Optional[str]) -> dict[str, Any]:
    """A run exported (RUN/model.onnx, RUN/model.int8.onnx): ONNX Runtime batch-1 CPU latency in fp32 and int8,
    and top-1 of PyTorch and of the int8 model on up to ONNX_CHECK_IMAGES of the run's eval images."""
    parity = previous_export(folder)
    if parity is None:
        say(f"exporting {os.path.basename(folder)} to ONNX (fp32 and int8) and checking both on up to "
            f"{ONNX_CHECK_IMAGES} eval images")
        parity = export_run(folder, int8=True, cache_dir=cache_dir, max_samples=ONNX_CHECK_IMAGES)
    latency = {name: runner_seconds(ONNX.runner(parity[key], torch.get_num_threads()), size, 1, 2, 10) * 1e3
               for name, key in (("fp32", "onnx"), ("int8", "onnx_int8"))}
    return {"ort_fp32_latency_ms_bs1": latency["fp32"], "ort_int8_latency_ms_bs1": latency["int8"],
            "onnx_check_images": parity["num_samples"], "top1_torch": parity["top1_torch"],
            "top1_onnx": parity["top1_onnx"], "top1_int8": parity["top1_int8"], "onnx_agreement": parity["agreement"]}


def executorch_figures(folder: str, size: int, cache_dir: Optional[str]) -> dict[str, Any]:
    """A run exported for ExecuTorch (RUN/model.pte, RUN/model.int8.pte): top-1 of both programs on up to
    ONNX_CHECK_IMAGES of the run's eval images."""
    EXECUTORCH.require()
    parity = previous_export(folder, "executorch")
    if parity is None:
        say(f"exporting {os.path.basename(folder)} to ExecuTorch (fp32 and int8, calibrated on the run's training "
            f"images) and checking both on up to {ONNX_CHECK_IMAGES} eval images")
        parity = export_run(folder, int8=True, cache_dir=cache_dir, max_samples=ONNX_CHECK_IMAGES,
                            format="executorch")
    return {"et_top1": parity["top1_executorch"], "et_int8_top1": parity["top1_int8"],
            "et_agreement": parity["agreement"], "et_check_images": parity["num_samples"]}


def teacher_agreement(out_dir: str, cache_dir: Optional[str], mixed_precision: Optional[str] = None) -> dict[str, float]:
    """How often each vit_tiny run predicts what the part-2 teacher predicts on the eval set."""
    teacher = first_finished(out_dir, "part2_base_pretrained")
    if teacher is None:
        return {}
    say("measuring each ViT-Ti run's agreement with the part-2 teacher on the eval images")
    # The runs' own precision: their evals used it, and the teacher's saved predictions then apply.
    return {run: evaluate_run(folder, compare_with=teacher, mixed_precision=mixed_precision,
                              cache_dir=cache_dir)["agreement"]
            for run in ("part3_tiny_pretrained", *DISTILLED, "part4_tiny_scratch")
            if (folder := first_finished(out_dir, run)) is not None}
