"""The library's front door: build a TrainConfig, call train(). What train_cls.py, train_kd.py and the study use."""
from __future__ import annotations

from typing import Any, Callable, Optional

from .config import TrainConfig, validate
from .distill.tasks import distillation_task
from .errors import is_main_rank
from .run_files import OutputFolder
from .training.loop import EpochHook, fit
from .training.preemption import StopSignal
from .training.setup import Setup, already_complete, build_setup
from .training.tasks import Classification, Task

__all__ = ["TrainConfig", "train", "task_for"]


def task_for(cfg: TrainConfig, setup: Setup) -> Task:
    """Distillation (of the kind --kd-type names) when a teacher is given, classification otherwise."""
    if cfg.teacher:
        return distillation_task(cfg, setup)
    return Classification(setup.model, setup.accelerator, cfg.label_smoothing)


def train(cfg: TrainConfig, make_task: Optional[Callable[[TrainConfig, Setup], Task]] = None,
          on_epoch: Optional[EpochHook] = None) -> dict[str, Any]:
    """Check the arguments, build the run, build its task (task_for, or your own objective), train; return
    summary.json's content. on_epoch(epochs done, {"eval_top1", "eval_loss"}) after each epoch's evaluation (an
    exception it raises ends the run there: a sweep's pruning). Several runs may follow each other in one process;
    the caller ends the process group (end_processes)."""
    validate(cfg)
    # From the first write to the last: a signal stops the run where nothing is lost, and one run holds the folder.
    with StopSignal() as stop, OutputFolder(cfg.output_dir, main=is_main_rank()):
        done = already_complete(cfg)
        if done is not None:
            return done
        setup = build_setup(cfg)
        return fit(setup, (make_task or task_for)(cfg, setup), stop, on_epoch)
