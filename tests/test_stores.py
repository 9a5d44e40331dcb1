"""The storage seam: every store gives the same rows; the auto choice follows the sizes; the decode cache."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trainer.data.loading import load_data
from trainer.data.decode_cache import cached_rows
from trainer.errors import UsageError
from trainer.data.placement import choose_store, place_splits
from trainer.data.stores import CPU, DeviceStore, DiskStore, HostStore, serve


@pytest.fixture()
def disk(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (37, 3, 8, 6), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    return DiskStore(str(tmp_path / "images.npy"), CPU), torch.from_numpy(images)


@pytest.mark.parametrize("kind", ["device", "host", "disk"])
def test_every_store_gives_the_same_rows_in_the_asked_order(disk, kind):
    store, reference = disk
    served = serve(store, kind, CPU)
    assert served.kind == kind and served.shape == (37, 3, 8, 6) and len(served) == 37
    index = torch.tensor([30, 2, 2, 17, 0, 36])  # unsorted, repeated: the disk store sorts and puts back
    assert torch.equal(served.rows(index.to(served.index_device)), reference[index])
    assert torch.equal(served.span(5, 9), reference[5:9])
    nxt = torch.tensor([3, 1, 4])
    served.prefetch(nxt)
    other = torch.tensor([9, 8])  # a prefetch that is not asked for is dropped, not returned
    assert torch.equal(served.rows(other), reference[other])
    served.prefetch(nxt)
    assert torch.equal(served.rows(nxt.clone()), reference[nxt])
    assert torch.equal(served.cpu(), reference)


def test_host_and_device_stores_hold_private_copies_and_disk_maps_the_file(disk):
    store, reference = disk
    assert isinstance(serve(store, "device", CPU), DeviceStore) and isinstance(serve(store, "host", CPU), HostStore)
    mapped = serve(store, "disk", CPU)
    assert isinstance(mapped, DiskStore) and isinstance(mapped.array, np.memmap)


GB = 10**9


@pytest.mark.parametrize("device_free, host_free, processes, device, expected", [
    (80 * GB, 100 * GB, 1, "cuda", "device"),  # 10 GB fits in 40% of 80 GB
    (16 * GB, 100 * GB, 1, "cuda", "host"),  # not in 40% of a T4's 16 GB; in half of 100 GB of RAM
    (16 * GB, 100 * GB, 8, "cuda", "disk"),  # eight copies of 10 GB do not fit in half of 100 GB
    (30 * GB, 30 * GB, 1, "cpu", "device"),  # a CPU's device memory is the RAM
    (20 * GB, 20 * GB, 1, "cpu", "disk"),  # and a host store would be the same memory again
])
def test_auto_choice_follows_the_sizes(monkeypatch, device_free, host_free, processes, device, expected):
    monkeypatch.setenv("VIT_TRAINER_DEVICE_FREE_BYTES", str(device_free))
    monkeypatch.setenv("VIT_TRAINER_HOST_FREE_BYTES", str(host_free))
    kind, why = choose_store(10 * GB, "auto", torch.device(device), processes)
    assert kind == expected, why
    assert "40%" in why


def test_device_store_asked_for_but_too_big(monkeypatch):
    monkeypatch.setenv("VIT_TRAINER_DEVICE_FREE_BYTES", str(16 * GB))
    with pytest.raises(UsageError, match=r"--data-on device: the decoded images \(10.00 GB\) do not fit in 40% of "
                                         r"the cuda device's 16.00 GB free: use --data-on host .* or disk"):
        choose_store(10 * GB, "device", torch.device("cuda"), 1)


def test_a_run_places_both_splits_and_says_why(toy_dataset, tmp_path, monkeypatch):
    data = load_data(str(toy_dataset), samples_per_class=10, seed=0, cache_dir=str(tmp_path))
    monkeypatch.setenv("VIT_TRAINER_DEVICE_FREE_BYTES", "1000")  # a device too small for 40 + 80 images
    line = place_splits([data.train, data.eval], "auto", CPU)
    assert data.train.images.kind == data.eval.images.kind == "disk"
    assert line.startswith("data: disk store, 0.4 MB decoded (0.1 MB + 0.2 MB) memory-mapped from ")
    assert len(data.train.images.rows(torch.tensor([0, 5]))) == 2


def test_decode_cache_is_one_npy_file_per_split_and_damage_is_decoded_again(toy_dataset, tmp_path):
    data = load_data(str(toy_dataset), samples_per_class=10, seed=0, cache_dir=str(tmp_path))
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(".npy"))
    assert len(files) == 2 and not [p for p in os.listdir(tmp_path) if "tmp" in p]
    train_file = next(str(tmp_path / f) for f in files if f.startswith("train-"))
    reference = data.train.images.cpu()
    with open(train_file, "r+b") as f:  # cut the file short, as a full disk or a kill would
        f.truncate(os.path.getsize(train_file) // 2)
    assert cached_rows(train_file, 40) is None
    again = load_data(str(toy_dataset), samples_per_class=10, seed=0, cache_dir=str(tmp_path))
    assert torch.equal(again.train.images.cpu(), reference)


def test_decoding_in_two_workers_writes_the_same_file(toy_dataset, tmp_path):
    from trainer.data.sources import get_split, open_dataset
    from trainer.data.decode_cache import decode_to_file

    ds = get_split(open_dataset(str(toy_dataset)), "train", "--train-split")
    rows = np.arange(0, 240, 2)
    one, _ = decode_to_file(ds, "img", rows, (3, 32, 32), str(tmp_path / "one.npy"), workers=1, progress=False)
    two, _ = decode_to_file(ds, "img", rows, (3, 32, 32), str(tmp_path / "two.npy"), workers=2, progress=False,
                            chunk=16)
    assert np.array_equal(np.load(one), np.load(two))
    expected = np.stack([np.asarray(ds[int(r)]["img"].convert("RGB")).transpose(2, 0, 1) for r in rows[:5]])
    assert np.array_equal(np.load(two)[:5], expected)


class _Logits(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


@pytest.mark.parametrize("kind", ["host", "disk"])
def test_training_and_evaluation_read_each_next_batch_ahead(disk, kind, monkeypatch):
    """After the first batch, every batch a store off the device serves was read on its helper thread while the
    step before it ran."""
    import threading
    from types import SimpleNamespace

    from accelerate import Accelerator

    from trainer.data.augment import View
    from trainer.training.batches import EpochBatches
    from trainer.config import TrainConfig
    from trainer.data.loading import SplitData
    from trainer.evaluation.inference import evaluate_split

    store, reference = disk
    served = serve(store, kind, CPU)
    readers: list[str] = []
    read = type(served)._read
    monkeypatch.setattr(type(served), "_read", lambda self, index, out: (readers.append(
        threading.current_thread().name), read(self, index, out))[1])
    split = SplitData(served, torch.arange(37) % 3, np.arange(37), "k")
    view = View(8, (0.5,) * 3, (0.5,) * 3)
    batches = EpochBatches(split, view, TrainConfig(batch_size=5), SimpleNamespace(
        num_processes=1, process_index=0, device=CPU), epoch=0)
    seen = [micro.batch.images for micro in batches.starting_at(0)]
    assert torch.equal(torch.cat(seen), reference[batches.order])  # the plan's rows, in its order
    assert readers[0] == "MainThread" and all(r.startswith(f"{kind}-store") for r in readers[1:len(seen)])
    readers.clear()
    res = evaluate_split(_Logits(), split, view, Accelerator(cpu=True), batch_size=8)
    assert res.num_samples == 37 and len(readers) == 5
    assert readers[0] == "MainThread" and all(r.startswith(f"{kind}-store") for r in readers[1:])
