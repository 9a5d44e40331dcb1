"""A run folder's model card (README.md): Hub front matter that huggingface_hub parses (library, task, tags, license,
dataset, base model, a model-index with the eval top-1) and a body written from config.json and summary.json: what
was trained on what and how, the results, how to load it, and what it is not."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import timm
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data.loading import held_out_percent
from .escape import markdown_cell
from .run_files import CARD_FILE, CURVES_FILE, atomic_write
from .run_records import RunConfig, RunSummary


def is_local_path(name: str) -> bool:
    """Whether a string names a place on this machine (a path) rather than a Hub id or a plain word."""
    return name.startswith(("/", ".", "~")) or os.path.exists(os.path.expanduser(name))


def public_name(name: str) -> str:
    """What a published file may say of a path or id: a Hub id as it is, a local path by its last part only."""
    if name.startswith("file:"):
        return "file:" + public_name(name[5:])
    return os.path.basename(os.path.normpath(os.path.expanduser(name))) if is_local_path(name) and (
        "/" in name or os.sep in name or name.startswith("~")) else name


def public_record(value: Any) -> Any:
    """A JSON record as it may be published: every string that is a local path (or "file:" one) by its last part."""
    if isinstance(value, dict):
        return {k: public_record(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_record(v) for v in value]
    return public_name(value) if isinstance(value, str) else value


def hub_dataset(name: str) -> Optional[str]:
    """The dataset's Hub id, where it is one (not a local folder)."""
    return None if is_local_path(name) or name.count("/") != 1 else name


def base_weights(config: RunConfig, summary: RunSummary) -> tuple[Optional[str], Optional[str]]:
    """(the Hub repo of the weights the run started from, their license), where it started from the Hub's."""
    if summary.init != "hub":
        return None, None
    source = timm.models.get_pretrained_cfg(config.architecture)
    return (source.hf_hub_id, source.license) if source is not None else (None, None)


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _recipe(config: RunConfig, summary: RunSummary) -> list[str]:
    t = config.training
    crops = ("random-resized crops" if t.random_resized_crop else f"pad-{t.random_crop} random crops" if t.random_crop
             else "no crops")
    extras = [f"RandAugment/TrivialAugment `{t.aa}`" if t.aa else "",
              f"random erasing p={t.reprob:g} ({t.remode}, up to {t.recount} box(es))" if t.reprob else "",
              f"mixup {t.mixup:g}" if t.mixup else "", f"cutmix {t.cutmix:g}" if t.cutmix or t.cutmix_minmax else ""]
    regular = [f"layer decay {t.layer_decay:g}" if t.layer_decay else "", f"drop path {t.drop_path:g}" if t.drop_path
               else "", f"dropout {t.drop:g}" if t.drop else "",
               f"EMA of the weights (decay {t.model_ema_decay:g}{', warmed up' if t.model_ema_warmup else ''})"
               if t.model_ema else ""]
    lines = [f"- optimisation: {t.opt}, peak lr {t.lr:g}, weight decay {t.weight_decay:g}, {t.warmup_epochs:g} "
             f"epoch(s) of linear warm-up then cosine decay, batch {t.batch_size} x {summary.processes} process(es)"
             f"{f' x {t.grad_accum} accumulated' if t.grad_accum > 1 else ''}, label smoothing {t.label_smoothing:g}, "
             f"gradient clipping {t.clip_grad or 'off'}, seed {t.seed}"
             + "".join(f", {r}" for r in regular if r),
             f"- augmentation: {'random horizontal flips' if t.flip else 'no flips'}, {crops}"
             + "".join(f", {e}" for e in extras if e),
             f"- precision: {summary.mixed_precision}; {summary.processes} process(es) on {summary.device}; "
             f"{summary.train_time_s:.0f} s of training ({summary.train_images_per_s:.1f} images/s)"]
    kd = config.distillation
    if kd:
        soft = kd["kd_type"] == "soft" or kd.get("kd_token_target") == "soft"
        teacher = markdown_cell(public_name(kd['teacher']))
        lines.append(f"- distillation: {kd['kd_type']} KD from the run {teacher} (eval top-1 "
                     f"{_pct(kd.get('teacher_eval_top1'))}), alpha {kd['kd_alpha']}"
                     + (f", temperature {kd['kd_temperature']}" if soft else ""))
    return lines


def _results(summary: RunSummary, split: str) -> list[str]:
    f = summary.final
    lines = ["| | images | loss | top-1 |", "| --- | ---: | ---: | ---: |",
             f"| train (last epoch) | {summary.num_train} | {f['train_loss']:.4f} | {_pct(f['train_top1'])} |",
             f"| eval (split `{split}`) | {summary.num_eval} | {f['eval_loss']:.4f} | {_pct(f['eval_top1'])} |", "",
             f"Best eval top-1 over the run: {_pct(summary.best_eval_top1)}."]
    pc = summary.per_class
    if pc:
        names = [markdown_cell(n) for n in pc["label_names"]]
        lines += ["", "| class | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names),
                  "| eval accuracy | " + " | ".join(_pct(r) for r in pc["recall"]) + " |"]
    return lines


