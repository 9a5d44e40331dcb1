"""Knowledge distillation: a loss and a frozen teacher that plug into the engine's one loop."""
from __future__ import annotations

import hashlib
import os
from typing import Optional

import torch
import torch.nn.functional as F

from .augment import View, augment, plan_epoch
from .config import TrainConfig
from .errors import UsageError
from .checkpoint import eval_key, file_digest, load_eval_predictions, resolve_run
from .models import load_run, run_view


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, kd_type: str = "soft",
            alpha: float = 0.5, temperature: float = 4.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) * CE(student, labels) + alpha * KD, KD soft (KL at temperature T, times T^2) or hard."""
    student = student.float()
    ce = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce
    if kd_type == "soft":
        t = temperature
        # batchmean is the true KL per sample; T^2 keeps the gradient scale independent of T (Hinton et al.).
        kd = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                      reduction="batchmean", log_target=True) * (t * t)
    elif kd_type == "hard":
        kd = F.cross_entropy(student, teacher.argmax(dim=-1))
    else:
        raise ValueError(f"unknown kd_type {kd_type!r}")
    return (1 - alpha) * ce + alpha * kd


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, view: View, accelerator, batch_size: int,
                   flip: bool = False, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits of every image, or of `rows` only (optionally mirrored), each process doing its share, gathered in order."""
    from .engine import gather_shards, shard

    n = images.shape[0] if rows is None else rows.numel()
    lo, hi = shard(n, accelerator)
    chunks = [torch.empty(0, model.num_classes, device=images.device)]
    for i in range(lo, hi, batch_size):
        # Rows are gathered a chunk at a time: a copy of the whole subset would double a 224-px dataset on the GPU.
        x = images[i:min(i + batch_size, hi)] if rows is None else images[rows[i:min(i + batch_size, hi)]]
        flips = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if flip else None
        with torch.inference_mode(), accelerator.autocast():
            chunks.append(model(augment(x, view, flips)).float())
    # cat outside inference mode: the cache is read by steps whose loss autograd must be able to save.
    return gather_shards(torch.cat(chunks), n, accelerator)


def reference_predictions(model: torch.nn.Module, weights: str, split, view: View, accelerator, batch_size: int,
                          digest: Optional[str] = None) -> tuple[torch.Tensor, float, bool]:
    """(preds, top1, reused) of a saved run on a split: from its run folder when they apply, else evaluated now."""
    from .engine import evaluate

    # A run saves its final eval predictions; on the same images, view, precision and device type they are
    # what evaluating it again would give, so a teacher's once-per-run evaluation pass can be skipped.
    key = eval_key(digest or file_digest(weights), split.key, view, accelerator)
    saved = load_eval_predictions(os.path.dirname(weights), key)
    if saved is not None:
        return saved[0].to(accelerator.device), saved[1], True
    res = evaluate(model, split, view, accelerator, batch_size, return_preds=True)
    return res["preds"], res["top1"], False


def visited_views(n: int, cfg: TrainConfig) -> torch.Tensor:
    """[n, views] bool: which (image, flip) pairs the run's epoch plans visit, the only logits a cache needs."""
    used = torch.zeros(n, 2 if cfg.flip else 1, dtype=torch.bool)
    for epoch in range(cfg.epochs):
        plan = plan_epoch(n, cfg.seed, epoch, cfg.flip, cfg.random_crop)
        used[plan.order, plan.flip.long() if plan.flip is not None else 0] = True
    return used


