"""Push a finished run to the Hugging Face Hub: its model, config, card, summary, log, curves and ONNX files, never
its checkpoints. The token comes from the environment (HF_TOKEN) or `hf auth login`.

    python -m trainer.push --run runs/part3 --repo-id USER/vit-tiny-cifar10 --dry-run
    python -m trainer.push --run runs/part3 --repo-id USER/vit-tiny-cifar10 --private
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..argparsing import OneLineParser, add_run_argument
from ..errors import exit_on_usage_error


def build_parser() -> OneLineParser:
    """The command line of trainer.push."""
    p = OneLineParser(prog="python -m trainer.push", description=__doc__)
    add_run_argument(p)
    p.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the model repository (made if absent)")
    p.add_argument("--private", action="store_true", help="make the repository private (when it is made)")
    p.add_argument("--revision", default=None, help="a branch to push to (made if absent; default: main)")
    p.add_argument("--dry-run", action="store_true", help="list the files and their sizes, upload nothing")
    return p


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Push (or list, with --dry-run), a readable line per file, then one JSON line."""
    args = build_parser().parse_args(argv)
    from ..deploy.push import push_run

    out = push_run(args.run, args.repo_id, args.private, args.revision, args.dry_run)
    files: dict = out["files"]  # type: ignore[assignment]
    for name, size in files.items():
        print(f"{'would upload' if args.dry_run else 'uploaded'} {name} ({size:,} bytes)")
    for name, why in out["left_out"].items():  # type: ignore[attr-defined]
        print(f"left out {name} ({why})")
    print(f"{len(files)} files, {out['total']}, {'nothing uploaded (--dry-run)' if args.dry_run else out.get('url')}")
    print(json.dumps(out), flush=True)
    return out
