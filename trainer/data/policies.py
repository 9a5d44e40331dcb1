"""--aa: RandAugment as timm's policy strings say it ('rand-m9-mstd0.5-inc1') and TrivialAugment ('trivial', as
torchvision's TrivialAugmentWide draws it). The op, whether it applies, its magnitude and sign are drawn per image in
the epoch plan; the ops then run on the device, one batched call per op over the images that drew it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..augment_policy import LEVEL_DENOM, TRIVIAL_BINS, Policy
from . import image_ops as ops


@dataclass
class PolicyDraws:
    """Per image and layer: the op (an index into the policy's names; -1: left out) and its argument (degrees, factor,
    bits, threshold, or a shift as a fraction of the side). Kept on the host: it decides how a batch is grouped."""

    op: torch.Tensor  # [N, L] int64
    arg: torch.Tensor  # [N, L] float64
    names: tuple[str, ...]  # the policy's ops

    def take(self, rows: slice | torch.Tensor) -> PolicyDraws:
        """These rows."""
        r = rows.cpu() if isinstance(rows, torch.Tensor) else rows
        return PolicyDraws(self.op[r], self.arg[r], self.names)


def _signed(v: torch.Tensor, negate: torch.Tensor) -> torch.Tensor:
    return torch.where(negate, -v, v)


def rand_arg(name: str, m: torch.Tensor, negate: torch.Tensor) -> torch.Tensor:
    """timm's LEVEL_TO_ARG for op `name` at magnitudes m (translations as fractions of the side)."""
    level = m / LEVEL_DENOM
    if name in ("AutoContrast", "Equalize", "Invert", "Identity"):
        return torch.zeros_like(m)
    if name == "Rotate":
        return _signed(level * 30.0, negate)
    if name in ("Posterize", "PosterizeIncreasing"):
        bits = torch.floor(level * 4)
        return 4 - bits if name == "PosterizeIncreasing" else bits
    if name in ("Solarize", "SolarizeIncreasing"):
        threshold = torch.floor(level * 256).clamp(max=256)
        return 256 - threshold if name == "SolarizeIncreasing" else threshold
    if name == "SolarizeAdd":
        return torch.floor(level * 110).clamp(max=128)
    if name.endswith("Increasing"):  # Color/Contrast/Brightness/Sharpness: 1 +- up to 0.9
        return torch.clamp(1.0 + _signed(level * 0.9, negate), min=0.1)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1
    if name in ("ShearX", "ShearY"):
        return _signed(level * 0.3, negate)
    if name in ("TranslateXRel", "TranslateYRel"):
        return _signed(level * 0.45, negate)
    raise KeyError(name)


def _trivial_table(stop: float, start: float = 0.0) -> torch.Tensor:
    """torchvision's float32 magnitude table: its rounding decides, e.g., whether bin 15 shifts by 15 pixels or 16."""
    return torch.linspace(start, stop, TRIVIAL_BINS).double()