class Distiller:
    """The engine's plugin for train_kd.py: teacher set-up, its cached or online logits, the KD loss."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.teacher: Optional[torch.nn.Module] = None
        self.view: Optional[View] = None
        self.same_view = False
        self.cache: Optional[torch.Tensor] = None  # [N, views, K]
        self.eval_reference: Optional[torch.Tensor] = None
        self.teacher_eval_top1: Optional[float] = None
        self.cache_key: Optional[str] = None
        self.cache_forwards = 0
        self.teacher_eval_reused = False
        self.accelerator = None

    def setup(self, run) -> None:
        """Rebuild the teacher, check it against the data, freeze it; its eval predictions; the logit cache."""
        cfg, acc, data = self.cfg, run.accelerator, run.data
        teacher, tcfg = load_run(cfg.teacher, what="--teacher")
        names = tcfg.get("label_names")
        if tcfg["num_classes"] != len(data.label_names) or (names is not None and list(names) != data.label_names):
            raise UsageError(
                f"--teacher {cfg.teacher} was trained on {tcfg['num_classes']} classes {names}, the dataset has "
                f"{len(data.label_names)} {data.label_names}: distill on the teacher's dataset or train a teacher on "
                "this one")
        teacher.requires_grad_(False)
        self.teacher = teacher.to(acc.device).eval()
        self.accelerator = acc
        self.view = run_view(tcfg)
        self.same_view = self.view == run.view
        eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
        weights, _ = resolve_run(cfg.teacher, "--teacher")
        digest = file_digest(weights)
        self.eval_reference, self.teacher_eval_top1, self.teacher_eval_reused = reference_predictions(
            self.teacher, weights, data.eval, self.view, acc, eval_bs, digest)
        key = hashlib.sha1(digest.encode())
        key.update(data.train.indices.tobytes())
        self.cache_key = key.hexdigest()[:16]
        if cfg.teacher_cache:
            self.cache = self._fill_cache(data.train.images, eval_bs)

    def _fill_cache(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """[N, views, K] teacher logits of exactly the pairs the run visits, once each; NaN elsewhere."""
        used = visited_views(images.shape[0], self.cfg)
        # Short runs do not visit both views of every image: at 1 epoch the cache costs one pass, not two,
        # so it never does more teacher forwards than the online teacher. NaN makes a wrong lookup loud.
        cache = torch.full((*used.shape, self.teacher.num_classes), float("nan"), device=images.device)
        for v in range(used.shape[1]):
            rows = used[:, v].nonzero().squeeze(1).to(images.device)
            if rows.numel():
                cache[rows, v] = predict_logits(self.teacher, images, self.view, self.accelerator, batch_size,
                                                flip=bool(v), rows=rows)
        self.cache_forwards = int(used.sum())
        return cache

    def on_start(self, run) -> None:
        """Log the teacher's own eval top-1 once, before the first step."""
        run.log.event("teacher_eval", 0.0, 0, top1=self.teacher_eval_top1)
        mode = f"cached logits ({self.cache_forwards} teacher forwards)" if self.cache is not None else "online teacher"
        source = "from its run" if self.teacher_eval_reused else "evaluated now"
        run.log.print(f"teacher {self.cfg.teacher}: eval top1 {self.teacher_eval_top1:.4f} ({source}); "
                      f"{self.cfg.kd_type} KD, alpha {self.cfg.kd_alpha}, T {self.cfg.kd_temperature}, {mode}")

    def teacher_logits(self, batch) -> torch.Tensor:
        """The teacher's logits for the student's augmented batch: from the cache, or computed now."""
        if self.cache is not None:
            view = batch.flip.long() if batch.flip is not None else torch.zeros_like(batch.index)
            return self.cache[batch.index, view]
        x = batch.inputs if self.same_view else augment(batch.images, self.view, batch.flip, batch.crop, batch.crop_pad)
        with torch.inference_mode(), self.accelerator.autocast():
            out = self.teacher(x)
        return out.float().clone()  # a normal tensor again, so autograd may save it for the student's backward

    def loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        """The distillation objective for one micro-batch."""
        cfg = self.cfg
        teacher = self.teacher_logits(batch) if cfg.kd_alpha > 0 else logits
        return kd_loss(logits, teacher, batch.labels, cfg.kd_type, cfg.kd_alpha, cfg.kd_temperature,
                       cfg.label_smoothing)

    def summary(self) -> dict:
        """Keys for summary.json and config.json."""
        return {"teacher": self.cfg.teacher, "kd_type": self.cfg.kd_type, "kd_alpha": self.cfg.kd_alpha,
                "kd_temperature": self.cfg.kd_temperature, "teacher_cache": self.cache is not None,
                "teacher_eval_top1": self.teacher_eval_top1, "teacher_eval_reused": self.teacher_eval_reused,
                "teacher_cache_key": self.cache_key,
                "teacher_cache_forwards": self.cache_forwards if self.cache is not None else None}
