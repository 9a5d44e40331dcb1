"""The epoch plan: the order of the training images and their augmentation draws (flips, crops, resized-crop boxes,
--aa ops, erased boxes), a pure function of (seed, epoch); and each process's share of it, batch by batch."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import TrainConfig
from .augment import Draws
from .erasing import Erasing, draw_erasing, noise_keys
from .loading import SplitData
from ..augment_policy import Policy, parse_policy
from .policies import draw_policy


@dataclass
class EpochPlan:
    """One epoch's sample order and per-position augmentation, a pure function of (seed, epoch)."""

    order: torch.Tensor  # [N] int64, dataset positions in visiting order
    draws: Draws  # the augmentation of every visiting position


@dataclass(frozen=True)
class ResizedCrop:
    """timm's / torchvision's RandomResizedCrop parameters, for images of side x side."""

    side: tuple[int, int]  # (height, width) of the stored images
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def resized_crop_boxes(n: int, rrc: ResizedCrop, g: torch.Generator) -> torch.Tensor:
    """[n, 4] boxes drawn as torchvision's RandomResizedCrop.get_params draws them (10 tries, then the centre crop
    clamped to the ratio range), all at once."""
    h, w = rrc.side
    area = h * w * torch.empty(n, 10).uniform_(*rrc.scale, generator=g)
    aspect = torch.exp(torch.empty(n, 10).uniform_(math.log(rrc.ratio[0]), math.log(rrc.ratio[1]), generator=g))
    cw, ch = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.float().argmax(1, keepdim=True)  # the first try that fits
    cw, ch, found = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0], ok.any(1)
    in_ratio = w / h  # the fallback: the whole image, cut to the nearest allowed aspect ratio
    fw = w if in_ratio <= rrc.ratio[1] else round(h * rrc.ratio[1])
    fh = h if in_ratio >= rrc.ratio[0] else round(w / rrc.ratio[0])
    cw, ch = torch.where(found, cw, float(fw)), torch.where(found, ch, float(fh))
    u = torch.rand(n, 2, generator=g)
    top = torch.where(found, (u[:, 0] * (h - ch + 1)).floor(), ((h - ch) / 2).floor())
    left = torch.where(found, (u[:, 1] * (w - cw + 1)).floor(), ((w - cw) / 2).floor())
    return torch.stack([left, top, left + cw, top + ch], dim=1)


@dataclass(frozen=True)
class Augmentation:
    """What the epoch plan draws for each image."""

    flip: bool = False
    crop_pad: int = 0
    rrc: Optional[ResizedCrop] = None
    policy: Optional[Policy] = None
    erasing: Optional[Erasing] = None
    size: int = 224  # the model's input side, where the --aa ops and the erased boxes are drawn

    @property
    def by_epoch(self) -> bool:
        """An image's view is drawn afresh every epoch (anything beyond a flip)."""
        return bool(self.crop_pad or self.rrc or self.policy or self.erasing)


def plan_epoch(n: int, seed: int, epoch: int, aug: Augmentation) -> EpochPlan:
    """Draw the epoch's order, flips, crop offsets, resized-crop boxes, ops and erased boxes from a generator seeded by
    (seed, epoch)."""
    # A fresh generator per epoch makes a resumed run replay exactly the stream a run left alone would see.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if aug.flip else None
    crop = torch.randint(0, 2 * aug.crop_pad + 1, (n, 2), generator=g) if aug.crop_pad else None
    # Each later kind is drawn after the earlier ones: adding one leaves the others' streams as they were.
    boxes = resized_crop_boxes(n, aug.rrc, g) if aug.rrc is not None else None
    ops = draw_policy(n, aug.policy, aug.size, g) if aug.policy is not None else None
    erased = draw_erasing(n, aug.erasing, noise_keys(order, seed, epoch), g) if aug.erasing is not None else None
    return EpochPlan(order, Draws(flips, crop, aug.crop_pad, boxes, ops, erased))


def padded_positions(n: int, world: int) -> torch.Tensor:
    """Positions 0..n-1, then the first ones again until every process has as many (n a multiple of world)."""
    extra = (-n) % world
    positions = torch.arange(n)
    return torch.cat([positions, positions[:extra]]) if extra else positions


def epoch_slices(n: int, batch_size: int, world: int, rank: int) -> list[tuple[int, int]]:
    """[lo, hi) of this process in every global batch of one epoch, over the padded order."""
    padded = math.ceil(n / world) * world
    out, global_bs = [], batch_size * world
    for start in range(0, padded, global_bs):
        size = min(global_bs, padded - start) // world
        out.append((start + rank * size, start + (rank + 1) * size))
    return out


def augmentation(cfg: TrainConfig, split: SplitData, size: int) -> Augmentation:
    """The run's training augmentation for this split's images and a model input side of `size`."""
    rrc = None
    if cfg.random_resized_crop:
        rrc = ResizedCrop(split.images.shape[2:4], tuple(cfg.scale), tuple(cfg.ratio))  # type: ignore[arg-type]
    policy = parse_policy(cfg.aa) if cfg.aa else None
    erasing = Erasing(cfg.reprob, cfg.remode, cfg.recount, size) if cfg.reprob > 0 else None
    return Augmentation(cfg.flip, cfg.random_crop, rrc, policy, erasing, size)


def steps_per_epoch(n: int, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps in one epoch."""
    return math.ceil(len(epoch_slices(n, cfg.batch_size, world, 0)) / cfg.grad_accum)
