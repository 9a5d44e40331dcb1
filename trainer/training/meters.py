"""Metric accumulators on the device: summed every step, reduced over processes once per log line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
from accelerate import Accelerator

from ..distributed import reduce_sum, sum_dtype


@dataclass
class Averages:
    """What a Meter read gives: averages over every process's samples so far."""

    loss: float
    top1: float
    count: int
    parts: dict[str, float]  # loss part name -> average


class Meter:
    """Sums of the loss, its named parts and the correct predictions, kept on the device; read (and reduced) once
    per log line, so that a training step never waits for the device."""

    def __init__(self, device: torch.device, parts: Sequence[str] = ()):
        self.parts = tuple(parts)
        self.sums = torch.zeros(2 + len(self.parts), device=device, dtype=sum_dtype(device))  # loss*n, hits, part*n
        self.count = 0  # this process's samples, known on the host without a sync

    def update(self, mean_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
               parts: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        """Add one batch: its mean loss (and mean loss parts), and its top-1 hits."""
        n, dtype = labels.shape[0], self.sums.dtype
        hits = (logits.argmax(-1) == labels).sum()
        values = [mean_loss.detach().to(dtype) * n, hits.to(dtype)]
        values += [(parts or {})[name].detach().to(dtype) * n for name in self.parts]
        self.sums += torch.stack(values)
        self.count += n

    def read(self, accelerator: Accelerator) -> Averages:
        """Loss, top-1 and loss parts over every process's samples so far."""
        packed = torch.cat([self.sums, self.sums.new_tensor([self.count])])
        *sums, count = reduce_sum(packed, accelerator).tolist()
        count = max(count, 1.0)
        return Averages(sums[0] / count, sums[1] / count, int(count),
                        {name: sums[2 + k] / count for k, name in enumerate(self.parts)})

    def state_dict(self, accelerator: Accelerator) -> list[list[float]]:
        """Every process's accumulators (gathered, so the main process can save them all), for an exact resume."""
        packed = torch.cat([self.sums, self.sums.new_tensor([self.count])])[None]
        return (accelerator.gather(packed) if accelerator.num_processes > 1 else packed).cpu().tolist()

    def load_state_dict(self, state: list[list[float]], rank: int) -> None:
        """Restore this process's accumulators from state_dict's list."""
        *sums, count = state[rank]
        self.sums.copy_(torch.tensor(sums, dtype=self.sums.dtype))
        self.count = int(count)
