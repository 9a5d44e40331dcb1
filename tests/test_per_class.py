"""Per-class figures (trainer/evaluation/per_class.py) through the evaluate module API, against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.evaluation.per_class import per_class_report


def test_per_class_metrics_through_evaluate_match_scikit_learn():
    """The package's own `evaluate` module, loaded offline, against scikit-learn's reference implementation."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, 300))
    preds[preds == 4] = 3  # class 4 is never predicted: its precision is 0 by convention, not NaN
    got = per_class_report(torch.tensor(preds), torch.tensor(labels), [f"c{k}" for k in range(6)])
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=range(6), zero_division=0)
    assert got["precision"] == pytest.approx(p.tolist()) and got["recall"] == pytest.approx(r.tolist())
    assert got["f1"] == pytest.approx(f.tolist()) and got["support"] == support.tolist()
    assert got["confusion_matrix"] == confusion_matrix(labels, preds, labels=range(6)).tolist()
    assert got["accuracy"] == pytest.approx((preds == labels).mean()) and got["label_names"][5] == "c5"
