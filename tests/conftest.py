"""The tests' fixtures: datasets written once per session and one decode cache. Helpers live in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import SMALL_VIT, make_dataset, make_photo_dataset


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """4 classes, 60 train and 20 test images per class, 32x32."""
    return make_dataset(tmp_path_factory.mktemp("data") / "toy", {"train": 60, "test": 20})


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One decode cache for the whole session."""
    return tmp_path_factory.mktemp("decode-cache")


@pytest.fixture(scope="session")
def photo_dataset(tmp_path_factory) -> Path:
    """3 classes of mixed-size JPEG photos: 30 train and 10 test images per class."""
    return make_photo_dataset(tmp_path_factory.mktemp("photos") / "photos", {"train": 30, "test": 10})


@pytest.fixture(scope="session")
def small_run(toy_dataset, cache_dir, tmp_path_factory) -> Path:
    """A trained small ViT whose own eval set is 5 images per class (20 of the 80 test images): what the export tests
    export."""
    from trainer.commands.train import main_cls

    out = tmp_path_factory.mktemp("export") / "run"
    main_cls([*SMALL_VIT, "--dataset", str(toy_dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
              "--samples-per-class", "40", "--eval-samples-per-class", "5", "--batch-size", "16", "--epochs", "2",
              "--lr", "2e-3", "--no-progress"])
    return out
