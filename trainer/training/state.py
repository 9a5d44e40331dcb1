"""Where the training loop stands, and its clock: what a resumable checkpoint saves besides accelerate's state."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from accelerate import Accelerator

from ..errors import Diverged, UsageError
from .meters import Meter


class Stopwatch:
    """Wall time that can be paused (for evaluation) and resumed from a saved value."""

    def __init__(self, elapsed: float = 0.0):
        self.elapsed = elapsed
        self._since: Optional[float] = None

    def start(self) -> None:
        """Start (or keep) running."""
        if self._since is None:
            self._since = time.perf_counter()

    def stop(self) -> None:
        """Stop and bank the time."""
        if self._since is not None:
            self.elapsed += time.perf_counter() - self._since
            self._since = None

    def read(self) -> float:
        """Seconds so far."""
        return self.elapsed + (time.perf_counter() - self._since if self._since is not None else 0.0)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Exclude the block from the measured time."""
        running = self._since is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


@dataclass
class LoopState:
    """The loop's position and running figures. epoch/micro name the next micro-batch to train, so that a
    state saved after any optimizer step resumes exactly there."""

    meter: Meter  # this epoch's train loss, top-1 and loss parts so far
    clock: Stopwatch = field(default_factory=Stopwatch)  # training time, evaluation and checkpoints excluded
    epoch: int = 0
    micro: int = 0
    step: int = 0  # optimizer steps taken
    best_eval_top1: Optional[float] = None
    epoch_start_s: float = 0.0  # the clock when this epoch began: its images/s
    resume_key: Optional[str] = None  # what the task needs to be the same on resume (Task.resume_key)
    nonfinite_at: torch.Tensor = field(init=False)  # first step with a non-finite loss, on the device (-1: none)

    def __post_init__(self) -> None:
        self.nonfinite_at = torch.full((), -1, dtype=torch.long, device=self.meter.sums.device)

    def new_epoch(self) -> None:
        """Fresh train figures for an epoch that starts at its first micro-batch."""
        self.meter = Meter(self.meter.sums.device, self.meter.parts)
        self.epoch_start_s = self.clock.read()

    def record(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
               parts: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch to the figures; note a non-finite loss without waiting for the device."""
        self.meter.update(loss, logits, labels, parts)
        bad = ~torch.isfinite(loss.detach()) & (self.nonfinite_at < 0)
        self.nonfinite_at = torch.where(bad, self.step + 1, self.nonfinite_at)

    def check_finite(self, output_dir: str) -> None:
        """Stop the run, naming the step, once a loss has been non-finite."""
        at = int(self.nonfinite_at)
        if at >= 0:
            raise Diverged(f"the loss became non-finite at step {at}: lower --lr, raise --warmup-epochs or use "
                             f"--mixed-precision bf16; the last good checkpoint (if any) is kept under "
                             f"{output_dir}/checkpoints")

    def state_dict(self, accelerator: Accelerator) -> dict[str, Any]:
        """What a checkpoint saves (every process joins: the meter is gathered)."""
        return {"epoch": self.epoch, "micro": self.micro, "step": self.step, "best_eval_top1": self.best_eval_top1,
                "train_time_s": self.clock.read(), "epoch_start_s": self.epoch_start_s,
                "meter": self.meter.state_dict(accelerator), "task_key": self.resume_key}

    def load_state_dict(self, state: dict[str, Any], rank: int) -> None:
        """Continue from a saved state_dict."""
        try:
            self.epoch, self.micro, self.step = state["epoch"], state["micro"], state["step"]
            self.best_eval_top1, self.epoch_start_s = state["best_eval_top1"], state["epoch_start_s"]
            self.clock = Stopwatch(state["train_time_s"])
            self.meter.load_state_dict(state["meter"], rank)
            self.resume_key = state["task_key"]
        except (KeyError, IndexError, ValueError, RuntimeError):
            raise UsageError("--resume-from: the checkpoint was written by another version of the trainer or for "
                             "another task (its loop state does not fit): start a new run") from None
