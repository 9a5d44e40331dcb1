"""Per-class figures of a set of predictions (recall, precision, F1, the confusion matrix), through the `evaluate`
library's module API and the metric module shipped beside this file."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

# An `evaluate` metric module inside the package: evaluate.load() reads it offline (the Hub's modules need a download).
PER_CLASS_METRIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "per_class_metric.py")


def per_class_report(preds: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
    """Per-class recall (accuracy), precision, F1 and the confusion matrix, through the `evaluate` module API."""
    import evaluate as hf_evaluate  # the Hugging Face library; its import is slow, and only final evaluations need it

    metric = hf_evaluate.load(PER_CLASS_METRIC)
    res = metric.compute(predictions=preds.cpu().tolist(), references=labels.cpu().tolist(),
                         num_classes=len(label_names))
    return {"label_names": list(label_names), **(res or {})}
