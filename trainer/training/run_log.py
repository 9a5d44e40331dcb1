"""The run's log: metrics.jsonl, the trackers, and readable lines that do not break the progress bar."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

from accelerate import Accelerator
from tqdm.auto import tqdm

from ..run_files import METRICS_FILE, read_jsonl, write_failed, write_text


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


class RunLog:
    """Appends events to metrics.jsonl and the trackers, prints one readable line per epoch (main process)."""

    def __init__(self, accelerator: Accelerator, output_dir: str, filename: str = METRICS_FILE, append: bool = False):
        self.accelerator = accelerator
        self.path = os.path.join(output_dir, filename)
        self.main = accelerator.is_main_process
        if self.main and not append:
            self._append("", mode="w")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: a resumed run writes them again, once."""
        if self.main and os.path.exists(self.path):
            kept = "".join(json.dumps(r) + "\n" for r in read_jsonl(self.path) if r.get("step", 0) <= step)
            write_text(self.path, kept)

    def event(self, event: str, epoch: float, step: int, **values: Optional[float]) -> dict[str, Any]:
        """Record one event (train, eval, teacher_eval, ...)."""
        record = {"event": event, "epoch": round(epoch, 4), "step": step, **{k: _finite(v) for k, v in values.items()}}
        if self.main:
            self._append(json.dumps(record) + "\n")
        scalars = {f"{event}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        if self.accelerator.trackers:
            self.accelerator.log(scalars, step=step)
        return record

    def _append(self, text: str, mode: str = "a") -> None:
        try:
            with open(self.path, mode) as f:
                f.write(text)
        except OSError as err:
            raise write_failed(self.path, err) from None

    def print(self, line: str) -> None:
        """A readable line on the main process, without breaking the progress bar."""
        if self.main:
            tqdm.write(line)
