"""The one training loop: epochs -> micro-batches -> optimizer step -> log / eval / checkpoint when due.
It trains a Task (classification, distillation, ...) and knows nothing of what the task computes."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional, cast

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.plan import steps_per_epoch
from ..errors import Preempted, UsageError, first_line
from ..evaluation.inference import EvalResult, evaluate_split
from ..evaluation.per_class import per_class_report
from ..models import hub_entries
from ..recipes import RECIPES, recipe_flags
from ..run_files import EMA_FILE, EVAL_FILE, RUN_FILES
from ..run_records import RunConfig, RunSummary
from .batches import EpochBatches, MicroStep
from .checkpoints import load_checkpoint, save_checkpoint
from .ema import ModelEmaV3, build_ema, update_ema
from .meters import Meter
from .optim import build_optimizer
from .preemption import StopSignal
from .run_log import RunLog
from .run_output import write_extras, write_run_files
from .setup import Setup
from .state import LoopState
from .tasks import StepOutput, Task


EpochHook = Callable[[int, dict[str, float]], None]  # (epochs done, {"eval_top1", "eval_loss"})

@dataclass
class Training:
    """What the loop works with: the setup, its task, the prepared model and optimizer, the state, the log."""

    setup: Setup
    task: Task
    model: torch.nn.Module  # as prepared by accelerate (DDP, FSDP, compiled): train and evaluate through it
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    state: LoopState
    log: RunLog
    num_params: int  # counted before accelerate wraps (and, under FSDP, shards) the model
    ema: Optional[ModelEmaV3] = None  # --model-ema's average of the weights
    last_eval: Optional[EvalResult] = None
    last_ema_eval: Optional[EvalResult] = None
    saved: tuple[int, str] = (-1, "")  # (step, folder) of the newest checkpoint saved
    on_epoch: Optional[EpochHook] = None  # the caller's, after each epoch's evaluation (a sweep's pruner)



def _recipe_line(cfg: TrainConfig) -> str:
    """What --recipe set in this run, and which of its values a flag replaced."""
    assert cfg.recipe is not None
    r = RECIPES[cfg.recipe]
    replaced = [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k, v in r.values.items() if getattr(cfg, k) != v]
    return (f"recipe {cfg.recipe}, {r.source}: {recipe_flags(cfg.recipe)}"
            + (f"; replaced here: {', '.join(replaced)}" if replaced else "") + f"; not set: {r.leaves}")

def fit(setup: Setup, task: Task, stop: Optional[StopSignal] = None,
        on_epoch: Optional[EpochHook] = None) -> dict[str, Any]:
    """Train the task's model on setup.data; write the run files; return summary.json's content.
    SIGTERM / SIGINT end it after the current optimizer step with a checkpoint (Preempted); after the last step they
    wait for the final files. `stop`: the caller's, when it covers more of the run (trainer.api.train's does).
    on_epoch(epoch, eval figures): called on every process after each epoch's evaluation, once its checkpoint (if
    due) is saved; an exception it raises ends the run there."""
    if stop is None:
        with StopSignal() as own:
            return fit(setup, task, own, on_epoch)
    stop.watch(setup.accelerator)
    t = start(setup, task)
    t.on_epoch = on_epoch
    cfg, state = setup.cfg, t.state
    t.model.train()
    for epoch in range(state.epoch, cfg.epochs):
        batches = EpochBatches(setup.data.train, setup.view, cfg, setup.accelerator, epoch, len(setup.data.label_names))
        if state.micro == 0:
            state.new_epoch()
        bar = tqdm(total=len(batches), initial=state.micro, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (setup.accelerator.is_main_process and cfg.progress), dynamic_ncols=True)
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
            if end_of_epoch and t.on_epoch is not None and t.last_eval is not None:
                t.on_epoch(state.epoch, {"eval_top1": t.last_eval.top1, "eval_loss": t.last_eval.loss})
            if stop.due():
                bar.close()
                raise stopped(t, stop.received or "a signal")
        state.clock.stop()
        bar.close()
    stop.finishing()
    state.check_finite(cfg.output_dir)
    if t.last_eval is None:  # resumed from the very last checkpoint: nothing left to train, evaluate once
        t.last_eval = evaluate_now(t, keep_preds=True)
        t.last_ema_eval = evaluate_now(t, model=t.ema.module) if t.ema is not None else None
    return finish(t)


def start(setup: Setup, task: Task) -> Training:
    """Prepare model and optimizer, restore a checkpoint if asked, open the log."""
    cfg, acc = setup.cfg, setup.accelerator
    num_params = sum(v.numel() for v in task.saved_weights(dict(task.model.named_parameters())).values())
    model = cast(torch.nn.Module, torch.compile(task.model)) if cfg.compile else task.model
    n_steps = steps_per_epoch(len(setup.data.train), cfg, acc.num_processes)
    optimizer, scheduler = build_optimizer(model, cfg, n_steps, acc.device)
    ema = build_ema(task.model, cfg, acc, n_steps * cfg.epochs)  # from the starting weights, before any wrapping
    model, optimizer = acc.prepare(model, optimizer)
    state = LoopState(Meter(acc.device, task.loss_parts), resume_key=task.resume_key())
    if setup.resume_checkpoint:
        saved = load_checkpoint(acc, setup.resume_checkpoint, ema)
        state.load_state_dict(saved, acc.process_index)
        try:
            scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise UsageError("--resume-from: the checkpoint's learning-rate schedule does not fit this run (written "
                             "by another version of the trainer): start a new run") from None
        if state.resume_key != task.resume_key():
            raise UsageError("--resume-from: the teacher or the training images differ from the checkpoint's "
                             "(task key mismatch): resume with the same --teacher and data arguments")
    if acc.log_with:
        try:
            acc.init_trackers("vit-trainer", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                     for k, v in cfg.to_dict().items()})
        except Exception as err:  # a tracker's own set-up: a server, an account, a backend
            raise UsageError(f"--report-to {cfg.report_to} could not start ({type(err).__name__}: "
                             f"{first_line(err, 160)}): set the tracker up (its docs) "
                             "or pass --report-to none") from None
    os.makedirs(cfg.output_dir, exist_ok=True)
    log = RunLog(acc, cfg.output_dir, append=bool(setup.resume_checkpoint))
    if setup.resume_checkpoint:
        log.truncate_after(state.step)
        log.print(f"resuming from {setup.resume_checkpoint} (epoch {state.epoch + 1}, step {state.step})")
    log.print(f"model {cfg.model}: {num_params / 1e6:.2f}M params, {setup.head_note}; "
              f"{len(setup.data.train)} train / {len(setup.data.eval)} eval images, "
              f"{acc.num_processes} process(es) on {acc.device.type}, mixed precision {acc.mixed_precision}")
    if cfg.recipe:
        log.print(_recipe_line(cfg))
    log.print(setup.data_note)
    if setup.data.eval_note:
        log.print(setup.data.eval_note)
    if not setup.resume_checkpoint:
        task.announce(log)
    return Training(setup, task, model, optimizer, scheduler, state, log, num_params, ema)


def forward_backward(t: Training, micro: MicroStep) -> StepOutput:
    """The task's forward and loss for one micro-batch, and its backward (synchronised on the group's last)."""
    acc = t.setup.accelerator
    with nullcontext() if micro.sync else acc.no_sync(t.model):
        out = t.task.forward(t.model, micro.batch)
        acc.backward(out.loss / micro.group)
    return out


def optimizer_step(t: Training) -> None:
    """Clip, step, advance the schedule."""
    if t.setup.cfg.clip_grad:
        t.setup.accelerator.clip_grad_norm_(t.model.parameters(), t.setup.cfg.clip_grad)
    t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    t.state.step += 1
    update_ema(t.ema, t.model, t.setup.accelerator, t.state.step)


def _every(n: int, step: int) -> bool:
    return bool(n) and step % n == 0


def log_and_evaluate(t: Training, at: float, end_of_epoch: bool, bar: tqdm) -> None:
    """A train line when due (always at an epoch's end), an evaluation when due, the epoch's readable line."""
    cfg, state = t.setup.cfg, t.state
    eval_due = end_of_epoch or _every(cfg.eval_every, state.step)
    if not (eval_due or _every(cfg.log_every, state.step)):
        return
    state.check_finite(cfg.output_dir)
    train = state.meter.read(t.setup.accelerator)
    images_per_s = train.count / max(state.clock.read() - state.epoch_start_s, 1e-9)
    t.log.event("train", at, state.step, loss=train.loss, top1=train.top1,
                **{f"loss_{k}": v for k, v in train.parts.items()}, images_per_s=images_per_s,
                lr=float(t.scheduler.get_last_lr()[0]))
    bar.set_postfix(loss=f"{train.loss:.3f}", top1=f"{train.top1:.3f}")
    if not eval_due:
        return
    # Only the final evaluation keeps its predictions (eval_predictions.safetensors).
    res = evaluate_now(t, keep_preds=end_of_epoch and state.epoch == cfg.epochs)
    state.best_eval_top1 = res.top1 if state.best_eval_top1 is None else max(state.best_eval_top1, res.top1)
    ema = evaluate_now(t, model=t.ema.module) if t.ema is not None else None
    ema_figures = {"ema_loss": ema.loss, "ema_top1": ema.top1} if ema is not None else {}
    t.log.event("eval", at, state.step, loss=res.loss, top1=res.top1, images_per_s=res.images_per_s, **res.agreement,
                **ema_figures)
    t.last_eval, t.last_ema_eval = res, ema
    if end_of_epoch:
        agree = "".join(f" {k} {v:.4f} |" for k, v in res.agreement.items())
        averaged = f" ema loss {ema.loss:.4f} top1 {ema.top1:.4f} |" if ema is not None else ""
        t.log.print(f"epoch {state.epoch}/{cfg.epochs} | step {state.step} | train loss {train.loss:.4f} top1 "
                    f"{train.top1:.4f} | eval loss {res.loss:.4f} top1 {res.top1:.4f} |{agree}{averaged} "
                    f"{rate(images_per_s)} img/s | {state.clock.read():.1f}s")


def rate(per_s: float) -> str:
    """Images per second as a person reads them: 1234, 87.5, 0.27."""
    return f"{per_s:.0f}" if per_s >= 100 else f"{per_s:.3g}"


def evaluate_now(t: Training, keep_preds: bool = False, model: Optional[torch.nn.Module] = None) -> EvalResult:
    """Evaluate through the prepared model (or another: the EMA), off the training clock."""
    cfg = t.setup.cfg
    with t.state.clock.paused():
        return evaluate_split(model or t.model, t.setup.data.eval, t.setup.view, t.setup.accelerator,
                              cfg.eval_batch_size or 2 * cfg.batch_size, t.task.eval_references(), keep_preds)


def checkpoint_due(every: int | str | None, step: int, end_of_epoch: bool) -> bool:
    """--checkpoint-every N|epoch."""
    return end_of_epoch if every == "epoch" else isinstance(every, int) and step % every == 0


def checkpoint(t: Training) -> str:
    """A resumable checkpoint of everything, off the training clock; never one with a non-finite loss."""
    t.state.check_finite(t.setup.cfg.output_dir)
    with t.state.clock.paused():
        state = {**t.state.state_dict(t.setup.accelerator), "scheduler": t.scheduler.state_dict()}
        folder = save_checkpoint(t.setup.accelerator, t.setup.cfg, state, t.ema)
    t.saved = (t.state.step, folder)
    return folder


def stopped(t: Training, signame: str) -> Preempted:
    """The stop every process agreed on: a checkpoint at this step (unless one was just saved), the log kept."""
    folder = t.saved[1] if t.saved[0] == t.state.step else checkpoint(t)
    return Preempted(signame, t.state.step, folder, t.setup.cfg.resume_from == "auto")


def finish(t: Training) -> dict[str, Any]:
    """Write model.safetensors, config.json, summary.json (and the final eval predictions); close the trackers."""
    setup, task, state, acc, cfg = t.setup, t.task, t.state, t.setup.accelerator, t.setup.cfg
    assert t.last_eval is not None
    final_train, final_eval = state.meter.read(acc), t.last_eval
    weights = task.saved_weights(acc.get_state_dict(t.model))  # every process joins: under FSDP this gathers shards
    train_time = state.clock.read()
    summary = RunSummary(
        model=cfg.model, pretrained=bool(cfg.pretrained or cfg.pretrained_file),
        init=f"file:{cfg.pretrained_file}" if cfg.pretrained_file else ("hub" if cfg.pretrained else "scratch"),
        num_params=t.num_params, epochs=cfg.epochs, steps=state.step, num_train=len(setup.data.train),
        num_eval=len(setup.data.eval), processes=acc.num_processes, device=acc.device.type,
        mixed_precision=str(acc.mixed_precision), train_time_s=round(train_time, 3),
        train_images_per_s=len(setup.data.train) * cfg.epochs / max(train_time, 1e-9),
        best_eval_top1=state.best_eval_top1,
        final={"train_loss": final_train.loss, "train_top1": final_train.top1, "eval_loss": final_eval.loss,
               "eval_top1": final_eval.top1, **{f"train_loss_{k}": v for k, v in final_train.parts.items()},
               **({"ema_loss": t.last_ema_eval.loss, "ema_top1": t.last_ema_eval.top1} if t.last_ema_eval else {})},
        task=task.summary(final_eval))
    if acc.is_main_process and final_eval.preds is not None:
        summary.per_class = per_class_report(final_eval.preds, setup.data.eval.labels, setup.data.label_names)
    # A student's teacher runs eagerly: a compiled model's predictions are not what it would give.
    files = [f for f in RUN_FILES if (f != EVAL_FILE or not cfg.compile) and (f != EMA_FILE or t.ema is not None)]
    crop_mode = "center" if setup.data.eval.squares else "squash"
    config = RunConfig.of_training(cfg, setup.data.label_names, setup.view, task.config_entry(), setup.data.eval.squares,
                                   hub_entries(setup.model, setup.view, cfg.model_kwargs, crop_mode))
    ema_weights = task.saved_weights(t.ema.module.state_dict()) if t.ema is not None else None
    write_run_files(cfg.output_dir, weights, config, summary, final_eval.preds if EVAL_FILE in files else None,
                    setup.data, setup.view, acc, ema_weights)
    if acc.is_main_process:
        files += write_extras(cfg.output_dir, cfg.kd_type if cfg.teacher else None, config, summary)
    acc.wait_for_everyone()
    for tracker in acc.trackers:  # the process group stays: the entry point closes it (end_processes)
        tracker.finish()
    t.log.print(f"done: eval top1 {final_eval.top1:.4f} (best {state.best_eval_top1:.4f}) in {train_time:.1f}s; "
                f"wrote {cfg.output_dir}/{{{','.join(files)}}}")
    return summary.to_json()
