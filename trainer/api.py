"""The library's front door: build a TrainConfig, call train(). What train_cls.py, train_kd.py and the study use."""
from __future__ import annotations

from typing import Any, Optional

from .config import TrainConfig, validate
from .distill import Distillation
from .engine import fit
from .run import build_run
from .tasks import Classification, Task

__all__ = ["TrainConfig", "train", "task_for"]


def task_for(cfg: TrainConfig) -> Task:
    """Distillation when a teacher is given, classification otherwise."""
    return Distillation(cfg) if cfg.teacher else Classification()


def train(cfg: TrainConfig, task: Optional[Task] = None) -> dict[str, Any]:
    """Check the arguments, build the run, set up the task, train; return summary.json's content.
    Several runs may follow each other in one process; the caller ends the process group (end_processes)."""
    validate(cfg)
    task = task or task_for(cfg)
    run = build_run(cfg)
    task.setup(run)
    return fit(run, task)
