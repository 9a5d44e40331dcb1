"""Tasks: what the loop trains. A task owns the forward pass and the loss of one batch, names the loss parts worth
logging, and adds its own eval references, resume key and summary keys (timm's `timm/task/`). Each task is complete
when constructed; distillation's tasks are in trainer/distill/."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..data.mixing import soft_cross_entropy
from ..evaluation.inference import EvalResult
from .batches import Batch
from .run_log import RunLog


@dataclass
class StepOutput:
    """One micro-batch's result: the loss to minimise, the logits to score, and named parts to log."""

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # logged as loss_<name>


class Task(Protocol):
    """The loop's view of a task."""

    loss_parts: tuple[str, ...]  # the names StepOutput.parts carries, in logging order
    model: torch.nn.Module  # what the loop trains: the run's model, or the model with what the objective trains beside it

    def announce(self, log: RunLog) -> None:
        """Log what the task brings, once, before the first step of a fresh run."""

    def forward(self, model: torch.nn.Module, batch: Batch) -> StepOutput:
        """Forward and loss of one micro-batch, through `model`: self.model as the loop prepared it (DDP, compiled)."""

    def saved_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The saved model's weights out of the trained module's (which may carry more: a projection)."""

    def eval_references(self) -> dict[str, torch.Tensor]:
        """Named predictions per eval image that every evaluation reports its agreement with."""

    def resume_key(self) -> Optional[str]:
        """What must be the same for a checkpoint to be continued (None: nothing beyond the arguments)."""

    def summary(self, final: EvalResult) -> dict[str, Any]:
        """Extra keys for summary.json."""

    def config_entry(self) -> dict[str, Any]:
        """Extra keys for config.json."""


class Classification:
    """Cross-entropy on the labels (with --label-smoothing): what train_cls.py trains."""

    loss_parts: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, accelerator: Accelerator, label_smoothing: float = 0.0):
        self.model, self.accelerator, self.label_smoothing = model, accelerator, label_smoothing

    def announce(self, log: RunLog) -> None:
        """Nothing to announce."""

    def logits(self, model: torch.nn.Module, batch: Batch) -> Any:
        """The model's output for the batch's inputs (logits; a tuple for students that carry more), under autocast."""
        with self.accelerator.autocast():
            return model(batch.inputs)

    def label_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy against the labels, in float32; against a mixed batch's soft targets (smoothing in them)."""
        if batch.targets is not None:
            return soft_cross_entropy(logits, batch.targets)
        return F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing)

    def forward(self, model: torch.nn.Module, batch: Batch) -> StepOutput:
        """Logits and their cross-entropy."""
        logits = self.logits(model, batch)
        return StepOutput(self.label_loss(logits, batch), logits)

    def saved_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """All of them."""
        return state

    def eval_references(self) -> dict[str, torch.Tensor]:
        """None."""
        return {}

    def resume_key(self) -> Optional[str]:
        """Nothing beyond the arguments."""
        return None

    def summary(self, final: EvalResult) -> dict[str, Any]:
        """Nothing to add."""
        return {}

    def config_entry(self) -> dict[str, Any]:
        """Nothing to add."""
        return {}
