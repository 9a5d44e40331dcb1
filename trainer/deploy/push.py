"""A finished run to the Hugging Face Hub, through huggingface_hub: the model, its config, its card and what a reader
of the card needs (summary, log, curves, ONNX files where exported); never the resumable checkpoints or caches.
What is published names no local path, and nothing outside the run folder goes with it."""
from __future__ import annotations

import json
import os
import stat
from typing import Optional

from ..errors import UsageError, first_line, human_size
from ..model_card import model_card, public_record, write_card
from ..run_files import CARD_FILE, CONFIG_FILE, CURVES_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, resolve_run
from ..run_records import RunConfig, RunSummary
from .executorch import EXECUTORCH
from .formats import parity_path
from .onnx import ONNX

PUSHED = (MODEL_FILE, CONFIG_FILE, CARD_FILE, SUMMARY_FILE, METRICS_FILE, CURVES_FILE,
          *(name for fmt in (ONNX, EXECUTORCH) for name in (fmt.file, fmt.int8_path(fmt.file), parity_path(fmt.file))))


# Written fresh for the upload, from the run's records with local paths left out: never the local bytes.
PUBLISHED_JSON = (CONFIG_FILE, SUMMARY_FILE)


def pushed_files(run: str) -> tuple[str, dict[str, int], dict[str, str]]:
    """The run folder, (name, bytes) of the files of it a push uploads as they are, and the ones it leaves out with
    why (a link, a path leading outside the folder, not a regular file); UsageError where it is no finished run."""
    weights, _ = resolve_run(run, "--run")
    folder = os.path.dirname(weights)
    if RunSummary.read(folder) is None:
        raise UsageError(f"--run {run} has no {SUMMARY_FILE}: push a finished run (train_cls.py writes it at the end)")
    inside = os.path.realpath(folder)
    files: dict[str, int] = {}
    left_out: dict[str, str] = {}
    for name in PUSHED:
        path = os.path.join(folder, name)
        if name == CARD_FILE or not os.path.lexists(path):
            continue
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            left_out[name] = f"a symbolic link to {os.readlink(path)} (a push uploads the run's own files only)"
        elif not stat.S_ISREG(st.st_mode):
            left_out[name] = "not a regular file"
        elif os.path.commonpath([inside, os.path.realpath(path)]) != inside:
            left_out[name] = "its real path is outside the run folder"
        else:
            files[name] = st.st_size
    return folder, files, left_out


def published_bytes(folder: str, repo_id: str) -> dict[str, bytes]:
    """The files a push writes for the Hub rather than copying: the card for repo_id, and config.json and
    summary.json with every local path cut to its last part."""
    config = RunConfig.read(os.path.join(folder, CONFIG_FILE), "--run")
    summary = RunSummary.read(folder)
    assert summary is not None, f"{folder} has no {SUMMARY_FILE}"
    out = {CARD_FILE: str(model_card(config, summary, folder, repo_id)).encode()}
    for name in PUBLISHED_JSON:
        with open(os.path.join(folder, name)) as f:
            out[name] = (json.dumps(public_record(json.load(f)), indent=2) + "\n").encode()
    return out


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
    """Upload the run's files in one commit (its card and records written for the Hub, with no local path); the
    local card is rewritten with the repo's name only once the upload has landed. dry_run: only say what would go."""
    check_repo_id(repo_id)
    folder, files, left_out = pushed_files(run)
    written = published_bytes(folder, repo_id)
    sizes = {**files, **{name: len(data) for name, data in written.items()}}
    sizes = {name: sizes[name] for name in PUSHED if name in sizes}
    out: dict[str, object] = {"repo_id": repo_id, "revision": revision, "private": private, "dry_run": dry_run,
                              "files": sizes, "left_out": left_out, "total": human_size(sum(sizes.values()))}
    if dry_run:
        return out
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    if get_token() is None:
        raise UsageError("no Hugging Face token: run `hf auth login` (or set HF_TOKEN), then push again")
    api = HfApi()
    operations = [CommitOperationAdd(name, written[name] if name in written else os.path.join(folder, name))
                  for name in sizes]
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id, operations, revision=revision,
                                   commit_message=f"vit-trainer: {os.path.basename(os.path.normpath(folder))}")
    except Exception as err:  # the network, the token's rights, the Hub's answer: one line, not a traceback
        raise UsageError(f"the upload to {repo_id} failed ({type(err).__name__}: {first_line(err, 160)}): "
                         "check the network and that your token may write there") from None
    write_card(folder, repo_id)
    return {**out, "url": str(url), "commit": getattr(commit, "oid", None)}
