"""This process's micro-batches of one epoch, in plan order: which rows, which augmentation, and where the optimizer
steps (gradient accumulation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from accelerate import Accelerator

from ..config import TrainConfig
from ..data.augment import Draws, View, augment
from ..data.loading import SplitData
from ..data.mixing import MixDraws, MixSettings, draw_mix, mix, mix_generator, mixed_targets
from ..data.plan import augmentation, epoch_slices, padded_positions, plan_epoch


@dataclass
class Batch:
    """One micro-batch as a task sees it."""

    images: torch.Tensor  # uint8 [B,3,H,W] on the device, before augmentation
    labels: torch.Tensor
    index: torch.Tensor  # rows of the train split, for per-image caches
    draws: Draws  # its augmentation, from the epoch plan
    squares: bool  # images are photos stored as their centre squares (see augment.crop_square)
    inputs: torch.Tensor  # the augmented, normalised view of the run's model (mixed, with --mixup/--cutmix)
    epoch: int = 0  # whose plan drew the augmentation (a per-view cache of random crops is kept per epoch)
    mix: Optional[MixDraws] = None  # how the batch was mixed with itself reversed
    targets: Optional[torch.Tensor] = None  # [B, classes] soft targets of a mixed batch (labels: the unmixed ones)


@dataclass
class MicroStep:
    """A micro-batch and its place in the epoch."""

    index: int  # position in the epoch
    count: int  # micro-batches in the epoch
    group: int  # micro-batches in its gradient-accumulation group (the loss is divided by it)
    sync: bool  # the last of its group: the optimizer steps after it
    batch: Batch


class EpochBatches:
    """This process's micro-batches of one epoch, in plan order."""

    def __init__(self, split: SplitData, view: View, cfg: TrainConfig, accelerator: Accelerator, epoch: int,
                 num_classes: Optional[int] = None):
        n, world, device = len(split), accelerator.num_processes, accelerator.device
        plan = plan_epoch(n, cfg.seed, epoch, augmentation(cfg, split, view.size))
        padded = padded_positions(n, world)
        self.order = plan.order[padded].to(device)
        # The store's own copy of the order (a CPU one for stores off the device): no host-device copy per step.
        self.store_order = self.order.to(split.images.index_device)
        self.draws = plan.draws.take(padded, device)
        self.slices = epoch_slices(n, cfg.batch_size, world, accelerator.process_index)
        self.split, self.view, self.cfg, self.epoch = split, view, cfg, epoch
        self.mixing, self.num_classes, self.rank = MixSettings.of(cfg, epoch), num_classes, accelerator.process_index

    def __len__(self) -> int:
        return len(self.slices)

    def starting_at(self, first: int) -> Iterator[MicroStep]:
        """Micro-batches from position `first` on (a resumed run starts mid-epoch)."""
        accum, count, store = self.cfg.grad_accum, len(self.slices), self.split.images
        for micro in range(first, count):
            lo, hi = self.slices[micro]
            idx = self.order[lo:hi]
            draws = self.draws.take(slice(lo, hi))
            images, labels = store.rows(self.store_order[lo:hi]), self.split.labels[idx]
            if micro + 1 < count:  # the plan knows the next rows: a store off the device fetches them meanwhile
                store.prefetch(self.store_order[slice(*self.slices[micro + 1])])
            inputs = augment(images, self.view, draws, self.split.squares)
            mixed, targets = None, None
            if self.mixing is not None and self.num_classes:
                mixed = draw_mix(mix_generator(self.cfg.seed, self.epoch, micro, self.rank), len(idx), self.view.size,
                                 self.mixing)
                inputs, targets = mix(inputs, mixed), mixed_targets(labels, self.num_classes, mixed,
                                                                    self.cfg.label_smoothing)
            group_start = micro - micro % accum
            group = min(accum, count - group_start)
            yield MicroStep(micro, count, group, micro == group_start + group - 1,
                            Batch(images, labels, idx, draws, self.split.squares, inputs, self.epoch, mixed, targets))
