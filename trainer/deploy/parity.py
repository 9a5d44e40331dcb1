"""An exported file against PyTorch on the same images: the batches of the run's eval images, the comparison
(agreement, top-1 of each, the largest logit gap), and the training images int8 calibration sees."""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch

from ..data.augment import View, preprocess
from ..data.loading import SplitData, default_cache_dir, held_out_percent, load_train_sample
from ..data.placement import place_splits
from ..run_records import RunConfig
from .formats import Runner

CALIBRATION_BATCH = 32


def eval_batches(split: SplitData, view: View, n: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(model input, labels) for the first n images of a placed split."""
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        yield preprocess(split.images.span(i, j), view, split.squares), split.labels[i:j]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def compare(model: torch.nn.Module, runners: dict[str, Runner], batches: Any, primary: str,
            log_probs: bool = False) -> dict[str, Any]:
    """PyTorch's predictions against each runner's on the same inputs: agreement, top-1 of each, and the largest gap
    between PyTorch's logits and the primary runner's (log-probabilities on both sides where it answers those)."""
    n, correct_torch, max_diff = 0, 0, 0.0
    correct = {name: 0 for name in runners}
    agree = {name: 0 for name in runners}
    with torch.inference_mode():
        for x, y in batches:
            ref = model(x).float().numpy()
            pred, labels = ref.argmax(-1), y.numpy()
            n += len(labels)
            correct_torch += int((pred == labels).sum())
            for name, run in runners.items():
                out = run(x.numpy())
                agree[name] += int((out.argmax(-1) == pred).sum())
                correct[name] += int((out.argmax(-1) == labels).sum())
                if name == primary:
                    gap = np.abs(out - _log_softmax(ref)) if log_probs else np.abs(out - ref)
                    max_diff = max(max_diff, float(gap.max()))
    res: dict[str, Any] = {"num_samples": n, "top1_torch": correct_torch / max(n, 1)}
    for name in runners:
        suffix = "" if name == primary else f"_{name}"
        res[f"agreement{suffix}"] = agree[name] / max(n, 1)
        res[f"top1_{name}"] = correct[name] / max(n, 1)
    res["max_abs_logit_diff"] = max_diff
    return res


def calibration_sample(cfg: RunConfig, images: int, cache_dir: str | None = None) -> tuple[SplitData, dict[str, Any]]:
    """About `images` of the run's own training images (the same number of each class, drawn by the run's seed from
    the part of its train split it trained on), decoded and placed; and how the parity JSON names them."""
    t = cfg.training
    per_class = max(1, math.ceil(images / cfg.num_classes))
    if t.samples_per_class is not None:  # no further than the images it trained on
        per_class = min(per_class, t.samples_per_class)
    percent = held_out_percent(t.train_split, t.eval_split, t.val_split_percent)
    split = load_train_sample(t.dataset, t.train_split, per_class=per_class, seed=t.seed,
                              image_column=t.image_column, label_column=t.label_column, crop=cfg.view.eval_crop,
                              cache_dir=cache_dir or default_cache_dir(), dataset_config=t.dataset_config,
                              skip_bad=t.skip_bad_images, held_out_percent=percent)
    place_splits([split], "auto", torch.device("cpu"))
    return split, {"dataset": t.dataset, "split": t.train_split, "images": len(split),
                   "per_class": len(split) // cfg.num_classes,
                   "seed": t.seed, "selection_digest": split.selection_digest,
                   "preprocess": "the eval transform (no augmentation)"}
