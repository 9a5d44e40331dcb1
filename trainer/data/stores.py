"""Where a split's decoded pixels live, behind one seam. The loop, evaluation, the teacher cache and the benchmarks
ask a Store for rows and get a uint8 batch [B, 3, H, W] on the device; none of them knows where the pixels are.

- device: the whole split in device memory; a batch is one index (airbench's design, the fastest while it fits);
- host:   the split in host memory; the next batch is gathered into pinned memory and copied to the device on a
          side stream while the current step runs (the epoch plan already knows which rows come next);
- disk:   the memory-mapped decode cache itself: every process of a machine shares one copy through the page
          cache; each batch's rows are read in file order.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch

CPU = torch.device("cpu")


class Store:
    """uint8 images [N, 3, H, W] that come out on `device`, a batch at a time."""

    kind = "?"

    def __init__(self, shape: tuple[int, ...], device: torch.device, index_device: torch.device):
        self.shape, self.device = tuple(shape), device
        self.index_device = index_device  # where rows() wants its index (no host-device copy per step)

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def nbytes(self) -> int:
        """Size of the pixels."""
        return int(np.prod(self.shape))

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The images at `index` (on index_device), in that order, on the device."""
        raise NotImplementedError

    def span(self, i: int, j: int) -> torch.Tensor:
        """Images i..j-1 on the device."""
        return self.rows(torch.arange(i, j, device=self.index_device))

    def prefetch(self, index: torch.Tensor) -> None:
        """A hint: rows(index) comes next. Stores that can start early do."""

    def cpu(self) -> torch.Tensor:
        """The whole split as one CPU tensor (tests, benchmarks and small tools)."""
        return self.span(0, len(self)).cpu()


class DeviceStore(Store):
    """The whole split in device memory."""

    kind = "device"

    def __init__(self, images: torch.Tensor):
        super().__init__(images.shape, images.device, images.device)
        self.images = images

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """One gather on the device."""
        return self.images[index]

    def span(self, i: int, j: int) -> torch.Tensor:
        """A view, no copy."""
        return self.images[i:j]


class _Staged(Store):
    """A store off the device: rows are read on a helper thread (prefetch) into pinned memory and copied to the
    device on a side stream, so that the copy overlaps the step that runs meanwhile."""

    def __init__(self, shape: tuple[int, ...], device: torch.device):
        super().__init__(shape, device, CPU)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.kind}-store")
        self._next: Optional[tuple[torch.Tensor, Future]] = None
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _read(self, index: torch.Tensor, out: torch.Tensor) -> None:
        raise NotImplementedError

    def _stage(self, index: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.cuda.Event]]:
        host = torch.empty((index.numel(), *self.shape[1:]), dtype=torch.uint8, pin_memory=self._stream is not None)
        self._read(index, host)
        if self._stream is None:
            return host.to(self.device), None
        with torch.cuda.stream(self._stream):
            out = host.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        return out, done

    def prefetch(self, index: torch.Tensor) -> None:
        """Start reading and copying the next batch now."""
        self._next = (index, self._pool.submit(self._stage, index))

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The prefetched batch when it is this one, else read now."""
        ahead, self._next = self._next, None
        hit = ahead is not None and (ahead[0] is index or torch.equal(ahead[0], index))
        out, done = ahead[1].result() if hit and ahead is not None else self._stage(index)
        if done is not None:  # the compute stream waits for the copy; the allocator learns who uses the memory
            torch.cuda.current_stream(self.device).wait_event(done)
            out.record_stream(torch.cuda.current_stream(self.device))
        return out


class HostStore(_Staged):
    """The whole split in host memory (each process its own copy)."""

    kind = "host"

    def __init__(self, images: torch.Tensor, device: torch.device):
        super().__init__(images.shape, device)
        self.images = images.cpu()

    def _read(self, index: torch.Tensor, out: torch.Tensor) -> None:
        torch.index_select(self.images, 0, index, out=out)


class DiskStore(_Staged):
    """The memory-mapped decode cache: pages come from the file, shared by every process of the machine."""

    kind = "disk"

    def __init__(self, path: str, device: torch.device):
        self.path = path
        self.array = np.load(path, mmap_mode="r")
        super().__init__(self.array.shape, device)

    def _read(self, index: torch.Tensor, out: torch.Tensor) -> None:
        # In file order, so that the pages a batch needs are read front to back; then put back in batch order.
        ordered, position = torch.sort(index)
        out[position] = torch.from_numpy(self.array[ordered.numpy()])


def serve(disk: DiskStore, kind: str, device: torch.device) -> Store:
    """The same images from the store of that kind: read into device or host memory, or mapped from the file."""
    if kind == "disk":
        return DiskStore(disk.path, device)
    if kind == "host" or device.type == "cpu":
        images = torch.from_numpy(np.load(disk.path))  # one read straight into the tensor's memory
        return HostStore(images, device) if kind == "host" else DeviceStore(images)
    images = torch.empty(disk.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(disk), 1024):  # a chunk at a time: no full copy in host memory on the way
        images[start:start + 1024] = torch.from_numpy(np.array(disk.array[start:start + 1024]))
    return DeviceStore(images)
