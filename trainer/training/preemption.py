"""Stopping on SIGTERM / SIGINT: the loop finishes its optimizer step, every process agrees on the step to stop
after, a resumable checkpoint is saved and the run exits with errors.EXIT_PREEMPTED; the same command continues."""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Optional

import torch
from accelerate import Accelerator

from ..distributed import reduce_sum

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """While entered, SIGTERM and SIGINT only note that the run should stop; `due()` says when, the same on every
    process. A second signal is noted and ignored: the save it would interrupt is atomic anyway."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.received: Optional[str] = None
        self._pending: Optional[torch.Tensor] = None  # the flag reduced at the previous step, not read yet
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _note(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            if self.accelerator.is_main_process:  # os.write: print() could re-enter a stream the loop is writing
                os.write(2, f"{name} received: stopping after this optimizer step to save a resumable "
                            "checkpoint\n".encode())

    def due(self) -> bool:
        """Called after every optimizer step, on every process: True when the run should stop now."""
        if self.accelerator.num_processes == 1:
            return self.received is not None
        # Each process may see the signal at another step (or not at all): the flags are summed, and every process
        # reads the sum one step after launching it, so that the reduction overlaps a step instead of stalling it.
        agreed = self._pending is not None and bool(self._pending.item())
        self._pending = reduce_sum(torch.full((), int(self.received is not None), device=self.accelerator.device),
                                   self.accelerator)
        if agreed and self.received is None:
            self.received = "a signal to another process"
        return agreed
