"""Export a finished run's model to ONNX, checked against PyTorch on the run's eval images; optionally an int8 copy.

    python -m trainer.export --run runs/part3 [--output FILE] [--int8]

The model takes normalised float images [N, 3, S, S] (N free); what it expects (size, mean, std, resize rule,
class names) is stored in the ONNX file's metadata and in FILE.json beside it, with the parity figures.
The last stdout line is JSON: agreement, top1_torch, top1_onnx, max_abs_logit_diff (and top1_int8,
agreement_int8, with --int8). An export that disagrees with PyTorch on more than 0.5% of the images exits with 1.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser, add_run_argument
from ..errors import exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.export."""
    p = OneLineParser(prog="python -m trainer.export", description=__doc__)
    add_run_argument(p)
    p.add_argument("--output", default=None, help="the ONNX file (default: RUN/model.onnx)")
    p.add_argument("--int8", action="store_true", help="also write an int8 copy (default: RUN/model.int8.onnx)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-samples", type=int, default=None, help="check on the first N eval images only")
    p.add_argument("--cache-dir", default=None)
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Export, check, print one JSON line; exit 1 when the export disagrees with PyTorch."""
    args = build_parser().parse_args(argv)
    from ..deploy.onnx import MAX_DISAGREEMENT, export_run

    out = export_run(args.run, args.output, args.int8, args.batch_size, args.cache_dir, args.max_samples)
    int8 = f", int8 {out['top1_int8']:.4f} (agreement {out['agreement_int8']:.4f})" if "onnx_int8" in out else ""
    print(f"exported {args.run} to {out['onnx']}{' and ' + out['onnx_int8'] if 'onnx_int8' in out else ''}: on "
          f"{out['num_samples']} eval images agreement {out['agreement']:.4f}, top1 PyTorch {out['top1_torch']:.4f}, "
          f"ONNX {out['top1_onnx']:.4f}{int8}; input spec and figures in {out['onnx']}.json", flush=True)
    print(json.dumps(out), flush=True)
    if not out["passed"]:
        print(f"export failed: ONNX Runtime disagrees with PyTorch on {1 - out['agreement']:.2%} of "
              f"{out['num_samples']} images (more than {MAX_DISAGREEMENT:.1%})", file=sys.stderr, flush=True)
        sys.exit(1)
    return out
