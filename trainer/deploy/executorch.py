"""ExecuTorch, the runtime an iOS or Android app embeds: the model through torch.export and the XNNPACK delegate into
a .pte program (its input spec as a method of the program), int8 through PyTorch's PT2E static quantisation for
XNNPACK, and the program run by ExecuTorch's own Python runtime."""
from __future__ import annotations

import io
import json
import logging
import os
import sys
from contextlib import contextmanager, redirect_stderr
from typing import Any, Iterator, Optional

import numpy as np
import torch

from ..errors import UsageError, first_line
from ..models import explicit_attention
from ..run_files import atomic_write
from .formats import Calibration, ExportFormat, Runner

PTE_FILE = "model.pte"
MAX_BATCH = 64  # the program takes batches of 1 to this many images
SPEC_METHOD = "input_spec"  # program.load_method("input_spec").execute([]) -> [the spec as JSON]


@contextmanager
def _tracer_notices_muted() -> Iterator[None]:
    """torch.export's warnings about the code it fails on, and the partial graph it prints: the error that follows says
    it in one line."""
    loggers = [logging.getLogger(n) for n in ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(model: torch.nn.Module, size: int) -> torch.export.ExportedProgram:
    """torch.export with the batch dimension free (1 to MAX_BATCH); UsageError naming what did not trace."""
    example = (torch.zeros(2, 3, size, size),)  # not 1: torch.export would fix a dimension of size 1
    try:
        # XNNPACK has no fused attention, and the decomposition of torch's SDPA leaves mask operators it cannot
        # take, which cut the delegate into pieces.
        with explicit_attention(model), _tracer_notices_muted():
            return torch.export.export(model, example,
                                       dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},))
    except Exception as err:
        where = next((line.strip() for line in str(err).splitlines() if ", code: " in line), "")
        where = f" at {where}" if where else ""
        raise UsageError(f"the model cannot be traced by torch.export for ExecuTorch ({type(err).__name__}: "
                         f"{first_line(err, 300)}{where}): export it with --format onnx, or make its forward "
                         "traceable") from None


def _lower(program: torch.export.ExportedProgram, spec: dict[str, Any]) -> bytes:
    """The XNNPACK-delegated ExecuTorch program, the spec inside it; UsageError naming an operator it refuses."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           constant_methods={SPEC_METHOD: json.dumps(spec)})
        return bytes(edge.to_executorch().buffer)
    except Exception as err:
        raise UsageError(f"ExecuTorch cannot lower the model ({type(err).__name__}: {first_line(err, 300)}): export it "
                         "with --format onnx") from None


def _write_bytes(path: str, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def quantized(model: torch.nn.Module, size: int, calibration: Calibration) -> torch.export.ExportedProgram:
    """PT2E static int8 for XNNPACK (symmetric, weights per output channel), observers calibrated on the batches."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = _export(model, size).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration():
            for i in range(0, len(batch), MAX_BATCH):
                prepared(batch[i:i + MAX_BATCH])
    return _export(convert_pt2e(prepared), size)


@contextmanager
def _runtime_notices_muted() -> Iterator[None]:
    """ExecuTorch's C++ runtime logs its CPU probing and threadpool resets straight to the stderr file (not through
    Python): kept off the user's terminal while it starts. Its errors still reach Python as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def set_threads(threads: Optional[int]) -> None:
    """The size of ExecuTorch's CPU threadpool (XNNPACK's threads); one pool per process."""
    if threads:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        with _runtime_notices_muted():
            _unsafe_reset_threadpool(threads)


def load_program(path: str) -> Any:
    """A .pte program through ExecuTorch's runtime; UsageError where the file is not one."""
    from executorch.runtime import Runtime

    try:
        with _runtime_notices_muted():
            return Runtime.get().load_program(path)
    except Exception as err:
        raise UsageError(f"{path} is not an ExecuTorch program ({first_line(err, 300)}): export it again with "
                         "python -m trainer.export --format executorch") from None


def stored_spec(path: str) -> dict[str, Any]:
    """The input spec inside a .pte file."""
    return json.loads(load_program(path).load_method(SPEC_METHOD).execute([])[0])


class ExecuTorchFormat(ExportFormat):
    """`--format executorch`: model.pte (XNNPACK) for ExecuTorch on a phone's CPU, model.int8.pte with --int8."""

    name, file, extra = "executorch", PTE_FILE, "mobile"
    title = "ExecuTorch"
    packages = ("executorch", "torchao")
    calibrated = True
    int8_how = ("PT2E static quantisation for XNNPACK: int8 weights (symmetric, per output channel) and activations, "
                "observers calibrated on the run's training images")

    def spec_for(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The program's batch dimension is bounded."""
        return {**spec, "max_batch": MAX_BATCH}

    def write(self, model: torch.nn.Module, spec: dict[str, Any], path: str) -> None:
        """torch.export -> XNNPACK -> .pte."""
        _write_bytes(path, _lower(_export(model, spec["shape"][-1]), spec))

    def write_int8(self, model: torch.nn.Module, spec: dict[str, Any], src: str, dst: str,
                   calibration: Calibration) -> dict[str, Any]:
        """PT2E int8, calibrated, lowered as the fp32 program is."""
        _write_bytes(dst, _lower(quantized(model, spec["shape"][-1], calibration), spec))
        return {"int8": self.int8_how}

    def runner(self, path: str, threads: Optional[int] = None) -> Optional[Runner]:
        """The program's forward in ExecuTorch's runtime, in chunks of at most MAX_BATCH images."""
        set_threads(threads)
        program = load_program(path)
        with _runtime_notices_muted():  # XNNPACK probes the CPU as the method loads
            method = program.load_method("forward")

        def run(x: np.ndarray) -> np.ndarray:
            chunks = [method.execute([torch.from_numpy(np.ascontiguousarray(x[i:i + MAX_BATCH]))])[0].numpy()
                      for i in range(0, len(x), MAX_BATCH)]
            return np.concatenate(chunks)

        return run


EXECUTORCH = ExecuTorchFormat()
