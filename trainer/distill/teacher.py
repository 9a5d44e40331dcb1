"""A finished run as a frozen teacher: rebuilt, checked against the student's data, frozen on the device, with its
predictions on the eval images (read back from its run folder where they apply)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from ..data.augment import View
from ..data.loading import DataBundle
from ..errors import UsageError
from ..evaluation.predictions import reference_predictions
from ..models import load_trained, num_classes
from ..run_files import file_digest
from ..run_records import RunConfig
from .students import feature_width, pooled_features


@dataclass
class Teacher:
    """What every distillation task shares: the frozen model, the input it expects, and what it predicts."""

    model: torch.nn.Module  # eval mode, no gradients, on the device
    path: str  # --teacher as given
    config: RunConfig
    weights: str  # its model.safetensors
    digest: str  # of the weights file
    eval_preds: torch.Tensor  # its prediction for every eval image
    eval_top1: float
    eval_reused: bool  # eval_preds read from its run folder, not computed now

    @property
    def view(self) -> View:
        """The input the teacher was trained with (it sees each student image through it)."""
        return self.config.view

    def width(self, kind: str) -> int:
        """Width of what the loss takes from it: 'logits' or (pooled pre-logits) 'features'."""
        return feature_width(self.model) if kind == "features" else num_classes(self.model)

    def outputs(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        """Its logits or pooled features for normalised inputs."""
        return pooled_features(self.model, x) if kind == "features" else self.model(x)

    def resume_key(self, train_rows: bytes) -> str:
        """What a distillation checkpoint must share to be continued: the teacher's weights and the training rows."""
        key = hashlib.sha1(self.digest.encode())
        key.update(train_rows)
        return key.hexdigest()[:16]


def load_teacher(path: str, data: DataBundle, accelerator: Accelerator, batch_size: int) -> Teacher:
    """A teacher run folder rebuilt, checked to know the dataset's classes, frozen on the device, with its eval
    predictions (from its run folder where they apply, else evaluated now)."""
    trained = load_trained(path, what="--teacher")
    cfg, names = trained.config, trained.config.label_names
    if cfg.num_classes != len(data.label_names) or (names is not None and list(names) != data.label_names):
        raise UsageError(
            f"--teacher {path} was trained on {cfg.num_classes} classes {names}, the dataset has "
            f"{len(data.label_names)} {data.label_names}: distill on the teacher's dataset or train a teacher on this one")
    model = trained.model.requires_grad_(False).to(accelerator.device).eval()
    digest = file_digest(trained.weights)
    preds, top1, reused = reference_predictions(model, trained.weights, data.eval, cfg.view, accelerator, batch_size,
                                                digest)
    return Teacher(model, path, cfg, trained.weights, digest, preds, top1, reused)
