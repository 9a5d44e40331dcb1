"""Data: stratified selection, column detection, decode-once cache."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trainer.data.loading import load_data
from trainer.data.sources import find_columns, select_per_class
from trainer.errors import UsageError

from .helpers import CIFAR10, make_dataset, needs_cifar10

NAMES = ["a", "b", "c"]


def test_selection_takes_exactly_n_per_class():
    labels = np.repeat([0, 1, 2], [50, 40, 30])
    idx = select_per_class(labels, 25, seed=0, names=NAMES)
    assert len(idx) == 75
    assert np.bincount(labels[idx]).tolist() == [25, 25, 25]
    assert len(set(idx.tolist())) == 75


def test_selection_same_seed_same_set_other_seed_other_set():
    labels = np.random.default_rng(1).integers(0, 3, 600)
    a = select_per_class(labels, 50, seed=7, names=NAMES)
    b = select_per_class(labels, 50, seed=7, names=NAMES)
    c = select_per_class(labels, 50, seed=8, names=NAMES)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_selection_errors_when_a_class_is_short():
    labels = np.repeat([0, 1, 2], [50, 10, 50])
    with pytest.raises(UsageError, match=r"class 'b' has only 10 images .* fewer than --samples-per-class 20"):
        select_per_class(labels, 20, seed=0, names=NAMES)


def test_selection_none_keeps_everything():
    labels = np.array([0, 1, 1, 2])
    assert select_per_class(labels, None, seed=0, names=NAMES).tolist() == [0, 1, 2, 3]


def test_columns_found_by_feature_type():
    import datasets

    feats = datasets.Features({"caption": datasets.Value("string"), "pixels": datasets.Image(),
                               "fine": datasets.ClassLabel(names=["x", "y"])})
    assert find_columns(feats) == ("pixels", "fine")
    assert find_columns(feats, image_column="pixels", label_column="fine") == ("pixels", "fine")


def test_missing_column_lists_the_columns():
    import datasets

    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    with pytest.raises(UsageError, match=r"column 'labels' \(--label-column\) not found.*\['img', 'label'\]"):
        find_columns(feats, label_column="labels")
    with pytest.raises(UsageError, match=r"not images"):
        find_columns(feats, image_column="label")
    text_only = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["x"])})
    with pytest.raises(UsageError, match=r"no image column .*\['text', 'label'\]"):
        find_columns(text_only)


def test_load_data_other_columns_and_validation_split(tmp_path, cache_dir):
    path = make_dataset(tmp_path / "beans", {"train": 6, "validation": 3}, num_classes=3,
                        image_column="image", label_column="labels")
    bundle = load_data(str(path), "train", "validation", samples_per_class=4, seed=0, cache_dir=str(cache_dir))
    assert (bundle.image_column, bundle.label_column) == ("image", "labels")
    assert bundle.label_names == ["class0", "class1", "class2"]
    assert bundle.train.images.shape == (12, 3, 32, 32) and bundle.train.images.cpu().dtype == torch.uint8
    assert torch.bincount(bundle.train.labels).tolist() == [4, 4, 4]
    assert len(bundle.eval) == 9


def test_decode_cache_is_reused_and_identical(tmp_path, toy_dataset):
    cache = tmp_path / "cache"
    first = load_data(str(toy_dataset), samples_per_class=10, seed=3, cache_dir=str(cache))
    files = sorted(os.listdir(cache))
    assert len(files) == 4 and sum(f.endswith(".npy") for f in files) == 2  # one file per split, its digests beside
    mtimes = [os.path.getmtime(cache / f) for f in files]
    second = load_data(str(toy_dataset), samples_per_class=10, seed=3, cache_dir=str(cache))
    assert [os.path.getmtime(cache / f) for f in files] == mtimes
    assert torch.equal(first.train.images.cpu(), second.train.images.cpu())
    assert torch.equal(first.train.labels, second.train.labels)
    load_data(str(toy_dataset), samples_per_class=11, seed=3, cache_dir=str(cache))
    assert sum(f.endswith(".npy") for f in os.listdir(cache)) == 3  # another selection, another file


def test_missing_split_and_folder(tmp_path, toy_dataset):
    with pytest.raises(UsageError, match=r"split 'validation' not found.*\['test', 'train'\]"):
        load_data(str(toy_dataset), "train", "validation")
    with pytest.raises(UsageError, match=r"dataset folder .* does not exist"):
        load_data(str(tmp_path / "nowhere"))


@needs_cifar10
def test_real_cifar10_selection(cache_dir):
    bundle = load_data(str(CIFAR10), samples_per_class=20, eval_samples_per_class=5, seed=0,
                       cache_dir=str(cache_dir))
    assert bundle.label_names[:3] == ["airplane", "automobile", "bird"]
    assert (bundle.image_column, bundle.label_column) == ("img", "label")
    assert torch.bincount(bundle.train.labels).tolist() == [20] * 10
    assert bundle.train.images.shape == (200, 3, 32, 32)
    assert len(bundle.eval) == 50


@pytest.mark.parametrize("how", [{"eval_split": "train"}, {"val_split_percent": 25.0}])
def test_an_eval_set_carved_from_the_train_split_never_holds_a_training_image(toy_dataset, tmp_path, how):
    data = load_data(str(toy_dataset), samples_per_class=30, seed=5, cache_dir=str(tmp_path), **how)
    train, held = set(data.train.indices.tolist()), set(data.eval.indices.tolist())
    percent = how.get("val_split_percent", 10.0)
    assert not train & held and len(train) == 4 * 30
    assert np.bincount(data.eval.labels.numpy()).tolist() == [round(60 * percent / 100)] * 4  # per class
    assert f"eval: {percent:g}% of split 'train' held out per class by --seed" in data.eval_note
    again = load_data(str(toy_dataset), samples_per_class=30, seed=5, cache_dir=str(tmp_path), **how)
    assert np.array_equal(again.eval.indices, data.eval.indices)  # the seed decides
    other = load_data(str(toy_dataset), samples_per_class=30, seed=6, cache_dir=str(tmp_path), **how)
    assert not np.array_equal(other.eval.indices, data.eval.indices)


def test_a_dataset_without_a_test_split_is_pointed_to_a_held_out_part(tmp_path):
    data = make_dataset(tmp_path / "d", {"train": 10})
    with pytest.raises(UsageError, match=r"split 'test' not found.*--val-split-percent 10"):
        load_data(str(data), cache_dir=str(tmp_path / "c"))
