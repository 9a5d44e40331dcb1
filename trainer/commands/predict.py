"""Classify images with a finished run: its own eval transform and class names; a readable table, then JSON as the
last line.

    python -m trainer.predict --run runs/part3 photo.jpg holiday/ --top-k 3
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser, add_run_argument
from ..errors import exit_on_usage_error
from ..escape import terminal_cell


def build_parser() -> OneLineParser:
    """The command line of trainer.predict."""
    p = OneLineParser(prog="python -m trainer.predict", description=__doc__)
    add_run_argument(p)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them (recursive)")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Print a table of each image's top classes, then one JSON line."""
    args = build_parser().parse_args(argv)
    from ..evaluation.images import classify

    predictions = classify(args.run, args.images, args.top_k, args.batch_size)
    width = min(max(len(p.image) for p in predictions), 60)
    print(f"{'image':<{width}}  top classes (probability)")
    for p in predictions:
        print(f"{terminal_cell(p.image):<{width}}  " + "   ".join(f"{terminal_cell(name)} {prob:.1%}"
                                                             for name, _, prob in p.top))
    out = {"run": args.run, "predictions": [
        {"image": p.image, "top": [{"label": name, "index": k, "probability": prob} for name, k, prob in p.top]}
        for p in predictions]}
    print(json.dumps(out), flush=True)
    return out
