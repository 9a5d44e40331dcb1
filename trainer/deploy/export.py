"""A finished run's model exported to a runtime's file (ONNX, ExecuTorch, Core ML), optionally with an int8 copy, and
checked against PyTorch on the run's eval images; the parity JSON beside the file. What `python -m trainer.export`
does."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch

from ..data.placement import place_splits
from ..errors import UsageError
from ..evaluation.runs import eval_split_for
from ..models import load_trained
from ..run_files import MODEL_FILE, write_json
from .coreml import COREML, NOT_RUN
from .executorch import EXECUTORCH
from .formats import MAX_DISAGREEMENT, ExportFormat, input_spec, parity_path
from .onnx import ONNX
from .parity import CALIBRATION_BATCH, calibration_sample, compare, eval_batches

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (ONNX, EXECUTORCH, COREML)}
CALIBRATION_IMAGES = 256


def export_format(name: str) -> ExportFormat:
    """The format called name; UsageError naming the others."""
    if name not in FORMATS:
        raise UsageError(f"--format {name} is not one of {', '.join(FORMATS)}: pass one of them")
    return FORMATS[name]


def previous_export(folder: str, format: str = "onnx") -> Optional[dict[str, Any]]:
    """The parity figures of the run's default export with its int8 copy, where both files and the figures are newer
    than the run's weights: an unchanged model need not be exported again (ViT-B at 224 takes minutes on a CPU)."""
    fmt = FORMATS[format]
    path = os.path.join(folder, fmt.file)
    try:
        with open(parity_path(path)) as f:
            parity = json.load(f)["parity"]
        written = os.path.getmtime(parity_path(path))
        newest = max(os.path.getmtime(os.path.join(folder, n)) for n in (MODEL_FILE, fmt.file, fmt.int8_path(fmt.file)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if written < newest or "top1_int8" not in parity:
        return None
    return {**parity, fmt.name: path, f"{fmt.name}_int8": fmt.int8_path(path)}


def _check_output(path: str, fmt: ExportFormat) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and not (fmt.is_folder and path.rstrip("/").endswith(os.path.splitext(fmt.file)[1])):
        raise UsageError(f"--output {path} is a folder: pass a file path, such as {os.path.join(path, fmt.file)}")
    if not os.path.isdir(folder):
        raise UsageError(f"--output {path}: its folder does not exist: create it or pass another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--output {path}: its folder {folder} is not writable: pass a path you can write")


def export_run(run: str, output: Optional[str] = None, int8: bool = False, batch_size: int = 64,
               cache_dir: Optional[str] = None, max_samples: Optional[int] = None, format: str = "onnx",
               calibration_images: int = CALIBRATION_IMAGES) -> dict[str, Any]:
    """Export, quantise if asked, check on the run's eval images; write FILE.json; return the JSON line's content."""
    fmt = export_format(format)
    fmt.require()
    for name, value in (("--batch-size", batch_size), ("--max-samples", max_samples),
                        ("--calibration-images", calibration_images)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    trained = load_trained(run, "--run")
    model, cfg = trained.model.float().eval(), trained.config
    path = output or os.path.join(os.path.dirname(trained.weights), fmt.file)
    _check_output(path, fmt)
    view = cfg.view
    split, _ = eval_split_for(cfg, cache_dir=cache_dir)
    place_splits([split], "auto", torch.device("cpu"))
    spec = fmt.spec_for(input_spec(view, cfg.class_names, split.squares))
    fmt.write(model, spec, path)
    files = {fmt.name: path}
    quantisation: dict[str, Any] = {}
    if int8:
        files["int8"] = fmt.int8_path(path)
        calibration: dict[str, Any] = {}

        def batches() -> Any:
            images, calibration["calibration"] = calibration_sample(cfg, calibration_images, cache_dir)
            return (x for x, _ in eval_batches(images, view, len(images), CALIBRATION_BATCH))

        quantisation = fmt.write_int8(model, spec, path, files["int8"], batches)
        quantisation.update(calibration)
    n = min(len(split), max_samples or len(split))
    runners = {name: runner for name, file in files.items() if (runner := fmt.runner(file)) is not None}
    result: dict[str, Any]
    if len(runners) == len(files):
        result = compare(model, runners, eval_batches(split, view, n, batch_size), fmt.name, fmt.log_probs)
        passed = 1 - result["agreement"] <= MAX_DISAGREEMENT
    else:  # the runtime does not run here (Core ML off macOS): what can be checked without running it
        checks = fmt.checks(path, spec)
        result = {"num_samples": 0, "top1_torch": None, "agreement": None, f"top1_{fmt.name}": None,
                  "max_abs_logit_diff": None, "predictions_run": False, "not_run": NOT_RUN, **checks}
        if int8:
            result.update(agreement_int8=None, top1_int8=None,
                          int8_checks=fmt.checks(files["int8"], spec))
        passed = all(checks["checked"].values()) and (not int8 or all(result["int8_checks"]["checked"].values()))
    result.update(passed=passed, checkpoint=run, format=fmt.name, **quantisation,
                  **{(fmt.name if name == fmt.name else f"{fmt.name}_int8"): f for name, f in files.items()})
    write_json(parity_path(path), {"input": spec, "parity": result})
    return result

