"""The one training loop. train_cls.py and train_kd.py both run it; distillation plugs in a loss and a teacher."""
from __future__ import annotations

import contextlib
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .augment import View, augment, plan_epoch, preprocess
from .config import TrainConfig
from .data import DataBundle, SplitData, default_cache_dir, load_data
from .errors import UsageError
from .metrics import Meter, RunLog, sum_dtype
from .models import count_params, create_model, input_view


@dataclass
class Batch:
    """One micro-batch as the objective sees it."""

    images: torch.Tensor  # uint8 [B,3,H,W] on the device, before augmentation
    labels: torch.Tensor
    index: torch.Tensor  # rows of the train split, for per-image caches
    flip: Optional[torch.Tensor]
    crop: Optional[torch.Tensor]
    crop_pad: int
    inputs: torch.Tensor  # the student's augmented, normalised view


class Plugin(Protocol):
    """What distillation (or any extra objective) plugs into the loop."""

    eval_reference: Optional[torch.Tensor]  # predictions that every eval compares the student with

    def setup(self, run: "Run") -> None:
        """Load and check everything before the first step; raise UsageError on bad input."""

    def on_start(self, run: "Run") -> None:
        """Log what the plugin brings (once, before the first step of a fresh run)."""

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The training objective for one micro-batch."""

    def summary(self) -> dict:
        """Extra keys for summary.json and config.json."""


@dataclass
class Run:
    """What setup() builds and fit() trains: shared by the plugin, the loop and the tools."""

    cfg: TrainConfig
    accelerator: object
    data: DataBundle
    model: torch.nn.Module
    view: View
    head_note: str
    plugin: Optional[Plugin] = None
    log: Optional[RunLog] = None


def has_accelerator() -> bool:
    """True when a GPU (CUDA, ROCm, MPS or XPU) is present."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def make_accelerator(cfg: TrainConfig):
    """An Accelerator; without a GPU, cpu=True so that torchrun's processes form one gloo group."""
    from accelerate import Accelerator
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    log_with = None if cfg.report_to == "none" else cfg.report_to
    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    missing = (cfg.report_to in available and not available[cfg.report_to]) or (
        cfg.report_to == "all" and not any(available.values()))
    if missing:
        need = cfg.report_to if cfg.report_to != "all" else "tensorboard or wandb"
        raise UsageError(f"--report-to {cfg.report_to} needs {need}, which is not installed: pip install "
                         f"{need.split(' or ')[0]} (or pass --report-to none)")
    try:
        return Accelerator(cpu=not has_accelerator(), mixed_precision=cfg.mixed_precision, log_with=log_with,
                           project_dir=cfg.output_dir)
    except (ValueError, ImportError) as err:
        raise UsageError(f"accelerate refused the set-up ({str(err).splitlines()[0][:200]}): "
                         "check --mixed-precision and --report-to for this machine") from None


def _main_first(accelerator, fn: Callable):
    """Run fn on the main process first (it fills caches), then on the others; errors reach every process."""
    error, result = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except UsageError as err:
            error = err
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        result = fn()
    if error is not None:
        raise error
    return result


def _decode_size(cfg: TrainConfig) -> int:
    import timm

    if cfg.img_size:
        return cfg.img_size
    pcfg = timm.models.get_pretrained_cfg(cfg.model)
    return int(pcfg.input_size[-1]) if pcfg is not None and pcfg.input_size else 224


