"""Core ML, Apple's runtime: the model through torch.export and coremltools into an ML program (.mlpackage) whose
input is an image (the app hands it camera pixels; the scale and bias of the model's normalisation are the image
input's) and whose output is a class label with its probabilities; int8 as weight quantisation. Core ML runs a model
only on macOS: elsewhere the file is checked without running it."""
from __future__ import annotations

import contextlib
import io
import json
import platform
from typing import Any, Optional

import numpy as np
import torch

from ..errors import UsageError, first_line
from ..run_files import atomic_write_dir
from .formats import Calibration, ExportFormat, Runner

MLPACKAGE = "model.mlpackage"
IMAGE, LABEL = "image", "classLabel"
PROBS = LABEL + "_probs"  # coremltools' name for a classifier's probabilities
NOT_RUN = ("Core ML runs a model only on macOS (coremltools' libcoremlpython): on this machine the program was "
           "converted and its input, outputs, labels, normalisation and metadata checked; no prediction was made")


def image_scaling(mean: list[float], std: list[float]) -> tuple[float, list[float], bool]:
    """(scale, per-channel bias, normalise in the graph): Core ML's image input computes scale * pixel + bias with one
    scale for all channels, which is the model's normalisation where std is one number; otherwise the input gives
    pixel / 255 and the graph subtracts the mean and divides by std."""
    if max(std) - min(std) < 1e-9:
        return 1.0 / (255.0 * std[0]), [-m / std[0] for m in mean], False
    return 1.0 / 255.0, [0.0, 0.0, 0.0], True


class _Classifier(torch.nn.Module):
    """What the image input feeds: (normalisation where the input cannot do it), the model, softmax."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float], normalise: bool):
        super().__init__()
        self.model, self.normalise = model, normalise
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / self.std
        return torch.softmax(self.model(x), dim=-1)


def _consts(path: str) -> tuple[Any, dict[str, Any], list[Any]]:
    """The saved package's spec, its program's constants by name, and the main function's operations."""
    import coremltools as ct

    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    values = {op.outputs[0].name: _value(op.attributes["val"]) for op in ops
              if op.type == "const" and "val" in op.attributes}
    return spec, values, ops


def _value(value: Any) -> Any:
    """An immediate MIL value as Python: a tensor's values as a list, a list of them flattened."""
    immediate = value.immediateValue
    if immediate.WhichOneof("value") == "list":
        return [v for item in immediate.list.values for v in _value(item)]
    kind = immediate.tensor.WhichOneof("value")
    return list(getattr(immediate.tensor, kind).values) if kind is not None else None


def _source(op: Any) -> str:
    """The name of the value an operation's x input reads."""
    args = op.inputs["x"].arguments if "x" in op.inputs else []
    return args[0].name if args else ""


def _arg(op: Any, name: str, values: dict[str, Any]) -> Any:
    """An operation's input by name: a constant's value, or the value written in place."""
    args = op.inputs[name].arguments
    if not args:
        return None
    return values.get(args[0].name) if args[0].name else _value(args[0].value)


