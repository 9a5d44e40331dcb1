"""Stopping on SIGTERM / SIGINT, from a run's first write to its last: before the loop at once, in the loop after
the optimizer step every process agrees on (a resumable checkpoint is saved and the run exits with
errors.EXIT_PREEMPTED; the same command continues), after the loop once the final files are written."""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Optional

import torch
from accelerate import Accelerator

from ..distributed import reduce_sum
from ..errors import StoppedEarly

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """While entered, SIGTERM and SIGINT stop the run at a point where nothing is lost. Before the loop (decoding, the
    model, the teacher) a signal stops it at once (StoppedEarly: nothing trained yet; temporary files are removed on
    the way out). In the loop it is only noted, and `due()` says when to stop, the same on every process, so that a
    checkpoint can be saved. While the final files are written it is noted and the writing completes. A second
    signal is noted and ignored: the save it would interrupt is atomic anyway."""

    def __init__(self, accelerator: Optional[Accelerator] = None):
        self.accelerator = accelerator
        self.received: Optional[str] = None
        self.phase = "setup" if accelerator is None else "loop"
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

    def watch(self, accelerator: Accelerator) -> None:
        """The loop begins: from now on a signal stops the run after an optimizer step, with a checkpoint."""
        self.accelerator, self.phase = accelerator, "loop"

    def finishing(self) -> None:
        """The loop is over: a signal now waits for the final files."""
        self.phase = "finish"

    def _note(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            return
        self.received = name
        if self.phase == "setup":
            raise StoppedEarly(name)
        if self.accelerator is not None and self.accelerator.is_main_process:
            # os.write: print() could re-enter a stream the loop is writing
            what = ("stopping after this optimizer step to save a resumable checkpoint" if self.phase == "loop" else
                    "the training is done: finishing the run's final files first, then the run is complete")
            os.write(2, f"{name} received: {what}\n".encode())

    def due(self) -> bool:
        """Called after every optimizer step, on every process: True when the run should stop now."""
        assert self.accelerator is not None, "watch() first"
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
