"""Where a split's images and labels come from: open a hub id or a local folder, find the image and label columns,
name the classes, choose exactly N rows per class by seed."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import datasets
import numpy as np

from ..errors import UsageError


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
        held = (" or --val-split-percent 10 to hold out 10% of the train split for evaluation (never trained on)"
                if flag == "--eval-split" else "")
        raise UsageError(f"split '{split}' not found; the dataset has {sorted(dsdict)}: pass {flag} with one of them"
                         f"{held}")
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
            found = [c for c in ("label", "labels") if c in features and isinstance(features[c], datasets.Value)]
        if not found:
            raise UsageError(f"no label column (feature ClassLabel) found among columns {names}: pass --label-column")
        label_column = found[0]
    if not isinstance(features[image_column], datasets.Image):
        raise UsageError(f"column '{image_column}' holds {type(features[image_column]).__name__}, not images: "
                         f"pass --image-column with one of {names}")
    label = features[label_column]
    if isinstance(label, datasets.Value) and label.dtype in ("string", "large_string"):
        raise UsageError(f"column '{label_column}' holds class names as strings, not class indices: turn them into a "
                         f"ClassLabel with dataset.class_encode_column('{label_column}'), save_to_disk, and pass that "
                         "folder as --dataset")
    if not (isinstance(label, datasets.ClassLabel) or (isinstance(label, datasets.Value) and "int" in label.dtype)):
        raise UsageError(f"column '{label_column}' holds {type(label).__name__}, not class labels: "
                         f"pass --label-column with one of {names}")
    return image_column, label_column


def class_names(features: datasets.Features, label_column: str, labels: np.ndarray) -> list[str]:
    """Class names from the ClassLabel feature, or the label values as strings; at least two classes."""
    feature = features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        known = labels[labels >= 0]
        names = [str(i) for i in range(int(known.max()) + 1)] if known.size else []
    if len(names) < 2:
        raise UsageError(f"column '{label_column}' names {len(names)} class(es) {names}: a classifier needs at least "
                         "two; pass --label-column with the class column, or a dataset with two classes or more")
    return names


def check_labels(labels: np.ndarray, names: Sequence[str], split: str, flag: str) -> None:
    """Every label of a split is a class index 0..K-1: the Hub marks an unlabelled row -1 (a test split without
    labels), and a label past the last class name has no name."""
    unlabelled = int((labels < 0).sum())
    if unlabelled:
        whole = unlabelled == len(labels)
        raise UsageError(f"split '{split}' has {'no labels' if whole else f'{unlabelled} unlabelled rows'} (label -1, "
                         "as the Hub marks a split without labels): "
                         + (f"pass {flag} with a labelled split" if whole else
                            f"drop those rows (dataset.filter) or pass {flag} with a labelled split"))
    if labels.size and labels.max() >= len(names):
        raise UsageError(f"split '{split}' has labels up to {int(labels.max())}, outside 0..{len(names) - 1} (the "
                         f"{len(names)} class names): check --label-column, or the dataset's ClassLabel names")


def mapped_labels(labels: np.ndarray, names: Sequence[str], reference: Sequence[str], what: str) -> np.ndarray:
    """Labels of a split whose classes are `names`, renumbered to `reference`'s order (the same classes, maybe in
    another order); UsageError where the classes differ."""
    if list(names) == list(reference):
        return labels
    if sorted(names) != sorted(reference):
        raise UsageError(f"{what} has the classes {list(names)}, where {list(reference)} were expected: pass splits and "
                         "runs of one dataset")
    index = {name: k for k, name in enumerate(reference)}
    table = np.array([index[name] for name in names], dtype=np.int64)
    return np.where(labels >= 0, table[np.clip(labels, 0, None)], labels)


def select_per_class(labels: np.ndarray, per_class: Optional[int], seed: int, names: Sequence[str],
                     split: str = "train", flag: str = "--samples-per-class") -> np.ndarray:
    """Exactly `per_class` row indices of every class, drawn by `seed`; sorted. None keeps every row."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for k, name in enumerate(names):
        rows = np.flatnonzero(labels == k)
        if not len(rows):
            raise UsageError(f"class '{name}' has no images in split '{split}', so {flag} {per_class} cannot be met: "
                             f"pass {flag} all to take the split as it is, or a split where every class appears")
        if len(rows) < per_class:
            raise UsageError(f"class '{name}' has only {len(rows)} images in split '{split}', fewer than "
                             f"{flag} {per_class}: lower it to at most {len(rows)}")
        chosen.append(rng.permutation(rows)[:per_class])
    return np.sort(np.concatenate(chosen))


def hold_out(labels: np.ndarray, percent: float, seed: int, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, the rest): `percent` of every class's rows (at least one), drawn by `seed` from a stream of its
    own, so that an eval set carved from the training split never shares an image with the training selection."""
    rng = np.random.default_rng([seed, 0x5E1D])
    held, rest = [], []
    for k in range(len(names)):
        rows = rng.permutation(np.flatnonzero(labels == k))
        n = min(len(rows), max(1, round(len(rows) * percent / 100))) if len(rows) else 0
        held.append(rows[:n])
        rest.append(rows[n:])
    return np.sort(np.concatenate(held)), np.sort(np.concatenate(rest))
