"""Data that is wrong in the ways real datasets are: images that do not decode, unlabelled or unnamed labels, splits
that order their classes otherwise, empty splits, a decode cache damaged inside, a cache disk that fills up. Each ends
in one line naming the split, the row and the fix, with nothing half-written left behind."""
from __future__ import annotations

import io
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data.decode import decode_rgb
from trainer.data.decode_cache import DIGESTS
from trainer.data.loading import load_data, load_eval_split
from trainer.errors import UsageError

from .helpers import SmallDisk, make_dataset, make_images

BAD_ROW = 523  # in the second decode chunk: decoded by a worker when there are two


def _with_cells(path: Path, train_cells: dict[int, object], train_rows: int = 600, test_names=None,
                test_labels=None) -> Path:
    """A 4-class dataset of 32-px images whose train split has the given cells put in (bad images), and whose test
    split may name its classes in another order (relabelled to match) or hold other labels."""
    rng = np.random.default_rng(0)
    names = [f"class{k}" for k in range(4)]
    palette = np.random.default_rng(1234).integers(100, 156, size=(4, 3))
    train_y = np.arange(train_rows) % 4
    images: list = make_images(train_y, 32, rng, palette)
    for row, cell in train_cells.items():
        images[row] = cell
    test_y = np.arange(40) % 4
    test_images = make_images(test_y, 32, rng, palette)
    splits = {"train": datasets.Dataset.from_dict(
        {"img": images, "label": train_y.tolist()},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)}))}
    order = test_names or names
    y = test_labels if test_labels is not None else [order.index(names[k]) if names[k] in order else 0 for k in test_y]
    splits["test"] = datasets.Dataset.from_dict(
        {"img": test_images, "label": list(y)},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=order)}))
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def _jpeg(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


BAD_CELLS = {"truncated_jpeg": {"bytes": _jpeg()[:200], "path": None}, "not_an_image": {"bytes": b"hello", "path": None},
             "empty_cell": None, "decompression_bomb": "bomb"}


@pytest.mark.parametrize("kind", list(BAD_CELLS))
def test_one_bad_image_is_named_by_split_and_row_and_can_be_skipped(kind, tmp_path, monkeypatch, capsys):
    cell = BAD_CELLS[kind]
    if cell == "bomb":  # PIL refuses images of more than twice MAX_IMAGE_PIXELS: a 64-px one, with the limit at 1,100
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)
        cell = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setenv("VIT_TRAINER_DECODE_WORKERS", "2")  # 600 rows: two chunks, each in a worker
    data = _with_cells(tmp_path / "d", {BAD_ROW: cell})
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match=rf"split 'train' row {BAD_ROW} holds no image that decodes .*"
                                         r"--skip-bad-images"):
        load_data(str(data), samples_per_class=None, cache_dir=str(cache))
    assert not [p for p in os.listdir(cache) if "tmp" in p]  # nothing half-written
    capsys.readouterr()
    kept = load_data(str(data), samples_per_class=None, cache_dir=str(cache), skip_bad=True)
    assert len(kept.train) == 599 and BAD_ROW not in kept.train.indices
    assert f"left out 1 image(s) of split 'train' that do not decode (rows {BAD_ROW})" in capsys.readouterr().err
    again = load_data(str(data), samples_per_class=None, cache_dir=str(cache), skip_bad=True)  # from the cache
    assert torch.equal(again.train.images.cpu(), kept.train.images.cpu())
    assert torch.equal(again.train.labels, kept.train.labels)
    with pytest.raises(UsageError, match=rf"row {BAD_ROW} holds no image"):  # the cache remembers why it is short
        load_data(str(data), samples_per_class=None, cache_dir=str(cache))


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white():
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    rgb = decode_rgb({"bytes": buf.getvalue(), "path": None})
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], np.round(grey / 65535 * 255).astype(np.uint8)) and 0 < rgb.mean() < 255


def test_an_eval_split_ordering_its_classes_otherwise_is_matched_by_name(tmp_path, capsys):
    plain = load_data(str(_with_cells(tmp_path / "a", {}, 40)), samples_per_class=None, cache_dir=str(tmp_path / "c"))
    reordered = ["class2", "class0", "class3", "class1"]
    other = load_data(str(_with_cells(tmp_path / "b", {}, 40, test_names=reordered)), samples_per_class=None,
                      cache_dir=str(tmp_path / "c"))
    assert torch.equal(other.eval.labels, plain.eval.labels) and other.label_names == plain.label_names
    assert "orders its class names otherwise than split 'train'" in capsys.readouterr().err


