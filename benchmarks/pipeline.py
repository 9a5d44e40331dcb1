"""Input pipeline throughput to 224x224: the usual Hugging Face example pipeline against this project's.

    python benchmarks/pipeline.py --dataset ../shared/data/cifar10 [--images 2000] [--epochs 5] [--json]

(a) peer_images_per_s: per-sample PIL RandomResizedCrop(224) + flip + ToTensor + Normalize through
    `Dataset.with_transform` and a DataLoader with one worker per core (the transformers/timm examples).
(b) ours_host_images_per_s: what this project asks of the host CPU per image when the model sits on an
    accelerator: decoding once into a uint8 tensor (no cache: the first run) plus the per-step work
    (epoch plan, index slices), over --epochs epochs. ours_host_cached_images_per_s: the same when the
    decode cache is warm (every later run).
(c) ours_cpu_images_per_s: the whole pipeline with the CPU as the device: decode once, then every epoch
    the batched flip + resize to 224 + normalise on the CPU.
(d) on a GPU (when one is visible): ours_gpu_images_per_s, the same pipeline on the GPU.
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.data.augment import Draws, View, augment  # noqa: E402
from trainer.data.plan import Augmentation, plan_epoch  # noqa: E402
from trainer.data.loading import decode_cached
from trainer.data.sources import find_columns, get_split, open_dataset  # noqa: E402
from trainer.data.stores import DiskStore, serve  # noqa: E402

VIEW = View(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def peer(ds, image_column: str, label_column: str, batch_size: int, workers: int) -> float:
    """Images/s of the Hugging Face example pipeline for one pass."""
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(VIEW.mean, VIEW.std)])

    def apply(batch):
        batch["pixel_values"] = [tf(im.convert("RGB")) for im in batch[image_column]]
        return batch

    def collate(rows):
        return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r[label_column] for r in rows])

    loader = torch.utils.data.DataLoader(ds.with_transform(apply), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, collate_fn=collate,
                                         persistent_workers=False)
    start = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def ours(ds, image_column: str, indices: np.ndarray, batch_size: int, epochs: int, device: torch.device,
         augment_on_device: bool, cache_dir: str | None) -> float:
    """Images/s over `epochs` epochs: decode once (or read the cache), then per step index (+ augment)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as fresh:  # cache_dir None: decode now, into a cache nobody reuses
        path, _ = decode_cached(ds, "train", image_column, indices, None, cache_dir or fresh, progress=False)
        images = serve(DiskStore(path, device), "device", device)  # the trainer's default store
    n = len(images)
    for epoch in range(epochs):
        plan = plan_epoch(n, 0, epoch, Augmentation(flip=True))
        order, flips = plan.order.to(device), plan.draws.flip.to(device)
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            batch = images.rows(idx)
            if augment_on_device:
                augment(batch, VIEW, Draws(flip=flips[lo:lo + batch_size]))
    sync()
    return n * epochs / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--images", type=int, default=2000, help="training images per pass")
    p.add_argument("--epochs", type=int, default=5, help="passes for our pipeline (the decode happens once)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    train = get_split(open_dataset(args.dataset), "train", "--train-split")
    img_col, lbl_col = find_columns(train.features)
    indices = np.arange(args.images)
    sub = train.select(indices.tolist())
    result = {"benchmark": "pipeline", "images": args.images, "epochs": args.epochs, "batch_size": args.batch_size,
              "cpu_threads": torch.get_num_threads(), "workers": args.workers, "size": 224}
    result["peer_images_per_s"] = peer(sub, img_col, lbl_col, args.batch_size, args.workers)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as cache:
        result["ours_host_images_per_s"] = ours(train, img_col, indices, args.batch_size, args.epochs, cpu, False, None)
        ours(train, img_col, indices, args.batch_size, 1, cpu, False, cache)  # fill the cache
        result["ours_host_cached_images_per_s"] = ours(train, img_col, indices, args.batch_size, args.epochs, cpu,
                                                       False, cache)
        result["ours_cpu_images_per_s"] = ours(train, img_col, indices, args.batch_size, args.epochs, cpu, True, None)
        if torch.cuda.is_available():
            gpu = torch.device("cuda")
            ours(train, img_col, indices[:256], args.batch_size, 1, gpu, True, None)  # warm-up
            result["ours_gpu_images_per_s"] = ours(train, img_col, indices, args.batch_size, args.epochs, gpu, True,
                                                   None)
            result["gpu"] = torch.cuda.get_device_name(0)
    result["host_speedup"] = result["ours_host_images_per_s"] / result["peer_images_per_s"]
    result["cpu_speedup"] = result["ours_cpu_images_per_s"] / result["peer_images_per_s"]
    result = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