def setup(cfg: TrainConfig, plugin: Optional[Plugin] = None) -> Run:
    """Everything that can fail on bad input, before anything is written to the output folder."""
    from accelerate.utils import set_seed

    from .resume import check_resumable

    accelerator = make_accelerator(cfg)
    in_use = ckpt.output_dir_in_use(cfg.output_dir)
    if in_use and not (cfg.overwrite or cfg.resume_from):
        raise UsageError(f"--output-dir {cfg.output_dir} already holds a run ({in_use}): pass --overwrite to replace it, "
                         "--resume-from latest to continue it, or another folder")
    if cfg.resume_from:
        check_resumable(cfg)
    set_seed(cfg.seed)
    cache_dir = cfg.cache_dir or default_cache_dir()
    data = _main_first(accelerator, lambda: load_data(
        cfg.dataset, cfg.train_split, cfg.eval_split, image_column=cfg.image_column, label_column=cfg.label_column,
        samples_per_class=cfg.samples_per_class, eval_samples_per_class=cfg.eval_samples_per_class, seed=cfg.seed,
        size=_decode_size(cfg), cache_dir=cache_dir, dataset_config=cfg.dataset_config))
    set_seed(cfg.seed)  # the same initial weights whatever the data step drew
    model, head_note = _main_first(accelerator, lambda: create_model(
        cfg.model, len(data.label_names), img_size=cfg.img_size, model_kwargs=cfg.model_kwargs,
        pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file))
    run = Run(cfg, accelerator, data, model, input_view(model, cfg.img_size), head_note, plugin)
    device = accelerator.device
    # The decoded dataset lives on the device: a step's host work is one index tensor, nothing per image.
    for split in (data.train, data.eval):
        split.images, split.labels = split.images.to(device), split.labels.to(device)
    if plugin is not None:
        plugin.setup(run)
    return run


def shard(n: int, accelerator) -> tuple[int, int]:
    """[lo, hi) of this process's contiguous share of n rows (the last shares may be short or empty)."""
    per = math.ceil(n / accelerator.num_processes)
    rank = accelerator.process_index
    return min(rank * per, n), min((rank + 1) * per, n)


def gather_shards(local: torch.Tensor, n: int, accelerator) -> torch.Tensor:
    """Every process's shard() rows, in order: padded to equal length for gather, then trimmed to n."""
    if accelerator.num_processes == 1:
        return local
    per = math.ceil(n / accelerator.num_processes)
    padded = local.new_zeros((per, *local.shape[1:]))
    padded[: local.shape[0]] = local
    return accelerator.gather(padded)[:n]


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: SplitData, view: View, accelerator, batch_size: int,
             reference: Optional[torch.Tensor] = None, return_preds: bool = False) -> dict:
    """Loss and top-1 over the whole split, every sample counted once on any number of processes."""
    was_training = model.training
    model.eval()
    n, world = len(split), accelerator.num_processes
    lo, hi = shard(n, accelerator)
    device = accelerator.device
    sums = torch.zeros(3, device=device, dtype=sum_dtype(device))
    preds = []
    start = time.perf_counter()
    for i in range(lo, hi, batch_size):
        j = min(i + batch_size, hi)
        x, y = preprocess(split.images[i:j], view), split.labels[i:j]
        with accelerator.autocast():
            logits = model(x)
        pred = logits.argmax(-1)
        agree = (pred == reference[i:j]).sum() if reference is not None else pred.new_zeros(())
        sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum"), (pred == y).sum(), agree]).to(sums.dtype)
        preds.append(pred)
    total = accelerator.reduce(sums, reduction="sum") if world > 1 else sums
    loss_sum, hits, agreed = total.tolist()
    out = {"loss": loss_sum / max(n, 1), "top1": hits / max(n, 1), "num_samples": n,
           "images_per_s": n / max(time.perf_counter() - start, 1e-9)}
    if reference is not None:
        out["agreement"] = agreed / max(n, 1)
    if return_preds:
        local = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)
        out["preds"] = gather_shards(local, n, accelerator)
    model.train(was_training)
    return out