def trivial_arg(name: str, bins: torch.Tensor, negate: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's TrivialAugmentWide argument for op `name` at magnitude bins 0..30, in this module's terms (its
    shifts move the image, timm's the view: the sign turns; pixels become fractions of `size`)."""
    if name in ("Identity", "AutoContrast", "Equalize"):
        return torch.zeros_like(bins, dtype=torch.float64)
    if name in ("ShearX", "ShearY"):
        return _signed(_trivial_table(0.99)[bins], negate)
    if name in ("TranslateX", "TranslateY"):
        return _signed(-torch.trunc(_trivial_table(32.0)[bins]) / size, negate)
    if name == "Rotate":
        return _signed(_trivial_table(135.0)[bins], negate)
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 1.0 + _signed(_trivial_table(0.99)[bins], negate)
    if name == "Posterize":
        return 8 - torch.round(bins.double() / ((TRIVIAL_BINS - 1) / 6))
    if name == "Solarize":
        return _trivial_table(0.0, 255.0)[bins]
    raise KeyError(name)


def draw_policy(n: int, policy: Policy, size: int, g: torch.Generator) -> PolicyDraws:
    """Each of n images' ops and arguments, drawn as timm's RandAugment / torchvision's TrivialAugmentWide draw them."""
    layers, count = policy.layers, len(policy.names)
    if policy.kind == "trivial":
        op = torch.randint(0, count, (n, 1), generator=g)
        bins = torch.randint(0, TRIVIAL_BINS, (n, 1), generator=g)
        negate = torch.rand(n, 1, generator=g) < 0.5
        arg = torch.zeros(n, 1, dtype=torch.float64)
        for k, name in enumerate(policy.names):
            arg = torch.where(op == k, trivial_arg(name, bins, negate, size), arg)
        return PolicyDraws(op, arg, policy.names)
    if policy.weights is not None:
        w = torch.tensor(policy.weights, dtype=torch.float64)
        op = torch.multinomial((w / w.sum()).expand(n, -1), layers, replacement=False, generator=g)
    else:
        op = torch.randint(0, count, (n, layers), generator=g)
    applied = torch.rand(n, layers, generator=g, dtype=torch.float64) <= policy.prob
    m = torch.full((n, layers), float(policy.magnitude), dtype=torch.float64)
    if policy.magnitude_std == math.inf:
        m = torch.rand(n, layers, generator=g, dtype=torch.float64) * policy.magnitude
    elif policy.magnitude_std > 0:
        m = m + policy.magnitude_std * torch.randn(n, layers, generator=g, dtype=torch.float64)
    m = m.clamp(0.0, policy.magnitude_max)
    negate = torch.rand(n, layers, generator=g, dtype=torch.float64) > 0.5
    arg = torch.zeros(n, layers, dtype=torch.float64)
    for k, name in enumerate(policy.names):
        arg = torch.where(op == k, rand_arg(name, m, negate), arg)
    return PolicyDraws(torch.where(applied, op, -1), arg, policy.names)


_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel")


def geometric_matrix(name: str, arg: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 2, 3] matrices (output point to input point, PIL's convention) of a geometric op at its arguments."""
    if name == "Rotate":
        return ops.rotation(arg, size)
    if name in ("ShearX", "ShearY"):
        return ops.shear(arg, 0 if name == "ShearX" else 1)
    return ops.translation(arg * size, 0 if name.startswith("TranslateX") else 1)


def apply_op(name: str, x: torch.Tensor, arg: torch.Tensor, fill: tuple[float, float, float],
             mode: str) -> torch.Tensor:
    """One op on images holding whole values in [0, 255], a float argument per image."""
    if name == "Identity":
        return x
    if name in _GEOMETRIC:
        return ops.affine(x, geometric_matrix(name, arg, x.shape[-1]), fill, mode)
    if name == "AutoContrast":
        return ops.auto_contrast(x)
    if name == "Equalize":
        return ops.equalize(x)
    if name == "Invert":
        return ops.invert(x)
    if name.startswith("Posterize"):
        return ops.posterize(x, arg)
    if name.startswith("SolarizeAdd"):
        return ops.solarize_add(x, arg)
    if name.startswith("Solarize"):
        return ops.solarize(x, arg)
    for prefix, fn in (("Color", ops.color), ("Contrast", ops.contrast), ("Brightness", ops.brightness),
                       ("Sharpness", ops.sharpness)):
        if name.startswith(prefix):
            return fn(x, arg)
    raise KeyError(name)


def _geometric_group(x: torch.Tensor, op: torch.Tensor, arg: torch.Tensor, names: tuple[str, ...],
                     fill: tuple[float, float, float], mode: str) -> torch.Tensor:
    """The images that drew any geometric op, resampled in one call, each through its own op's matrix (built on the
    host for every kind at once)."""
    def drew(*wanted: str) -> torch.Tensor:
        return torch.tensor([n in wanted for n in names])[op]

    size = x.shape[-1]
    zero = torch.zeros_like(arg)
    matrix = ops.rotation(torch.where(drew("Rotate"), arg, zero), size)  # angle 0: the identity
    matrix[:, 0, 1] += torch.where(drew("ShearX"), arg, zero).float()
    matrix[:, 1, 0] += torch.where(drew("ShearY"), arg, zero).float()
    matrix[:, 0, 2] += torch.where(drew("TranslateX", "TranslateXRel"), arg * size, zero).float()
    matrix[:, 1, 2] += torch.where(drew("TranslateY", "TranslateYRel"), arg * size, zero).float()
    return ops.affine(x, matrix, fill, mode)


def apply_policy(x: torch.Tensor, draws: PolicyDraws, fill: tuple[float, float, float], mode: str) -> torch.Tensor:
    """The batch (float, whole values in [0, 255]) through each image's drawn ops, layer by layer: the images that drew
    an op are gathered and transformed together (all geometric ops in one resampling)."""
    names = draws.names
    geometric = torch.tensor([n in _GEOMETRIC for n in names] + [False])
    groups = len(names) + 1  # one per op, then the geometric ops together
    for layer in range(draws.op.shape[1]):
        op = draws.op[:, layer]
        group = torch.where(geometric[op], groups, op + 1)  # 0: left alone
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=groups + 1).tolist()
        arg, op_sorted = draws.arg[order, layer], op[order]
        grouped = x[order.to(x.device)]
        pieces, start = [grouped[:counts[0]]], counts[0]
        for g in range(1, groups + 1):
            stop = start + counts[g]
            if stop > start:
                part = grouped[start:stop]
                if g == groups:
                    part = _geometric_group(part, op_sorted[start:stop], arg[start:stop], names, fill, mode)
                else:
                    part = apply_op(names[g - 1], part, arg[start:stop], fill, mode)
                pieces.append(part)
            start = stop
        x = torch.cat(pieces)[torch.argsort(order).to(x.device)]
    return x
