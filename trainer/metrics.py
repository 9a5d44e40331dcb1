"""Metric accumulators on the device, and the run's logs: metrics.jsonl, trackers, readable lines."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .distributed import reduce_sum


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact-enough sums, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


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


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


class RunLog:
    """Appends events to metrics.jsonl and the trackers, prints one readable line per epoch (main process)."""

    def __init__(self, accelerator: Accelerator, output_dir: str, filename: str = "metrics.jsonl", append: bool = False):
        self.accelerator = accelerator
        self.path = os.path.join(output_dir, filename)
        self.main = accelerator.is_main_process
        if self.main and not append:
            open(self.path, "w").close()

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: a resumed run writes them again, once."""
        if self.main and os.path.exists(self.path):
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)

    def event(self, event: str, epoch: float, step: int, **values: Optional[float]) -> dict[str, Any]:
        """Record one event (train, eval, teacher_eval, ...)."""
        record = {"event": event, "epoch": round(epoch, 4), "step": step, **{k: _finite(v) for k, v in values.items()}}
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        scalars = {f"{event}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        if self.accelerator.trackers:
            self.accelerator.log(scalars, step=step)
        return record

    def print(self, line: str) -> None:
        """A readable line on the main process, without breaking the progress bar."""
        if self.main:
            tqdm.write(line)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
