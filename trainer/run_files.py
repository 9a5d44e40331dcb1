"""The files a finished run leaves in its folder (model.safetensors, config.json, summary.json, metrics.jsonl, ...):
their names, writing them atomically, finding and checking them again. What config.json and summary.json hold is
run_records.py's; resumable training state (checkpoints/step-N) is training/checkpoints.py's."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import UsageError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval_predictions.safetensors"
RUN_FILES = (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE, METRICS_FILE, EVAL_FILE)
FINISHED_FILES = (MODEL_FILE, CONFIG_FILE, SUMMARY_FILE)  # written when a run ends


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) and rename onto path, so a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    """Write indented JSON atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    atomic_write(path, _write)


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str) -> None:
    """Save a plain timm state dict (contiguous CPU tensors) as safetensors, atomically."""
    # torch.compile prefixes keys with _orig_mod.; timm expects the plain names.
    state = {k.removeprefix("_orig_mod."): v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def file_digest(path: str) -> str:
    """sha1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_weight_shapes(path: str, what: str = "checkpoint") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a .safetensors/.pth file; UsageError when it can't be read."""
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path} does not exist: check the path")
    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:
            raise UsageError(f"{what} {path} is not a readable safetensors file ({_short(err)}): "
                             "it may be truncated or corrupt; save or download it again") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"{what} {path} is not a readable PyTorch/safetensors weights file ({_short(err)}): "
                         "pass a .safetensors or .pth state dict") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{what} {path} holds no state dict of tensors: pass a file saved from model.state_dict()")
    return {k.removeprefix("module."): tuple(v.shape) for k, v in obj.items()}


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def resolve_run(path: str, what: str = "checkpoint") -> tuple[str, str]:
    """(model.safetensors, config.json) of a run folder, or of a model file with config.json beside it."""
    weights = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} does not exist: pass a train_cls.py output folder or its {MODEL_FILE}")
    if not os.path.isfile(weights):
        raise UsageError(f"{what} folder {path} has no {MODEL_FILE}: pass a finished train_cls.py output folder")
    if not weights.endswith(".safetensors"):
        raise UsageError(f"{what} {path} is not a safetensors checkpoint: pass a train_cls.py output folder "
                         f"or its {MODEL_FILE}")
    config = os.path.join(os.path.dirname(os.path.abspath(weights)), CONFIG_FILE)
    if not os.path.isfile(config):
        raise UsageError(f"{what} {weights} has no {CONFIG_FILE} beside it: keep the run folder together "
                         "(train_cls.py writes both)")
    return weights, config


def output_dir_in_use(output_dir: str, names: tuple[str, ...] = RUN_FILES) -> Optional[str]:
    """The first of these run files already in output_dir, if any."""
    for name in names:
        if os.path.exists(os.path.join(output_dir, name)):
            return name
    return None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
