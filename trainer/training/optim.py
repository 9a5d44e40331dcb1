"""The optimizer and the learning-rate schedule: AdamW through timm, linear warm-up, then cosine decay."""
from __future__ import annotations

import math
from typing import Any, Callable

import timm.optim
import torch
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig


def cosine_with_warmup(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear warm-up from ~0, then cosine decay to min_ratio."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int,
                    device: torch.device) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """AdamW without weight decay on biases, norms and embeddings (timm's no_weight_decay), and its schedule."""
    fused: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}  # one kernel for all parameters
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    total = steps_per_epoch * cfg.epochs
    schedule = cosine_with_warmup(total, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio)
    return optimizer, LambdaLR(optimizer, schedule)
