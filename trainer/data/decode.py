"""Decoding a selection of images once, chunk by chunk and in parallel, straight into the decode cache: one
memory-mapped uint8 file [N, 3, H, W] (.npy) per (dataset version, split, rows, eval crop). Peak private memory is
about one chunk per worker, not the split, and the file is what the disk store maps."""
from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Optional

import datasets
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode
from tqdm.auto import tqdm

from ..errors import UsageError, human_size

try:  # deprecated since torchvision 0.29 in favour of TorchCodec: where it is gone, PIL decodes everything
    from torchvision.io import ImageReadMode, decode_jpeg

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
except ImportError:  # pragma: no cover - a torchvision without image I/O
    decode_jpeg = None

CHUNK = 500  # images a worker decodes between writes; small enough that a chunk of 224-px images is ~75 MB
_JOB: dict[str, Any] = {}  # what forked workers inherit: the dataset, its column, the rows, the target shape


def _encoded(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """The image column as stored (bytes or path): headers are read without decoding, and workers decode."""
    return ds.cast_column(column, datasets.Image(decode=False))


def _open(item: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])


def decode_rgb(item: dict[str, Any]) -> np.ndarray:
    """An encoded image as uint8 RGB [H, W, 3]. JPEGs through torchvision.io.decode_jpeg (libjpeg-turbo): measured
    1.3-1.8x PIL's speed on this project's CPU, with identical pixels on all 10,000 CIFAR-10 test images; PIL for
    every other format, and for JPEGs torchvision cannot read."""
    if item.get("bytes"):
        data = item["bytes"]
    else:
        with open(item["path"], "rb") as f:
            data = f.read()
    if data[:3] == b"\xff\xd8\xff" and decode_jpeg is not None:
        try:
            rgb = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            return rgb.permute(1, 2, 0).numpy()
        except RuntimeError:
            pass
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class NotOneSize(Exception):
    """An image of another size turned up in a split decoded as square images of one size."""


def first_shape(ds: datasets.Dataset, column: str, indices: np.ndarray) -> tuple[int, int]:
    """(H, W) of the first chosen image, from its header."""
    if not len(indices):
        return 1, 1
    w, h = _open(_encoded(ds, column)[int(indices[0])][column]).size
    return h, w


def _set_job(ds: datasets.Dataset, column: str, rows: np.ndarray, path: str, size: Optional[int]) -> None:
    _JOB.update(ds=ds, column=column, rows=rows, path=path, size=size)


def centre_square(image: Image.Image, side: int, size: int) -> Image.Image:
    """The side x side square of a photo that timm's eval transform (resize the shorter side to side, centre-crop
    size) would cut its crop from, placed so that centre-cropping size from it gives exactly timm's pixels."""
    image = TF.resize(image, side, interpolation=InterpolationMode.BICUBIC)  # what timm's Resize(side) does
    w, h = image.size

    def offset(extent: int) -> int:  # torchvision's CenterCrop rounding, on the whole image and on the square
        return min(max(int(round((extent - size) / 2.0)) - int(round((side - size) / 2.0)), 0), extent - side)

    return image.crop((offset(w), offset(h), offset(w) + side, offset(h) + side))


def _decode_chunk(start: int, stop: int) -> int:
    """Decode rows [start, stop) of the job into the cache file (runs in a worker, or in the caller)."""
    ds, column, rows, path, size = _JOB["ds"], _JOB["column"], _JOB["rows"], _JOB["path"], _JOB["size"]
    out = np.load(path, mmap_mode="r+")
    for k, item in enumerate(ds.select(rows[start:stop].tolist())[column]):
        rgb = decode_rgb(item)
        if size is not None:
            rgb = np.asarray(centre_square(Image.fromarray(rgb), out.shape[2], size))
        elif rgb.shape[:2] != out.shape[2:]:
            raise NotOneSize(f"{rgb.shape[:2]} != {out.shape[2:]}")
        out[start + k] = rgb.transpose(2, 0, 1)
    # No msync per chunk: the pages sit in the page cache, where every process of the machine sees them, and a
    # synchronous write-back per chunk made the workers wait on the disk (1.2x with 2 workers, measured).
    return stop - start


def _check_room(folder: str, need: int) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        raise UsageError(f"cannot write the decode cache in {folder} ({err.strerror}): pass --cache-dir with a "
                         "writable folder (or set VIT_TRAINER_CACHE)") from None
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UsageError(f"the decode cache needs {human_size(need)} in {folder}, which has {human_size(free)} free: "
                         "free some space or pass --cache-dir on a larger disk")


def decode_to_file(ds: datasets.Dataset, column: str, indices: np.ndarray, shape: tuple[int, int, int], path: str,
                   workers: int = 0, progress: bool = True, chunk: int = CHUNK, crop_size: Optional[int] = None) -> str:
    """Write the decoded rows to `path` (.npy, written under a temporary name, then renamed); return path.
    crop_size: store photos as the centre squares of side shape[-1] that this eval crop size is cut from; None:
    store the images as they are, all of `shape` (NotOneSize when one is not)."""
    need = len(indices) * int(np.prod(shape))
    _check_room(os.path.dirname(os.path.abspath(path)), need)
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(indices), *shape)).flush()
    job = (_encoded(ds, column), column, np.asarray(indices), tmp, crop_size)
    chunks = [(s, min(s + chunk, len(indices))) for s in range(0, len(indices), chunk)]
    workers = workers or default_workers()
    bar = tqdm(total=len(indices), desc="decoding", unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        if workers <= 1 or len(chunks) <= 1:
            _set_job(*job)
            for start, stop in chunks:
                bar.update(_decode_chunk(start, stop))
        else:
            # fork where there is one: the workers inherit the dataset (Arrow, memory-mapped) without pickling it.
            context = multiprocessing.get_context("fork" if os.name == "posix" and os.uname().sysname == "Linux"
                                                  else "spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_job, initargs=job) as pool:
                futures = [pool.submit(_decode_chunk, s, e) for s, e in chunks]
                try:
                    for done in as_completed(futures):
                        bar.update(done.result())
                finally:  # a failed chunk (NotOneSize) stops the rest
                    for f in futures:
                        f.cancel()
        fd = os.open(tmp, os.O_RDONLY)
        try:  # on disk before it takes its final name: a crash must not leave a complete-looking file of zeros
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        bar.close()
        _JOB.clear()
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def default_workers() -> int:
    """The CPU cores this process may use, at most 8 (decoding is the first job of a run, nothing else runs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 8)


def cached_rows(path: str, n: int) -> Optional[np.ndarray]:
    """The decode cache file mapped read-only when it is complete and holds n rows; None means decode again."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array if array.ndim == 4 and array.shape[0] == n and array.dtype == np.uint8 else None
