"""The one training loop: epochs -> micro-batches -> optimizer step -> log / eval / checkpoint when due.
It trains a Task (classification, distillation, ...) and knows nothing of what the task computes."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Optional, cast

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from .batches import EpochBatches, MicroStep, steps_per_epoch
from .errors import Preempted, UsageError
from .inference import EvalResult, eval_key, evaluate, per_class_report, save_eval_predictions
from .loop_state import LoopState
from .metrics import Meter, RunLog
from .optim import build_optimizer
from .preemption import StopSignal
from .resume import load_checkpoint, save_checkpoint
from .run import Run
from .run_folder import (CONFIG_FILE, EVAL_FILE, MODEL_FILE, RUN_FILES, SUMMARY_FILE, file_digest, run_config,
                         save_state_dict, write_json)
from .tasks import StepOutput, Task


@dataclass
class Training:
    """What the loop works with: the run, its task, the prepared model and optimizer, the state, the log."""

    run: Run
    task: Task
    model: torch.nn.Module  # as prepared by accelerate (DDP, FSDP, compiled): train and evaluate through it
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    state: LoopState
    log: RunLog
    num_params: int  # counted before accelerate wraps (and, under FSDP, shards) the model
    last_eval: Optional[EvalResult] = None
    saved: tuple[int, str] = (-1, "")  # (step, folder) of the newest checkpoint saved


def fit(run: Run, task: Task) -> dict[str, Any]:
    """Train run.model with the task on run.data; write the run files; return summary.json's content.
    SIGTERM / SIGINT end it after the current optimizer step with a checkpoint (Preempted)."""
    t = start(run, task)
    cfg, state = run.cfg, t.state
    t.model.train()
    with StopSignal(run.accelerator) as stop:
        for epoch in range(state.epoch, cfg.epochs):
            batches = EpochBatches(run.data.train, run.view, cfg, run.accelerator, epoch)
            if state.micro == 0:
                state.new_epoch()
            bar = tqdm(total=len(batches), initial=state.micro, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (run.accelerator.is_main_process and cfg.progress), dynamic_ncols=True)
            state.clock.start()
            for micro in batches.starting_at(state.micro):
                out = forward_backward(t, micro)
                state.record(out.loss, out.logits, micro.batch.labels, out.parts)
                state.micro = micro.index + 1
                bar.update(1)
                if not micro.sync:
                    continue
                optimizer_step(t)
                end_of_epoch = micro.index == micro.count - 1
                if end_of_epoch:
                    state.epoch, state.micro = epoch + 1, 0
                log_and_evaluate(t, epoch + (micro.index + 1) / micro.count, end_of_epoch, bar)
                if checkpoint_due(cfg.checkpoint_every, state.step, end_of_epoch):
                    checkpoint(t)
                if stop.due():
                    bar.close()
                    raise stopped(t, stop.received or "a signal")
            state.clock.stop()
            bar.close()
    state.check_finite(cfg.output_dir)
    if t.last_eval is None:  # resumed from the very last checkpoint: nothing left to train, evaluate once
        t.last_eval = run_eval(t, keep_preds=True)
    return finish(t)


def start(run: Run, task: Task) -> Training:
    """Prepare model and optimizer, restore a checkpoint if asked, open the log."""
    cfg, acc = run.cfg, run.accelerator
    num_params = sum(v.numel() for v in task.saved_weights(dict(run.model.named_parameters())).values())
    model = cast(torch.nn.Module, torch.compile(run.model)) if cfg.compile else run.model
    n_steps = steps_per_epoch(len(run.data.train), cfg, acc.num_processes)
    optimizer, scheduler = build_optimizer(model, cfg, n_steps, acc.device)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    state = LoopState(Meter(acc.device, task.loss_parts), task_key=task.resume_key())
    if run.resume_folder:
        state.load_state_dict(load_checkpoint(acc, run.resume_folder), acc.process_index)
        if state.task_key != task.resume_key():
            raise UsageError("--resume-from: the teacher or the training images differ from the checkpoint's "
                             "(task key mismatch): resume with the same --teacher and data arguments")
    os.makedirs(cfg.output_dir, exist_ok=True)
    log = RunLog(acc, cfg.output_dir, append=bool(run.resume_folder))
    if run.resume_folder:
        log.truncate_after(state.step)
        log.print(f"resuming from {run.resume_folder} (epoch {state.epoch + 1}, step {state.step})")
    if cfg.report_to != "none":
        acc.init_trackers("vit-trainer", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                 for k, v in cfg.to_dict().items()})
    log.print(f"model {cfg.model}: {num_params / 1e6:.2f}M params, {run.head_note}; "
              f"{len(run.data.train)} train / {len(run.data.eval)} eval images, "
              f"{acc.num_processes} process(es) on {acc.device.type}, mixed precision {acc.mixed_precision}")
    log.print(run.data_note)
    if not run.resume_folder:
        task.on_start(log)
    return Training(run, task, model, optimizer, scheduler, state, log, num_params)


def forward_backward(t: Training, micro: MicroStep) -> StepOutput:
    """The task's forward and loss for one micro-batch, and its backward (synchronised on the group's last)."""
    acc = t.run.accelerator
    with nullcontext() if micro.sync else acc.no_sync(t.model):
        out = t.task.forward(t.model, micro.batch)
        acc.backward(out.loss / micro.group)
    return out


def optimizer_step(t: Training) -> None:
    """Clip, step, advance the schedule."""
    if t.run.cfg.clip_grad:
        t.run.accelerator.clip_grad_norm_(t.model.parameters(), t.run.cfg.clip_grad)
    t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    t.state.step += 1


def _every(n: int, step: int) -> bool:
    return bool(n) and step % n == 0


def log_and_evaluate(t: Training, at: float, end_of_epoch: bool, bar: tqdm) -> None:
    """A train line when due (always at an epoch's end), an evaluation when due, the epoch's readable line."""
    cfg, state = t.run.cfg, t.state
    eval_due = end_of_epoch or _every(cfg.eval_every, state.step)
    if not (eval_due or _every(cfg.log_every, state.step)):
        return
    state.check_finite(cfg.output_dir)
    train = state.meter.read(t.run.accelerator)
    images_per_s = train.count / max(state.clock.read() - state.epoch_start_s, 1e-9)
    t.log.event("train", at, state.step, loss=train.loss, top1=train.top1,
                **{f"loss_{k}": v for k, v in train.parts.items()}, images_per_s=images_per_s,
                lr=float(t.scheduler.get_last_lr()[0]))
    bar.set_postfix(loss=f"{train.loss:.3f}", top1=f"{train.top1:.3f}")
    if not eval_due:
        return
    # Only the final evaluation keeps its predictions (eval_predictions.safetensors).
    res = run_eval(t, keep_preds=end_of_epoch and state.epoch == cfg.epochs)
    state.best_eval_top1 = res.top1 if state.best_eval_top1 is None else max(state.best_eval_top1, res.top1)
    t.log.event("eval", at, state.step, loss=res.loss, top1=res.top1, images_per_s=res.images_per_s, **res.agreement)
    t.last_eval = res
    if end_of_epoch:
        agree = "".join(f" {k} {v:.4f} |" for k, v in res.agreement.items())
        t.log.print(f"epoch {state.epoch}/{cfg.epochs} | step {state.step} | train loss {train.loss:.4f} top1 "
                    f"{train.top1:.4f} | eval loss {res.loss:.4f} top1 {res.top1:.4f} |{agree} "
                    f"{images_per_s:.0f} img/s | {state.clock.read():.1f}s")


def run_eval(t: Training, keep_preds: bool = False) -> EvalResult:
    """Evaluate through the prepared model, off the training clock."""
    cfg = t.run.cfg
    with t.state.clock.paused():
        return evaluate(t.model, t.run.data.eval, t.run.view, t.run.accelerator,
                        cfg.eval_batch_size or 2 * cfg.batch_size, t.task.eval_references(), keep_preds)


def checkpoint_due(every: int | str | None, step: int, end_of_epoch: bool) -> bool:
    """--checkpoint-every N|epoch."""
    return end_of_epoch if every == "epoch" else isinstance(every, int) and step % every == 0


def checkpoint(t: Training) -> str:
    """A resumable checkpoint of everything, off the training clock; never one with a non-finite loss."""
    t.state.check_finite(t.run.cfg.output_dir)
    with t.state.clock.paused():
        folder = save_checkpoint(t.run.accelerator, t.run.cfg, t.state.state_dict(t.run.accelerator))
    t.saved = (t.state.step, folder)
    return folder


def stopped(t: Training, signame: str) -> Preempted:
    """The stop every process agreed on: a checkpoint at this step (unless one was just saved), the log kept."""
    folder = t.saved[1] if t.saved[0] == t.state.step else checkpoint(t)
    return Preempted(signame, t.state.step, folder)


def finish(t: Training) -> dict[str, Any]:
    """Write model.safetensors, config.json, summary.json (and the final eval predictions); close the trackers."""
    run, task, state, acc, cfg = t.run, t.task, t.state, t.run.accelerator, t.run.cfg
    assert t.last_eval is not None
    final_train, final_eval = state.meter.read(acc), t.last_eval
    weights = task.saved_weights(acc.get_state_dict(t.model))  # every process joins: under FSDP this gathers shards
    train_time = state.clock.read()
    summary = {
        "model": cfg.model, "pretrained": bool(cfg.pretrained or cfg.pretrained_file),
        "init": f"file:{cfg.pretrained_file}" if cfg.pretrained_file else ("hub" if cfg.pretrained else "scratch"),
        "num_params": t.num_params, "epochs": cfg.epochs, "steps": state.step,
        "num_train": len(run.data.train), "num_eval": len(run.data.eval),
        "processes": acc.num_processes, "device": acc.device.type, "mixed_precision": acc.mixed_precision,
        "train_time_s": round(train_time, 3),
        "train_images_per_s": len(run.data.train) * cfg.epochs / max(train_time, 1e-9),
        "best_eval_top1": state.best_eval_top1,
        "final": {"train_loss": final_train.loss, "train_top1": final_train.top1, "eval_loss": final_eval.loss,
                  "eval_top1": final_eval.top1, **{f"train_loss_{k}": v for k, v in final_train.parts.items()}},
        **task.summary(final_eval)}
    if acc.is_main_process and final_eval.preds is not None:
        summary["per_class"] = per_class_report(final_eval.preds, run.data.eval.labels, run.data.label_names)
    # A student's teacher runs eagerly: a compiled model's predictions are not what it would give.
    files = [f for f in RUN_FILES if f != EVAL_FILE or not cfg.compile]
    if acc.is_main_process:
        save_state_dict(weights, os.path.join(cfg.output_dir, MODEL_FILE))
        write_json(os.path.join(cfg.output_dir, CONFIG_FILE),
                   run_config(cfg, run.data.label_names, run.view, task.config_entry()))
        write_json(os.path.join(cfg.output_dir, SUMMARY_FILE), summary)
        if EVAL_FILE in files and final_eval.preds is not None:
            key = eval_key(file_digest(os.path.join(cfg.output_dir, MODEL_FILE)), run.data.eval.key, run.view, acc)
            save_eval_predictions(cfg.output_dir, final_eval.preds, final_eval.top1, key)
    acc.wait_for_everyone()
    for tracker in acc.trackers:  # the process group stays: the entry point closes it (end_processes)
        tracker.finish()
    t.log.print(f"done: eval top1 {final_eval.top1:.4f} (best {state.best_eval_top1:.4f}) in {train_time:.1f}s; "
                f"wrote {cfg.output_dir}/{{{','.join(files)}}}")
    return summary
