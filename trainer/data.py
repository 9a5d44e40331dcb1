"""Load a datasets split, find its columns, pick exactly N images per class, decode them once."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import datasets
import numpy as np
import torch

from .augment import Frame
from .decode import NotOneSize, cached_rows, decode_to_file, first_shape
from .errors import UsageError
from .stores import CPU, DiskStore, Store

CACHE_VERSION = 2  # 2: .npy files, memory-mapped by the disk store


@dataclass
class SplitData:
    """One split, decoded: uint8 images [N, 3, H, W] (in a store) and int64 labels [N]."""

    images: Store
    labels: torch.Tensor
    indices: np.ndarray  # rows of the source split, for provenance
    key: str = ""  # identity of these rows of this dataset version at this size (the decode cache's key)
    framed: bool = False  # photos stored as their centre squares (augment.eval_frame), not as they are
    source_key: str = ""  # identity of the whole source split at this size: indices are rows of it

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


def open_dataset(name: str, config: Optional[str] = None) -> datasets.DatasetDict | datasets.Dataset:
    """Open a hub id, a local folder readable by load_dataset, or a save_to_disk folder."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
            try:
                return datasets.load_from_disk(path)
            except Exception as err:  # a damaged save_to_disk folder
                raise UsageError(f"could not read the saved dataset in {path} ({type(err).__name__}: {_first_line(err)}): "
                                 "save it again with Dataset.save_to_disk") from None
        try:
            return datasets.load_dataset(path, config)
        except Exception as err:
            raise UsageError(f"could not load a dataset from folder {path} ({type(err).__name__}: {_first_line(err)}): "
                             "pass a folder that datasets.load_dataset or save_to_disk understands") from None
    if name.startswith(("/", "./", "../", "~")) or os.path.isfile(path):
        raise UsageError(f"dataset folder {name} does not exist: pass --dataset with an existing folder or a hub id "
                         "such as uoft-cs/cifar10")
    try:
        return datasets.load_dataset(name, config)
    except Exception as err:
        raise UsageError(
            f"could not load dataset '{name}' from the Hugging Face Hub ({type(err).__name__}: {_first_line(err)}); "
            f"if this machine is offline, download it elsewhere with "
            f"datasets.load_dataset('{name}').save_to_disk(DIR) and pass --dataset DIR") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def get_split(dsdict: datasets.DatasetDict | datasets.Dataset, split: str, flag: str) -> datasets.Dataset:
    """One split of a DatasetDict (or the Dataset itself when it has no splits)."""
    if isinstance(dsdict, datasets.Dataset):
        return dsdict
    if split not in dsdict:
        raise UsageError(f"split '{split}' not found; the dataset has {sorted(dsdict)}: pass {flag} with one of them")
    return dsdict[split]


def find_columns(features: datasets.Features, image_column: Optional[str] = None,
                 label_column: Optional[str] = None) -> tuple[str, str]:
    """The image and label columns: given ones checked, missing ones found by feature type."""
    names = list(features)
    for flag, col in (("--image-column", image_column), ("--label-column", label_column)):
        if col is not None and col not in features:
            raise UsageError(f"column '{col}' ({flag}) not found; the dataset has columns {names}")
    if image_column is None:
        found = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        if not found:
            raise UsageError(f"no image column (feature Image) found among columns {names}: pass --image-column")
        image_column = found[0]
    if label_column is None:
        found = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if not found:
            found = [c for c in ("label", "labels") if c in features
                     and isinstance(features[c], datasets.Value) and "int" in features[c].dtype]
        if not found:
            raise UsageError(f"no label column (feature ClassLabel) found among columns {names}: pass --label-column")
        label_column = found[0]
    if not isinstance(features[image_column], datasets.Image):
        raise UsageError(f"column '{image_column}' holds {type(features[image_column]).__name__}, not images: "
                         f"pass --image-column with one of {names}")
    label = features[label_column]
    if not (isinstance(label, datasets.ClassLabel) or (isinstance(label, datasets.Value) and "int" in label.dtype)):
        raise UsageError(f"column '{label_column}' holds {type(label).__name__}, not class labels: "
                         f"pass --label-column with one of {names}")
    return image_column, label_column


def class_names(features: datasets.Features, label_column: str, labels: np.ndarray) -> list[str]:
    """Class names from the ClassLabel feature, or the label values as strings."""
    feature = features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if labels.size == 0 or labels.min() < 0:
        raise UsageError(f"column '{label_column}' must hold class indices 0..K-1: pass --label-column")
    return [str(i) for i in range(int(labels.max()) + 1)]


