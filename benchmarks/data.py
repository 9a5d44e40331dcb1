"""Data of any size, measured on this machine: decode memory and speed, the stores against each other, and what two
processes keep privately on the disk store. It builds its own mixed-size JPEG photo set first.

    python benchmarks/data.py [--images 10000] [--json]

Last stdout line, one JSON object:
- decode_private_growth: peak private memory (RssAnon) of a process decoding 2N photos over one decoding N;
- decode_speedup_2_workers: decode time of N photos with 1 worker over that with 2;
- decode_pil_images_per_s / decode_torchvision_images_per_s: the two JPEG decoders on the same photos;
- host_vs_device, disk_vs_device: training images/s of the same run served by each store, over the device store's
  (fastest of --repeats interleaved runs);
- disk_private_share (device_private_share for contrast): private memory of each of two torchrun processes training
  one epoch on N photos, beyond that of the same run on a 100-image split for as many steps, over the decoded split's
  size (the larger of the two processes).
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMALL = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=4", "depth=4"]


def _photo(seed: int) -> tuple[bytes, int]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    label = int(rng.integers(10))
    h, w = rng.integers(96, 257, size=2)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 20 * label + 70 * np.sin(xx / (4 + label))[..., None] + 50 * np.cos(yy / 6)[..., None]
    img = np.clip(img + 100 + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue(), label


def build_photos(path: str, n: int) -> str:
    """n mixed-size JPEG photos (96..256 px a side, 10 classes) as a save_to_disk dataset with a 'train' split
    (and a 500-photo 'test' split)."""
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    splits = {}
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for split, seeds in (("train", range(n)), ("test", range(10**7, 10**7 + 500))):
            made = pool.map(_photo, seeds, chunksize=256)
            images = [Image.open(io.BytesIO(b)) for b, _ in made]  # JPEG-format images: stored as these bytes
            splits[split] = datasets.Dataset.from_dict({"image": images, "label": [y for _, y in made]},
                                                       features=features)
    datasets.DatasetDict(splits).save_to_disk(path)
    return path


def rss_anon(pid: int | str = "self") -> int:
    """Private (anonymous) resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


class PeakSampler:
    """The largest RssAnon of some processes, sampled every few milliseconds while a block runs."""

    def __init__(self, pids: callable):
        self.pids, self.peak, self._stop = pids, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids():
                try:
                    self.peak[pid] = max(self.peak.get(pid, 0), rss_anon(pid))
                except (OSError, StopIteration):
                    pass
            time.sleep(0.005)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def decode_child(dataset: str, n: int, workers: int, out: str) -> None:
    """In a fresh process: decode the first n photos for a 96-px model; print the peak RssAnon and the seconds."""
    from trainer.data.augment import EvalCrop
    from trainer.data.sources import get_split, open_dataset
    from trainer.data.decode_cache import decode_to_file

    ds = get_split(open_dataset(dataset), "train", "--train-split")
    crop = EvalCrop(96, 0.875)
    start = time.perf_counter()
    with PeakSampler(lambda: ["self"]) as sampler:
        decode_to_file(ds, "image", np.arange(n), (3, crop.side, crop.side), out, workers=workers, progress=False,
                       crop_size=crop.size)
    print(json.dumps({"peak_rss_anon": sampler.peak["self"], "seconds": time.perf_counter() - start}))


def _child_json(*args: str) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def decoders(dataset: str, n: int = 2000) -> dict:
    """Images/s of PIL and of torchvision.io.decode_jpeg on the same JPEG bytes, one thread."""
    import datasets
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    torch.set_num_threads(1)
    raw = datasets.load_from_disk(dataset)["train"].cast_column("image", datasets.Image(decode=False))
    blobs = [item["bytes"] for item in raw.select(range(min(n, len(raw))))["image"]]
    out = {}
    for name, fn in (("pil", lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))),
                     ("torchvision", lambda b: decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8),
                                                           mode=ImageReadMode.RGB))):
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            for b in blobs:
                fn(b)
            best = min(best, time.perf_counter() - start)
        out[f"decode_{name}_images_per_s"] = round(len(blobs) / best, 1)
    return out


