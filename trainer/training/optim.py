"""The optimizer and the learning-rate schedule: timm's optimizers (layer-wise decay included), linear warm-up, then
cosine decay at each parameter group's scale."""
from __future__ import annotations

import difflib
import functools
import math
from typing import Any, Callable

import timm.optim
import torch
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig
from ..errors import UsageError


def cosine_with_warmup(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear warm-up from ~0, then cosine decay to min_ratio."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def check_optimizer(name: str) -> None:
    """UsageError, with close matches, for an optimizer timm does not know."""
    known = [str(n) for n in timm.optim.list_optimizers()]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        raise UsageError(f"--opt {name} is not one of timm's optimizers: "
                         + (f"did you mean {', '.join(close)}?" if close else f"pass one of {', '.join(known[:12])}, ..."))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int,
                    device: torch.device) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """timm's optimizer (--opt; no weight decay on biases, norms and embeddings, timm's no_weight_decay; layer-wise
    lr scales with --layer-decay), and its warm-up + cosine schedule applied to every parameter group at that group's
    scale (a plain torch scheduler would ignore timm's lr_scale: layer decay would silently do nothing)."""
    extra: dict[str, Any] = {}
    if device.type == "cuda" and cfg.opt in ("adamw", "adam"):
        extra["fused"] = True  # one kernel for all parameters
    if cfg.opt_eps is not None:
        extra["eps"] = cfg.opt_eps
    if cfg.opt_betas:
        extra["betas"] = tuple(cfg.opt_betas)
    if cfg.layer_decay is not None:
        extra["layer_decay"] = cfg.layer_decay
    optimizer = timm.optim.create_optimizer_v2(model, cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               momentum=cfg.momentum, **extra)
    total = steps_per_epoch * cfg.epochs
    schedule = cosine_with_warmup(total, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio)
    scales = [float(g.get("lr_scale", 1.0)) for g in optimizer.param_groups]
    return optimizer, LambdaLR(optimizer, [functools.partial(_scaled, schedule, k) for k in scales])


def _scaled(schedule: Callable[[int], float], scale: float, step: int) -> float:
    return scale * schedule(step)
