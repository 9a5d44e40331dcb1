"""How long the study will take here, from a few measured steps of each model, said before the first run."""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from typing import Any, Optional

import timm
import torch
import torch.nn.functional as F

from ..deploy.timing import DTYPES, sync
from .presets import Preset

CPU_PROBE_BATCH = 4  # a vit_base step at 224 takes about a minute on a small CPU at batch 64: probe with fewer
QUICK_STEP_S = 0.5  # a probe step faster than this is re-timed at the real batch size (small batches waste a CPU)


def seconds_per_image(model_name: str, kwargs: dict[str, Any], img_size: int, batch_size: int, precision: str,
                      device: torch.device, steps: int = 2) -> tuple[float, float]:
    """(training, evaluation) seconds per image of a model, from a warm-up step and `steps` timed steps."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, img_size=img_size, **kwargs).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = DTYPES.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def train_step(x: torch.Tensor) -> None:
        with autocast:
            loss = F.cross_entropy(model(x), torch.zeros(x.shape[0], dtype=torch.long, device=device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def per_image(fn: Any, x: torch.Tensor, repeats: int) -> float:
        best = float("inf")  # the fastest of the repeats: on a busy machine the others measure the other work
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            fn(x)
            sync(device)
            best = min(best, time.perf_counter() - start)
        return best / x.shape[0]

    batch = min(batch_size, CPU_PROBE_BATCH) if device.type == "cpu" else batch_size
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    per_image(train_step, x, 1)  # warm-up
    if batch < batch_size and per_image(train_step, x, 1) * batch < QUICK_STEP_S:
        x = torch.randn(batch_size, 3, img_size, img_size, device=device)
        per_image(train_step, x, 1)
    train = per_image(train_step, x, steps)
    with torch.inference_mode():
        evaluation = per_image(model, torch.cat([x, x]), steps + 1)  # evaluation batches are twice as large
    return train, evaluation


Costs = tuple[tuple[float, float], tuple[float, float]]  # (training, evaluation) seconds per image: ViT-B, ViT-Ti


def measure_costs(p: Preset, device: torch.device) -> Costs:
    """Both models' seconds per training and per evaluation image here."""
    size = p.img_size or 224
    return (seconds_per_image(p.base_model, p.base_kwargs, size, p.batch_size, p.mixed_precision or "no", device),
            seconds_per_image(p.tiny_model, p.tiny_kwargs, size, p.batch_size, p.mixed_precision or "no", device))


def study_seconds(p: Preset, device: torch.device, num_classes: int, num_eval: int, stand_in: bool,
                  costs: Optional[Costs] = None) -> float:
    """The six runs (and the stand-in pretraining, where the study makes one): training plus evaluations."""
    n_train = p.samples_per_class * num_classes
    n_eval = p.eval_samples_per_class * num_classes if p.eval_samples_per_class else num_eval
    base, tiny = costs or measure_costs(p, device)

    def run(cost: tuple[float, float], images: int, epochs: int, eval_every: int, eval_images: int) -> float:
        steps = math.ceil(images / p.batch_size) * epochs
        evals = epochs + (steps // eval_every if eval_every else 0)
        return cost[0] * images * epochs + cost[1] * eval_images * evals

    total = 2 * run(base, n_train, p.epochs, p.eval_every, n_eval) + 4 * run(tiny, n_train, p.epochs, p.eval_every,
                                                                           n_eval)
    total += 2 * base[1] * n_train * (2 if p.teacher_cache else p.epochs)  # the teacher of part 4's two students
    if stand_in:  # a 20-class task: each class x rotation
        standin = p.standin_per_class * 2 * num_classes
        total += run(base, standin, p.standin_epochs, 0, 0) + run(tiny, standin, p.standin_epochs, 0, 0)
    return total


def estimate_line(p: Preset, preset_name: str, device: torch.device, num_classes: int, num_eval: int,
                  stand_in: bool) -> str:
    """One line: the study's estimated time here, what the estimate rests on (the measured time of a training image of
    each model, and whether the machine was busy meanwhile), and, on a machine without a GPU, where the demo is."""
    base, tiny = costs = measure_costs(p, device)
    seconds = study_seconds(p, device, num_classes, num_eval, stand_in, costs)
    when = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    line = (f"study: estimated {when} on this {device.type} ({p.epochs} epochs of 6 runs"
            f"{' and the stand-in pretraining' if stand_in else ''}), from the fastest of a few timed steps of each "
            f"model: a training image takes {1e3 * base[0]:.3g} ms (ViT-B) and {1e3 * tiny[0]:.3g} ms (ViT-Ti)")
    load, cores = busy()
    if load is not None:
        line += (f"; this machine was busy while it measured (load {load:.1f} on {cores} cores), so the estimate is "
                 "high: expect less when it is idle")
    if device.type == "cpu" and preset_name != "demo":
        line += ("; there is no GPU here: `python -m trainer.study --preset demo` runs the same study shrunk for a "
                 "CPU in minutes")
    return line


def busy() -> tuple[Optional[float], int]:
    """(the one-minute load average, where it exceeds the cores this process may use; the cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None, cores
    return (load if load > cores else None), cores
