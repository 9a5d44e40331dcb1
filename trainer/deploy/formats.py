"""What an export format is to the exporter (its file, its extra, how it writes, quantises and runs a model), and what
every exported file carries beside it: the input spec and the parity JSON."""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from ..data.augment import View
from ..errors import UsageError

MAX_DISAGREEMENT = 0.005
INPUT, OUTPUT = "pixel_values", "logits"  # the names Hugging Face's ONNX tools (optimum) give an image classifier
Runner = Callable[[np.ndarray], np.ndarray]  # normalised float images [N, 3, S, S] -> logits (or log-probabilities)
Calibration = Callable[[], Iterable[torch.Tensor]]  # batches of normalised training images, made only when needed


def parity_path(path: str) -> str:
    """The JSON beside an exported file: its input spec and parity figures."""
    return path + ".json"


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


class ExportFormat:
    """One runtime's file: `python -m trainer.export --format NAME` writes FILE (and FILE's int8 copy) into the run
    folder through these methods; the parity check runs what `runner` returns on the run's eval images."""

    name = ""  # the --format value, and the parity JSON's key for the file (top1_NAME)
    title = ""  # the runtime in words
    file = ""  # its name in the run folder
    is_folder = False  # a Core ML .mlpackage is a folder
    log_probs = False  # the runner answers log-probabilities (a classifier), not logits
    calibrated = False  # --int8 needs training images, and quantises the model (not the fp32 file)
    int8_how = ""  # what --int8 does, in words (the parity JSON's `int8`)
    extra = ""  # the setup.cfg extra with its packages
    packages: tuple[str, ...] = ()  # module names the format needs

    def require(self) -> None:
        """One line naming what to install when a package of the format's extra is missing."""
        for module in self.packages:
            try:
                __import__(module)
            except ImportError:
                raise UsageError(f"{self.title} export needs {module}, which is not installed: pip install "
                                 f"'vit-trainer[{self.extra}]' ({', '.join(self.packages)})") from None

    def int8_path(self, path: str) -> str:
        """Where the int8 copy of a file goes (model.onnx -> model.int8.onnx)."""
        stem, ext = os.path.splitext(path)
        return f"{stem}.int8{ext}" if ext else path + ".int8"

    def spec_for(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The input spec as this format's file takes its input."""
        return spec

    def write(self, model: torch.nn.Module, spec: dict[str, Any], path: str) -> None:
        """The model as this format's file at path, the spec inside it where the format has room; atomic."""
        raise NotImplementedError

    def write_int8(self, model: torch.nn.Module, spec: dict[str, Any], src: str, dst: str,
                   calibration: Calibration) -> dict[str, Any]:
        """The int8 copy at dst (from the model, or from the fp32 file at src); what the parity JSON says of it."""
        raise NotImplementedError

    def runner(self, path: str, threads: Optional[int] = None) -> Optional[Runner]:
        """The file loaded in its own runtime on this machine; None where the runtime cannot run here."""
        raise NotImplementedError

    def checks(self, path: str, spec: dict[str, Any]) -> dict[str, Any]:
        """What can be checked of the file without running it (a format that runs here needs none)."""
        return {}
