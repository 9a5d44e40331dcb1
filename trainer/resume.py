"""Resumable checkpoints (OUTPUT_DIR/checkpoints/step-N): accelerate's save_state plus the loop's state, written
atomically; finding one and checking that it belongs to these arguments. A finished run's files are run_folder.py's."""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from accelerate import Accelerator

from .config import TrainConfig
from .errors import UsageError

STATE_FILE = "trainer_state.json"
# Arguments that may change between a run and its resumption: they do not touch the weights or the metrics.
RESUME_FREE_ARGS = ("resume_from", "overwrite", "progress", "checkpoint_every", "keep_checkpoints", "report_to",
                    "cache_dir", "output_dir", "data_on")
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_dir(output_dir: str) -> str:
    """OUTPUT_DIR/checkpoints."""
    return os.path.join(output_dir, "checkpoints")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoints_dir(output_dir)
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(root) if (m := _STEP_DIR.match(name))
             and os.path.isfile(os.path.join(root, name, STATE_FILE))]
    return [os.path.join(root, name) for _, name in sorted(found)]


def save_checkpoint(accelerator: Accelerator, cfg: TrainConfig, state: dict[str, Any]) -> str:
    """Write checkpoints/step-N/ (temporary name, then rename) and keep the newest cfg.keep_checkpoints."""
    root = checkpoints_dir(cfg.output_dir)
    final = os.path.join(root, f"step-{state['step']}")
    tmp = os.path.join(root, f".tmp-step-{state['step']}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(root, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump({**state, "args": _trajectory_args(cfg)}, f)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in list_checkpoints(cfg.output_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(resume_from: str, output_dir: str) -> str:
    """The folder --resume-from names ('latest': the newest in OUTPUT_DIR/checkpoints)."""
    if resume_from == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise UsageError(f"--resume-from latest: no checkpoint in {checkpoints_dir(output_dir)}; "
                             "start the run with --checkpoint-every to make them")
        return found[-1]
    if not os.path.isfile(os.path.join(resume_from, STATE_FILE)):
        raise UsageError(f"--resume-from {resume_from} is not a complete checkpoint folder (no {STATE_FILE}): "
                         "pass OUTPUT_DIR/checkpoints/step-N or 'latest'")
    return resume_from


def _trajectory_args(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_ARGS}


def check_resumable(cfg: TrainConfig) -> str:
    """The checkpoint --resume-from names, checked to come from a run with the same training arguments."""
    folder = find_checkpoint(str(cfg.resume_from), cfg.output_dir)
    with open(os.path.join(folder, STATE_FILE)) as f:
        saved = json.load(f).get("args", {})
    now = json.loads(json.dumps(_trajectory_args(cfg)))  # tuples and lists compare as JSON would
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        first = changed[0]
        raise UsageError(f"--resume-from {folder} was saved by a run with other arguments ({', '.join(changed)}; "
                         f"e.g. {first}: {saved.get(first)!r} then, {now.get(first)!r} now): resume with the same "
                         "arguments, or start a new run")
    return folder


def load_checkpoint(accelerator: Accelerator, cfg: TrainConfig) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; return the loop's position."""
    folder = find_checkpoint(str(cfg.resume_from), cfg.output_dir)
    with open(os.path.join(folder, STATE_FILE)) as f:
        state = json.load(f)
    accelerator.load_state(folder)
    return state
