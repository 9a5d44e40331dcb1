"""Test-time throughput, measured the way timm's benchmark.py does; the last stdout line is JSON.

    python -m trainer.benchmark --model vit_tiny_patch16_224 --batch-size 32 --device cpu
    python -m trainer.benchmark --run runs/part3 --device cuda --precision bf16 --compile
    python -m trainer.benchmark --run runs/part3 --runtime onnxruntime --precision int8
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

import torch

from ..argparsing import OneLineParser, parse_kwargs
from ..data.augment import View
from ..deploy.timing import benchmark, benchmark_device
from ..errors import UsageError, exit_on_usage_error
from ..models import create_model, input_view, load_trained


def build_parser() -> OneLineParser:
    """The command line of trainer.benchmark."""
    p = OneLineParser(prog="python -m trainer.benchmark", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a timm model name")
    src.add_argument("--run", "--checkpoint", dest="run", metavar="RUN",
                     help="a finished train_cls.py/train_kd.py run folder (--checkpoint: its older name)")
    p.add_argument("--model-kwargs", nargs="*", default=[], metavar="K=V")
    p.add_argument("--num-classes", type=int, default=10, help="head size for --model")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=None, help="default: the model's own")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: the model exported to ONNX, run by ONNX Runtime on the CPU")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                   help="int8: ONNX Runtime's dynamic quantisation (with --runtime onnxruntime)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations")
    p.add_argument("--iters", type=int, default=20, help="timed iterations")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the batch-1 CPU latency")
    p.add_argument("--dataset", default=None, help="also time the real eval pipeline on this dataset's eval split")
    p.add_argument("--eval-split", default="test")
    return p


def build_model(args: argparse.Namespace) -> tuple[torch.nn.Module, View]:
    """The model to time: a fresh timm model, or a finished run's rebuilt from its folder."""
    if args.img_size is not None and args.img_size < 8:
        raise UsageError(f"--img-size must be at least 8, got {args.img_size}")
    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {args.num_classes}")
    if args.run:
        trained = load_trained(args.run, "--run")
        return trained.model, trained.config.view
    model, _ = create_model(args.model, args.num_classes, img_size=args.img_size,
                            model_kwargs=parse_kwargs(args.model_kwargs))
    return model, input_view(model, args.img_size)


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Measure and print one JSON line."""
    args = build_parser().parse_args(argv)
    device = benchmark_device(args.runtime, args.precision, args.device, args.compile, args.dataset, args.batch_size,
                              args.warmup, args.iters)
    model, view = build_model(args)
    out = benchmark(model, view, device, label=args.model or args.run, runtime=args.runtime, precision=args.precision,
                    batch_size=args.batch_size, channels_last=args.channels_last, compile=args.compile,
                    warmup=args.warmup, iters=args.iters, latency=args.latency, dataset=args.dataset,
                    eval_split=args.eval_split)
    print(json.dumps(out), flush=True)
    return out
