"""What a finished run's config.json and summary.json hold, as typed records: written by training, read by evaluation,
export, benchmarking, distillation and the study. Reading accepts the folders older versions wrote."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .config import TrainConfig
from .data.augment import View
from .errors import UsageError
from .run_files import SUMMARY_FILE

REBUILD_KEYS = ("architecture", "num_classes", "img_size", "mean", "std")  # what rebuilding the model needs
HUB_KEYS = ("model_args", "pretrained_cfg")  # what timm's Hub loader and transformers' timm wrapper read
_CONFIG_KEYS = (*REBUILD_KEYS, "interpolation", "crop_pct", "label_names", "model_kwargs", "training_args", "crop_mode",
                *HUB_KEYS)


@dataclass(frozen=True)
class RunConfig:
    """config.json: what timm needs to rebuild the model, the input it expects, and the arguments that trained it."""

    architecture: str
    num_classes: int
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    label_names: Optional[list[str]] = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    training: TrainConfig = field(default_factory=TrainConfig)  # "training_args" in the file
    task: dict[str, Any] = field(default_factory=dict)  # the keys its task adds ("distillation": the teacher's settings)
    # How its eval images were cut, as timm's pretrained_cfg names it: "center" (resize the shorter side to
    # size / crop_pct, centre-crop: photos) or "squash" (square images of one size, resized whole: CIFAR); None in
    # folders written before it was recorded.
    crop_mode: Optional[str] = None
    hub: dict[str, Any] = field(default_factory=dict)  # "model_args" and "pretrained_cfg", timm's Hub layout

    @staticmethod
    def of_training(cfg: TrainConfig, label_names: list[str], view: View, task: dict[str, Any],
                    squares: bool = False, hub: Optional[dict[str, Any]] = None) -> RunConfig:
        """The record of a run that has just trained (squares: its eval images are photos stored as centre squares)."""
        return RunConfig(cfg.model, len(label_names), view.size, view.mean, view.std, view.interpolation, view.crop_pct,
                         list(label_names), dict(cfg.model_kwargs), cfg, dict(task), "center" if squares else "squash",
                         dict(hub or {}))

    @property
    def distillation(self) -> Optional[dict[str, Any]]:
        """The teacher's settings, for a train_kd.py run."""
        return self.task.get("distillation")

    @property
    def view(self) -> View:
        """The input the model was trained with."""
        return View(int(self.img_size), tuple(self.mean), tuple(self.std), self.interpolation,  # type: ignore[arg-type]
                    float(self.crop_pct))

    @property
    def class_names(self) -> list[str]:
        """The label names, or the class indices as strings where the run had none."""
        return list(self.label_names) if self.label_names else [str(k) for k in range(self.num_classes)]

    def to_json(self) -> dict[str, Any]:
        """config.json's content (the keys and order every earlier version wrote)."""
        return {"architecture": self.architecture, "num_classes": self.num_classes, "label_names": self.label_names,
                "model_kwargs": self.model_kwargs, "img_size": self.img_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation, "crop_pct": self.crop_pct,
                "training_args": self.training.to_dict(), **self.task,
                **({"crop_mode": self.crop_mode} if self.crop_mode else {}), **self.hub}

    @staticmethod
    def from_json(values: dict[str, Any], where: str = "config.json", what: str = "checkpoint") -> RunConfig:
        """A config.json's content; UsageError where it lacks what a rebuild needs."""
        missing = [k for k in REBUILD_KEYS if k not in values]
        if missing:
            raise UsageError(f"{what} config {where} lacks {missing}: it was not written by train_cls.py")
        return RunConfig(values["architecture"], int(values["num_classes"]), int(values["img_size"]),
                         tuple(values["mean"]), tuple(values["std"]), values.get("interpolation", "bicubic"),
                         float(values.get("crop_pct", 0.875)), values.get("label_names"),
                         dict(values.get("model_kwargs") or {}), TrainConfig.from_dict(values.get("training_args", {})),
                         {k: v for k, v in values.items() if k not in _CONFIG_KEYS}, values.get("crop_mode"),
                         {k: values[k] for k in HUB_KEYS if k in values})

    @staticmethod
    def read(path: str, what: str = "checkpoint") -> RunConfig:
        """Read a run's config.json; UsageError (one line) where it is not valid JSON or not a run's."""
        try:
            with open(path) as f:
                values = json.load(f)
        except (OSError, ValueError) as err:
            lines = str(err).strip().splitlines()
            raise UsageError(f"{what} config {path} is not valid JSON ({type(err).__name__}: "
                             f"{lines[0][:160] if lines else ''}): restore it from the run folder") from None
        if not isinstance(values, dict):
            raise UsageError(f"{what} config {path} is not a JSON object: restore it from the run folder")
        return RunConfig.from_json(values, path, what)


@dataclass
class RunSummary:
    """summary.json: what a finished run reports. `task` holds the keys its task adds (distillation settings, the
    teacher's figures); in the file they stand at the top level, beside the others."""

    model: str
    pretrained: bool
    init: str  # "scratch", "hub" or "file:PATH"
    num_params: int
    epochs: int
    steps: int
    num_train: int
    num_eval: int
    processes: int
    device: str
    mixed_precision: str
    train_time_s: float
    train_images_per_s: float
    best_eval_top1: Optional[float]
    final: dict[str, float]  # train_loss, train_top1, eval_loss, eval_top1 and train_loss_<part>
    task: dict[str, Any] = field(default_factory=dict)
    per_class: Optional[dict[str, Any]] = None

    @property
    def eval_top1(self) -> float:
        """The final evaluation's top-1."""
        return float(self.final["eval_top1"])

    def to_json(self) -> dict[str, Any]:
        """summary.json's content."""
        out = {k: getattr(self, k) for k in _SUMMARY_KEYS}
        out.update(final=self.final, **self.task)
        return {**out, "per_class": self.per_class} if self.per_class is not None else out

    @staticmethod
    def from_json(values: dict[str, Any]) -> RunSummary:
        """A summary.json's content; keys not declared here are the task's."""
        task = {k: v for k, v in values.items() if k not in _SUMMARY_KEYS and k not in ("final", "per_class")}
        declared: dict[str, Any] = {k: values.get(k) for k in _SUMMARY_KEYS}
        return RunSummary(**declared, final=dict(values.get("final") or {}), task=task, per_class=values.get("per_class"))

    @staticmethod
    def read(folder: str) -> Optional[RunSummary]:
        """The summary of the finished run in a folder; None where the run has not finished."""
        path = os.path.join(folder, SUMMARY_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return RunSummary.from_json(json.load(f))


_SUMMARY_KEYS = ("model", "pretrained", "init", "num_params", "epochs", "steps", "num_train", "num_eval", "processes",
                 "device", "mixed_precision", "train_time_s", "train_images_per_s", "best_eval_top1")
