"""An exponential moving average of the weights (timm's ModelEmaV3): updated after every optimizer step (with
--model-ema-warmup, at timm's warm-up decay 1 - (1 + step)^(-2/3), capped at --model-ema-decay: what suits a run of a
few hundred steps), saved in every checkpoint, evaluated beside the live model, written as model_ema.safetensors."""
from __future__ import annotations

from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from timm.utils.model_ema import ModelEmaV3

from ..config import TrainConfig
from ..errors import UsageError, warn


def build_ema(model: torch.nn.Module, cfg: TrainConfig, accelerator: Accelerator,
              total_steps: int) -> Optional[ModelEmaV3]:
    """The EMA of a model that is about to train (None without --model-ema); checkpoints save and restore it
    (training/checkpoints.py) so that a resumed run continues it exactly."""
    if not cfg.model_ema:
        return None
    if accelerator.distributed_type == DistributedType.FSDP:
        raise UsageError("--model-ema under FSDP: each process holds a shard of the weights, not the model an average "
                         "needs; train with DDP (accelerate_configs/multi_gpu.yaml) or drop --model-ema")
    memory = 1 / (1 - cfg.model_ema_decay) if cfg.model_ema_decay < 1 else float("inf")
    if not cfg.model_ema_warmup and memory > total_steps:
        warn(f"--model-ema-decay {cfg.model_ema_decay} remembers about {memory:.0f} steps, more than this run's "
             f"{total_steps}: its average stays near the starting weights; pass --model-ema-warmup, or a decay nearer "
             f"{1 - 1 / max(total_steps / 5, 2):.3f}")
    return ModelEmaV3(model, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup)


def update_ema(ema: Optional[ModelEmaV3], model: torch.nn.Module, accelerator: Accelerator, step: int) -> None:
    """After an optimizer step: move the average towards the live weights (every process the same way)."""
    if ema is not None:
        ema.update(accelerator.unwrap_model(model), step=step)