def cosine_with_warmup(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear warm-up from ~0, then cosine decay to min_ratio."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _epoch_batches(n: int, batch_size: int, world: int, rank: int) -> list[tuple[int, int]]:
    """[lo, hi) slices of this process in every global batch of one epoch; the order is padded to a multiple of world."""
    padded = math.ceil(n / world) * world
    out, global_bs = [], batch_size * world
    for start in range(0, padded, global_bs):
        size = min(global_bs, padded - start) // world
        out.append((start + rank * size, start + (rank + 1) * size))
    return out


def _padded_positions(order: torch.Tensor, world: int) -> torch.Tensor:
    extra = (-order.numel()) % world
    return torch.cat([order, order[:extra]]) if extra else order


def fit(run: Run) -> dict:
    """Train run.model on run.data; writes metrics.jsonl, model.safetensors, config.json and summary.json."""
    import timm.optim
    from tqdm.auto import tqdm

    cfg, acc, data, plugin, resume_from = run.cfg, run.accelerator, run.data, run.plugin, run.cfg.resume_from
    world, rank, device = acc.num_processes, acc.process_index, acc.device
    model = torch.compile(run.model) if cfg.compile else run.model
    optimizer = timm.optim.create_optimizer_v2(
        model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}))
    n_train = len(data.train)
    steps_per_epoch = math.ceil(len(_epoch_batches(n_train, cfg.batch_size, world, rank)) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(
        total_steps, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio))
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    objective = plugin.loss if plugin is not None else (
        lambda logits, batch: F.cross_entropy(logits.float(), batch.labels, label_smoothing=cfg.label_smoothing))
    reference = getattr(plugin, "eval_reference", None)

    state = {"epoch": 0, "micro": 0, "step": 0, "best_eval_top1": None, "train_time_s": 0.0, "meter": None}
    if resume_from:
        from .resume import load_checkpoint

        state = load_checkpoint(acc, resume_from, cfg)
        key = plugin.summary().get("teacher_cache_key") if plugin is not None else None
        if state.get("plugin") != key:
            raise UsageError("--resume-from: the teacher or the training images differ from the checkpoint's "
                             "(cache key mismatch): resume with the same --teacher and data arguments")
    os.makedirs(cfg.output_dir, exist_ok=True)
    log = RunLog(acc, cfg.output_dir, append=bool(resume_from))
    if resume_from:
        log.truncate_after(state["step"])
    run.log = log
    if acc.trackers == [] and cfg.report_to != "none":
        acc.init_trackers("vit-trainer", config=_flat(cfg.to_dict()))
    log.print(f"model {cfg.model}: {count_params(acc.unwrap_model(model)) / 1e6:.2f}M params, "
              f"{run.head_note}; {n_train} train / {len(data.eval)} eval images, {world} process(es) on {device.type}, "
              f"mixed precision {acc.mixed_precision}")
    if plugin is not None and not resume_from:
        plugin.on_start(run)

    meter = Meter(device)
    if state["meter"]:
        meter.load_state_dict(state["meter"], rank)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    step, best = state["step"], state["best_eval_top1"]
    clock = Stopwatch(state["train_time_s"])  # training wall time, evaluation excluded
    epoch_base = state.get("epoch_base_s", 0.0)
    last_eval: dict = {}

    def check_finite() -> None:
        if int(bad_step) >= 0:
            raise UsageError(f"the loss became non-finite at step {int(bad_step)}: lower --lr, raise --warmup-epochs or "
                             "use --mixed-precision bf16; the last good checkpoint (if any) is kept under "
                             f"{cfg.output_dir}/checkpoints")

    def log_train(at: float) -> dict:
        check_finite()
        m = meter.read(acc)
        return log.event("train", at, step, loss=m["loss"], top1=m["top1"],
                         images_per_s=m["count"] / max(clock.read() - epoch_base, 1e-9), lr=scheduler.get_last_lr()[0])

    def log_eval(at: float, final: bool = False) -> dict:
        nonlocal best
        with clock.paused():  # only the final eval's predictions are kept (eval_predictions.safetensors)
            res = evaluate(acc.unwrap_model(model), data.eval, run.view, acc, eval_bs, reference=reference,
                           return_preds=final)
        extra = {"agreement": res["agreement"]} if "agreement" in res else {}
        best = res["top1"] if best is None else max(best, res["top1"])
        log.event("eval", at, step, loss=res["loss"], top1=res["top1"], images_per_s=res["images_per_s"], **extra)
        return res

    model.train()
    for epoch in range(state["epoch"], cfg.epochs):
        plan = plan_epoch(n_train, cfg.seed, epoch, cfg.flip, cfg.random_crop)
        padded = _padded_positions(torch.arange(n_train), world)
        order = plan.order[padded].to(device)
        flips = plan.flip[padded].to(device) if plan.flip is not None else None
        crops = plan.crop[padded].to(device) if plan.crop is not None else None
        slices = _epoch_batches(n_train, cfg.batch_size, world, rank)
        first = state["micro"] if epoch == state["epoch"] else 0
        if first == 0:
            meter, epoch_base = Meter(device), clock.read()
        bar = tqdm(total=len(slices), initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (acc.is_main_process and cfg.progress), dynamic_ncols=True)
        clock.start()
        for micro in range(first, len(slices)):
            lo, hi = slices[micro]
            idx = order[lo:hi]
            flip = flips[lo:hi] if flips is not None else None
            crop = crops[lo:hi] if crops is not None else None
            images, labels = data.train.images[idx], data.train.labels[idx]
            inputs = augment(images, run.view, flip, crop, cfg.random_crop)
            batch = Batch(images, labels, idx, flip, crop, cfg.random_crop, inputs)
            group_start = micro - micro % cfg.grad_accum
            group = min(cfg.grad_accum, len(slices) - group_start)
            sync = micro == group_start + group - 1
            with nullcontext() if sync else acc.no_sync(model):
                with acc.autocast():
                    logits = model(inputs)
                loss = objective(logits, batch)
                acc.backward(loss / group)
            meter.update(loss, logits, labels)
            bad_step = torch.where(~torch.isfinite(loss.detach()) & (bad_step < 0), step + 1, bad_step)
            bar.update(1)
            if not sync:
                continue
            if cfg.clip_grad:
                acc.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            at = epoch + (micro + 1) / len(slices)
            end_of_epoch = micro == len(slices) - 1
            if not end_of_epoch and (_every(cfg.log_every, step) or _every(cfg.eval_every, step)):
                rec = log_train(at)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", top1=f"{rec['top1']:.3f}")
                if _every(cfg.eval_every, step):
                    last_eval = log_eval(at)
            if end_of_epoch:
                tr = log_train(at)
                last_eval = log_eval(at, final=epoch == cfg.epochs - 1)
                bar.close()
                agree = f" agree {last_eval['agreement']:.4f} |" if "agreement" in last_eval else ""
                log.print(f"epoch {epoch + 1}/{cfg.epochs} | step {step} | train loss {tr['loss']:.4f} top1 "
                          f"{tr['top1']:.4f} | eval loss {last_eval['loss']:.4f} top1 {last_eval['top1']:.4f} |{agree} "
                          f"{tr['images_per_s']:.0f} img/s | {clock.read():.1f}s")
            if _checkpoint_due(cfg, step, end_of_epoch):
                from .resume import save_checkpoint

                check_finite()
                with clock.paused():
                    save_checkpoint(acc, cfg, {
                        "epoch": epoch + 1 if end_of_epoch else epoch, "micro": 0 if end_of_epoch else micro + 1,
                        "step": step, "best_eval_top1": best, "train_time_s": clock.read(),
                        "epoch_base_s": epoch_base, "meter": meter.state_dict(acc),
                        "plugin": plugin.summary().get("teacher_cache_key") if plugin is not None else None})
        clock.stop()
        bar.close()
    check_finite()
    if not last_eval:  # resumed from the very last checkpoint: nothing left to train, evaluate once
        last_eval = evaluate(acc.unwrap_model(model), data.eval, run.view, acc, eval_bs, reference=reference,
                             return_preds=True)
    return _finish(run, model, last_eval, log, meter, best, clock.read(), step)


