"""The teacher's outputs (logits or pooled features) for the augmented variants of the training images a run visits,
computed once: in memory for one run (--teacher-cache), or in a folder shared by every run with the same teacher,
images and variants
(--teacher-cache-dir), so that a sweep over alpha, T, students or seeds pays the teacher once."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import TrainConfig
from ..data.augment import Draws, View
from ..data.loading import SplitData
from ..data.plan import Augmentation, plan_epoch
from ..errors import UsageError, warn
from ..evaluation.inference import predict
from ..run_files import atomic_write
from ..training.batches import Batch

Forward = Callable[[torch.Tensor], torch.Tensor]


def visited_variants(n: int, cfg: TrainConfig) -> torch.Tensor:
    """[n, variants] bool: which (image, flip) pairs the run's epoch plans visit, the only ones a one-run cache needs."""
    used = torch.zeros(n, 2 if cfg.flip else 1, dtype=torch.bool)
    for epoch in range(cfg.epochs):
        plan = plan_epoch(n, cfg.seed, epoch, Augmentation(flip=cfg.flip))
        flip = plan.draws.flip
        used[plan.order, flip.long() if flip is not None else 0] = True
    return used


@dataclass(frozen=True)
class Slots:
    """How the augmented variants of a training image are numbered. Flips alone: slot 0 plain, 1 mirrored, the same for
    any seed. Views drawn afresh each epoch (random crops, --aa ops, erased boxes): one slot per epoch, holding the
    variant the seed's plan drew for the image that epoch."""

    by_epoch: bool
    count: int
    aug: Augmentation

    @staticmethod
    def of(cfg: TrainConfig, aug: Augmentation) -> Slots:
        """The run's slots."""
        if aug.by_epoch:
            return Slots(True, cfg.epochs, aug)
        return Slots(False, 2 if cfg.flip else 1, aug)

    def index(self, batch: Batch) -> torch.Tensor:
        """[B] slot of each image of a training batch."""
        if self.by_epoch:
            return torch.full_like(batch.index, batch.epoch)
        flip = batch.draws.flip
        return flip.long() if flip is not None else torch.zeros_like(batch.index)

    def needed(self, n: int, cfg: TrainConfig, shared: bool) -> torch.Tensor:
        """[n, count] bool: the variants to cache. One run needs the flips it visits; a shared cache keeps both of
        every image, which serves any seed and any number of epochs."""
        if self.by_epoch or shared:
            return torch.ones(n, self.count, dtype=torch.bool)
        return visited_variants(n, cfg)

    def draws(self, slot: int, rows: torch.Tensor, n: int, seed: int) -> Draws:
        """The augmentation of these rows in this slot, as the training batches draw it."""
        if not self.by_epoch:
            return Draws(flip=torch.full((rows.numel(),), bool(slot)))
        plan = plan_epoch(n, seed, slot, self.aug)
        position = torch.empty_like(plan.order)
        position[plan.order] = torch.arange(len(plan.order))  # where each image sits in the epoch's order
        return plan.draws.take(position[rows])

    def describe(self, cfg: TrainConfig) -> dict[str, Any]:
        """What the variants in the slots depend on (part of a shared cache's folder name)."""
        if not self.by_epoch:
            return {"slots": "flip"}
        out = {"slots": "epoch", "seed": cfg.seed, "flip": cfg.flip, "random_crop": cfg.random_crop,
               "random_resized_crop": [cfg.scale, cfg.ratio] if cfg.random_resized_crop else None}
        if self.aug.policy or self.aug.erasing:  # only where set: the folders of runs without them keep their names
            out.update(aa=cfg.aa, erasing=repr(self.aug.erasing))
        return out


@dataclass
class TeacherCache:
    """[N, slots, width] teacher outputs of the training images (NaN where the run never looks)."""

    values: torch.Tensor
    slots: Slots
    forwards: int  # teacher forwards this run paid for
    folder: Optional[str] = None  # the shared cache's folder, if any

    @property
    def reused(self) -> bool:
        """Served wholly from a shared cache that earlier runs filled."""
        return self.folder is not None and self.forwards == 0

    def lookup(self, batch: Batch) -> torch.Tensor:
        """The teacher's outputs for a training batch's variants."""
        return self.values[batch.index, self.slots.index(batch)]


