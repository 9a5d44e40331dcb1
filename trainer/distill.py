"""Knowledge distillation: a task with a frozen teacher (online, or its logits cached exactly) and the KD loss."""
from __future__ import annotations

import hashlib
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .augment import View, augment
from .batches import Batch, plan_epoch
from .config import TrainConfig
from .data import SplitData
from .errors import UsageError
from .inference import EvalResult, predict_logits, reference_predictions
from .metrics import RunLog
from .models import load_run, num_classes, run_view
from .run import Run
from .run_folder import file_digest, resolve_run
from .tasks import Classification, StepOutput


def kd_parts(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, kd_type: str = "soft",
             temperature: float = 4.0, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(student, labels), KD): KD soft (KL at temperature T, times T^2) or hard (CE on the teacher's argmax)."""
    student = student.float()
    ce = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    if kd_type == "soft":
        t = temperature
        # batchmean is the true KL per sample; T^2 keeps the gradient scale independent of T (Hinton et al.).
        kd = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                      reduction="batchmean", log_target=True) * (t * t)
    elif kd_type == "hard":
        kd = F.cross_entropy(student, teacher.argmax(dim=-1))
    else:
        raise ValueError(f"unknown kd_type {kd_type!r}")
    return ce, kd


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, kd_type: str = "soft",
            alpha: float = 0.5, temperature: float = 4.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) * CE(student, labels) + alpha * KD."""
    if alpha == 0:
        return F.cross_entropy(student.float(), labels, label_smoothing=label_smoothing)
    ce, kd = kd_parts(student, teacher, labels, kd_type, temperature, label_smoothing)
    return (1 - alpha) * ce + alpha * kd


def visited_views(n: int, cfg: TrainConfig) -> torch.Tensor:
    """[n, views] bool: which (image, flip) pairs the run's epoch plans visit, the only logits a cache needs."""
    used = torch.zeros(n, 2 if cfg.flip else 1, dtype=torch.bool)
    for epoch in range(cfg.epochs):
        plan = plan_epoch(n, cfg.seed, epoch, cfg.flip, cfg.random_crop)
        used[plan.order, plan.flip.long() if plan.flip is not None else 0] = True
    return used


class Distillation(Classification):
    """What train_kd.py trains: the labels' cross-entropy and the teacher's term, logged apart (loss_ce, loss_kd)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.loss_parts = ("ce", "kd") if cfg.kd_alpha > 0 else ("ce",)
        self.teacher: Optional[torch.nn.Module] = None
        self.view: Optional[View] = None
        self.same_view = False
        self.cache: Optional[torch.Tensor] = None  # [N, views, K]
        self.teacher_preds: Optional[torch.Tensor] = None  # the teacher's prediction for every eval image
        self.teacher_eval_top1: Optional[float] = None
        self.teacher_eval_reused = False
        self.cache_key: Optional[str] = None
        self.cache_forwards = 0

    def setup(self, run: Run) -> None:
        """Rebuild the teacher, check it against the data, freeze it; its eval predictions; the logit cache."""
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
        if cfg.teacher_cache:
            self.cache = self._fill_cache(data.train, eval_bs)

    def _fill_cache(self, split: SplitData, batch_size: int) -> torch.Tensor:
        """[N, views, K] teacher logits of exactly the pairs the run visits, once each; NaN elsewhere."""
        assert self.teacher is not None and self.view is not None and self.accelerator is not None
        used = visited_views(len(split), self.cfg)
        # Short runs do not visit both views of every image: at 1 epoch the cache costs one pass, not two,
        # so it never does more teacher forwards than the online teacher. NaN makes a wrong lookup loud.
        cache = torch.full((*used.shape, num_classes(self.teacher)), float("nan"), device=split.images.device)
        for v in range(used.shape[1]):
            rows = used[:, v].nonzero().squeeze(1)
            if rows.numel():
                cache[rows, v] = predict_logits(self.teacher, split, self.view, self.accelerator, batch_size,
                                                flip=bool(v), rows=rows).to(cache.device)
        self.cache_forwards = int(used.sum())
        return cache

    def on_start(self, log: RunLog) -> None:
        """Log the teacher's own eval top-1 once, before the first step."""
        log.event("teacher_eval", 0.0, 0, top1=self.teacher_eval_top1)
        mode = f"cached logits ({self.cache_forwards} teacher forwards)" if self.cache is not None else "online teacher"
        source = "from its run" if self.teacher_eval_reused else "evaluated now"
        log.print(f"teacher {self.cfg.teacher}: eval top1 {self.teacher_eval_top1:.4f} ({source}); "
                  f"{self.cfg.kd_type} KD, alpha {self.cfg.kd_alpha}, T {self.cfg.kd_temperature}, {mode}")

    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        """The teacher's logits for the student's augmented batch: from the cache, or computed now."""
        if self.cache is not None:
            flip = batch.draws.flip
            return self.cache[batch.index, flip.long() if flip is not None else torch.zeros_like(batch.index)]
        assert self.teacher is not None and self.view is not None and self.accelerator is not None
        x = batch.inputs if self.same_view else augment(batch.images, self.view, batch.draws, batch.framed)
        with torch.inference_mode(), self.accelerator.autocast():
            out = self.teacher(x)
        return out.float().clone()  # a normal tensor again, so autograd may save it for the student's backward

    def forward(self, model: torch.nn.Module, batch: Batch) -> StepOutput:
        """The student's logits; (1 - alpha) * CE + alpha * KD, with both parts for the log."""
        logits = self.logits(model, batch)
        cfg = self.cfg
        if cfg.kd_alpha == 0:  # the teacher is not run at all
            ce = self.label_loss(logits, batch)
            return StepOutput(ce, logits, {"ce": ce})
        ce, kd = kd_parts(logits, self.teacher_logits(batch), batch.labels, cfg.kd_type, cfg.kd_temperature,
                          cfg.label_smoothing)
        return StepOutput((1 - cfg.kd_alpha) * ce + cfg.kd_alpha * kd, logits, {"ce": ce, "kd": kd})

    def eval_references(self) -> dict[str, torch.Tensor]:
        """Every eval reports the student's agreement with the teacher."""
        assert self.teacher_preds is not None
        return {"agreement": self.teacher_preds}

    def resume_key(self) -> Optional[str]:
        """The teacher's weights and the training images."""
        return self.cache_key

    def _settings(self) -> dict[str, Any]:
        return {"teacher": self.cfg.teacher, "kd_type": self.cfg.kd_type, "kd_alpha": self.cfg.kd_alpha,
                "kd_temperature": self.cfg.kd_temperature, "teacher_cache": self.cache is not None,
                "teacher_eval_top1": self.teacher_eval_top1, "teacher_eval_reused": self.teacher_eval_reused,
                "teacher_cache_key": self.cache_key,
                "teacher_cache_forwards": self.cache_forwards if self.cache is not None else None}

    def summary(self, final: EvalResult) -> dict[str, Any]:
        """The distillation settings, what the teacher cost, and the final agreement with it."""
        return {**self._settings(), "teacher_agreement": final.agreement.get("agreement")}

    def config_entry(self) -> dict[str, Any]:
        """config.json's "distillation" entry."""
        return {"distillation": self._settings()}
