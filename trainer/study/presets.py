"""What differs between the real four-part study (hw2) and its CPU-sized demo."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..distributed import bf16_is_emulated


@dataclass
class Preset:
    """Everything that differs between the real study and its CPU-sized demo."""

    dataset: str
    samples_per_class: int
    eval_samples_per_class: Optional[int]
    epochs: int
    batch_size: int
    lr: float  # the tiny model's; the base model uses base_lr
    base_model: str
    tiny_model: str
    img_size: Optional[int] = None
    base_lr: Optional[float] = None
    base_kwargs: dict[str, Any] = field(default_factory=dict)
    tiny_kwargs: dict[str, Any] = field(default_factory=dict)
    mixed_precision: Optional[str] = None
    eval_every: int = 0
    bench_batch_size: int = 256
    bench_precision: str = "fp32"
    standin_epochs: int = 3
    standin_per_class: int = 60
    teacher_cache: bool = True
    description: str = ""


def hw2_preset() -> Preset:
    """CIFAR-10, 1,000 per class, 5 epochs, 224x224, the mission's models, mixed precision on a GPU."""
    gpu = torch.cuda.is_available()
    # Not torch.cuda.is_bf16_supported(): it is True on a T4, where bf16 is emulated and fp16 is the fast choice.
    bf16 = gpu and not bf16_is_emulated(torch.device("cuda"))
    return Preset(dataset="uoft-cs/cifar10", samples_per_class=1000, eval_samples_per_class=None, epochs=5,
                  batch_size=64, lr=1e-4, base_model="vit_base_patch16_224", tiny_model="vit_tiny_patch16_224",
                  mixed_precision=("bf16" if bf16 else "fp16") if gpu else "no",
                  eval_every=50, bench_precision="bf16" if bf16 else ("fp16" if gpu else "fp32"),
                  standin_epochs=2, standin_per_class=1000,
                  description="CIFAR-10, 1,000 training images per class, 5 epochs, 224x224")


def demo_preset(data_dir: str) -> Preset:
    """scikit-learn's digits as 32x32 RGB, small ViTs of the same family, minutes on 2 CPU cores."""
    return Preset(dataset=data_dir, samples_per_class=60, eval_samples_per_class=None, epochs=5, batch_size=32,
                  lr=1e-3, base_lr=3e-4, base_model="vit_base_patch16_224", tiny_model="vit_tiny_patch16_224", img_size=32,
                  base_kwargs={"patch_size": 8, "depth": 2}, tiny_kwargs={"patch_size": 8, "depth": 2},
                  mixed_precision="no", eval_every=10, bench_batch_size=64, bench_precision="fp32",
                  standin_epochs=4, standin_per_class=60,
                  description="scikit-learn digits (8x8 upscaled to 32x32 RGB), 60 training images per class, "
                              "5 epochs; ViT-B and ViT-Ti widths at depth 2, patch 8")
