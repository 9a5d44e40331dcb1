"""How long the study will take here, from a few measured steps of each model, said before the first run."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any

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
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        sync(device)
        return (time.perf_counter() - start) / repeats / x.shape[0]

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


def study_seconds(p: Preset, device: torch.device, num_classes: int, num_eval: int, stand_in: bool) -> float:
    """The six runs (and the stand-in pretraining, where the study makes one): training plus evaluations."""
    n_train = p.samples_per_class * num_classes
    n_eval = p.eval_samples_per_class * num_classes if p.eval_samples_per_class else num_eval
    size = p.img_size or 224
    base = seconds_per_image(p.base_model, p.base_kwargs, size, p.batch_size, p.mixed_precision or "no", device)
    tiny = seconds_per_image(p.tiny_model, p.tiny_kwargs, size, p.batch_size, p.mixed_precision or "no", device)

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
    """One line: the study's estimated time here, and on a machine without a GPU, where the demo is."""
    seconds = study_seconds(p, device, num_classes, num_eval, stand_in)
    when = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    line = (f"study: estimated {when} on this {device.type} ({p.epochs} epochs of 6 runs"
            f"{' and the stand-in pretraining' if stand_in else ''}, from a few measured steps of each model)")
    if device.type == "cpu" and preset_name != "demo":
        line += ("; there is no GPU here: `python -m trainer.study --preset demo` runs the same study shrunk for a "
                 "CPU in minutes")
    return line
