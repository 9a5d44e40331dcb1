"""A run's splits, decoded once into the decode cache and served by a store: what a run trains and evaluates on."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import datasets
import numpy as np
import torch

from ..errors import UsageError, warn
from .augment import EvalCrop
from .decode import NotOneSize, first_shape
from .decode_cache import cached_rows, decode_to_file
from .sources import (check_labels, class_names, find_columns, get_split, hold_out, mapped_labels, open_dataset,
                      select_per_class)
from .stores import CPU, DiskStore, Store

CACHE_VERSION = 2  # 2: .npy files, memory-mapped by the disk store
DEFAULT_VAL_SPLIT_PERCENT = 10.0  # of the train split, held out for evaluation where the dataset has no other split


@dataclass
class SplitData:
    """One split, decoded: uint8 images [N, 3, H, W] (in a store) and int64 labels [N]."""

    images: Store
    labels: torch.Tensor
    indices: np.ndarray  # rows of the source split, for provenance
    selection_digest: str = ""  # names these rows of this dataset version at this size (the decode cache's file)
    squares: bool = False  # photos stored as their centre squares (augment.crop_square), not as they are
    source_digest: str = ""  # names the whole source split at this size: indices are rows of it

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def place(self, images: Store) -> None:
        """Serve the images from this store; the labels go where its batches come out."""
        self.images, self.labels = images, self.labels.to(images.device)


@dataclass
class DataBundle:
    """What a run trains and evaluates on."""

    train: SplitData
    eval: SplitData
    label_names: list[str]
    image_column: str
    label_column: str
    fingerprint: str
    eval_note: str = ""  # one line on where the eval images come from, where it is not simply --eval-split


def default_cache_dir() -> str:
    """$VIT_TRAINER_CACHE or ~/.cache/vit_trainer."""
    return os.environ.get("VIT_TRAINER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vit_trainer"))


def selection_digest(fingerprint: str, split: str, image_column: str, indices: np.ndarray,
                     crop: Optional[EvalCrop]) -> str:
    """A digest naming the chosen rows of one dataset version, decoded for one eval crop (size, crop_pct)."""
    framing = [crop.size, crop.crop_pct] if crop is not None else None
    key = hashlib.sha1(json.dumps([CACHE_VERSION, fingerprint, split, image_column, framing]).encode())
    key.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return key.hexdigest()[:20]


def source_digest(fingerprint: str, split: str, image_column: str, num_rows: int, crop: Optional[EvalCrop]) -> str:
    """A digest naming a whole split of one dataset version, decoded for one eval crop: what per-image caches of any
    selection of its rows are keyed by."""
    framing = [crop.size, crop.crop_pct] if crop is not None else None
    return hashlib.sha1(json.dumps([CACHE_VERSION, fingerprint, split, image_column, framing, num_rows]).encode()
                        ).hexdigest()[:20]


def decode_cached(ds: datasets.Dataset, split: str, image_column: str, indices: np.ndarray, crop: Optional[EvalCrop],
                  cache_dir: str, progress: bool = True, workers: int = 0, skip_bad: bool = False
                  ) -> tuple[str, bool, list[int]]:
    """(decode cache file, squares, the positions of `indices` left out as bad images) of these rows: found whole,
    or decoded now (damaged files are decoded again)."""
    stem = os.path.join(cache_dir, f"{split}-{selection_digest(ds._fingerprint, split, image_column, indices, crop)}")
    what = f"split '{split}'"
    # ".framed": the suffix of centre-square files since cache version 2 (kept, so that existing caches stay valid).
    for path, squares in ((f"{stem}.npy", False), (f"{stem}.framed.npy", True)):
        found = cached_rows(path, len(indices))
        if found is not None:
            if found[1] and not skip_bad:
                raise UsageError(f"{what} row {int(indices[found[1][0]])} holds no image that decodes (left out of the "
                                 "decode cache by an earlier --skip-bad-images run): repair or remove that row, or "
                                 "pass --skip-bad-images")
            return path, squares, found[1]
    # Square images of one size (CIFAR) are stored as they are; photos (several sizes, or not square) as the centre
    # squares timm's eval transform crops from. The first image decides, and decoding checks every other one.
    h, w = first_shape(ds, image_column, indices)
    if h == w:
        try:
            path, bad = decode_to_file(ds, image_column, indices, (3, h, w), f"{stem}.npy", workers, progress,
                                       what=what, skip_bad=skip_bad)
            return path, False, bad
        except NotOneSize:
            pass
    if crop is None:
        raise UsageError("images have different sizes or are not square: pass --img-size (a model input size) so that "
                         "they can be stored as their centre squares")
    path, bad = decode_to_file(ds, image_column, indices, (3, crop.side, crop.side), f"{stem}.framed.npy", workers,
                               progress, crop_size=crop.size, what=what, skip_bad=skip_bad)
    return path, True, bad


def _labels_of(ds: datasets.Dataset, column: str) -> np.ndarray:
    return np.asarray(ds[column], dtype=np.int64)


@dataclass
class _Source:
    """An opened split with its columns and class names found."""

    ds: datasets.Dataset
    split: str
    labels: np.ndarray
    image_column: str
    label_column: str
    names: list[str]
    pool: Optional[np.ndarray] = None  # the rows it may choose from (None: all): the part of a split held out, or not

    def decoded(self, per_class: Optional[int], seed: int, flag: str, crop: Optional[EvalCrop], cache_dir: str,
                progress: bool, skip_bad: bool = False) -> SplitData:
        """Exactly per_class rows of each class (None: all), decoded through the cache, on the disk store; with
        skip_bad, less the images that do not decode (a line says how many)."""
        if self.pool is None:
            idx = select_per_class(self.labels, per_class, seed, self.names, self.split, flag)
        else:
            idx = self.pool[select_per_class(self.labels[self.pool], per_class, seed, self.names, self.split, flag)]
        if not len(idx):
            raise UsageError(f"split '{self.split}' has no images: pass a split that has some")
        path, squares, bad = decode_cached(self.ds, self.split, self.image_column, idx, crop, cache_dir, progress,
                                           skip_bad=skip_bad)
        if bad:
            rows = ", ".join(str(int(idx[k])) for k in bad[:5]) + (", ..." if len(bad) > 5 else "")
            warn(f"left out {len(bad)} image(s) of split '{self.split}' that do not decode (rows {rows}): "
                 f"{len(idx) - len(bad)} images remain")
            idx = np.delete(idx, bad)
            if not len(idx):
                raise UsageError(f"no image of split '{self.split}' decodes: repair the dataset")
        chosen = selection_digest(self.ds._fingerprint, self.split, self.image_column, idx, crop)
        whole = source_digest(self.ds._fingerprint, self.split, self.image_column, len(self.labels), crop)
        return SplitData(DiskStore(path, CPU), torch.from_numpy(self.labels[idx]), idx, chosen, squares, whole)


def _open_splits(dataset: str, splits: Sequence[tuple[str, str]], image_column: Optional[str],
                 label_column: Optional[str], config: Optional[str]) -> list[_Source]:
    """Open each (split, flag), find the columns on the first and check the others against it: the same class names
    (a split that orders them otherwise is renumbered by name), every label a class, before anything is decoded."""
    dsdict = open_dataset(dataset, config)
    found = [get_split(dsdict, split, flag) for split, flag in splits]
    img_col, lbl_col = find_columns(found[0].features, image_column, label_column)
    names = class_names(found[0].features, lbl_col, _labels_of(found[0], lbl_col))
    sources = []
    for ds, (split, flag) in zip(found, splits, strict=True):
        find_columns(ds.features, img_col, lbl_col)
        y = _labels_of(ds, lbl_col)
        feature = ds.features[lbl_col]
        if isinstance(feature, datasets.ClassLabel) and list(feature.names) != names:
            y = mapped_labels(y, feature.names, names, f"split '{split}'")
            warn(f"split '{split}' orders its class names otherwise than split '{splits[0][0]}': its labels are "
                 "matched by name")
        check_labels(y, names, split, flag)
        sources.append(_Source(ds, split, y, img_col, lbl_col, names))
    return sources


def held_out_percent(train_split: str, eval_split: str, val_split_percent: Optional[float]) -> Optional[float]:
    """The percent of the train split held out as the eval images, or None where the eval images are another split."""
    if val_split_percent is not None or eval_split == train_split:
        return val_split_percent or DEFAULT_VAL_SPLIT_PERCENT
    return None


def load_data(dataset: str, train_split: str = "train", eval_split: str = "test", *,
              image_column: Optional[str] = None, label_column: Optional[str] = None,
              samples_per_class: Optional[int] = None, eval_samples_per_class: Optional[int] = None,
              seed: int = 0, crop: Optional[EvalCrop] = None, cache_dir: Optional[str] = None,
              dataset_config: Optional[str] = None, progress: bool = False, skip_bad: bool = False,
              val_split_percent: Optional[float] = None) -> DataBundle:
    """Open the dataset, check it, choose the rows, and decode both splits into the cache (progress: a bar). Where
    val_split_percent is given, or the eval split is the train split, the eval images are that percent (default
    DEFAULT_VAL_SPLIT_PERCENT) of the train split held out per class, and the training images are chosen from the rest."""
    note = ""
    percent = held_out_percent(train_split, eval_split, val_split_percent)
    if percent is not None:
        (whole,) = _open_splits(dataset, [(train_split, "--train-split")], image_column, label_column, dataset_config)
        held, rest = hold_out(whole.labels, percent, seed, whole.names)
        train, test = dataclasses.replace(whole, pool=rest), dataclasses.replace(whole, pool=held)
        note = (f"eval: {percent:g}% of split '{train_split}' held out per class by --seed ({len(held)} of "
                f"{len(whole.labels)} images), none of them among the training images")
    else:
        train, test = _open_splits(dataset, [(train_split, "--train-split"), (eval_split, "--eval-split")],
                                   image_column, label_column, dataset_config)
    cache_dir = cache_dir or default_cache_dir()
    # The eval selection uses a different stream from the train one, so that the two never line up by accident.
    return DataBundle(train.decoded(samples_per_class, seed, "--samples-per-class", crop, cache_dir, progress,
                                    skip_bad),
                      test.decoded(eval_samples_per_class, seed + 1, "--eval-samples-per-class", crop, cache_dir,
                                   progress, skip_bad),
                      train.names, train.image_column, train.label_column, train.ds._fingerprint, note)


def load_eval_split(dataset: str, eval_split: str = "test", *, image_column: Optional[str] = None,
                    label_column: Optional[str] = None, eval_samples_per_class: Optional[int] = None, seed: int = 0,
                    crop: Optional[EvalCrop] = None, cache_dir: Optional[str] = None,
                    dataset_config: Optional[str] = None, skip_bad: bool = False,
                    held_out_percent: Optional[float] = None) -> tuple[SplitData, list[str]]:
    """One split to evaluate on, chosen as load_data chooses its eval split (held_out_percent: from that part of the
    split held out, as load_data holds it out), and the class names."""
    (source,) = _open_splits(dataset, [(eval_split, "--eval-split")], image_column, label_column, dataset_config)
    if held_out_percent is not None:
        source = dataclasses.replace(source, pool=hold_out(source.labels, held_out_percent, seed, source.names)[0])
    return source.decoded(eval_samples_per_class, seed + 1, "--eval-samples-per-class", crop,
                          cache_dir or default_cache_dir(), False, skip_bad), source.names


def load_train_sample(dataset: str, train_split: str = "train", *, per_class: int, seed: int = 0,
                      image_column: Optional[str] = None, label_column: Optional[str] = None,
                      crop: Optional[EvalCrop] = None, cache_dir: Optional[str] = None,
                      dataset_config: Optional[str] = None, skip_bad: bool = False,
                      held_out_percent: Optional[float] = None) -> SplitData:
    """Up to per_class training images of each class as load_data draws them with this seed (its first ones, so
    among a run's own training images), from the part of the split not held out where held_out_percent is given."""
    (source,) = _open_splits(dataset, [(train_split, "--train-split")], image_column, label_column, dataset_config)
    if held_out_percent is not None:
        source = dataclasses.replace(source, pool=hold_out(source.labels, held_out_percent, seed, source.names)[1])
    labels = source.labels if source.pool is None else source.labels[source.pool]
    fewest = int(np.bincount(labels, minlength=len(source.names)).min())
    return source.decoded(max(1, min(per_class, fewest)), seed, "--calibration-samples", crop,
                          cache_dir or default_cache_dir(), False, skip_bad)
