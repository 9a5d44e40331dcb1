"""The distillation tasks, one per objective: the loss each one trains (its forward), against hand computations on
fixed student and teacher outputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from trainer.config import TrainConfig
from trainer.data.augment import Draws, View
from trainer.distill.tasks import FeatureDistillation, LogitDistillation, TokenDistillation
from trainer.distill.teacher import Teacher
from trainer.run_records import RunConfig
from trainer.training.batches import Batch

VIEW = View(4, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class Gives(nn.Module):
    """Answers any input with fixed outputs (one tensor, or a tuple as students with a second head give)."""

    def __init__(self, *out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor):
        return self.out if len(self.out) > 1 else self.out[0]


class Refuses(nn.Module):
    def forward(self, x: torch.Tensor):
        raise AssertionError("the teacher ran")


def _task(kind, student: nn.Module, teacher: nn.Module, **cfg):
    """A task as distillation_task builds it, on fixed models; the teacher sees what the student sees (same view)."""
    config = RunConfig("vit_tiny_patch16_224", 3, VIEW.size, VIEW.mean, VIEW.std)
    frozen = Teacher(teacher, "teacher", config, "model.safetensors", "digest", torch.zeros(0, dtype=torch.long), 0.0,
                     False)
    return kind(student, Accelerator(cpu=True), TrainConfig(teacher="teacher", **cfg), frozen, VIEW, None, "key")


def _batch(labels: torch.Tensor) -> Batch:
    n = len(labels)
    return Batch(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), labels, torch.arange(n), Draws(), False,
                 torch.zeros(n, 3, 4, 4))


S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
T = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
Y = torch.tensor([0, 2])


def _soft_kl(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    kl = 0.0
    for i in range(len(s)):
        p_t = torch.softmax(t[i] / temperature, -1)
        log_p_s = torch.log_softmax(s[i] / temperature, -1)
        kl += float((p_t * (p_t.log() - log_p_s)).sum())
    return kl / len(s) * temperature * temperature


def test_soft_logit_task_trains_the_hand_computed_loss():
    task = _task(LogitDistillation, Gives(S), Gives(T), kd_type="soft", kd_alpha=0.3, kd_temperature=4.0)
    out = task.forward(task.model, _batch(Y))
    ce, kl = float(F.cross_entropy(S, Y)), _soft_kl(S, T, 4.0)
    assert math.isclose(float(out.loss), 0.7 * ce + 0.3 * kl, rel_tol=1e-6)
    assert math.isclose(float(out.parts["ce"]), ce, rel_tol=1e-6) and math.isclose(float(out.parts["kd"]), kl,
                                                                                      rel_tol=1e-6)
    assert task.loss_parts == ("ce", "kd") and torch.equal(out.logits, S)


def test_hard_logit_task_is_cross_entropy_on_the_teachers_argmax():
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    task = _task(LogitDistillation, Gives(s), Gives(t), kd_type="hard", kd_alpha=0.5)
    expected = 0.5 * F.cross_entropy(s, y) + 0.5 * F.cross_entropy(s, t.argmax(-1))
    assert torch.allclose(task.forward(task.model, _batch(y)).loss, expected)


def test_alpha_zero_is_plain_cross_entropy_and_never_runs_the_teacher():
    task = _task(LogitDistillation, Gives(S), Refuses(), kd_alpha=0.0)
    out = task.forward(task.model, _batch(Y))
    assert torch.allclose(out.loss, F.cross_entropy(S, Y)) and task.loss_parts == ("ce",) and set(out.parts) == {"ce"}


def test_alpha_one_on_the_teachers_own_logits_is_zero():
    task = _task(LogitDistillation, Gives(S), Gives(S), kd_alpha=1.0, kd_temperature=3.0)
    assert float(task.forward(task.model, _batch(Y)).loss) == pytest.approx(0.0, abs=1e-6)


def test_feature_task_trains_ce_on_the_logits_and_mse_on_the_projected_features():
    feats, teacher_feats = torch.randn(2, 8), torch.randn(2, 8)
    task = _task(FeatureDistillation, Gives(S, feats), Gives(teacher_feats), kd_type="feature", kd_alpha=0.25)
    task.teacher.outputs = lambda kind, x: teacher_feats if kind == "features" else pytest.fail("asked for logits")
    out = task.forward(task.model, _batch(Y))
    expected = 0.75 * F.cross_entropy(S, Y) + 0.25 * F.mse_loss(feats, teacher_feats)
    assert torch.allclose(out.loss, expected) and torch.equal(out.logits, S)


def test_token_task_scores_the_heads_average_and_distils_the_distillation_head():
    cls_logits, dist_logits = torch.randn(2, 3), torch.randn(2, 3)
    task = _task(TokenDistillation, Gives(cls_logits, dist_logits), Gives(T), kd_type="token",
                 kd_token_target="soft", kd_alpha=0.5, kd_temperature=2.0)
    out = task.forward(task.model, _batch(Y))
    assert torch.allclose(out.logits, (cls_logits + dist_logits) / 2)
    assert float(out.parts["ce"]) == pytest.approx(float(F.cross_entropy(cls_logits, Y)), rel=1e-6)
    assert float(out.parts["kd"]) == pytest.approx(_soft_kl(dist_logits, T, 2.0), rel=1e-6)
