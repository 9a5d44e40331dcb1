"""Processes: the Accelerator, main-process-first, each process's share of the rows, gathering them back."""
from __future__ import annotations

import math
from typing import Callable, Optional, TypeVar

import torch
from accelerate import Accelerator, PartialState
import accelerate.utils

from .errors import UsageError, first_line

T = TypeVar("T")


def has_gpu() -> bool:
    """True when a GPU (CUDA, ROCm, MPS or XPU) is present."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def bf16_is_emulated(device: torch.device) -> bool:
    """True on a CUDA GPU older than Ampere (compute capability < 8.0): torch.cuda.is_bf16_supported() says True
    there (it counts emulation), yet bf16 runs far slower than fp16, the fast choice on a T4 or V100."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8


def cpu_bf16_is_emulated() -> bool:
    """True on a CPU without bf16 arithmetic (neither AVX512-BF16 nor AMX): bf16 there measured 3x slower than fp32
    on this project's AVX2 machine. Only Linux says (its /proc/cpuinfo); elsewhere False, no warning."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return bool(flags) and not ({"avx512_bf16", "amx_bf16"} & set(flags))


def precision_warning(mixed_precision: str, device: torch.device) -> Optional[str]:
    """The line a run (or a benchmark) asking for bf16 where it is emulated prints."""
    if mixed_precision != "bf16":
        return None
    if device.type == "cpu":
        if not cpu_bf16_is_emulated():
            return None
        return ("bf16 is emulated on this CPU (no AVX512-BF16 or AMX) and runs several times slower than fp32: "
                "use fp32 here (--mixed-precision no, or --precision fp32); bf16 is the GPU choice")
    if not bf16_is_emulated(device):
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return (f"bf16 is emulated on this GPU ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor} "
            "< 8.0) and runs slowly: --mixed-precision fp16 (accelerate_configs/single_gpu_fp16_t4.yaml) is the "
            "fast choice here")


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
            "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


def trackers(report_to: str) -> list[str]:
    """The trackers --report-to names: one, several separated by commas, all accelerate finds installed, or none."""
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        found = [n for n in TRACKERS if getattr(accelerate.utils, f"is_{n}_available")()]
        if not found:
            raise UsageError(f"--report-to all found no tracker installed: pip install one of {', '.join(TRACKERS)} "
                             "(or pass --report-to none)")
        return found
    for name in names:
        if name not in TRACKERS:
            raise UsageError(f"--report-to {name} is not a tracker accelerate knows: pass one of "
                             f"{', '.join(TRACKERS)}, several separated by commas, all or none")
        if not getattr(accelerate.utils, f"is_{name}_available")():
            raise UsageError(f"--report-to {name} needs {TRACKERS[name]}, which is not installed: pip install "
                             f"{TRACKERS[name]} (or pass --report-to none)")
    return names


def make_accelerator(mixed_precision: Optional[str] = None, report_to: str = "none",
                     project_dir: Optional[str] = None) -> Accelerator:
    """An Accelerator; without a GPU, cpu=True so that torchrun's processes form one gloo group."""
    log_with = trackers(report_to)
    try:
        return Accelerator(cpu=not has_gpu(), mixed_precision=mixed_precision, log_with=log_with or None,
                           project_dir=project_dir)
    except (ValueError, ImportError) as err:
        raise UsageError(f"accelerate refused the set-up ({first_line(err)}): "
                         "check --mixed-precision and --report-to for this machine") from None


def end_processes() -> None:
    """Where an entry point ends: every process arrives, then the process group closes (none is left talking)."""
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()


def main_process_first(accelerator: Accelerator, fn: Callable[[], T]) -> T:
    """Run fn on each machine's main process first (it fills the machine's caches: decoded images, downloaded
    weights), then on the others, which find them; bad input stops every process (each meets it in its own call)."""
    if not accelerator.is_local_main_process:
        accelerator.wait_for_everyone()
        return fn()
    try:
        return fn()
    finally:  # the others must not wait forever when the main process fails
        accelerator.wait_for_everyone()


def shard(n: int, accelerator: Accelerator) -> tuple[int, int]:
    """[lo, hi) of this process's contiguous share of n rows (the last shares may be short or empty)."""
    per = math.ceil(n / accelerator.num_processes)
    rank = accelerator.process_index
    return min(rank * per, n), min((rank + 1) * per, n)


def shard_batches(n: int, batch_size: int, accelerator: Accelerator) -> list[tuple[int, int]]:
    """This process's share of n rows in [i, j) batches; every process gets the same number of batches
    (empty ones at the end of a short share), so that a wrapped model's collective calls line up."""
    lo, hi = shard(n, accelerator)
    count = math.ceil(math.ceil(n / accelerator.num_processes) / batch_size)
    return [(min(lo + b * batch_size, hi), min(lo + (b + 1) * batch_size, hi)) for b in range(count)]


def gather_shards(local: torch.Tensor, n: int, accelerator: Accelerator) -> torch.Tensor:
    """Every process's shard() rows, in order: padded to equal length for gather, then trimmed to n."""
    if accelerator.num_processes == 1:
        return local
    per = math.ceil(n / accelerator.num_processes)
    padded = local.new_zeros((per, *local.shape[1:]))
    padded[: local.shape[0]] = local
    return accelerator.gather(padded)[:n]


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact-enough sums, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def all_succeeded(error: Optional[BaseException], accelerator: Accelerator) -> bool:
    """Every process learns whether any of them failed, so that none waits forever for one that gave up."""
    failed = reduce_sum(torch.tensor(float(error is not None), device=accelerator.device), accelerator)
    return not bool(failed.item())


def reduce_sum(values: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """The sum over processes (the tensor itself on one process)."""
    return accelerator.reduce(values, reduction="sum") if accelerator.num_processes > 1 else values
