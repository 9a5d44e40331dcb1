"""Export a finished run's model to a runtime's file, checked against PyTorch on the run's eval images; optionally
an int8 copy.

    python -m trainer.export --run runs/part3 [--format onnx|executorch|coreml] [--output FILE] [--int8]

onnx (default): RUN/model.onnx for ONNX Runtime, normalised float images [N, 3, S, S] in (N free); --int8: dynamic
quantisation. executorch: RUN/model.pte for ExecuTorch (XNNPACK) on a phone's CPU, N from 1 to 64; --int8: PT2E
static quantisation calibrated on --calibration-images of the run's training images. coreml: RUN/model.mlpackage, an
RGB image in, a class label and its probabilities out; --int8: int8 weights. What the file expects (size, mean, std,
resize rule, class names) is stored inside it and in FILE.json beside it, with the parity figures.
The last stdout line is JSON: agreement, top1_torch, top1_FORMAT, max_abs_logit_diff (and top1_int8,
agreement_int8, with --int8). An export that disagrees with PyTorch on more than 0.5% of the images exits with 1.
Core ML runs only on macOS: elsewhere the JSON says so (predictions_run false) and what was checked instead.
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
    p.add_argument("--format", default="onnx", choices=["onnx", "executorch", "coreml"],
                   help="onnx (ONNX Runtime), executorch (.pte, XNNPACK), coreml (.mlpackage)")
    p.add_argument("--output", default=None, help="the file (default: RUN/model.onnx, model.pte, model.mlpackage)")
    p.add_argument("--int8", action="store_true", help="also write an int8 copy (RUN/model.int8.onnx, ...)")
    p.add_argument("--calibration-images", type=int, default=256,
                   help="executorch --int8: training images the quantisation is calibrated on")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-samples", type=int, default=None, help="check on the first N eval images only")
    p.add_argument("--cache-dir", default=None)
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Export, check, print one JSON line; exit 1 when the export disagrees with PyTorch."""
    args = build_parser().parse_args(argv)
    from ..deploy.export import export_format, export_run
    from ..deploy.formats import MAX_DISAGREEMENT

    out = export_run(args.run, args.output, args.int8, args.batch_size, args.cache_dir, args.max_samples,
                     args.format, args.calibration_images)
    fmt, name = args.format, export_format(args.format).title
    files = out[fmt] + (f" and {out[fmt + '_int8']}" if f"{fmt}_int8" in out else "")
    if out.get("predictions_run", True):
        int8 = (f", int8 {out['top1_int8']:.4f} (agreement {out['agreement_int8']:.4f})" if f"{fmt}_int8" in out
                else "")
        found = (f"on {out['num_samples']} eval images agreement {out['agreement']:.4f}, top1 PyTorch "
                 f"{out['top1_torch']:.4f}, {name} {out[f'top1_{fmt}']:.4f}{int8}")
    else:
        failed = [k for k, ok in out["checked"].items() if not ok]
        found = (f"not run here ({name} predicts only on macOS); checked {', '.join(out['checked'])}: "
                 + (f"failed {', '.join(failed)}" if failed else "all passed"))
    print(f"exported {args.run} to {files}: {found}; input spec and figures in {out[fmt]}.json", flush=True)
    print(json.dumps(out), flush=True)
    if not out["passed"]:
        why = (f"{name} disagrees with PyTorch on {1 - out['agreement']:.2%} of {out['num_samples']} images (more "
               f"than {MAX_DISAGREEMENT:.1%})" if out.get("predictions_run", True)
               else f"the {name} file failed its checks: {', '.join(k for k, ok in out['checked'].items() if not ok)}")
        print(f"export failed: {why}", file=sys.stderr, flush=True)
        sys.exit(1)
    return out
