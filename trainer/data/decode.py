"""Decoding images: one encoded image (bytes or a path) to uint8 RGB, photos cut to the centre square timm's eval
crop is taken from, and a chunk of a split's rows decoded into the decode cache file (in a worker or in the caller).
An image that cannot be decoded is named by its row (BadImage), never a bare traceback."""
from __future__ import annotations

import io
import warnings
from typing import Any, Optional

import datasets
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

try:  # deprecated since torchvision 0.29 in favour of TorchCodec: where it is gone, PIL decodes everything
    from torchvision.io import ImageReadMode, decode_jpeg

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
except ImportError:  # pragma: no cover - a torchvision without image I/O
    decode_jpeg = None

JOB: dict[str, Any] = {}  # what forked workers inherit: the dataset, its column, the rows, the file, the crop size


def encoded(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """The image column as stored (bytes or path): headers are read without decoding, and workers decode."""
    return ds.cast_column(column, datasets.Image(decode=False))


def _open(item: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])


def _to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 RGB of any PIL mode; 16-bit grey is scaled to 8 bits (PIL's own convert clips it to white)."""
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.float64)
        grey = np.clip(np.round(grey * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def decode_rgb(item: Optional[dict[str, Any]]) -> np.ndarray:
    """An encoded image as uint8 RGB [H, W, 3]. JPEGs through torchvision.io.decode_jpeg (libjpeg-turbo): measured
    1.3-1.8x PIL's speed on this project's CPU, with identical pixels on all 10,000 CIFAR-10 test images; PIL for
    every other format, and for JPEGs torchvision cannot read."""
    if item is None or not (item.get("bytes") or item.get("path")):
        raise ValueError("the image cell is empty (None)")
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
    return _to_rgb(Image.open(io.BytesIO(data)))  # over twice PIL's pixel limit: DecompressionBombError, a bad image


class NotOneSize(Exception):
    """An image of another size turned up in a split decoded as square images of one size."""


class BadImage(Exception):
    """Row `row` of the source split holds no image that decodes (its reason in words)."""

    def __init__(self, row: int, reason: str):
        super().__init__(row, reason)
        self.row, self.reason = row, reason


def _reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def first_shape(ds: datasets.Dataset, column: str, indices: np.ndarray) -> tuple[int, int]:
    """(H, W) of the first chosen image whose header reads (decoding names the ones that do not)."""
    images = encoded(ds, column)
    for row in indices[:64]:
        try:
            w, h = _open(images[int(row)][column]).size
            return h, w
        except Exception:
            continue
    return 1, 1


def set_job(ds: datasets.Dataset, column: str, rows: np.ndarray, path: str, size: Optional[int],
            skip_bad: bool) -> None:
    """What decode_chunk works on, set once per worker (or in the caller)."""
    JOB.update(ds=ds, column=column, rows=rows, path=path, size=size, skip_bad=skip_bad)


def centre_square(image: Image.Image, side: int, size: int) -> Image.Image:
    """The side x side square of a photo that timm's eval transform (resize the shorter side to side, centre-crop
    size) would cut its crop from, placed so that centre-cropping size from it gives exactly timm's pixels."""
    image = TF.resize(image, side, interpolation=InterpolationMode.BICUBIC)  # what timm's Resize(side) does
    w, h = image.size

    def offset(extent: int) -> int:  # torchvision's CenterCrop rounding, on the whole image and on the square
        return min(max(int(round((extent - size) / 2.0)) - int(round((side - size) / 2.0)), 0), extent - side)

    return image.crop((offset(w), offset(h), offset(w) + side, offset(h) + side))


def decode_chunk(start: int, stop: int) -> tuple[int, list[int]]:
    """Decode positions [start, stop) of the job into the cache file: (how many, the positions skipped as bad)."""
    ds, column, rows, path, size = JOB["ds"], JOB["column"], JOB["rows"], JOB["path"], JOB["size"]
    out = np.load(path, mmap_mode="r+")
    bad = []
    for k, item in enumerate(ds.select(rows[start:stop].tolist())[column]):
        try:
            rgb = decode_rgb(item)
        except Exception as err:
            if not JOB["skip_bad"]:
                raise BadImage(int(rows[start + k]), _reason(err)) from None
            bad.append(start + k)
            continue
        if size is not None:
            rgb = np.asarray(centre_square(Image.fromarray(rgb), out.shape[2], size))
        elif rgb.shape[:2] != out.shape[2:]:
            raise NotOneSize(f"{rgb.shape[:2]} != {out.shape[2:]}")
        out[start + k] = rgb.transpose(2, 0, 1)
    # No msync per chunk: the pages sit in the page cache, where every process of the machine sees them, and a
    # synchronous write-back per chunk made the workers wait on the disk (1.2x with 2 workers, measured).
    return stop - start, bad
