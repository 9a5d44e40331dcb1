"""Passes of a model over a split: evaluate it (loss, top-1, agreement with references, predictions), or predict
any output of it (logits, features) for chosen rows, each through its own augmentation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..data.augment import Draws, View, augment, preprocess
from ..data.loading import SplitData
from ..distributed import gather_shards, reduce_sum, shard_batches, sum_dtype


@dataclass
class EvalResult:
    """Loss and top-1 over a whole split; agreement with each reference; the predictions when asked for."""

    loss: float
    top1: float
    num_samples: int
    images_per_s: float
    agreement: dict[str, float] = field(default_factory=dict)  # reference name -> fraction of equal predictions
    preds: Optional[torch.Tensor] = None  # [N] predicted class of every image, in split order


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, split: SplitData, view: View, accelerator: Accelerator, batch_size: int,
                   references: Optional[Mapping[str, torch.Tensor]] = None, keep_preds: bool = False) -> EvalResult:
    """Every sample counted once on any number of processes, through the model as prepared (DDP, FSDP)."""
    refs = dict(references or {})
    was_training = model.training
    model.eval()
    n, device = len(split), accelerator.device
    sums = torch.zeros(2 + len(refs), device=device, dtype=sum_dtype(device))  # loss, hits, agreements
    preds = [torch.empty(0, dtype=torch.long, device=device)]
    start = time.perf_counter()
    batches = shard_batches(n, batch_size, accelerator)
    for k, (i, j) in enumerate(batches):
        # A process whose share ran out still calls the model (on one row, discarded): FSDP gathers
        # parameters inside forward, and every process must take part in every gather.
        images = split.images.span(i, j) if j > i else split.images.span(0, min(1, n))
        if k + 1 < len(batches) and batches[k + 1][1] > batches[k + 1][0]:
            split.images.prefetch(torch.arange(*batches[k + 1], device=split.images.index_device))
        with accelerator.autocast():
            logits = model(preprocess(images, view, split.squares)).float()
        if j == i:
            continue
        pred, y = logits.argmax(-1), split.labels[i:j]
        counts = [F.cross_entropy(logits, y, reduction="sum"), (pred == y).sum()]
        counts += [(pred == ref[i:j]).sum() for ref in refs.values()]
        sums += torch.stack(counts).to(sums.dtype)
        preds.append(pred)
    total = reduce_sum(sums, accelerator).tolist()
    model.train(was_training)
    return EvalResult(loss=total[0] / max(n, 1), top1=total[1] / max(n, 1), num_samples=n,
                      images_per_s=n / max(time.perf_counter() - start, 1e-9),
                      agreement={name: total[2 + k] / max(n, 1) for k, name in enumerate(refs)},
                      preds=gather_shards(torch.cat(preds), n, accelerator) if keep_preds else None)


@torch.no_grad()
def predict(forward: Callable[[torch.Tensor], torch.Tensor], width: int, split: SplitData, view: View,
            accelerator: Accelerator, batch_size: int, rows: Optional[torch.Tensor] = None,
            draws: Optional[Draws] = None, progress: str = "") -> torch.Tensor:
    """[n, width] outputs of `forward` (logits, features) for every image or for `rows`, each seen through its own draws
    (aligned with rows; None: the eval view), each process doing its share, gathered in order; `progress`: the label
    of a bar on the main process. For a model that is not wrapped (a frozen teacher): processes need not call it
    equally often."""
    images = split.images
    n = len(images) if rows is None else rows.numel()
    rows = rows.to(images.index_device) if rows is not None else None
    chunks = [torch.empty(0, width, device=images.device)]
    bar = tqdm(total=n, desc=progress, unit="img", leave=False, dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    for i, j in shard_batches(n, batch_size, accelerator):
        bar.update((j - i) * accelerator.num_processes)
        if j == i:
            continue
        # Rows are gathered a chunk at a time: a copy of the whole subset would double a 224-px dataset on the GPU.
        x = images.span(i, j) if rows is None else images.rows(rows[i:j])
        d = draws.take(slice(i, j), x.device) if draws is not None else Draws()
        with torch.inference_mode(), accelerator.autocast():
            chunks.append(forward(augment(x, view, d, split.squares)).float())
    bar.close()
    # cat outside inference mode: the cache is read by steps whose loss autograd must be able to save.
    return gather_shards(torch.cat(chunks), n, accelerator)