def test_an_eval_split_of_other_classes_is_refused(tmp_path):
    data = _with_cells(tmp_path / "a", {}, 40, test_names=["class0", "class1", "class2", "cat"])
    with pytest.raises(UsageError, match=r"split 'test' has the classes .*'cat'.* where .*'class3'.* were expected"):
        load_data(str(data), cache_dir=str(tmp_path / "c"))


def test_an_unlabelled_eval_split_asks_for_another(tmp_path):
    data = _with_cells(tmp_path / "a", {}, 40, test_labels=[-1] * 40)
    for load in (lambda: load_data(str(data), cache_dir=str(tmp_path / "c")),
                 lambda: load_eval_split(str(data), "test", cache_dir=str(tmp_path / "c"))):
        with pytest.raises(UsageError, match=r"split 'test' has no labels \(label -1.*pass --eval-split with a "
                                             r"labelled split"):
            load()
    assert not (tmp_path / "c").exists()  # found before anything was decoded


def test_labels_past_the_last_class_are_refused_before_decoding(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    images = [Image.fromarray(np.zeros((8, 8, 3), np.uint8))] * 6
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 0, 1, 2]},
                                                              features=features),
                          "test": datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 3, 4, 5]},
                                                             features=features)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(UsageError, match=r"split 'test' has labels up to 5, outside 0..2"):
        load_data(str(tmp_path / "d"), samples_per_class=None, cache_dir=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("empty", ["test", "train"])
def test_an_empty_split_is_refused(empty, tmp_path, monkeypatch):
    """datasets cannot load an empty split from disk; a DatasetDict built in Python can hold one."""
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    full = datasets.Dataset.from_dict({"img": [Image.fromarray(np.zeros((8, 8, 3), np.uint8))] * 4,
                                       "label": [0, 1, 0, 1]}, features=features)
    splits = datasets.DatasetDict({"train": full, "test": full})
    splits[empty] = full.select([])
    monkeypatch.setattr("trainer.data.loading.open_dataset", lambda name, config=None: splits)
    with pytest.raises(UsageError, match=rf"split '{empty}' has no images"):
        load_data("in-memory", samples_per_class=None, cache_dir=str(tmp_path / "c"))


def test_one_class_is_refused(tmp_path):
    data = make_dataset(tmp_path / "d", {"train": 5, "test": 5}, num_classes=1)
    with pytest.raises(UsageError, match=r"a classifier needs at least two"):
        load_data(str(data), cache_dir=str(tmp_path / "c"))


def test_a_cache_file_damaged_inside_is_decoded_again(toy_dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    reference = load_data(str(toy_dataset), samples_per_class=10, cache_dir=str(cache)).train.images.cpu()
    train_file = next(cache / f for f in os.listdir(cache) if f.startswith("train-") and f.endswith(".npy"))
    size = train_file.stat().st_size
    with open(train_file, "r+b") as f:  # black pixels of the right size: a cut-short write-back, a bad block
        f.seek(size // 2)
        f.write(bytes(3000))
    assert train_file.stat().st_size == size
    capsys.readouterr()
    again = load_data(str(toy_dataset), samples_per_class=10, cache_dir=str(cache)).train.images.cpu()
    assert torch.equal(again, reference)
    assert "is damaged (its content does not match its digests): decoding it again" in capsys.readouterr().err
    (Path(str(train_file) + DIGESTS)).unlink()  # a file without its digests (an older version's) is decoded again too
    assert torch.equal(load_data(str(toy_dataset), samples_per_class=10, cache_dir=str(cache)).train.images.cpu(),
                       reference)


def test_a_cache_disk_that_fills_up_while_another_run_decodes_is_one_line(toy_dataset, tmp_path, monkeypatch):
    """Two runs both see room for their file; the second to reserve its space meets the full disk."""
    import shutil

    with SmallDisk(tmp_path / "disk", "64k") as disk:
        monkeypatch.setattr("trainer.data.decode_cache.shutil.disk_usage",
                            lambda path: shutil._ntuple_diskusage(10**9, 0, 10**9))
        with pytest.raises(UsageError, match=r"could not write the decode cache .*No space left on device.*free some "
                                             r"space or pass --cache-dir on a larger disk"):
            load_data(str(toy_dataset), samples_per_class=None, cache_dir=str(disk))
        assert not os.listdir(disk)  # the reserved file is gone
