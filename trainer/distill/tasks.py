"""Knowledge distillation as tasks over a shared frozen teacher (online, or its outputs cached), one class per
objective: logits (soft / hard), pooled features, a distillation token's head. Each is complete when built."""
from __future__ import annotations

from typing import Any, Optional

import torch
from accelerate import Accelerator

from ..config import TrainConfig
from ..data.augment import View, augment
from ..data.mixing import mix
from ..data.plan import augmentation
from ..evaluation.inference import EvalResult
from ..training.batches import Batch
from ..training.run_log import RunLog
from ..training.setup import Setup
from ..training.tasks import Classification, StepOutput
from .cache import TeacherCache, build_cache
from .losses import feature_kd, logit_kd, weighted
from .students import FeatureStudent, enable_token_head, student_weights
from .teacher import Teacher, load_teacher

Heads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Distillation(Classification):
    """What every distillation task shares: the labels' cross-entropy and the teacher's term, logged apart (loss_ce,
    loss_kd), weighted by --kd-alpha; the teacher's outputs from the cache or computed on the student's augmented view.
    A subclass says which outputs the terms take (heads), what the teacher's term is, and what the teacher gives."""

    kind = "logits"  # what the teacher gives the loss: "logits" or "features"

    def __init__(self, model: torch.nn.Module, accelerator: Accelerator, cfg: TrainConfig, teacher: Teacher,
                 student_view: View, cache: Optional[TeacherCache], resume_key: str):
        super().__init__(model, accelerator, cfg.label_smoothing)
        self.cfg, self.teacher, self.cache, self._resume_key = cfg, teacher, cache, resume_key
        self.same_view = teacher.view == student_view
        self.loss_parts = ("ce", "kd") if cfg.kd_alpha > 0 else ("ce",)

    def heads(self, out: Any) -> Heads:
        """(what the labels train, the logits scored, what the teacher trains) out of the model's output."""
        return out, out, out

    def teacher_term(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The distillation term of a batch."""
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: Batch) -> StepOutput:
        """(1 - alpha) CE + alpha KD; the teacher is not run at all when alpha is 0."""
        labelled, logits, student = self.heads(self.logits(model, batch))
        ce = self.label_loss(labelled, batch)
        if self.cfg.kd_alpha == 0:
            return StepOutput(ce, logits, {"ce": ce})
        kd = self.teacher_term(student, self.teacher_targets(batch))
        return StepOutput(weighted(ce, kd, self.cfg.kd_alpha), logits, {"ce": ce, "kd": kd})

    def teacher_targets(self, batch: Batch) -> torch.Tensor:
        """The teacher's outputs for the student's augmented batch: from the cache, or computed now."""
        if self.cache is not None:
            return self.cache.lookup(batch)
        view = self.teacher.view
        x = batch.inputs if self.same_view else augment(batch.images, view, batch.draws, batch.squares)
        if batch.mix is not None and not self.same_view:  # the teacher sees the student's mixed batch (DeiT)
            x = mix(x, batch.mix)
        with torch.inference_mode(), self.accelerator.autocast():
            out = self.teacher.outputs(self.kind, x)
        return out.float().clone()  # a normal tensor again, so autograd may save it for the student's backward

    def how(self) -> str:
        """The settings the start line names beside alpha."""
        return f", T {self.cfg.kd_temperature}" if self.cfg.kd_type == "soft" else ""

    def announce(self, log: RunLog) -> None:
        """Log the teacher's own eval top-1 once, before the first step."""
        t, c = self.teacher, self.cfg
        log.event("teacher_eval", 0.0, 0, top1=t.eval_top1)
        if self.cache is None:
            mode = "online teacher"
        else:
            mode = f"cached {self.kind} ({self.cache.forwards} teacher forwards"
            mode += f"; shared cache {self.cache.folder})" if self.cache.folder else ")"
        source = "from its run" if t.eval_reused else "evaluated now"
        target = f" ({c.kd_token_target} target)" if c.kd_type == "token" else ""
        log.print(f"teacher {c.teacher}: eval top1 {t.eval_top1:.4f} ({source}); "
                  f"{c.kd_type} KD{target}, alpha {c.kd_alpha}{self.how()}, {mode}")

    def eval_references(self) -> dict[str, torch.Tensor]:
        """Every eval reports the student's agreement with the teacher."""
        return {"agreement": self.teacher.eval_preds}

    def resume_key(self) -> Optional[str]:
        """The teacher's weights and the training images."""
        return self._resume_key

    def settings(self) -> dict[str, Any]:
        """What summary.json and config.json's "distillation" entry say of the teacher and the objective."""
        c, cache = self.cfg, self.cache
        return {"teacher": c.teacher, "kd_type": c.kd_type, "kd_alpha": c.kd_alpha, "kd_temperature": c.kd_temperature,
                **self.own_settings(),
                "teacher_cache": cache is not None, "teacher_eval_top1": self.teacher.eval_top1,
                "teacher_eval_reused": self.teacher.eval_reused,
                # teacher_cache_key: the resume key's older name (kept for the scripts that read it)
                "teacher_cache_key": self._resume_key, "resume_key": self._resume_key,
                "teacher_cache_forwards": cache.forwards if cache is not None else None,
                "teacher_cache_dir": cache.folder if cache is not None else None,
                "teacher_cache_reused": cache.reused if cache is not None else None}

    def own_settings(self) -> dict[str, Any]:
        """The keys only this objective has."""
        return {}

    def summary(self, final: EvalResult) -> dict[str, Any]:
        """The distillation settings, what the teacher cost, and the final agreement with it."""
        return {**self.settings(), "teacher_agreement": final.agreement.get("agreement")}

    def config_entry(self) -> dict[str, Any]:
        """config.json's "distillation" entry."""
        return {"distillation": self.settings()}


class LogitDistillation(Distillation):
    """--kd-type soft|hard: the student's logits learn the teacher's (KL at T, or CE on its argmax)."""

    def teacher_term(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft or hard logit KD."""
        return logit_kd(student, target, self.cfg.kd_type, self.cfg.kd_temperature)


class FeatureDistillation(Distillation):
    """--kd-type feature: the student's pooled pre-logits features, projected onto the teacher's width where the widths
    differ (FeatureStudent), learn the teacher's by MSE; the saved model is the student alone."""

    kind = "features"

    def heads(self, out: Any) -> Heads:
        """FeatureStudent gives (logits, projected features) in training."""
        return out[0], out[0], out[1]

    def teacher_term(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Feature MSE."""
        return feature_kd(student, target)

    def projection(self) -> str:
        """The projection, as the start line and the summary name it."""
        return repr(self.model.proj)

    def how(self) -> str:
        """The projection."""
        return f", projection {self.projection()}"

    def own_settings(self) -> dict[str, Any]:
        """kd_projection."""
        return {"kd_projection": self.projection()}

    def saved_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The student alone: the projection is not part of the model."""
        return student_weights(state)


class TokenDistillation(Distillation):
    """--kd-type token: a deit_*_distilled_* student's class head learns the labels, its distillation head the teacher
    (hard or soft, --kd-token-target); it predicts with both heads' average, as timm's model does at test time."""

    def heads(self, out: Any) -> Heads:
        """(class logits, distillation logits) in training."""
        labelled, student = out
        return labelled, (labelled + student) / 2, student

    def teacher_term(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logit KD on the distillation head."""
        return logit_kd(student, target, self.cfg.kd_token_target, self.cfg.kd_temperature)

    def how(self) -> str:
        """T only where the target is soft."""
        return f", T {self.cfg.kd_temperature}" if self.cfg.kd_token_target == "soft" else ""

    def own_settings(self) -> dict[str, Any]:
        """kd_token_target."""
        return {"kd_token_target": self.cfg.kd_token_target}


TASKS: dict[str, type[Distillation]] = {"soft": LogitDistillation, "hard": LogitDistillation,
                                        "feature": FeatureDistillation, "token": TokenDistillation}


def distillation_task(cfg: TrainConfig, setup: Setup) -> Distillation:
    """The task --kd-type names, over the --teacher run: the teacher rebuilt, checked and evaluated, the student fitted
    for the loss (a projection, or the distillation head switched on), the teacher's outputs cached where asked."""
    assert cfg.teacher is not None
    acc, data = setup.accelerator, setup.data
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    task_type = TASKS[cfg.kd_type]
    teacher = load_teacher(cfg.teacher, data, acc, eval_bs)
    model = setup.model
    if task_type is FeatureDistillation:
        model = FeatureStudent(model, teacher.width(task_type.kind))
    elif task_type is TokenDistillation:
        enable_token_head(model, cfg.model)
    cache = None
    if (cfg.teacher_cache or cfg.teacher_cache_dir) and cfg.kd_alpha > 0:
        kind = task_type.kind
        # The outputs depend on the weights, the images, the teacher's view, what is taken and the arithmetic.
        parts = [teacher.digest, teacher.config.architecture, data.train.source_digest, repr(teacher.view), kind,
                 str(acc.mixed_precision), acc.device.type]
        aug = augmentation(cfg, data.train, setup.view.size)
        cache = build_cache(lambda x: teacher.outputs(kind, x), teacher.width(kind), data.train, teacher.view, aug, cfg,
                            acc, eval_bs, parts, cfg.teacher_cache_dir)
    return task_type(model, acc, cfg, teacher, setup.view, cache, teacher.resume_key(data.train.indices.tobytes()))
