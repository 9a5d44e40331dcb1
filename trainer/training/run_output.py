"""What a run leaves when it ends: model.safetensors, config.json, summary.json and the final eval predictions,
written by the main process; all of them or none (a failed write removes the ones before it), agreed by every process."""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
from accelerate import Accelerator

from ..data.augment import View
from ..data.loading import DataBundle
from ..distributed import all_succeeded
from ..evaluation.predictions import predictions_digest, save_eval_predictions
from ..errors import first_line, warn
from ..evaluation.curves import Curves, plot_curves
from ..model_card import write_card
from ..run_files import (CARD_FILE, CONFIG_FILE, CURVES_FILE, EMA_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE, WriteFailed,
                         atomic_write, file_digest, read_jsonl, save_state_dict, write_json)
from ..run_records import RunConfig, RunSummary
from .checkpoints import list_checkpoints


def _fix(output_dir: str) -> str:
    found = list_checkpoints(output_dir)
    if found:
        return (f"free space there, then run the same command with --resume-from auto: it continues from {found[-1]} "
                "(the weights trained since are lost)")
    return ("free space there and run the command again: no resumable checkpoint exists (--checkpoint-every keeps "
            "them), so the run starts from the beginning")


def write_run_files(output_dir: str, weights: dict[str, torch.Tensor], config: RunConfig, summary: RunSummary,
                    eval_preds: Optional[torch.Tensor], data: DataBundle, view: View, accelerator: Accelerator,
                    ema_weights: Optional[dict[str, torch.Tensor]] = None) -> None:
    """The finished run's files, each written atomically; WriteFailed (on every process) when any cannot be."""
    error: Optional[WriteFailed] = None
    written: list[str] = []
    if accelerator.is_main_process:
        fix = _fix(output_dir)
        files: list[tuple[str, Callable[[str], None]]] = [(MODEL_FILE, lambda p: save_state_dict(weights, p, fix))]
        if ema_weights is not None:
            files.append((EMA_FILE, lambda p: save_state_dict(ema_weights, p, fix)))
        files += [(CONFIG_FILE, lambda p: write_json(p, config.to_json(), fix)),
                  (SUMMARY_FILE, lambda p: write_json(p, summary.to_json(), fix))]
        try:
            for name, write in files:
                write(os.path.join(output_dir, name))
                written.append(os.path.join(output_dir, name))
            if eval_preds is not None:
                digest = predictions_digest(file_digest(written[0]), data.eval.selection_digest, view, accelerator)
                save_eval_predictions(output_dir, eval_preds, summary.eval_top1, digest, fix)
        except WriteFailed as err:
            error = err
            for path in written:  # a folder with a model but no summary would look like a finished run that is not
                os.remove(path)
    if not all_succeeded(error, accelerator):
        raise error or WriteFailed(f"the main process could not write the run's final files in {output_dir}")


def write_curves(output_dir: str, kd_type: Optional[str]) -> Optional[str]:
    """curves.png from the run's metrics.jsonl (main process); a run is finished without it, so a failure is a line."""
    path = os.path.join(output_dir, CURVES_FILE)
    curves = Curves(os.path.basename(os.path.normpath(output_dir)), read_jsonl(os.path.join(output_dir, METRICS_FILE)),
                    kd_type)

    def draw(tmp: str) -> None:
        plot_curves([curves], tmp, "png")

    try:
        atomic_write(path, draw)
    except Exception as err:  # matplotlib missing, a full disk: the run's own files are written already
        warn(f"{CURVES_FILE} not written ({type(err).__name__}: {first_line(err, 120)})")
        return None
    return path


def write_extras(output_dir: str, kd_type: Optional[str], config: RunConfig, summary: RunSummary) -> list[str]:
    """What a finished run gets beside its files, for people and for the Hub: curves.png, then the model card
    (README.md), which shows the curves. A failure is a line: the run is finished without them."""
    written = [CURVES_FILE] if write_curves(output_dir, kd_type) else []
    try:
        write_card(output_dir, config=config, summary=summary)
        written.append(CARD_FILE)
    except Exception as err:
        warn(f"{CARD_FILE} (the model card) not written ({type(err).__name__}: {first_line(err, 120)})")
    return written
