"""Batched augmentation, resizing and normalisation on the device: no per-sample PIL work."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .erasing import EraseDraws, erase
from .policies import PolicyDraws, apply_policy


@dataclass(frozen=True)
class View:
    """How one model wants its input: size, interpolation and normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875  # timm's eval framing: resize the shorter side to size / crop_pct, centre-crop size

    @property
    def eval_crop(self) -> EvalCrop:
        """What storing photos for this view depends on."""
        return EvalCrop(self.size, self.crop_pct)


@dataclass(frozen=True)
class EvalCrop:
    """timm's eval transform for a model: resize the shorter side to `side`, centre-crop `size`. Photos are stored as
    the centre squares of side `side` that this crop is cut from."""

    size: int
    crop_pct: float = 0.875

    @property
    def side(self) -> int:
        """timm's eval resize: the shorter side goes to floor(size / crop_pct)."""
        return math.floor(self.size / self.crop_pct)


@dataclass
class Draws:
    """One batch's augmentation, as the epoch plan drew it; nothing drawn means the eval view."""

    flip: Optional[torch.Tensor] = None  # [B] bool
    crop: Optional[torch.Tensor] = None  # [B, 2] (dy, dx) offsets into the reflect-padded image
    crop_pad: int = 0
    boxes: Optional[torch.Tensor] = None  # [B, 4] float (x1, y1, x2, y2): random-resized-crop boxes
    ops: Optional[PolicyDraws] = None  # --aa: each image's ops (on the host)
    erase: Optional[EraseDraws] = None  # --reprob: each image's erased boxes (on the host)

    def take(self, rows: slice | torch.Tensor, device: Optional[torch.device] = None) -> Draws:
        """These rows of the draws (a slice or an index), on a device if given."""
        flip, crop, boxes = (t[rows].to(device or t.device) if t is not None else None
                             for t in (self.flip, self.crop, self.boxes))
        ops = self.ops.take(rows) if self.ops is not None else None
        erased = self.erase.take(rows) if self.erase is not None else None
        return Draws(flip, crop, self.crop_pad, boxes, ops, erased)


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


def centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """The centre side x side window, placed as torchvision's CenterCrop places it."""
    h, w = x.shape[-2:]
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    return x[..., top:top + side, left:left + side]


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's own box, resized to size x size in one batched call (float out)."""
    index = torch.arange(x.shape[0], device=x.device, dtype=torch.float32)[:, None]
    rois = torch.cat([index, boxes.to(device=x.device, dtype=torch.float32)], dim=1)
    # aligned=True: pixel centres at +0.5 as in PIL; sampling_ratio -1: enough samples per output pixel to average
    # the box (an antialiasing box filter) where a box is larger than the output.
    return roi_align(x.float(), rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def crop_square(x: torch.Tensor, view: View) -> torch.Tensor:
    """A photo stored as its centre square: the view's centre crop (timm's eval transform where the square was
    stored for this view; otherwise the crop that keeps the view's crop_pct, then a resize)."""
    side = x.shape[-1]
    crop = view.size if side == view.eval_crop.side else min(side, round(side * view.crop_pct))
    return centre_crop(x, crop)


def _fill(view: View) -> tuple[float, float, float]:
    """timm's img_mean: the colour a geometric op fills with."""
    r, g, b = (min(255, round(255 * m)) for m in view.mean)
    return float(r), float(g), float(b)


def augment(images: torch.Tensor, view: View, draws: Optional[Draws] = None, squares: bool = False) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float model input: crop (pad-and-crop, random-resized, or the eval crop of photos stored as
    their centre squares) and flip at the source size, then resize, the --aa ops, normalise, and erase (timm's
    order: RandAugment on the resized image, erasing on the normalised one)."""
    d = draws or Draws()
    x = images
    if d.crop is not None and d.crop_pad:
        x = random_crop(x, d.crop.to(x.device), d.crop_pad)
    if d.boxes is not None:
        x = resized_crops(x, d.boxes, view.size)
    elif squares:
        x = crop_square(x, view)
    if d.flip is not None:
        x = torch.where(d.flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    x = _resize(x, view)
    if d.ops is not None:
        # PIL's ops see whole values: a float resize is rounded as PIL's uint8 resize is.
        x = apply_policy(x.float().round_(), d.ops, _fill(view), view.interpolation)
    x = _normalize(x, view)
    return erase(x, d.erase) if d.erase is not None else x


def preprocess(images: torch.Tensor, view: View, squares: bool = False) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float model input without augmentation (evaluation)."""
    return augment(images, view, squares=squares)
