"""Tasks: what the engine trains. A task owns the forward pass and the loss of one batch, names the loss
parts worth logging, and adds its own eval references, resume key and summary keys (timm's `timm/task/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from .batches import Batch
from .inference import EvalResult
from .metrics import RunLog
from .run import Run


@dataclass
class StepOutput:
    """One micro-batch's result: the loss to minimise, the logits to score, and named parts to log."""

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # logged as loss_<name>


class Task(Protocol):
    """The engine's view of a task."""

    loss_parts: tuple[str, ...]  # the names StepOutput.parts carries, in logging order

    def setup(self, run: Run) -> None:
        """Load and check what the task needs before the first step (it may wrap run.model); UsageError on bad input."""

    def on_start(self, log: RunLog) -> None:
        """Log what the task brings, once, before the first step of a fresh run."""

    def forward(self, model: torch.nn.Module, batch: Batch) -> StepOutput:
        """Forward and loss of one micro-batch."""

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

    def __init__(self) -> None:
        self.accelerator: Optional[Accelerator] = None
        self.label_smoothing = 0.0

    def setup(self, run: Run) -> None:
        """Keep what forward needs."""
        self.accelerator, self.label_smoothing = run.accelerator, run.cfg.label_smoothing

    def on_start(self, log: RunLog) -> None:
        """Nothing to announce."""

    def logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The model's output for the batch's inputs (logits; a tuple for students that carry more), under autocast."""
        assert self.accelerator is not None, "setup() first"
        with self.accelerator.autocast():
            return model(batch.inputs)

    def label_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy against the labels, in float32."""
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
