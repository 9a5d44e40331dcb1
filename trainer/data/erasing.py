"""Random erasing (--reprob, --remode, --recount) with timm's RandomErasing semantics, on the normalised batch: the
boxes drawn per image in the epoch plan as timm draws them, the fill applied on the device. Per-pixel noise ('pixel')
comes from a counter hash of (seed, epoch, image, channel, row, column), so an image's erased view is the same in a
resumed run and in a teacher cache however the batches fall."""
from __future__ import annotations

import math
from dataclasses import dataclass
import torch

_MIN_AREA, _MAX_AREA, _MIN_ASPECT = 0.02, 1 / 3, 0.3  # timm's RandomErasing defaults
_TRIES = 10
_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Erasing:
    """--reprob, --remode, --recount, at the model's input side `size`."""

    prob: float
    mode: str = "pixel"
    max_count: int = 1
    size: int = 224


@dataclass
class EraseDraws:
    """Per image up to max_count boxes (top, left, height, width) at side `size`, which of them are used, the colour
    of each ('rand') and the image's noise key ('pixel'); on the host, copied to the device by erase()."""

    boxes: torch.Tensor  # [N, K, 4] int64
    used: torch.Tensor  # [N, K] bool
    colour: torch.Tensor  # [N, K, 3] float32 (zeros unless 'rand')
    key: torch.Tensor  # [N] int64, a 31-bit key per (seed, epoch, image)
    mode: str
    size: int

    def take(self, rows: slice | torch.Tensor) -> EraseDraws:
        """These rows (kept on the host, so that whether a batch erases anything is known without the device)."""
        r = rows.cpu() if isinstance(rows, torch.Tensor) else rows
        return EraseDraws(self.boxes[r], self.used[r], self.colour[r], self.key[r], self.mode, self.size)


def noise_keys(images: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """[N] keys of (seed, epoch, image): what a pixel-mode fill is a function of."""
    salt = _hash32(torch.tensor([(seed * 1_000_003 + epoch) & _M32], dtype=torch.int64))
    return _hash32(images.long() ^ salt) & 0x7FFFFFFF


def draw_erasing(n: int, e: Erasing, keys: torch.Tensor, g: torch.Generator) -> EraseDraws:
    """n images' boxes, drawn as timm's RandomErasing._erase draws them (a count in [1, max_count], each box the first
    of 10 tries whose side fits), all at once."""
    s, k = e.size, e.max_count
    apply = torch.rand(n, generator=g, dtype=torch.float64) <= e.prob
    count = torch.randint(1, k + 1, (n, 1), generator=g) if k > 1 else torch.ones(n, 1, dtype=torch.int64)
    area = torch.empty(n, k, _TRIES, dtype=torch.float64).uniform_(_MIN_AREA, _MAX_AREA, generator=g)
    target = area * (s * s) / count.unsqueeze(-1)
    aspect = torch.exp(torch.empty(n, k, _TRIES, dtype=torch.float64).uniform_(
        math.log(_MIN_ASPECT), math.log(1 / _MIN_ASPECT), generator=g))
    h, w = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    fits = (w < s) & (h < s)
    first = fits.long().argmax(-1, keepdim=True)
    h, w = h.gather(-1, first)[..., 0], w.gather(-1, first)[..., 0]
    u = torch.rand(n, k, 2, generator=g, dtype=torch.float64)
    top, left = torch.floor(u[..., 0] * (s - h + 1)), torch.floor(u[..., 1] * (s - w + 1))
    used = apply.unsqueeze(1) & (torch.arange(k) < count) & fits.any(-1)
    colour = torch.randn(n, k, 3, generator=g) if e.mode == "rand" else torch.zeros(n, k, 3)
    boxes = torch.stack([top, left, h, w], dim=-1).long()
    return EraseDraws(boxes, used, colour, keys, e.mode, s)


def _hash32(v: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (xorshift-multiply) in int64 arithmetic; multipliers under 2^31 keep products below 2^63."""
    v = v & _M32
    v = v ^ (v >> 16)
    v = (v * 0x7FEB352D) & _M32
    v = v ^ (v >> 15)
    v = (v * 0x5BD1E995) & _M32
    return v ^ (v >> 16)


def pixel_noise(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """[B, C, H, W] standard normal values, a pure function of each image's key and the pixel (Box-Muller on two
    hashed counters): the same on every run and every batch layout."""
    c, h, w = shape
    cell = torch.arange(c * h * w, device=keys.device, dtype=torch.int64).view(1, c, h, w)
    base = _hash32(keys.view(-1, 1, 1, 1) * 0x6C8E9CF5 + cell * 2)
    u1 = ((_hash32(base) >> 8).float() + 0.5) / 16777216.0
    u2 = (_hash32(base + 1) >> 8).float() / 16777216.0
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def erase(x: torch.Tensor, d: EraseDraws) -> torch.Tensor:
    """The normalised batch with each image's boxes filled (zeros, a colour, or noise); at another side than the
    draws' (a teacher's input) the boxes are scaled to it."""
    if not bool(d.used.any()):
        return x
    b, c, side, _ = x.shape
    boxes = d.boxes.to(x.device)
    if side != d.size:
        boxes = torch.round(boxes.double() * side / d.size).long()
    pos = torch.arange(side, device=x.device)
    rows = (pos >= boxes[..., 0:1]) & (pos < boxes[..., 0:1] + boxes[..., 2:3])  # [B, K, S]
    cols = (pos >= boxes[..., 1:2]) & (pos < boxes[..., 1:2] + boxes[..., 3:4])
    inside = rows[..., :, None] & cols[..., None, :] & d.used.to(x.device)[..., None, None]  # [B, K, S, S]
    if d.mode == "pixel":
        fill = pixel_noise(d.key.to(x.device), (c, side, side)).to(x.dtype)
        return torch.where(inside.any(1, keepdim=True), fill, x)
    colour = d.colour.to(device=x.device, dtype=x.dtype)
    for k in range(boxes.shape[1]):  # later boxes over earlier ones, as timm paints them
        x = torch.where(inside[:, k:k + 1], colour[:, k].view(b, c, 1, 1), x)
    return x
