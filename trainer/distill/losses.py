"""The distillation terms, as the tasks train them: on logits (soft: KL at a temperature; hard: cross-entropy on the
teacher's argmax), on pooled features (MSE), and their weighting against the label term."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TARGETS = ("soft", "hard")  # what a logit term learns from the teacher


def logit_kd(student: torch.Tensor, teacher: torch.Tensor, target: str = "soft", temperature: float = 4.0
             ) -> torch.Tensor:
    """The teacher's term on logits: soft (KL at temperature T, times T^2) or hard (CE on the teacher's argmax)."""
    student = student.float()
    if target == "soft":
        t = temperature
        # batchmean is the true KL per sample; T^2 keeps the gradient scale independent of T (Hinton et al.).
        return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                        reduction="batchmean", log_target=True) * (t * t)
    if target == "hard":
        return F.cross_entropy(student, teacher.argmax(dim=-1))
    raise ValueError(f"unknown target {target!r}: one of {TARGETS}")


def feature_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The teacher's term on pooled features: mean squared error, in float32."""
    return F.mse_loss(student.float(), teacher)


def weighted(label_term: torch.Tensor, kd_term: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) * label term + alpha * teacher term (DeiT's and timm's weighting)."""
    return (1 - alpha) * label_term + alpha * kd_term
