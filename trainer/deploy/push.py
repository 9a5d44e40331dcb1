"""A finished run to the Hugging Face Hub, through huggingface_hub: the model, its config, its card and what a reader
of the card needs (summary, log, curves, ONNX files where exported); never the resumable checkpoints or caches."""
from __future__ import annotations

import os
from typing import Optional

from ..errors import UsageError, first_line, human_size
from ..model_card import write_card
from ..run_files import CARD_FILE, CONFIG_FILE, CURVES_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, resolve_run
from ..run_records import RunSummary
from .executorch import EXECUTORCH
from .formats import parity_path
from .onnx import ONNX

PUSHED = (MODEL_FILE, CONFIG_FILE, CARD_FILE, SUMMARY_FILE, METRICS_FILE, CURVES_FILE,
          *(name for fmt in (ONNX, EXECUTORCH) for name in (fmt.file, fmt.int8_path(fmt.file), parity_path(fmt.file))))


def pushed_files(run: str) -> list[tuple[str, int]]:
    """(name, bytes) of what a push uploads from a finished run folder; UsageError where it is not one."""
    weights, _ = resolve_run(run, "--run")
    folder = os.path.dirname(weights)
    if RunSummary.read(folder) is None:
        raise UsageError(f"--run {run} has no {SUMMARY_FILE}: push a finished run (train_cls.py writes it at the end)")
    return [(name, os.path.getsize(os.path.join(folder, name))) for name in PUSHED
            if os.path.isfile(os.path.join(folder, name))]


def check_repo_id(repo_id: str) -> None:
    """UsageError for a name the Hub refuses (USER/NAME or ORG/NAME, letters, digits, - _ .)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UsageError(f"--repo-id {repo_id!r} is not a valid Hub name ({first_line(err, 120)}): pass "
                         "USER/NAME") from None
    if repo_id.count("/") != 1:
        raise UsageError(f"--repo-id {repo_id!r} names no owner: pass USER/NAME (or ORG/NAME)")


def push_run(run: str, repo_id: str, private: bool = False, revision: Optional[str] = None,
             dry_run: bool = False) -> dict[str, object]:
    """Upload the run's files (rewriting its card with the repo's name first); dry_run: only say what would go."""
    check_repo_id(repo_id)
    files = pushed_files(run)
    folder = os.path.dirname(resolve_run(run, "--run")[0])
    out: dict[str, object] = {"repo_id": repo_id, "revision": revision, "private": private, "dry_run": dry_run,
                              "files": {name: size for name, size in files},
                              "total": human_size(sum(size for _, size in files))}
    if dry_run:
        return out
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise UsageError("no Hugging Face token: run `hf auth login` (or set HF_TOKEN), then push again")
    api = HfApi()
    write_card(folder, repo_id)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, revision=revision,
                                   allow_patterns=[name for name, _ in files],
                                   commit_message=f"vit-trainer: {os.path.basename(os.path.normpath(folder))}")
    except Exception as err:  # the network, the token's rights, the Hub's answer: one line, not a traceback
        raise UsageError(f"the upload to {repo_id} failed ({type(err).__name__}: {first_line(err, 160)}): "
                         "check the network and that your token may write there") from None
    return {**out, "url": str(url), "commit": getattr(commit, "oid", None)}
