"""A finished run's saved eval predictions (eval_predictions.safetensors): written at the end of training, read
back where the same weights meet the same images in the same arithmetic (a teacher's once-per-run evaluation)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file

from ..data.augment import View
from ..data.loading import SplitData
from ..run_files import EVAL_FILE, atomic_write, file_digest
from .inference import evaluate_split


def predictions_digest(weights_digest: str, selection_digest: str, view: View, accelerator: Accelerator) -> str:
    """What an evaluation's predictions depend on: weights, images, input view, precision and device type."""
    parts = [weights_digest, selection_digest, repr(view), accelerator.mixed_precision, accelerator.device.type]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


def save_eval_predictions(folder: str, preds: torch.Tensor, top1: float, digest: str, fix: Optional[str] = None) -> None:
    """The run's final eval predictions, so that a student distilled from it need not evaluate it again."""
    tensors = {"preds": preds.detach().to("cpu", torch.int64).contiguous()}
    atomic_write(os.path.join(folder, EVAL_FILE),
                 lambda tmp: save_file(tensors, tmp, metadata={"key": digest, "top1": repr(float(top1))}), fix)


def load_eval_predictions(folder: str, digest: str) -> Optional[tuple[torch.Tensor, float]]:
    """(preds, top1) saved under this digest, or None: absent, stale or damaged files mean evaluating again."""
    try:
        with safe_open(os.path.join(folder, EVAL_FILE), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != digest:
                return None
            return f.get_tensor("preds"), float(meta["top1"])
    except Exception:
        return None


def reference_predictions(model: torch.nn.Module, weights: str, split: SplitData, view: View,
                          accelerator: Accelerator, batch_size: int, digest: Optional[str] = None
                          ) -> tuple[torch.Tensor, float, bool]:
    """(preds, top1, reused) of a saved run on a split: from its run folder when they apply, else evaluated now."""
    # A run saves its final eval predictions; on the same images, view, precision and device type they are
    # what evaluating it again would give, so a teacher's once-per-run evaluation pass can be skipped.
    expected = predictions_digest(digest or file_digest(weights), split.selection_digest, view, accelerator)
    saved = load_eval_predictions(os.path.dirname(weights), expected)
    if saved is not None:
        return saved[0].to(accelerator.device), saved[1], True
    res = evaluate_split(model, split, view, accelerator, batch_size, keep_preds=True)
    assert res.preds is not None
    return res.preds, res.top1, False
