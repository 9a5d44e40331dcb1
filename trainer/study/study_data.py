"""The datasets the study builds for itself: scikit-learn's digits (the demo) and the stand-in pretraining set."""
from __future__ import annotations

import os

import datasets
import numpy as np
from PIL import Image

from ..data.sources import find_columns, get_split, open_dataset, select_per_class


def build_digits(path: str, seed: int = 0) -> str:
    """scikit-learn's digits as a save_to_disk DatasetDict: 32x32 RGB images, train/test (3:1 per class)."""
    from sklearn.datasets import load_digits  # scikit-learn: only the demo needs it (the demo extra)

    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        return path
    digits = load_digits()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(digits.target), dtype=bool)
    for k in range(10):
        rows = rng.permutation(np.flatnonzero(digits.target == k))
        test[rows[: len(rows) // 4]] = True
    images = [Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC).convert("RGB")
              for img in digits.images]
    names = [str(k) for k in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, mask in (("train", ~test), ("test", test)):
        idx = np.flatnonzero(mask)
        splits[split] = datasets.Dataset.from_dict(
            {"image": [images[i] for i in idx], "label": digits.target[idx].tolist()}, features=features)
    tmp = f"{path}.tmp"
    datasets.DatasetDict(splits).save_to_disk(tmp)
    os.replace(tmp, path)
    return path


def build_standin(source: str, path: str, exclude_per_class: int, seed: int) -> str:
    """A stand-in pretraining set: the train images the study does NOT fine-tune on, each as itself and
    rotated by 90 degrees, labelled class x rotation (2K classes), so the fine-tune still swaps the head."""
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        return path
    train = get_split(open_dataset(source), "train", "--train-split")
    img_col, lbl_col = find_columns(train.features)
    labels = np.asarray(train[lbl_col], dtype=np.int64)
    names = list(train.features[lbl_col].names)
    chosen = set(select_per_class(labels, exclude_per_class, seed, names).tolist())
    rest = np.array([i for i in range(len(labels)) if i not in chosen])
    sub = train.select(rest.tolist())
    new_names = [f"{n}/{r}" for n in names for r in ("0", "90")]

    def rotate(batch: dict[str, list]) -> dict[str, list]:
        images, out_labels = [], []
        for im, y in zip(batch[img_col], batch[lbl_col], strict=True):
            images += [im, im.rotate(90)]
            out_labels += [2 * y, 2 * y + 1]
        return {"image": images, "label": out_labels}

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=new_names)})
    rotated = sub.map(rotate, batched=True, remove_columns=sub.column_names, features=features)
    split = rotated.train_test_split(test_size=min(0.1, 2000 / max(len(rotated), 1)), seed=seed,
                                     stratify_by_column="label")
    tmp = f"{path}.tmp"
    split.save_to_disk(tmp)
    os.replace(tmp, path)
    return path