def store_throughput(dataset: str, cache: str, repeats: int, per_class: int) -> dict:
    """Training images/s of one small-ViT run (10 x per_class photos, 2 epochs), served by each store."""
    from trainer.api import TrainConfig, train
    from trainer.argparsing import parse_kwargs

    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeats):
            for data_on in ("device", "host", "disk"):
                cfg = TrainConfig(dataset=dataset, model="vit_tiny_patch16_224", img_size=32,
                                  model_kwargs=parse_kwargs(["patch_size=4", "depth=4"]), samples_per_class=per_class,
                                  eval_samples_per_class=10, epochs=2, batch_size=64, lr=1e-3, log_every=0,
                                  progress=False, cache_dir=cache, output_dir=os.path.join(out, data_on),
                                  overwrite=True, data_on=data_on)
                best[data_on] = max(best.get(data_on, 0.0), train(cfg)["train_images_per_s"])
    return {"store_images_per_s": {k: round(v, 1) for k, v in best.items()},
            "host_vs_device": round(best["host"] / best["device"], 3),
            "disk_vs_device": round(best["disk"] / best["device"], 3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def two_process_peaks(dataset: str, cache: str, per_class: int, data_on: str, out: str, epochs: int = 1) -> list[int]:
    """Peak RssAnon of each of the two torchrun workers of a run."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", os.path.join(ROOT, "train_cls.py"), "--model", "vit_tiny_patch16_224",
           "--img-size", "64", "--model-kwargs", "patch_size=8", "depth=1", "--dataset", dataset, "--cache-dir", cache,
           "--samples-per-class", str(per_class), "--eval-samples-per-class", "10", "--epochs", str(epochs),
           "--batch-size", "32", "--log-every", "0", "--no-progress", "--output-dir", out, "--overwrite",
           "--data-on", data_on]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakSampler(lambda: _children(proc.pid)) as sampler:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    return sorted(sampler.peak.values())[-2:]  # the two workers (beside small helpers the launcher may start)


def private_share(dataset: str, cache: str, per_class: int, tmp: str) -> dict:
    """Each process's private memory beyond a 100-image run, over the decoded split's size, per store."""
    from trainer.data.augment import EvalCrop
    from trainer.data.loading import load_data

    # Decoded first, so that the runs measure training, not decoding.
    decoded = load_data(dataset, samples_per_class=per_class, eval_samples_per_class=10, crop=EvalCrop(64, 0.9),
                        cache_dir=cache).train.images.nbytes
    load_data(dataset, samples_per_class=10, eval_samples_per_class=10, crop=EvalCrop(64, 0.9), cache_dir=cache)
    out: dict = {"two_process_decoded_bytes": decoded}
    for data_on in ("disk", "device"):
        big = two_process_peaks(dataset, cache, per_class, data_on, os.path.join(tmp, "big"))
        # As many optimizer steps on 100 images as on the big split: what grows with the steps (the allocator's
        # heap) is the same on both sides, what grows with the split is the difference.
        small = two_process_peaks(dataset, cache, 10, data_on, os.path.join(tmp, "small"), epochs=per_class // 10)
        out[f"{data_on}_private_share"] = round(max(b - s for b, s in zip(big, small, strict=True)) / decoded, 3)
        out[f"{data_on}_peak_rss_anon_mb"] = [round(b / 1e6) for b in big]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10000, help="N: the decode measurements use N and 2N photos")
    p.add_argument("--repeats", type=int, default=2, help="interleaved store runs; the fastest of each is kept")
    p.add_argument("--parts", default="decode,stores,share", help="which measurements (comma-separated)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--decode-child", nargs=4, metavar=("DATASET", "N", "WORKERS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.decode_child:
        dataset, n, workers, out = args.decode_child
        decode_child(dataset, int(n), int(workers), out)
        return
    n = args.images
    result: dict = {"benchmark": "data", "device": "cpu", "cores": os.cpu_count(), "images": n}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        photos = build_photos(os.path.join(tmp, "photos"), 2 * n)
        result["build_s"] = round(time.perf_counter() - start, 1)
        parts = args.parts.split(",")
        if "decode" in parts:
            one, two = (_child_json("--decode-child", photos, str(k), "1", os.path.join(tmp, f"d{k}.npy"))
                        for k in (n, 2 * n))
            parallel = _child_json("--decode-child", photos, str(n), "2", os.path.join(tmp, "p.npy"))
            result.update(decode_peak_rss_anon_mb={"N": round(one["peak_rss_anon"] / 1e6),
                                                   "2N": round(two["peak_rss_anon"] / 1e6)},
                          decode_private_growth=round(two["peak_rss_anon"] / one["peak_rss_anon"], 3),
                          decode_1_worker_images_per_s=round(n / one["seconds"], 1),
                          decode_2_workers_images_per_s=round(n / parallel["seconds"], 1),
                          decode_speedup_2_workers=round(one["seconds"] / parallel["seconds"], 3))
            result.update(decoders(photos))
        cache = os.path.join(tmp, "cache")
        if "stores" in parts:
            result.update(store_throughput(photos, cache, args.repeats, min(200, n // 10)))
        if "share" in parts:
            result.update(private_share(photos, cache, n // 10, tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
