"""Which store serves a run's data (--data-on auto|device|host|disk), and the one log line that says why."""
from __future__ import annotations

import os
from typing import Sequence

import torch

from .loading import SplitData
from ..errors import UsageError, human_size
from .stores import DiskStore, serve

DEVICE_SHARE = 0.4  # of the device's free memory: the rest is for the model, its optimizer state and activations
HOST_SHARE = 0.5  # of the memory the machine has available, shared by its processes (each holds a copy)


def free_device_bytes(device: torch.device) -> int:
    """Free memory of the device ($VIT_TRAINER_DEVICE_FREE_BYTES pretends another size, for tests)."""
    if "VIT_TRAINER_DEVICE_FREE_BYTES" in os.environ:
        return int(os.environ["VIT_TRAINER_DEVICE_FREE_BYTES"])
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return free_host_bytes()  # a CPU's "device memory" is the host's


def free_host_bytes() -> int:
    """Memory the machine has available ($VIT_TRAINER_HOST_FREE_BYTES pretends another size, for tests)."""
    if "VIT_TRAINER_HOST_FREE_BYTES" in os.environ:
        return int(os.environ["VIT_TRAINER_HOST_FREE_BYTES"])
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_store(nbytes: int, data_on: str, device: torch.device, local_processes: int) -> tuple[str, str]:
    """(store kind, why) for data of nbytes: device when it fits in a share of the device's free memory, else host
    when every local process's copy fits in a share of the available RAM, else disk."""
    device_free, host_free = free_device_bytes(device), free_host_bytes()
    fits_device = nbytes <= DEVICE_SHARE * device_free
    fits_host = nbytes * local_processes <= HOST_SHARE * host_free
    device_words = f"{DEVICE_SHARE:.0%} of the {device.type} device's {human_size(device_free)} free"
    host_words = f"{HOST_SHARE:.0%} of {human_size(host_free)} available RAM for {local_processes} process(es)"
    if data_on == "device" and not fits_device:
        raise UsageError(f"--data-on device: the decoded images ({human_size(nbytes)}) do not fit in {device_words}: use "
                         f"--data-on host (needs {human_size(nbytes * local_processes)} of RAM) or disk, or --data-on auto")
    if data_on != "auto":
        return data_on, f"as asked (--data-on {data_on})"
    if fits_device:
        return "device", f"it fits in {device_words}"
    if fits_host and device.type != "cpu":
        return "host", f"it does not fit in {device_words}; it fits in {host_words}"
    return "disk", f"it fits neither in {device_words} nor in {host_words}"


def place_splits(splits: Sequence[SplitData], data_on: str, device: torch.device) -> str:
    """Serve every split from the chosen store; return the log line that names the store and why (sizes)."""
    disks: list[DiskStore] = []
    for split in splits:
        if not isinstance(split.images, DiskStore):
            raise ValueError("place_splits takes splits as load_data gives them (on the disk store), once")
        disks.append(split.images)
    nbytes = sum(d.nbytes for d in disks)
    kind, why = choose_store(nbytes, data_on, device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    for split, disk in zip(splits, disks, strict=True):
        split.place(serve(disk, kind, device))
    where = f"memory-mapped from {os.path.dirname(disks[0].path)}" if kind == "disk" else f"in {kind} memory"
    parts = " + ".join(human_size(d.nbytes) for d in disks)
    return f"data: {kind} store, {human_size(nbytes)} decoded ({parts}) {where}: {why}"
