"""Per-class recall (the class's accuracy), precision, F1 and the confusion matrix of a classifier.

An `evaluate` metric module shipped inside vit-trainer: `evaluate.load(path_to_this_file)` works offline, where the
Hub's `evaluate.load("accuracy")` needs a download.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Per-class recall, precision and F1, macro averages, accuracy and the confusion matrix."
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids.
    references: true class ids.
    num_classes: the number of classes (default: the largest id seen + 1).
Returns:
    accuracy, macro_recall, macro_precision, macro_f1, and per class (lists indexed by class id): recall,
    precision, f1, support; confusion_matrix[true][predicted].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerClass(evaluate.Metric):
    """Per-class classification metrics from one confusion matrix."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions: Sequence[int], references: Sequence[int],
                 num_classes: Optional[int] = None) -> dict[str, Any]:
        pred, ref = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        k = num_classes or int(max(pred.max(initial=-1), ref.max(initial=-1)) + 1)
        cm = np.bincount(ref * k + pred, minlength=k * k).reshape(k, k)
        tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
        recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
        precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
        return {"accuracy": float(tp.sum() / max(len(ref), 1)), "macro_recall": float(recall.mean()),
                "macro_precision": float(precision.mean()), "macro_f1": float(f1.mean()),
                "recall": recall.tolist(), "precision": precision.tolist(), "f1": f1.tolist(),
                "support": support.tolist(), "confusion_matrix": cm.tolist()}