def select_per_class(labels: np.ndarray, per_class: Optional[int], seed: int, names: Sequence[str],
                     split: str = "train", flag: str = "--samples-per-class") -> np.ndarray:
    """Exactly `per_class` row indices of every class, drawn by `seed`; sorted. None keeps every row."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for k, name in enumerate(names):
        rows = np.flatnonzero(labels == k)
        if len(rows) < per_class:
            raise UsageError(f"class '{name}' has only {len(rows)} images in split '{split}', fewer than "
                             f"{flag} {per_class}: lower it to at most {len(rows)}")
        chosen.append(rng.permutation(rows)[:per_class])
    return np.sort(np.concatenate(chosen))


def default_cache_dir() -> str:
    """$VIT_TRAINER_CACHE or ~/.cache/vit_trainer."""
    return os.environ.get("VIT_TRAINER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vit_trainer"))


def selection_key(fingerprint: str, split: str, image_column: str, indices: np.ndarray, frame: Optional[Frame]) -> str:
    """A digest naming the chosen rows of one dataset version, decoded for one input frame (size, crop_pct)."""
    framing = [frame.size, frame.crop_pct] if frame is not None else None
    key = hashlib.sha1(json.dumps([CACHE_VERSION, fingerprint, split, image_column, framing]).encode())
    key.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return key.hexdigest()[:20]


def source_key(fingerprint: str, split: str, image_column: str, num_rows: int, frame: Optional[Frame]) -> str:
    """A digest naming a whole split of one dataset version, decoded for one input frame: what per-image caches of any
    selection of its rows are keyed by."""
    framing = [frame.size, frame.crop_pct] if frame is not None else None
    return hashlib.sha1(json.dumps([CACHE_VERSION, fingerprint, split, image_column, framing, num_rows]).encode()
                        ).hexdigest()[:20]


def decode_cached(ds: datasets.Dataset, split: str, image_column: str, indices: np.ndarray, frame: Optional[Frame],
                  cache_dir: str, progress: bool = True, workers: int = 0) -> tuple[str, bool]:
    """(decode cache file, framed) of these rows: found complete, or decoded now (damaged files are decoded again)."""
    stem = os.path.join(cache_dir, f"{split}-{selection_key(ds._fingerprint, split, image_column, indices, frame)}")
    for path, framed in ((f"{stem}.npy", False), (f"{stem}.framed.npy", True)):
        if cached_rows(path, len(indices)) is not None:
            return path, framed
    # Square images of one size (CIFAR) are stored as they are; photos (several sizes, or not square) as the centre
    # squares timm's eval transform crops from. The first image decides, and decoding checks every other one.
    h, w = first_shape(ds, image_column, indices)
    if h == w:
        try:
            return decode_to_file(ds, image_column, indices, (3, h, w), f"{stem}.npy", workers, progress), False
        except NotOneSize:
            pass
    if frame is None:
        raise UsageError("images have different sizes or are not square: pass --img-size (a model input size) so that "
                         "they can be stored as their centre squares")
    return decode_to_file(ds, image_column, indices, (3, frame.side, frame.side), f"{stem}.framed.npy", workers,
                          progress, frame_size=frame.size), True


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

    def decoded(self, per_class: Optional[int], seed: int, flag: str, frame: Optional[Frame], cache_dir: str,
                progress: bool) -> SplitData:
        """Exactly per_class rows of each class (None: all), decoded through the cache, on the disk store."""
        idx = select_per_class(self.labels, per_class, seed, self.names, self.split, flag)
        path, framed = decode_cached(self.ds, self.split, self.image_column, idx, frame, cache_dir, progress)
        key = selection_key(self.ds._fingerprint, self.split, self.image_column, idx, frame)
        whole = source_key(self.ds._fingerprint, self.split, self.image_column, len(self.labels), frame)
        return SplitData(DiskStore(path, CPU), torch.from_numpy(self.labels[idx]), idx, key, framed, whole)


def _open_splits(dataset: str, splits: Sequence[tuple[str, str]], image_column: Optional[str],
                 label_column: Optional[str], config: Optional[str]) -> list[_Source]:
    """Open each (split, flag), find the columns on the first and check the others against it."""
    dsdict = open_dataset(dataset, config)
    found = [get_split(dsdict, split, flag) for split, flag in splits]
    img_col, lbl_col = find_columns(found[0].features, image_column, label_column)
    labels = [_labels_of(ds, lbl_col) for ds in found]
    names = class_names(found[0].features, lbl_col, labels[0])
    for ds, (split, _), y in zip(found[1:], splits[1:], labels[1:], strict=True):
        find_columns(ds.features, img_col, lbl_col)
        if y.size and (y.min() < 0 or y.max() >= len(names)):
            raise UsageError(f"split '{split}' has labels outside 0..{len(names) - 1}: check --label-column")
    return [_Source(ds, split, y, img_col, lbl_col, names) for ds, (split, _), y in zip(found, splits, labels,
                                                                                      strict=True)]


def load_data(dataset: str, train_split: str = "train", eval_split: str = "test", *,
              image_column: Optional[str] = None, label_column: Optional[str] = None,
              samples_per_class: Optional[int] = None, eval_samples_per_class: Optional[int] = None,
              seed: int = 0, frame: Optional[Frame] = None, cache_dir: Optional[str] = None,
              dataset_config: Optional[str] = None, progress: bool = False) -> DataBundle:
    """Open the dataset, check it, choose the rows, and decode both splits into the cache (progress: a bar)."""
    train, test = _open_splits(dataset, [(train_split, "--train-split"), (eval_split, "--eval-split")], image_column,
                               label_column, dataset_config)
    cache_dir = cache_dir or default_cache_dir()
    # The eval selection uses a different stream from the train one, so that the two never line up by accident.
    return DataBundle(train.decoded(samples_per_class, seed, "--samples-per-class", frame, cache_dir, progress),
                      test.decoded(eval_samples_per_class, seed + 1, "--eval-samples-per-class", frame, cache_dir,
                                   progress),
                      train.names, train.image_column, train.label_column, train.ds._fingerprint)


def load_eval_split(dataset: str, eval_split: str = "test", *, image_column: Optional[str] = None,
                    label_column: Optional[str] = None, eval_samples_per_class: Optional[int] = None, seed: int = 0,
                    frame: Optional[Frame] = None, cache_dir: Optional[str] = None,
                    dataset_config: Optional[str] = None) -> tuple[SplitData, list[str]]:
    """One split to evaluate on, chosen as load_data chooses its eval split, and the class names."""
    (source,) = _open_splits(dataset, [(eval_split, "--eval-split")], image_column, label_column, dataset_config)
    return source.decoded(eval_samples_per_class, seed + 1, "--eval-samples-per-class", frame,
                          cache_dir or default_cache_dir(), False), source.names
