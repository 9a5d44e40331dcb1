"""Classifying image files with a finished run: each image cut as the run's eval images were (timm's resize and
centre crop for photos, a square image of one size resized whole), normalised as the model expects, and answered
with the run's own class names."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..data.augment import View, preprocess
from ..data.decode import centre_square, decode_rgb
from ..errors import UsageError
from ..models import load_trained

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(paths: Sequence[str]) -> list[str]:
    """The image files named, and those inside the folders named (recursively, sorted)."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                            if name.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist: pass image files or folders of them")
    if not found:
        raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(paths)}")
    return found


def model_input(path: str, view: View, crop_mode: str | None) -> torch.Tensor:
    """[3, S, S] float input of one image file, cut as the run's eval images were."""
    try:
        rgb = decode_rgb({"path": path, "bytes": None})
    except Exception as err:
        raise UsageError(f"{path} is not an image that decodes ({type(err).__name__}): pass image files") from None
    h, w = rgb.shape[:2]
    # A run that resized its square images whole does so here; a photo (or any image of a photo run) is cut as timm's
    # eval transform cuts it: the shorter side to size / crop_pct, the centre size x size.
    if crop_mode != "center" and h == w:
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
        return preprocess(x, view, squares=False)[0]
    square = np.asarray(centre_square(Image.fromarray(rgb), view.eval_crop.side, view.size))
    return preprocess(torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1)))[None], view, squares=True)[0]


@dataclass
class Prediction:
    """The top classes of one image."""

    image: str
    top: list[tuple[str, int, float]]  # (class name, class index, probability), most probable first


def classify(run: str, paths: Sequence[str], top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
    """The run's top_k classes for every image file in `paths`, on the CPU, in eval mode."""
    if top_k < 1 or batch_size < 1:
        raise UsageError(f"--top-k and --batch-size must be at least 1, got {top_k} and {batch_size}")
    trained = load_trained(run, "--run")
    cfg, names = trained.config, trained.config.class_names
    files = image_files(paths)
    k = min(top_k, len(names))
    out: list[Prediction] = []
    for i in range(0, len(files), batch_size):
        chunk = files[i:i + batch_size]
        x = torch.stack([model_input(f, cfg.view, cfg.crop_mode) for f in chunk])
        with torch.inference_mode():
            probs = torch.softmax(trained.model(x).float(), dim=-1)
        values, indices = probs.topk(k, dim=-1)
        for f, v, idx in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            out.append(Prediction(f, [(names[j], j, p) for j, p in zip(idx, v, strict=True)]))
    return out