def _usage(config: RunConfig, repo: str, folder: str) -> list[str]:
    here = os.path.basename(os.path.normpath(folder))  # never the local path: the card is published
    lines = ["```python", "import timm", f"model = timm.create_model(\"hf-hub:{repo}\", pretrained=True).eval()  "
             f"# or \"local-dir:path/to/{here}\"",
             "data = timm.data.resolve_data_config(model=model)  # input size, mean, std, crop",
             "transform = timm.data.create_transform(**data)", "", "from transformers import pipeline",
             f"classify = pipeline(\"image-classification\", model=\"{repo}\")  # or the run folder", "```"]
    if os.path.exists(os.path.join(folder, "model.onnx")):
        lines += ["", "`model.onnx` (and `model.int8.onnx`) run with ONNX Runtime alone: input `pixel_values`, "
                  "float32 [N, 3, S, S] normalised as `model.onnx.json` says; output `logits`."]
    return lines


def _limits(config: RunConfig, summary: RunSummary, notes: Sequence[str]) -> list[str]:
    t = config.training
    lines = []
    if t.samples_per_class is not None:
        lines.append(f"- Trained on a subset: {t.samples_per_class} images per class ({summary.num_train} in all), "
                     f"not the whole `{t.train_split}` split.")
    if t.eval_samples_per_class is not None:
        lines.append(f"- Evaluated on {summary.num_eval} images ({t.eval_samples_per_class} per class), not the whole "
                     "split.")
    if summary.init.startswith("file:"):
        lines.append(f"- Started from a local weights file ({markdown_cell(public_name(summary.init[5:]))}), not from "
                     "weights on the Hub.")
    lines += [f"- {n}" for n in notes]
    return lines or ["- Its figures hold for the data and the split above; other data needs its own evaluation."]


def model_card(config: RunConfig, summary: RunSummary, folder: str, repo_id: Optional[str] = None,
               notes: Sequence[str] = ()) -> ModelCard:
    """The card of a finished run (repo_id: where it will live on the Hub, for the usage lines)."""
    t = config.training
    dataset = hub_dataset(t.dataset)
    base, license_ = base_weights(config, summary)
    name = repo_id.split("/")[-1] if repo_id else os.path.basename(os.path.normpath(folder))
    held = held_out_percent(t.train_split, t.eval_split, t.val_split_percent) is not None
    split = t.train_split if held else t.eval_split
    metric = EvalResult(task_type="image-classification", dataset_type=dataset or "local", dataset_name=dataset or
                        public_name(t.dataset), dataset_split=split, metric_type="accuracy",
                        metric_value=summary.eval_top1, metric_name=f"top-1 on {summary.num_eval} eval images")
    tags = ["timm", "image-classification", "vit-trainer", config.architecture.split(".")[0]]
    tags += ["knowledge-distillation"] if config.distillation else []
    data = ModelCardData(library_name="timm", pipeline_tag="image-classification", tags=tags, license=license_,
                         datasets=[dataset] if dataset else None, base_model=base, model_name=name,
                         eval_results=[metric])
    init = {"scratch": "random weights (from scratch)", "hub": f"the Hub's pretrained weights (`{base}`)"}.get(
        summary.init, f"the weights in {markdown_cell(public_name(summary.init[5:]))}")
    kwargs = ", ".join(f"{k}={v}" for k, v in config.model_kwargs.items())
    where = f"`{dataset}`" if dataset else f"a local copy of {markdown_cell(public_name(t.dataset))}"
    body = [f"# {markdown_cell(name)}", "",
            f"`{config.architecture}`{f' ({kwargs})' if kwargs else ''}, {summary.num_params / 1e6:.2f}M parameters, "
            f"{config.img_size}x{config.img_size} input, {config.num_classes} classes, trained with "
            f"vit-trainer on {where} for {summary.epochs} epochs ({summary.steps} steps) "
            f"from {init}.", "", "## Results", "", *_results(summary, split)]
    if os.path.exists(os.path.join(folder, CURVES_FILE)):
        body += ["", f"![learning curves]({CURVES_FILE})"]
    body += ["", "## Training", "", *_recipe(config, summary), "", "## How to use", "",
             *_usage(config, repo_id or "USER/NAME", folder), "", "## What it is not", "", *_limits(config, summary, notes)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def write_card(folder: str, repo_id: Optional[str] = None, notes: Sequence[str] = (),
               config: Optional[RunConfig] = None, summary: Optional[RunSummary] = None) -> str:
    """Write FOLDER/README.md from its config.json and summary.json (or the records given)."""
    config = config or RunConfig.read(os.path.join(folder, "config.json"), "--run")
    summary = summary or RunSummary.read(folder)
    assert summary is not None, f"{folder} has no summary.json"
    card = model_card(config, summary, folder, repo_id, notes)
    path = os.path.join(folder, CARD_FILE)
    atomic_write(path, lambda tmp: card.save(tmp))
    return path