def _slot_file(folder: str, slot: int) -> str:
    return os.path.join(folder, f"slot{slot}.safetensors")


def _read_slot(path: str, folder_name: str, width: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(source rows, values) stored for a slot; None when absent, damaged or another cache's (rebuilt, never trusted)."""
    if not os.path.exists(path):
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            rows, values = f.get_tensor("rows"), f.get_tensor("values")
    except Exception:
        meta, rows, values = {}, torch.empty(0), torch.empty(0)
    if meta.get("key") != folder_name:
        warn(f"teacher cache {path} is damaged or not this teacher's: computing it again")
        return None
    if values.ndim == 2 and values.shape[1] != width:
        raise UsageError(f"teacher cache {path} holds outputs {values.shape[1]} wide, the teacher gives {width}: it was "
                         "not written for this teacher; delete the file or pass another --teacher-cache-dir")
    sane = (rows.ndim == 1 and values.ndim == 2 and len(rows) == len(values) and rows.dtype == torch.int64
            and bool((rows[1:] > rows[:-1]).all()) and bool(torch.isfinite(values).all()))
    if not sane:
        warn(f"teacher cache {path} is damaged: computing it again")
        return None
    return rows, values


def _write_slot(path: str, folder_name: str, rows: torch.Tensor, values: torch.Tensor) -> None:
    order = rows.argsort()
    tensors = {"rows": rows[order].contiguous(), "values": values[order].cpu().contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"key": folder_name}),
                 "pass a writable --teacher-cache-dir with room to spare")


def cache_folder_name(parts: list[Any]) -> str:
    """The shared cache's folder name: a digest of what the outputs depend on."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def build_cache(forward: Forward, width: int, split: SplitData, view: View, aug: Augmentation, cfg: TrainConfig,
                accelerator: Accelerator, batch_size: int, depends_on: list[Any],
                shared_dir: Optional[str] = None) -> TeacherCache:
    """The teacher's outputs for the variants the run needs (the student's augmentation `aug` seen through the
    teacher's `view`): read from the shared folder where stored, computed (once each) where not, and the shared folder
    completed."""
    slots = Slots.of(cfg, aug)
    n = len(split)
    need = slots.needed(n, cfg, shared=shared_dir is not None)
    # NaN where the run never looks, so that a wrong lookup is loud.
    values = torch.full((n, slots.count, width), float("nan"), device=split.images.device)
    name = cache_folder_name([*depends_on, slots.describe(cfg)])
    folder = os.path.join(shared_dir, name) if shared_dir else None
    source_rows = torch.from_numpy(np.asarray(split.indices, dtype=np.int64))
    stored: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = [
        _read_slot(_slot_file(folder, s), name, width) if folder else None for s in range(slots.count)]
    forwards = 0
    for s in range(slots.count):
        have = torch.zeros(n, dtype=torch.bool)
        found = stored[s]
        if found is not None and len(found[0]):
            rows, vals = found
            pos = torch.searchsorted(rows, source_rows).clamp(max=len(rows) - 1)
            have = (rows[pos] == source_rows) & need[:, s]
            values[have.to(values.device), s] = vals[pos[have]].to(values.device)
        missing = (need[:, s] & ~have).nonzero().squeeze(1)
        if not missing.numel():
            continue
        out = predict(forward, width, split, view, accelerator, batch_size, rows=missing,
                      draws=slots.draws(s, missing, n, cfg.seed),
                      progress=f"teacher outputs {s + 1}/{slots.count}" if cfg.progress else "")
        values[missing.to(values.device), s] = out.to(values.device)
        forwards += missing.numel()
        if folder and accelerator.is_main_process:  # the missing rows are not in the file: they are added to it
            old_rows, old_vals = stored[s] or (torch.empty(0, dtype=torch.int64), torch.empty(0, width))
            _write_slot(_slot_file(folder, s), name, torch.cat([old_rows, source_rows[missing]]),
                        torch.cat([old_vals, out.cpu()]))
    accelerator.wait_for_everyone()
    return TeacherCache(values, slots, forwards, folder)