def _every(n: int, step: int) -> bool:
    return bool(n) and step % n == 0


class Stopwatch:
    """Wall time that can be paused (for evaluation) and resumed from a saved value."""

    def __init__(self, elapsed: float = 0.0):
        self.elapsed, self._since = elapsed, None

    def start(self) -> None:
        """Start (or keep) running."""
        if self._since is None:
            self._since = time.perf_counter()

    def stop(self) -> None:
        """Stop and bank the time."""
        if self._since is not None:
            self.elapsed += time.perf_counter() - self._since
            self._since = None

    def read(self) -> float:
        """Seconds so far."""
        return self.elapsed + (time.perf_counter() - self._since if self._since is not None else 0.0)

    @contextlib.contextmanager
    def paused(self):
        """Exclude the block from the measured time."""
        running = self._since is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


def _checkpoint_due(cfg: TrainConfig, step: int, end_of_epoch: bool) -> bool:
    every = cfg.checkpoint_every
    if not every:
        return False
    if every == "epoch":
        return end_of_epoch
    return step % int(every) == 0


def _flat(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def run_config(run: Run, plugin: Optional[Plugin] = None) -> dict:
    """config.json: what timm needs to rebuild the model, and the arguments that trained it."""
    cfg = run.cfg
    out = {
        "architecture": cfg.model,
        "num_classes": len(run.data.label_names),
        "label_names": run.data.label_names,
        "model_kwargs": cfg.model_kwargs,
        "img_size": run.view.size,
        "mean": list(run.view.mean),
        "std": list(run.view.std),
        "interpolation": run.view.interpolation,
        "training_args": cfg.to_dict(),
    }
    if plugin is not None:
        out["distillation"] = plugin.summary()
    return out


def _finish(run: Run, model, last_eval: dict, log: RunLog, meter: Meter, best: Optional[float], train_time: float,
            step: int) -> dict:
    cfg, acc, plugin = run.cfg, run.accelerator, run.plugin
    final_train = meter.read(acc)
    state = acc.get_state_dict(model)  # every process joins: under FSDP this gathers the shards
    summary = {
        "model": cfg.model,
        "pretrained": bool(cfg.pretrained or cfg.pretrained_file),
        "init": f"file:{cfg.pretrained_file}" if cfg.pretrained_file else ("hub" if cfg.pretrained else "scratch"),
        "num_params": count_params(acc.unwrap_model(model)),
        "epochs": cfg.epochs,
        "steps": step,
        "num_train": len(run.data.train),
        "num_eval": len(run.data.eval),
        "processes": acc.num_processes,
        "device": acc.device.type,
        "mixed_precision": acc.mixed_precision,
        "train_time_s": round(train_time, 3),
        "train_images_per_s": len(run.data.train) * cfg.epochs / max(train_time, 1e-9),
        "best_eval_top1": best,
        "final": {"train_loss": final_train["loss"], "train_top1": final_train["top1"],
                  "eval_loss": last_eval.get("loss"), "eval_top1": last_eval.get("top1")},
    }
    if plugin is not None:
        summary.update(plugin.summary())
        if "agreement" in last_eval:
            summary["teacher_agreement"] = last_eval["agreement"]
    # A student's teacher runs eagerly: a compiled model's predictions are not what it would give.
    files = [f for f in ckpt.RUN_FILES if f != ckpt.EVAL_FILE or not cfg.compile]
    acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.save_state_dict(state, os.path.join(cfg.output_dir, ckpt.MODEL_FILE))
        ckpt.write_json(os.path.join(cfg.output_dir, ckpt.CONFIG_FILE), run_config(run, plugin))
        ckpt.write_json(os.path.join(cfg.output_dir, ckpt.SUMMARY_FILE), summary)
        if ckpt.EVAL_FILE in files:
            weights = os.path.join(cfg.output_dir, ckpt.MODEL_FILE)
            key = ckpt.eval_key(ckpt.file_digest(weights), run.data.eval.key, run.view, acc)
            ckpt.save_eval_predictions(cfg.output_dir, last_eval["preds"], last_eval["top1"], key)
    acc.wait_for_everyone()
    acc.end_training()  # closes trackers and the process group, so no process exits while another still talks
    log.print(f"done: eval top1 {summary['final']['eval_top1']:.4f} (best {best:.4f}) in {train_time:.1f}s; "
              f"wrote {cfg.output_dir}/{{{','.join(files)}}}")
    return summary


def train(cfg: TrainConfig, plugin: Optional[Plugin] = None) -> dict:
    """setup() then fit(): the whole run behind train_cls.py and train_kd.py."""
    return fit(setup(cfg, plugin))