class CoreMLFormat(ExportFormat):
    """`--format coreml`: model.mlpackage (an ML program, fp16 compute as the Neural Engine runs it), and
    model.int8.mlpackage with --int8."""

    name, file, extra, is_folder, log_probs = "coreml", MLPACKAGE, "mobile", True, True
    title = "Core ML"
    packages = ("coremltools",)
    int8_how = "coremltools linear_quantize_weights: int8 weights (symmetric, per output channel), fp16 activations"

    def spec_for(self, spec: dict[str, Any]) -> dict[str, Any]:
        """An image in, a label and its probabilities out."""
        scale, bias, normalise = image_scaling(spec["mean"], spec["std"])
        size = spec["shape"][-1]
        return {**spec, "input": IMAGE, "output": LABEL, "probabilities": PROBS, "shape": [1, 3, size, size],
                "dtype": "image (RGB, 8 bits per channel)", "image_scale": scale, "image_bias": bias,
                "normalisation": "in the graph" if normalise else "the image input's scale and bias",
                "preprocess": spec["preprocess"].split("; scale to")[0] + "; the model scales and normalises itself"}

    def write(self, model: torch.nn.Module, spec: dict[str, Any], path: str) -> None:
        """torch.export -> coremltools ML program, labels and spec inside."""
        import coremltools as ct

        size = spec["shape"][-1]
        scale, bias, normalise = image_scaling(spec["mean"], spec["std"])
        wrapped = _Classifier(model.eval(), spec["mean"], spec["std"], normalise).eval()
        try:
            program = torch.export.export(wrapped, (torch.zeros(1, 3, size, size),)).run_decompositions({})
            with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars for each pass
                ml = ct.convert(program, inputs=[ct.ImageType(name=IMAGE, shape=(1, 3, size, size), scale=scale,
                                                          bias=bias, color_layout=ct.colorlayout.RGB)],
                                classifier_config=ct.ClassifierConfig(list(spec["label_names"])),
                                convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
        except UsageError:
            raise
        except Exception as err:
            raise UsageError(f"coremltools cannot convert the model ({type(err).__name__}: {first_line(err, 300)}): export "
                             "it with --format onnx") from None
        ml.short_description = f"{len(spec['label_names'])}-class image classifier exported by vit-trainer"
        ml.user_defined_metadata["input_spec"] = json.dumps(spec)
        atomic_write_dir(path, ml.save)

    def write_int8(self, model: torch.nn.Module, spec: dict[str, Any], src: str, dst: str,
                   calibration: Calibration) -> dict[str, Any]:
        """Weight quantisation of the fp32 package."""
        import coremltools as ct
        import coremltools.optimize.coreml as cto

        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                                   dtype="int8"))
        with contextlib.redirect_stderr(io.StringIO()):
            quantised = cto.linear_quantize_weights(ct.models.MLModel(src, skip_model_load=True), config=config)
        atomic_write_dir(dst, quantised.save)
        return {"int8": self.int8_how}

    def runner(self, path: str, threads: Optional[int] = None) -> Optional[Runner]:
        """On macOS, Core ML's predictions on the images as 8-bit RGB (log-probabilities); elsewhere None."""
        if platform.system() != "Darwin":
            return None
        import coremltools as ct
        from PIL import Image

        ml = ct.models.MLModel(path)
        spec = json.loads(ml.user_defined_metadata["input_spec"])
        mean, std = np.array(spec["mean"]).reshape(3, 1, 1), np.array(spec["std"]).reshape(3, 1, 1)
        labels = spec["label_names"]

        def run(x: np.ndarray) -> np.ndarray:
            out = []
            for image in x:
                pixels = np.clip(np.rint((image * std + mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
                probs = ml.predict({IMAGE: Image.fromarray(pixels)})[PROBS]
                out.append(np.log(np.maximum([probs[name] for name in labels], 1e-30)))
            return np.asarray(out, dtype=np.float32)

        return run

    def checks(self, path: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The saved program read back: an RGB image input of the model's size, a label and probabilities out, the
        run's class names in its classify op, the scale and bias its first ops apply (against the model's
        normalisation on every 8-bit value), the spec in its metadata, and its int8 weights where quantised."""
        from coremltools.proto import FeatureTypes_pb2

        saved, values, ops = _consts(path)
        size = spec["shape"][-1]
        inp = saved.description.input[0]
        image = inp.type.imageType
        outputs = {o.name: o.type.WhichOneof("Type") for o in saved.description.output}
        classify = next((op for op in ops if op.type == "classify"), None)
        labels = _arg(classify, "classes", values) if classify is not None else None
        # The image input's scale and bias are the ops that take the image (a scale of 1 or a bias of 0 has none).
        scale_op = next((op for op in ops if op.type == "mul" and _source(op) == IMAGE), None)
        scaled = scale_op.outputs[0].name if scale_op is not None else IMAGE
        bias_op = next((op for op in ops if op.type == "add" and _source(op) == scaled), None)
        scale = _arg(scale_op, "y", values) if scale_op is not None else [1.0]
        bias = _arg(bias_op, "y", values) if bias_op is not None else [0.0]
        gap = None
        if scale is not None and bias is not None:
            pixels = np.arange(256, dtype=np.float64).reshape(1, -1)
            got = pixels * np.asarray(scale, dtype=np.float64).reshape(-1, 1) + np.asarray(bias).reshape(-1, 1)
            scaling = image_scaling(spec["mean"], spec["std"])
            mean, std = (np.asarray(v).reshape(-1, 1) for v in (spec["mean"], spec["std"]))
            want = (pixels / 255 - mean) / std if not scaling[2] else np.broadcast_to(pixels / 255, (3, 256))
            gap = float(np.abs(got - want).max())
        meta = dict(saved.description.metadata.userDefined)
        result = {
            "input_is_rgb_image": inp.name == IMAGE and inp.type.WhichOneof("Type") == "imageType"
            and image.colorSpace == FeatureTypes_pb2.ImageFeatureType.RGB,
            "input_size": [int(image.height), int(image.width)] == [size, size],
            "outputs": outputs == {LABEL: "stringType", PROBS: "dictionaryType"}
            and saved.description.predictedFeatureName == LABEL,
            "labels": labels == list(spec["label_names"]),
            "normalisation": gap is not None and gap < 1e-4,
            "metadata": json.loads(meta.get("input_spec", "null")) == spec}
        return {"checked": result, "max_abs_input_diff": gap,
                "int8_weight_ops": sum(op.type.startswith("constexpr_") for op in ops)}


COREML = CoreMLFormat()
