"""ONNX: the model through torch.onnx with its input spec in the file's metadata, an int8 copy by ONNX Runtime's
dynamic quantisation, and ONNX Runtime CPU sessions."""
from __future__ import annotations

import json
import logging
import warnings
from typing import Any, Optional

import numpy as np
import torch

from ..run_files import atomic_write
from .formats import INPUT, OUTPUT, Calibration, ExportFormat, Runner

ONNX_FILE = "model.onnx"  # in the run folder, unless --output says otherwise


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


class OnnxFormat(ExportFormat):
    """`--format onnx`: model.onnx for ONNX Runtime (any batch size), model.int8.onnx with --int8."""

    name, file, extra = "onnx", ONNX_FILE, "deploy"
    title = "ONNX"
    packages = ("onnx", "onnxruntime", "onnxscript")
    int8_how = "ONNX Runtime dynamic quantisation: int8 MatMul weights per output channel, activations on the fly"

    def write(self, model: torch.nn.Module, spec: dict[str, Any], path: str) -> None:
        """torch.onnx, spec in the metadata."""
        export_onnx(model, spec, path)

    def write_int8(self, model: torch.nn.Module, spec: dict[str, Any], src: str, dst: str,
                   calibration: Calibration) -> dict[str, Any]:
        """Dynamic quantisation of the fp32 file: no calibration."""
        quantize_int8(src, dst)
        return {"int8": self.int8_how}

    def runner(self, path: str, threads: Optional[int] = None) -> Runner:
        """An ONNX Runtime CPU session (ONNX Runtime runs everywhere)."""
        session = ort_session(path, threads)
        return lambda x: run_session(session, x)


ONNX = OnnxFormat()
