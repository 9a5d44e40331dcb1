"""--recipe: published training recipes as presets of ordinary options (TrainConfig field names), each with its
source. A preset only sets defaults: a flag given beside it wins."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A preset and where its values come from."""

    source: str
    values: dict[str, Any] = field(default_factory=dict)
    leaves: str = ""  # what the preset does not set, and why


RECIPES: dict[str, Recipe] = {
    "deit": Recipe(
        "DeiT's from-scratch recipe (Touvron et al. 2021, table 9; facebookresearch/deit main.py defaults)",
        dict(opt="adamw", weight_decay=0.05, label_smoothing=0.1, drop_path=0.1, random_resized_crop=True,
             aa="rand-m9-mstd0.5-inc1", reprob=0.25, remode="pixel", recount=1, mixup=0.8, cutmix=1.0,
             mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch", clip_grad=None),
        "the schedule (DeiT: lr 5e-4 x batch/512, 5 warm-up epochs of 300) and its EMA (decay 0.99996 averages "
        "~25,000 steps, longer than a short run): set --lr, --warmup-epochs and --model-ema for the run at hand"),
    "finetune": Recipe(
        "the ViT transfer recipe (Dosovitskiy et al. 2021, appendix B.1.1; Steiner et al. 2021, 'How to train your "
        "ViT'): SGD with momentum, no weight decay, gradient clipping at 1, inception crops and flips, no mixing",
        dict(opt="sgd", momentum=0.9, weight_decay=0.0, clip_grad=1.0, lr=0.003, label_smoothing=0.0,
             random_resized_crop=True, aa=None, reprob=0.0, mixup=0.0, cutmix=0.0, drop_path=0.0),
        "lr 0.003 is the papers' grid {0.001 .. 0.03} at batch 512 scaled to this trainer's default batch; the "
        "schedule (warm-up, epochs) stays the run's"),
}


def recipe_flags(name: str) -> str:
    """The preset as the command-line flags it stands for."""
    out = []
    for key, value in RECIPES[name].values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # the switches a preset sets are off by default
            out.append(flag)
        elif value is None:
            out.append(f"{flag} 0" if key == "clip_grad" else f"no {flag}")
        else:
            out.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(out)

