"""--aa policy strings: timm's RandAugment grammar ('rand-m9-mstd0.5-inc1') and 'trivial' (torchvision's
TrivialAugmentWide), parsed into the ops and odds a Policy draws from."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from .errors import UsageError

LEVEL_DENOM = 10.0  # timm's magnitude scale: M / 10 is the fraction of each op's range
_RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
             "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                        "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                        "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# timm's _RAND_WEIGHTED_0 ('tweights'): ops drawn without replacement at these odds.
_RAND_WEIGHTS = {"Rotate": 3, "ShearX": 2, "ShearY": 2, "TranslateXRel": 1, "TranslateYRel": 1,
                 "ColorIncreasing": .25, "SharpnessIncreasing": 0.25, "AutoContrast": 0.25, "SolarizeIncreasing": .05,
                 "SolarizeAdd": .05, "ContrastIncreasing": .05, "BrightnessIncreasing": .05, "Equalize": .05,
                 "PosterizeIncreasing": 0.05, "Invert": 0.05}
# torchvision's TrivialAugmentWide space, in its order; its 31 magnitude bins.
_TRIVIAL_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
                "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
TRIVIAL_BINS = 31
ACCEPTED = ("rand-m9-mstd0.5-inc1 (RandAugment: sections m<magnitude>, n<ops per image>, p<probability of each>, "
            "mstd<magnitude noise>, mmax<magnitude cap>, inc<0|1>, tweights) or trivial (TrivialAugmentWide)")


@dataclass(frozen=True)
class Policy:
    """A parsed --aa: which ops, how many per image, at which magnitude."""

    kind: str  # "rand" | "trivial"
    names: tuple[str, ...]
    layers: int = 2
    magnitude: float = 10.0
    prob: float = 0.5
    magnitude_std: float = 0.0  # inf: uniform in [0, magnitude]
    magnitude_max: float = LEVEL_DENOM
    weights: Optional[tuple[float, ...]] = None  # weighted choice without replacement (timm's 'tweights')


def parse_policy(text: str) -> Policy:
    """timm's RandAugment config string, or 'trivial'; anything else: a UsageError naming the accepted forms."""
    def bad(why: str) -> UsageError:
        return UsageError(f"--aa {text!r}: {why}; pass {ACCEPTED}")

    if text == "trivial":
        return Policy("trivial", _TRIVIAL_OPS, layers=1, prob=1.0)
    parts = text.split("-")
    if parts[0] != "rand":
        raise bad(f"unknown policy {parts[0]!r}")
    values: dict[str, float] = {}
    weighted = False
    for part in parts[1:]:
        if part == "tweights":
            weighted = True
            continue
        m = re.fullmatch(r"(mstd|p)(\d+(?:\.\d*)?)|(mmax|inc|m|n)(\d+)", part)
        if not m:
            raise bad(f"unknown section {part!r}")
        key, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        values[key] = float(value)
    p, inc, n = values.get("p", 0.5), values.get("inc", 0), int(values.get("n", 2))
    if not 0 <= p <= 1:
        raise bad(f"p must be in [0, 1], got {p:g}")
    if inc not in (0, 1):
        raise bad(f"inc must be 0 or 1, got {inc:g}")
    names: tuple[str, ...] = _RAND_INCREASING_OPS if inc else _RAND_OPS
    weights = None
    if weighted:
        names, weights = tuple(_RAND_WEIGHTS), tuple(float(w) for w in _RAND_WEIGHTS.values())
    if not 1 <= n <= len(names):
        raise bad(f"n must be between 1 and {len(names)} ops, got {n}")
    mstd = values.get("mstd", 0.0)
    return Policy("rand", names, n, values.get("m", LEVEL_DENOM), p, math.inf if mstd > 100 else mstd,
                  values.get("mmax", LEVEL_DENOM), weights)
