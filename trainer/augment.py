"""Batched augmentation, resizing and normalisation on the device: no per-sample PIL work."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class View:
    """How one model wants its input: size, interpolation and normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"


@functools.lru_cache(maxsize=16)
def _scale_shift(view: View, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # (x / 255 - mean) / std as one multiply-subtract; built once per device, because a fresh
    # host-to-GPU copy every step would synchronise the host with the GPU.
    mean = torch.tensor(view.mean, dtype=torch.float32)
    std = torch.tensor(view.std, dtype=torch.float32)
    scale, shift = 1.0 / (255.0 * std), mean / std
    return scale.view(1, 3, 1, 1).to(device), shift.view(1, 3, 1, 1).to(device)


def _resize(x: torch.Tensor, view: View) -> torch.Tensor:
    """uint8 in, resized (uint8 on the CPU, float elsewhere): PIL-style antialiased bicubic/bilinear."""
    if x.shape[-1] == view.size and x.shape[-2] == view.size:
        return x
    mode = view.interpolation if view.interpolation in ("bilinear", "bicubic") else "bilinear"
    if x.device.type == "cpu":
        # The uint8 channels-last kernel is torch's PIL-compatible fast path: ~20x the float one on a CPU.
        return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(view.size, view.size),
                             mode=mode, antialias=True)
    out = F.interpolate(x.float(), size=(view.size, view.size), mode=mode, antialias=True)
    return out.clamp_(0.0, 255.0)


def _normalize(x: torch.Tensor, view: View) -> torch.Tensor:
    scale, shift = _scale_shift(view, x.device)
    return x.float().mul_(scale).sub_(shift) if x.dtype == torch.uint8 else x.mul_(scale).sub_(shift)


def random_crop(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad by `pad` and cut each image at its own (dy, dx): CIFAR-style crop, batched."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return xp.gather(3, cols)


def augment(images: torch.Tensor, view: View, flip: Optional[torch.Tensor] = None,
            crop: Optional[torch.Tensor] = None, crop_pad: int = 0) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float model input: crop and flip at the source size, then resize and normalise."""
    x = images
    if crop is not None and crop_pad:
        x = random_crop(x, crop.to(x.device), crop_pad)
    if flip is not None:
        x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    return _normalize(_resize(x, view), view)


def preprocess(images: torch.Tensor, view: View) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float model input without augmentation (evaluation)."""
    return augment(images, view)
