"""The image operations of RandAugment and TrivialAugment, batched with a parameter per image: float [B, 3, H, W]
images holding whole numbers in [0, 255] in and out, each op as PIL computes it on uint8 (its fixed-point luma, its
bicubic kernel, its truncation to whole values after every op), so that a chain of ops sees what PIL's chain sees."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# ITU-R 601-2 luma in PIL's 16-bit fixed point (convert("L")).
_LUMA = (19595, 38470, 7471)


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's Image.blend(degenerate, x, factor): extrapolates past 1, clipped to [0, 255]."""
    f = _per_image(factor, x)
    return (degenerate + f * (x - degenerate)).floor_().clamp_(0, 255)


def _luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return torch.floor((r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + 32768) / 65536).unsqueeze(1)


def affine(x: torch.Tensor, matrix: torch.Tensor, fill: Sequence[float], mode: str = "bicubic") -> torch.Tensor:
    """Each image resampled through its own [2, 3] matrix, which maps an output point to the input point it shows, in
    pixel units with pixel centres at +0.5 (PIL's Image.transform(AFFINE) convention); outside the image: `fill`."""
    b, _, h, w = x.shape
    m = matrix.to(device=x.device, dtype=torch.float32)
    # Continuous pixel coordinates c = (u + 1) * size / 2 for grid_sample's u in [-1, 1] (align_corners=False).
    to_px = torch.tensor([[w / 2, 0, w / 2], [0, h / 2, h / 2], [0, 0, 1]], device=x.device)
    from_px = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1]], device=x.device)
    full = torch.cat([m, torch.tensor([[[0.0, 0.0, 1.0]]], device=x.device).expand(b, 1, 3)], dim=1)
    theta = from_px @ full @ to_px
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    # PIL samples a point inside the image with its edge pixels repeated, and fills a point outside it.
    inside = ((grid >= -1) & (grid < 1)).all(-1).unsqueeze(1)
    if mode == "bicubic":
        sampled = _pil_bicubic(x.float(), grid)
    else:
        sampled = F.grid_sample(x.float(), grid, mode="nearest" if mode == "nearest" else "bilinear",
                                padding_mode="border", align_corners=False)
    colour = torch.tensor(fill, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return torch.where(inside, sampled, colour).floor_().clamp_(0, 255).to(x.dtype)


def _cubic_weights(d: torch.Tensor) -> list[torch.Tensor]:
    """PIL's transform BICUBIC taps at offsets -1, 0, 1, 2 from the sample's floor (cubic convolution, a = -1)."""
    d2, d3 = d * d, d * d * d
    return [-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3]


def _pil_bicubic(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bicubic sampling at grid points as PIL's Image.transform computes it (grid_sample's kernel has a = -0.75, PIL's
    a = -1), edge pixels repeated: the 16 taps of every output pixel in one gather."""
    b, c, h, w = x.shape
    px = (grid[..., 0] + 1) * (w / 2) - 0.5  # [B, H, W] source coordinates in pixel-index units
    py = (grid[..., 1] + 1) * (h / 2) - 0.5
    x0, y0 = px.floor(), py.floor()
    offsets = torch.arange(-1, 3, device=x.device, dtype=px.dtype).view(1, 4, 1, 1)
    cols = (x0.unsqueeze(1) + offsets).clamp_(0, w - 1).long()  # [B, 4, H, W]
    rows = (y0.unsqueeze(1) + offsets).clamp_(0, h - 1).long() * w
    taps = (rows.unsqueeze(2) + cols.unsqueeze(1)).view(b, 1, 16 * h * w)  # [B, 1, 4 rows x 4 cols x H x W]
    weights = (torch.stack(_cubic_weights(py - y0), 1).unsqueeze(2)
               * torch.stack(_cubic_weights(px - x0), 1).unsqueeze(1)).view(b, 1, 16, h * w)
    values = x.reshape(b, c, h * w).gather(2, taps.expand(b, c, 16 * h * w)).view(b, c, 16, h * w)
    return (values * weights).sum(2).view(b, c, h, w)


def rotation(degrees: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 2, 3] matrices of PIL's Image.rotate(degrees) about the centre of a size x size image (counter-clockwise)."""
    a = -degrees.double() * math.pi / 180
    c, s, centre = torch.cos(a), torch.sin(a), size / 2.0
    tx = -(c * centre + s * centre) + centre
    ty = -(-s * centre + c * centre) + centre
    return torch.stack([torch.stack([c, s, tx], -1), torch.stack([-s, c, ty], -1)], 1).float()


def shear(factor: torch.Tensor, axis: int) -> torch.Tensor:
    """[B, 2, 3] matrices of timm's shear_x (axis 0: x_in = x + f y) or shear_y (axis 1: y_in = y + f x)."""
    m = torch.zeros(len(factor), 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, axis, 1 - axis] = factor.float()
    return m


def translation(pixels: torch.Tensor, axis: int) -> torch.Tensor:
    """[B, 2, 3] matrices of timm's translate_x/y: the output shows the input `pixels` further along the axis."""
    m = torch.zeros(len(pixels), 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, axis, 2] = pixels.float()
    return m


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Brightness: a blend with black."""
    return _blend(torch.zeros_like(x), x, factor)


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Color: a blend with the image's greyscale."""
    return _blend(_luma(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Contrast: a blend with the greyscale's mean, rounded to a whole grey."""
    mean = torch.floor(_luma(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: a blend with ImageFilter.SMOOTH's blur, whose border is the image itself."""
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13
    c = x.shape[1]
    smooth = F.conv2d(x.float(), kernel.expand(c, 1, 3, 3).to(x.dtype), groups=c).round_()
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def invert(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.invert."""
    return 255 - x


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.posterize: keep the `bits` high bits (8 or more: unchanged, as timm skips it)."""
    step = torch.exp2(8 - bits.clamp(0, 8).to(device=x.device, dtype=x.dtype)).view(-1, 1, 1, 1)
    return torch.floor(x / step) * step


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.solarize: values at or above the threshold inverted."""
    return torch.where(x >= _per_image(threshold, x), 255 - x, x)


def solarize_add(x: torch.Tensor, add: torch.Tensor, threshold: float = 128) -> torch.Tensor:
    """timm's solarize_add: `add` added to the values below the threshold, clipped at 255."""
    return torch.where(x < threshold, (x + _per_image(add, x)).clamp_(max=255), x)


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.autocontrast: each channel stretched to [0, 255] (a flat channel left alone)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    spread = (hi - lo).clamp(min=1).double()
    # PIL's table arithmetic in double; a tensor over a tensor, since torch divides a scalar by a reciprocal multiply.
    scale = torch.full_like(spread, 255.0) / spread
    stretched = torch.floor(x.double() * scale + (-lo.double() * scale)).clamp_(0, 255).to(x.dtype)
    return torch.where(hi > lo, stretched, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize: each channel through its histogram's equalising table."""
    b, c, h, w = x.shape
    v = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    top = 255 - hist.flip(1).ne(0).long().argmax(1, keepdim=True)  # the highest value present
    step = (h * w - hist.gather(1, top)) // 255
    before = hist.cumsum(1) - hist  # pixels below each value
    lut = (step // 2 + before) // step.clamp(min=1)
    out = lut.clamp_(max=255).gather(1, v)
    # PIL leaves a channel alone when one value fills it or the step rounds to 0.
    return torch.where(step > 0, out, v).view(b, c, h, w).to(x.dtype)
