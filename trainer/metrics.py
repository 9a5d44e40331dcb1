"""Metric accumulators on the device, and the run's logs: metrics.jsonl, trackers, readable lines."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import torch


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact-enough sums, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


class Meter:
    """Sums of loss and correct predictions kept on the device; read (and reduced) once per log line."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(2, device=device, dtype=sum_dtype(device))  # loss * n, correct
        self.count = 0  # this process's samples, known on the host without a sync

    def update(self, mean_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: its mean loss, and its top-1 hits."""
        n = labels.shape[0]
        hits = (logits.argmax(-1) == labels).sum()
        self.sums += torch.stack([mean_loss.detach().to(self.sums.dtype) * n, hits.to(self.sums.dtype)])
        self.count += n

    def read(self, accelerator) -> dict[str, float]:
        """Loss and top-1 over every process's samples so far."""
        packed = torch.cat([self.sums, self.sums.new_tensor([self.count])])
        total = accelerator.reduce(packed, reduction="sum") if accelerator.num_processes > 1 else packed
        loss_sum, hits, count = total.tolist()
        count = max(count, 1.0)
        return {"loss": loss_sum / count, "top1": hits / count, "count": int(count)}

    def state_dict(self, accelerator) -> list[list[float]]:
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

    def __init__(self, accelerator, output_dir: str, filename: str = "metrics.jsonl", append: bool = False):
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

    def event(self, event: str, epoch: float, step: int, **values: float) -> dict:
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
            from tqdm.auto import tqdm

            tqdm.write(line)


def read_jsonl(path: str) -> list[dict]:
    """Every record of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
