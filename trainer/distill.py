"""Knowledge distillation: a task with a frozen teacher (online, or its outputs cached) and the KD losses, on logits
(soft / hard), on pooled features (feature) or on a distillation token's head (token)."""
from __future__ import annotations

import hashlib
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .augment import View, augment
from .batches import Batch
from .config import TrainConfig
from .errors import UsageError
from .inference import EvalResult, reference_predictions
from .kd_students import FeatureStudent, enable_token_head, feature_width, pooled_features, student_weights
from .metrics import RunLog
from .models import load_run, num_classes, run_view
from .run import Run
from .run_folder import file_digest, resolve_run
from .tasks import Classification, StepOutput
from .teacher_cache import TeacherCache, build_cache


def kd_term(student: torch.Tensor, teacher: torch.Tensor, target: str = "soft", temperature: float = 4.0
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
    raise ValueError(f"unknown target {target!r}")


def kd_parts(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, kd_type: str = "soft",
             temperature: float = 4.0, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(student, labels), KD) on logits."""
    ce = F.cross_entropy(student.float(), labels, label_smoothing=label_smoothing)
    return ce, kd_term(student, teacher, kd_type, temperature)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, kd_type: str = "soft",
            alpha: float = 0.5, temperature: float = 4.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) * CE(student, labels) + alpha * KD."""
    if alpha == 0:
        return F.cross_entropy(student.float(), labels, label_smoothing=label_smoothing)
    ce, kd = kd_parts(student, teacher, labels, kd_type, temperature, label_smoothing)
    return (1 - alpha) * ce + alpha * kd


class Distillation(Classification):
    """What train_kd.py trains: the labels' cross-entropy and the teacher's term, logged apart (loss_ce, loss_kd)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.kind = "features" if cfg.kd_type == "feature" else "logits"  # what the teacher gives the loss
        self.loss_parts = ("ce", "kd") if cfg.kd_alpha > 0 else ("ce",)
        self.teacher: Optional[torch.nn.Module] = None
        self.view: Optional[View] = None
        self.same_view = False
        self.cache: Optional[TeacherCache] = None
        self.teacher_preds: Optional[torch.Tensor] = None  # the teacher's prediction for every eval image
        self.teacher_eval_top1: Optional[float] = None
        self.teacher_eval_reused = False
        self.cache_key: Optional[str] = None
        self.projection: Optional[str] = None

    def setup(self, run: Run) -> None:
        """Rebuild the teacher, check it against the data, freeze it; fit the student for the loss; its eval
        predictions; the cache."""
        super().setup(run)
        cfg, acc, data = self.cfg, run.accelerator, run.data
        assert cfg.teacher is not None and data.train is not None
        teacher, tcfg = load_run(cfg.teacher, what="--teacher")
        names = tcfg.get("label_names")
        if tcfg["num_classes"] != len(data.label_names) or (names is not None and list(names) != data.label_names):
            raise UsageError(
                f"--teacher {cfg.teacher} was trained on {tcfg['num_classes']} classes {names}, the dataset has "
                f"{len(data.label_names)} {data.label_names}: distill on the teacher's dataset or train a teacher on "
                "this one")
        teacher.requires_grad_(False)
        self.teacher = teacher.to(acc.device).eval()
        width = feature_width(teacher) if self.kind == "features" else num_classes(teacher)
        if cfg.kd_type == "feature":
            run.model = FeatureStudent(run.model, width)
            self.projection = repr(run.model.proj)
        elif cfg.kd_type == "token":
            enable_token_head(run.model, cfg.model)
        self.view = run_view(tcfg)
        self.same_view = self.view == run.view
        eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
        weights, _ = resolve_run(cfg.teacher, "--teacher")
        digest = file_digest(weights)
        self.teacher_preds, self.teacher_eval_top1, self.teacher_eval_reused = reference_predictions(
            self.teacher, weights, data.eval, self.view, acc, eval_bs, digest)
        key = hashlib.sha1(digest.encode())
        key.update(data.train.indices.tobytes())
        self.cache_key = key.hexdigest()[:16]
        if (cfg.teacher_cache or cfg.teacher_cache_dir) and cfg.kd_alpha > 0:
            # The outputs depend on the weights, the images, the teacher's view, what is taken and the arithmetic.
            parts = [digest, tcfg["architecture"], data.train.source_key, repr(self.view), self.kind,
                     str(acc.mixed_precision), acc.device.type]
            self.cache = build_cache(self.teacher_outputs, width, data.train, self.view, cfg, acc, eval_bs, parts,
                                     cfg.teacher_cache_dir)

    def teacher_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the loss takes from the teacher for normalised inputs: logits, or pooled pre-logits features."""
        assert self.teacher is not None
        return pooled_features(self.teacher, x) if self.kind == "features" else self.teacher(x)

    def on_start(self, log: RunLog) -> None:
        """Log the teacher's own eval top-1 once, before the first step."""
        log.event("teacher_eval", 0.0, 0, top1=self.teacher_eval_top1)
        if self.cache is None:
            mode = "online teacher"
        else:
            mode = f"cached {self.kind} ({self.cache.forwards} teacher forwards"
            mode += f"; shared cache {self.cache.folder})" if self.cache.folder else ")"
        source = "from its run" if self.teacher_eval_reused else "evaluated now"
        c = self.cfg
        target = f" ({c.kd_token_target} target)" if c.kd_type == "token" else ""
        soft = c.kd_type == "soft" or (c.kd_type == "token" and c.kd_token_target == "soft")
        how = f", T {c.kd_temperature}" if soft else (f", projection {self.projection}" if self.projection else "")
        log.print(f"teacher {c.teacher}: eval top1 {self.teacher_eval_top1:.4f} ({source}); "
                  f"{c.kd_type} KD{target}, alpha {c.kd_alpha}{how}, {mode}")

    def teacher_targets(self, batch: Batch) -> torch.Tensor:
        """The teacher's outputs for the student's augmented batch: from the cache, or computed now."""
        if self.cache is not None:
            return self.cache.lookup(batch)
        assert self.view is not None and self.accelerator is not None
        x = batch.inputs if self.same_view else augment(batch.images, self.view, batch.draws, batch.framed)
        with torch.inference_mode(), self.accelerator.autocast():
            out = self.teacher_outputs(x)
        return out.float().clone()  # a normal tensor again, so autograd may save it for the student's backward

    def forward(self, model: torch.nn.Module, batch: Batch) -> StepOutput:
        """The student's logits; (1 - alpha) * CE + alpha * KD, with both parts for the log."""
        cfg = self.cfg
        out = self.logits(model, batch)
        labelled = logits = student = out  # the head the labels train, the logits scored, what the teacher trains
        if cfg.kd_type == "feature":
            labelled = logits = out[0]
            student = out[1]
        elif cfg.kd_type == "token":  # the class head learns the labels, the distillation head the teacher
            labelled, student = out
            logits = (labelled + student) / 2  # what the model predicts at test time
        ce = self.label_loss(labelled, batch)
        if cfg.kd_alpha == 0:  # the teacher is not run at all
            return StepOutput(ce, logits, {"ce": ce})
        target = self.teacher_targets(batch)
        if cfg.kd_type == "feature":
            kd = F.mse_loss(student.float(), target)
        else:
            kd = kd_term(student, target, cfg.kd_token_target if cfg.kd_type == "token" else cfg.kd_type,
                         cfg.kd_temperature)
        return StepOutput((1 - cfg.kd_alpha) * ce + cfg.kd_alpha * kd, logits, {"ce": ce, "kd": kd})

    def saved_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The student alone: a feature student's projection is not part of the model."""
        return student_weights(state) if self.cfg.kd_type == "feature" else state

    def eval_references(self) -> dict[str, torch.Tensor]:
        """Every eval reports the student's agreement with the teacher."""
        assert self.teacher_preds is not None
        return {"agreement": self.teacher_preds}

    def resume_key(self) -> Optional[str]:
        """The teacher's weights and the training images."""
        return self.cache_key

    def _settings(self) -> dict[str, Any]:
        c, cache = self.cfg, self.cache
        return {"teacher": c.teacher, "kd_type": c.kd_type, "kd_alpha": c.kd_alpha, "kd_temperature": c.kd_temperature,
                **({"kd_token_target": c.kd_token_target} if c.kd_type == "token" else {}),
                **({"kd_projection": self.projection} if self.projection else {}),
                "teacher_cache": cache is not None, "teacher_eval_top1": self.teacher_eval_top1,
                "teacher_eval_reused": self.teacher_eval_reused, "teacher_cache_key": self.cache_key,
                "teacher_cache_forwards": cache.forwards if cache is not None else None,
                "teacher_cache_dir": cache.folder if cache is not None else None,
                "teacher_cache_reused": cache.reused if cache is not None else None}

    def summary(self, final: EvalResult) -> dict[str, Any]:
        """The distillation settings, what the teacher cost, and the final agreement with it."""
        return {**self._settings(), "teacher_agreement": final.agreement.get("agreement")}

    def config_entry(self) -> dict[str, Any]:
        """config.json's "distillation" entry."""
        return {"distillation": self._settings()}
