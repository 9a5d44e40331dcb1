"""Test-time throughput, measured the way timm's benchmark.py does; a readable line, then JSON as the last line.

    python -m trainer.benchmark --model vit_tiny_patch16_224 --batch-size 32 --device cpu
    python -m trainer.benchmark --run runs/part3 --device cuda --precision bf16 --compile   # a GPU line
    python -m trainer.benchmark --run runs/part3 --runtime onnxruntime --precision int8
    python -m trainer.benchmark --run runs/part3 --runtime executorch --precision int8 --threads 1   # a phone's core
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser, parse_kwargs
from ..errors import UsageError, exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.benchmark."""
    p = OneLineParser(prog="python -m trainer.benchmark", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a timm model name (a fresh model, random weights)")
    src.add_argument("--run", "--checkpoint", dest="run", metavar="RUN",
                     help="a finished train_cls.py/train_kd.py run folder (--checkpoint: its older name)")
    p.add_argument("--model-kwargs", nargs="*", default=[], metavar="K=V", help="timm.create_model keyword arguments")
    p.add_argument("--num-classes", type=int, default=10, help="head size for --model")
    p.add_argument("--batch-size", type=int, default=256, help="images per timed call (halved on out-of-memory)")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's own")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present, else cpu")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "executorch"], default="torch",
                   help="onnxruntime / executorch: the model exported as trainer.export writes it, run on the CPU")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                   help="autocast dtype; int8: the exported file's quantisation (--runtime onnxruntime or executorch)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of every runtime (default: torch's count); 1 to 4 is a phone's budget")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations")
    p.add_argument("--iters", type=int, default=20, help="timed iterations")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the batch-1 CPU latency")
    p.add_argument("--dataset", default=None, help="also time the real eval pipeline on this dataset's eval split")
    p.add_argument("--eval-split", default="test", help="the split --dataset is timed on")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Measure and print a readable line and one JSON line."""
    args = build_parser().parse_args(argv)
    if args.img_size is not None and args.img_size < 8:
        raise UsageError(f"--img-size must be at least 8, got {args.img_size}")
    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {args.num_classes}")
    from ..deploy.timing import benchmark, benchmark_device, model_to_time
    from ..distributed import precision_warning
    from ..errors import warn

    device = benchmark_device(args.runtime, args.precision, args.device, args.compile, args.dataset, args.batch_size,
                              args.warmup, args.iters)
    if (slow := precision_warning(args.precision, device)) is not None:
        warn(slow)
    model, view = model_to_time(args.run, args.model, args.num_classes, args.img_size, parse_kwargs(args.model_kwargs))
    out = benchmark(model, view, device, label=args.model or args.run, runtime=args.runtime, precision=args.precision,
                    batch_size=args.batch_size, channels_last=args.channels_last, compile=args.compile,
                    warmup=args.warmup, iters=args.iters, latency=args.latency, dataset=args.dataset,
                    eval_split=args.eval_split, progress=True, threads=args.threads)
    latency = f"; batch-1 CPU latency {out['cpu_latency_ms_bs1']:.1f} ms" if "cpu_latency_ms_bs1" in out else ""
    print(f"{out['model']} at {out['img_size']} px on {out['device']} ({out['runtime']}, {out['precision']}, "
          f"{out['threads']} threads): "
          f"{out['images_per_s']:.1f} images/s at batch {out['batch_size']} ({out['ms_per_batch']:.1f} ms per "
          f"batch){latency}", flush=True)
    print(json.dumps(out), flush=True)
    return out
