"""What a student trains besides itself for feature and token distillation: a projection of its pooled features onto
the teacher's width (trained with it, left out of the saved model), or timm's distillation token and head."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UsageError

STUDENT = "student."  # the saved model's weights inside FeatureStudent's state dict


def feature_width(model: nn.Module) -> int:
    """Width of a timm classifier's pooled pre-logits features (what forward_head(..., pre_logits=True) returns)."""
    m: Any = model
    return int(getattr(m, "head_hidden_size", None) or m.num_features)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A timm classifier's pooled pre-logits features."""
    m: Any = model
    return m.forward_head(m.forward_features(x), pre_logits=True)


class FeatureStudent(nn.Module):
    """A student and a linear projection of its pooled features onto the teacher's width (identity when equal), as one
    module, so that accelerate prepares, syncs and checkpoints both. Training mode returns (logits, projected
    features); eval mode returns logits only, as the student alone would (timm's FeatureDistillationTrainableModule)."""

    def __init__(self, student: nn.Module, teacher_width: int):
        super().__init__()
        self.student = student
        width = feature_width(student)
        self.proj: nn.Module = nn.Linear(width, teacher_width) if width != teacher_width else nn.Identity()

    def forward(self, x: torch.Tensor) -> Any:
        """Logits, and in training the projected features."""
        s: Any = self.student
        fmap = s.forward_features(x)
        logits = s.forward_head(fmap)
        if not self.training:
            return logits
        return logits, self.proj(s.forward_head(fmap, pre_logits=True))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The student's own exemptions (position embeddings, tokens), under their names here."""
        inner = getattr(self.student, "no_weight_decay", None)
        return {STUDENT + k for k in inner()} if callable(inner) else set()


def student_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's own state dict out of a FeatureStudent's (the projection is dropped): what plain timm loads."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("_orig_mod.")
        if k.startswith(STUDENT):
            out[k[len(STUDENT):]] = v
    return out


def enable_token_head(model: nn.Module, name: str) -> None:
    """Make a distilled student (timm's deit_*_distilled_*) return (class logits, distillation logits) in training;
    UsageError for a model without a distillation token and head."""
    switch = getattr(model, "set_distilled_training", None)
    if not callable(switch):
        raise UsageError(f"--kd-type token needs a student with a distillation token and head; '{name}' has none: pick "
                         "a timm deit_*_distilled_* model (e.g. --model deit_tiny_distilled_patch16_224; it takes "
                         "--img-size and --model-kwargs like vit_*), or --kd-type soft|hard|feature")
    switch(True)
