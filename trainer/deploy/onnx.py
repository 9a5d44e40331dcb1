"""A finished run's model to ONNX, checked against PyTorch on the run's eval images; optionally an int8 copy (ONNX
Runtime's dynamic quantisation). The file names, the input spec stored with the file, ONNX Runtime sessions."""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..data.augment import View, preprocess
from ..data.placement import place_splits
from ..errors import UsageError
from ..evaluation.runs import eval_split_for
from ..models import load_trained
from ..run_files import MODEL_FILE, atomic_write, write_json

MAX_DISAGREEMENT = 0.005
INPUT, OUTPUT = "pixel_values", "logits"  # the names Hugging Face's ONNX tools (optimum) give an image classifier
ONNX_FILE = "model.onnx"  # in the run folder, unless --output says otherwise


def int8_path(path: str) -> str:
    """Where the int8 copy of an ONNX file goes (model.onnx -> model.int8.onnx)."""
    return path[:-5] + ".int8.onnx" if path.endswith(".onnx") else path + ".int8"


def parity_path(path: str) -> str:
    """The JSON beside an ONNX file: its input spec and parity figures."""
    return path + ".json"


def previous_export(folder: str) -> Optional[dict[str, Any]]:
    """The parity figures of the run's default export with its int8 copy, where both files and the figures are newer
    than the run's weights: an unchanged model need not be exported again (ViT-B at 224 takes minutes on a CPU)."""
    onnx = os.path.join(folder, ONNX_FILE)
    try:
        with open(parity_path(onnx)) as f:
            parity = json.load(f)["parity"]
        written = os.path.getmtime(parity_path(onnx))
        newest = max(os.path.getmtime(os.path.join(folder, n)) for n in (MODEL_FILE, ONNX_FILE, int8_path(ONNX_FILE)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if written < newest or "top1_int8" not in parity:
        return None
    return {**parity, "onnx": onnx, "onnx_int8": int8_path(onnx)}


def require_deploy() -> None:
    """One line naming what to install when the [deploy] extra is missing."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise UsageError(f"ONNX export needs {name}, which is not installed: pip install 'vit-trainer[deploy]' "
                             "(onnx, onnxruntime, onnxscript)") from None


def input_spec(view: View, label_names: Sequence[str], squares: bool = True) -> dict[str, Any]:
    """What the exported model expects, so that the file is usable without this package (squares: photos, cropped as
    timm's eval transform crops them; otherwise square images of one size, resized whole, as trained)."""
    side = view.eval_crop.side  # timm's Resize: floor(size / crop_pct)
    resize = (f"resize the shorter side to {side} ({view.interpolation}), centre-crop "
              f"{view.size}x{view.size}" if squares else f"resize the whole square image to {view.size}x{view.size} "
              f"({view.interpolation}, antialiased)")
    return {"input": INPUT, "output": OUTPUT, "shape": ["batch", 3, view.size, view.size], "dtype": "float32",
            "mean": list(view.mean), "std": list(view.std), "interpolation": view.interpolation,
            "crop_pct": view.crop_pct, "crop_mode": "center" if squares else "squash",
            "resize": side if squares else view.size,
            "preprocess": f"RGB; {resize}; scale to [0, 1], subtract mean, divide by std",
            "label_names": list(label_names)}


def export_onnx(model: torch.nn.Module, spec: dict[str, Any], path: str) -> None:
    """torch.onnx (dynamo exporter), batch dimension free, weights inside the file, spec in its metadata; written
    under a temporary name (removed on any failure) and renamed."""
    import onnx

    size = spec["shape"][-1]

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (torch.zeros(2, 3, size, size),), tmp, input_names=[INPUT],
                              output_names=[OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                              external_data=False, verbose=False)
        proto = onnx.load(tmp)
        for key, value in spec.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, tmp)

    atomic_write(path, write)


def quantize_int8(src: str, dst: str) -> None:
    """ONNX Runtime's dynamic quantisation of the matrix products: int8 weights per output channel, activations
    quantised on the fly (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process is printed through the root logger
    # The patch embedding stays fp32: on an AVX2 CPU ONNX Runtime's ConvInteger took 3x the fp32 Conv's time
    # (profiled, vit_tiny at 224, batch 32), and per-channel weight scales cost nothing at run time; with both, int8
    # throughput went from 1.25x to 1.38x ORT fp32 (README, Deployment).
    atomic_write(dst, lambda tmp: quantize_dynamic(src, tmp, weight_type=QuantType.QInt8,
                                                   op_types_to_quantize=["MatMul"], per_channel=True))


def ort_session(path: str, threads: Optional[int] = None) -> Any:
    """An ONNX Runtime CPU session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run_session(session: Any, x: np.ndarray) -> np.ndarray:
    """The first output for the first input, by the names the file has (an export by an older version named its input
    `image`)."""
    return session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: x})[0]


