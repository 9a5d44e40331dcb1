"""Mixup and CutMix of a micro-batch on the device, with timm's semantics (timm/data/mixup.py's Mixup: each image
mixed with the batch reversed, modes batch / pair / elem, lambda corrected to the clipped box's area, soft targets
with label smoothing): the draws made as timm makes them, in the same order, from a generator that is a pure function
of (seed, epoch, micro-batch, process), so that a resumed run mixes exactly as the run left alone."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig


@dataclass(frozen=True)
class MixSettings:
    """--mixup, --cutmix, --cutmix-minmax, --mixup-prob, --mixup-switch-prob, --mixup-mode (timm's meanings)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: Optional[tuple[float, float]] = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"

    @property
    def active(self) -> bool:
        """Anything to mix at all."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None

    @staticmethod
    def of(cfg: TrainConfig, epoch: int) -> Optional[MixSettings]:
        """The run's mixing in this epoch (None: none, or --mixup-off-epoch reached)."""
        minmax = tuple(cfg.cutmix_minmax) if cfg.cutmix_minmax else None
        s = MixSettings(cfg.mixup, 1.0 if minmax else cfg.cutmix, minmax, cfg.mixup_prob,
                        cfg.mixup_switch_prob, cfg.mixup_mode)
        off = cfg.mixup_off_epoch and epoch >= cfg.mixup_off_epoch
        return s if s.active and not off else None


@dataclass
class MixDraws:
    """One micro-batch's mixing: per image its lambda (1: left alone), whether it is a CutMix, and the box
    (top, bottom, left, right) cut from its partner, the image at the mirrored position, at input size `size`."""

    lam: np.ndarray  # [B] float32
    cut: np.ndarray  # [B] bool
    boxes: np.ndarray  # [B, 4] int (yl, yh, xl, xh)
    size: int


def mix_generator(seed: int, epoch: int, micro: int, rank: int) -> np.random.RandomState:
    """The generator of one micro-batch's draws: a legacy RandomState, the kind timm draws from (np.random)."""
    digest = hashlib.sha1(f"mix {seed} {epoch} {micro} {rank}".encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


def _box(rng: np.random.RandomState, size: int, lam: float, s: MixSettings) -> tuple[tuple[int, int, int, int], float]:
    """timm's cutmix_bbox_and_lam for a square image: the box, and lambda corrected to its clipped area."""
    if s.cutmix_minmax is not None:  # rand_bbox_minmax
        lo, hi = s.cutmix_minmax
        cut_h = rng.randint(int(size * lo), int(size * hi))
        cut_w = rng.randint(int(size * lo), int(size * hi))
        yl, xl = rng.randint(0, size - cut_h + 1), rng.randint(0, size - cut_w + 1)
        yh, xh = yl + cut_h, xl + cut_w
    else:  # rand_bbox
        ratio = np.sqrt(1 - lam)
        cut_h, cut_w = int(size * ratio), int(size * ratio)
        cy, cx = rng.randint(0, size), rng.randint(0, size)
        yl, yh = np.clip(cy - cut_h // 2, 0, size), np.clip(cy + (cut_h + 1) // 2, 0, size)
        xl, xh = np.clip(cx - cut_w // 2, 0, size), np.clip(cx + (cut_w + 1) // 2, 0, size)
    return (int(yl), int(yh), int(xl), int(xh)), 1.0 - (yh - yl) * (xh - xl) / float(size * size)


def _per_elem(rng: np.random.RandomState, n: int, s: MixSettings) -> tuple[np.ndarray, np.ndarray]:
    """timm's Mixup._params_per_elem."""
    lam = np.ones(n, dtype=np.float32)
    cut = np.zeros(n, dtype=bool)
    if s.mixup_alpha > 0.0 and s.cutmix_alpha > 0.0:
        cut = rng.rand(n) < s.switch_prob
        lam_mix = np.where(cut, rng.beta(s.cutmix_alpha, s.cutmix_alpha, size=n),
                           rng.beta(s.mixup_alpha, s.mixup_alpha, size=n))
    elif s.mixup_alpha > 0.0:
        lam_mix = rng.beta(s.mixup_alpha, s.mixup_alpha, size=n)
    else:
        cut = np.ones(n, dtype=bool)
        lam_mix = rng.beta(s.cutmix_alpha, s.cutmix_alpha, size=n)
    lam = np.where(rng.rand(n) < s.prob, lam_mix.astype(np.float32), lam)
    return lam, cut


def draw_mix(rng: np.random.RandomState, batch: int, size: int, s: MixSettings) -> MixDraws:
    """The draws timm's Mixup would make for a batch of `batch` images of side `size`, in its order."""
    boxes = np.zeros((batch, 4), dtype=np.int64)
    if s.mode == "batch":  # timm's _params_per_batch
        one, cut_all = 1.0, False
        if rng.rand() < s.prob:
            if s.mixup_alpha > 0.0 and s.cutmix_alpha > 0.0:
                cut_all = bool(rng.rand() < s.switch_prob)
                one = float(rng.beta(s.cutmix_alpha, s.cutmix_alpha) if cut_all
                            else rng.beta(s.mixup_alpha, s.mixup_alpha))
            elif s.mixup_alpha > 0.0:
                one = float(rng.beta(s.mixup_alpha, s.mixup_alpha))
            else:
                cut_all, one = True, float(rng.beta(s.cutmix_alpha, s.cutmix_alpha))
        if cut_all and one != 1.0:
            box, one = _box(rng, size, one, s)
            boxes[:] = box
        return MixDraws(np.full(batch, one, dtype=np.float32), np.full(batch, cut_all and one != 1.0), boxes, size)
    half = s.mode == "pair"
    lam, cut = _per_elem(rng, batch // 2 if half else batch, s)
    for i in range(len(lam)):
        if lam[i] != 1.0 and cut[i]:
            boxes[i], lam[i] = _box(rng, size, float(lam[i]), s)
    if half:  # the pair's second image mirrors the first (an odd middle image is left alone)
        middle = np.ones(batch % 2, dtype=np.float32)
        lam = np.concatenate([lam, middle, lam[::-1]])
        cut = np.concatenate([cut, np.zeros(batch % 2, dtype=bool), cut[::-1]])
        boxes[batch - batch // 2:] = boxes[:batch // 2][::-1]
    return MixDraws(lam, cut & (lam != 1.0), boxes, size)


def mix(x: torch.Tensor, m: MixDraws) -> torch.Tensor:
    """The batch (float [B, 3, S, S]) mixed with itself reversed: a blend, or the partner's box pasted in. At another
    input size than the draws' (a teacher's), the boxes are scaled to it."""
    partner = x.flip(0)
    lam = torch.as_tensor(m.lam, device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    out = x * lam + partner * (1 - lam)
    if m.cut.any():
        boxes = torch.as_tensor(m.boxes, device=x.device)
        if x.shape[-1] != m.size:
            boxes = torch.round(boxes.double() * x.shape[-1] / m.size).long()
        pos = torch.arange(x.shape[-1], device=x.device)
        rows = (pos >= boxes[:, 0:1]) & (pos < boxes[:, 1:2])  # [B, S]
        cols = (pos >= boxes[:, 2:3]) & (pos < boxes[:, 3:4])
        inside = (rows[:, :, None] & cols[:, None, :])[:, None]  # [B, 1, S, S]
        cut = torch.as_tensor(m.cut, device=x.device).view(-1, 1, 1, 1)
        out = torch.where(cut, torch.where(inside, partner, x), out)
    return out


def mixed_targets(labels: torch.Tensor, num_classes: int, m: MixDraws, smoothing: float) -> torch.Tensor:
    """timm's mixup_target: smoothed one-hot targets blended with the reversed batch's by each image's lambda."""
    off = smoothing / num_classes
    one_hot = F.one_hot(labels, num_classes).to(torch.float32) * (1.0 - smoothing) + off
    lam = torch.as_tensor(m.lam, device=labels.device, dtype=torch.float32).view(-1, 1)
    return one_hot * lam + one_hot.flip(0) * (1.0 - lam)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """timm's SoftTargetCrossEntropy, in float32."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