def compare(model: torch.nn.Module, sessions: dict[str, Any], batches: Any) -> dict[str, Any]:
    """PyTorch's predictions against each session's on the same inputs: agreement, top-1 of each, max logit gap."""
    n, correct_torch, max_diff = 0, 0, 0.0
    correct = {name: 0 for name in sessions}
    agree = {name: 0 for name in sessions}
    with torch.inference_mode():
        for x, y in batches:
            ref = model(x).float().numpy()
            pred, labels = ref.argmax(-1), y.numpy()
            n += len(labels)
            correct_torch += int((pred == labels).sum())
            for name, session in sessions.items():
                out = run_session(session, x.numpy())
                agree[name] += int((out.argmax(-1) == pred).sum())
                correct[name] += int((out.argmax(-1) == labels).sum())
                if name == "onnx":
                    max_diff = max(max_diff, float(np.abs(out - ref).max()))
    res: dict[str, Any] = {"num_samples": n, "top1_torch": correct_torch / max(n, 1)}
    for name in sessions:
        suffix = "" if name == "onnx" else f"_{name}"
        res[f"agreement{suffix}"] = agree[name] / max(n, 1)
        res[f"top1_{name}"] = correct[name] / max(n, 1)
    res["max_abs_logit_diff"] = max_diff
    return res


def export_run(run: str, output: Optional[str] = None, int8: bool = False, batch_size: int = 64,
               cache_dir: Optional[str] = None, max_samples: Optional[int] = None) -> dict[str, Any]:
    """Export, quantise if asked, check on the run's eval images; write FILE.json; return the JSON line's content."""
    require_deploy()
    for name, value in (("--batch-size", batch_size), ("--max-samples", max_samples)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    trained = load_trained(run, "--run")
    model, cfg = trained.model, trained.config
    path = output or os.path.join(os.path.dirname(trained.weights), ONNX_FILE)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--output {path} is a folder: pass a file path, such as {os.path.join(path, ONNX_FILE)}")
    if not os.path.isdir(folder):
        raise UsageError(f"--output {path}: its folder does not exist: create it or pass another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--output {path}: its folder {folder} is not writable: pass a path you can write")
    view = cfg.view
    split, _ = eval_split_for(cfg, cache_dir=cache_dir)
    place_splits([split], "auto", torch.device("cpu"))
    spec = input_spec(view, cfg.class_names, split.squares)
    export_onnx(model, spec, path)
    files = {"onnx": path}
    if int8:
        files["int8"] = int8_path(path)
        quantize_int8(path, files["int8"])
    sessions = {name: ort_session(f) for name, f in files.items()}
    n = min(len(split), max_samples or len(split))
    batches = ((preprocess(split.images.span(i, min(i + batch_size, n)), view, split.squares),
                split.labels[i:min(i + batch_size, n)]) for i in range(0, n, batch_size))
    result = compare(model.float(), sessions, batches)
    result.update(passed=1 - result["agreement"] <= MAX_DISAGREEMENT, checkpoint=run,
                  **{("onnx" if name == "onnx" else "onnx_int8"): f for name, f in files.items()})
    write_json(parity_path(path), {"input": spec, "parity": result})
    return result
