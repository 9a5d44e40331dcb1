"""The recipe toolbox on CIFAR-10: which ingredient pays on which job, what it costs the device, and what it costs the
host against timm's own pipeline (--what table|cost|host|all):

    python benchmarks/recipe.py --dataset ../shared/data/cifar10 [--what all] [--per-class 1000] [--epochs 5] [--json]

- table: the small ViT (vit_tiny_patch16_224 at 32 px, patch 4, depth 4) trained from scratch, and fine-tuned from a
  stand-in pretraining (the study's: the train images not fine-tuned on, each as itself and rotated, 20 classes; its
  head replaced), each with: the plain recipe (the trainer's defaults) over --seeds seeds, each ingredient alone,
  everything at once, and the presets, all at --epochs epochs on --per-class images per class: eval top-1 (and the EMA
  model's for --model-ema). The plain recipe's spread over seeds says which differences are real.
- cost: training images/s of everything on over the plain recipe, same model and store, --repeats interleaved,
  fastest kept: cost_ratio (target >= 0.85). On a GPU: --cost-model vit_base_patch16_224 --cost-img-size 224
  --mixed-precision bf16.
- host: host CPU time per training image of this trainer's pipeline with the model on an accelerator (the epoch
  plan's draws, and dispatching the batched ops, measured on 8 px images where their arithmetic is negligible) against
  timm's create_transform(auto_augment=..., re_prob=...) + Mixup on the same images (what its DataLoader workers do per
  image; decoding excluded on both sides), at 32 px and 224 px: host_ratio (target >= 20).

The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trainer.commands.train import main_cls  # noqa: E402

AA = "rand-m9-mstd0.5-inc1"
INGREDIENTS: dict[str, list[str]] = {
    "mixup": ["--mixup", "0.8"],
    "cutmix": ["--cutmix", "1.0"],
    "randaugment": ["--aa", AA],
    "trivialaugment": ["--aa", "trivial"],
    "erasing": ["--reprob", "0.25"],
    "smoothing": ["--smoothing", "0.1"],
    "drop_path": ["--drop-path", "0.1"],
    "ema": ["--model-ema", "--model-ema-warmup"],
    "layer_decay": ["--layer-decay", "0.75"],
}
EVERYTHING = ["mixup", "cutmix", "randaugment", "erasing", "smoothing", "drop_path", "ema"]
PRESETS = ("deit", "finetune")
MODEL = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=4", "depth=4"]


def _everything(job: str) -> list[str]:
    names = EVERYTHING + (["layer_decay"] if job == "finetune" else [])
    return [a for n in names for a in INGREDIENTS[n]]


def _run(common: list[str], extra: list[str], out: str) -> dict[str, Any]:
    summary = main_cls([*common, *extra, "--output-dir", out, "--overwrite"])
    final = summary["final"]
    row = {"eval_top1": final["eval_top1"], "eval_loss": round(final["eval_loss"], 4),
           "train_images_per_s": summary.get("train_images_per_s")}
    if "ema_top1" in final:
        row["ema_top1"] = final["ema_top1"]
    return row


def _standin(args: argparse.Namespace, tmp: str, common: list[str]) -> str:
    """The stand-in pretrained small ViT the fine-tune job starts from."""
    from trainer.study.study_data import build_standin

    data = build_standin(args.dataset, os.path.join(tmp, "standin_data"), args.per_class, 0)
    out = os.path.join(tmp, "standin")
    main_cls([*MODEL, "--dataset", data, "--samples-per-class", str(args.standin_per_class), "--epochs",
              str(args.standin_epochs), "--batch-size", "64", "--lr", "1e-3", "--log-every", "0", "--output-dir", out,
              *(["--no-progress"] if args.json else [])])
    return os.path.join(out, "model.safetensors")


def table(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Eval top-1 per ingredient, for the from-scratch and the fine-tune job."""
    base = [*MODEL, "--dataset", args.dataset, "--samples-per-class", str(args.per_class), "--eval-samples-per-class",
            str(args.eval_per_class), "--epochs", str(args.epochs), "--batch-size", "64", "--log-every", "0",
            *(["--no-progress"] if args.json else [])]
    jobs: dict[str, list[str]] = {"scratch": [*base, "--lr", "1e-3"]}
    if not args.scratch_only:
        jobs["finetune"] = [*base, "--lr", "5e-4", "--pretrained-file", _standin(args, tmp, base)]
    result: dict[str, Any] = {}
    for job, common in jobs.items():
        rows: dict[str, Any] = {}
        plain = [_run(common, ["--seed", str(s)], os.path.join(tmp, f"{job}_plain_{s}")) for s in range(args.seeds)]
        tops = [r["eval_top1"] for r in plain]
        rows["plain"] = {"eval_top1_mean": round(statistics.mean(tops), 4), "eval_top1_min": min(tops),
                         "eval_top1_max": max(tops), "seeds": args.seeds,
                         "train_images_per_s": plain[0]["train_images_per_s"]}
        for name, flags in INGREDIENTS.items():
            if name == "layer_decay" and job == "scratch":
                continue  # a decay towards pretrained layers: nothing to keep in a from-scratch run
            rows[name] = _run(common, flags, os.path.join(tmp, f"{job}_{name}"))
        rows["everything"] = _run(common, _everything(job), os.path.join(tmp, f"{job}_everything"))
        for preset in PRESETS:
            rows[f"recipe_{preset}"] = _run(common, ["--recipe", preset], os.path.join(tmp, f"{job}_{preset}"))
        result[job] = rows
        print(json.dumps({job: rows}), flush=True)
    return result


def cost(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Training images/s, plain and everything on: interleaved repeats, fastest kept."""
    model = MODEL if args.cost_model is None else ["--model", args.cost_model, "--img-size", str(args.cost_img_size)]
    precision = ["--mixed-precision", args.mixed_precision] if args.mixed_precision else []
    common = [*model, *precision, "--dataset", args.dataset, "--samples-per-class", str(args.cost_per_class),
              "--eval-samples-per-class", "10", "--epochs", "1", "--batch-size", "64", "--lr", "1e-3", "--log-every",
              "0", "--no-progress"]
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, extra in (("plain", []), ("everything", _everything("scratch"))):
            summary = main_cls([*common, *extra, "--output-dir", os.path.join(tmp, f"cost_{name}"), "--overwrite"])
            best[name] = max(best.get(name, 0.0), summary["train_images_per_s"])
    return {"model": args.cost_model or "small ViT", "plain_images_per_s": round(best["plain"], 1),
            "everything_images_per_s": round(best["everything"], 1),
            "cost_ratio": round(best["everything"] / best["plain"], 3), "everything": EVERYTHING}


def _ours_host_seconds(n: int, side: int, batch: int) -> float:
    """Host seconds per image: the plan's draws for n images, then each batch's ops dispatched on 8 px stand-ins."""
    from trainer.augment_policy import parse_policy
    from trainer.data.augment import View, augment
    from trainer.data.erasing import Erasing
    from trainer.data.mixing import MixSettings, draw_mix, mix, mix_generator, mixed_targets
    from trainer.data.plan import Augmentation, ResizedCrop, plan_epoch

    start = time.process_time()
    aug = Augmentation(True, 0, ResizedCrop((32, 32)), parse_policy(AA), Erasing(0.25, "pixel", 1, side), side)
    plan = plan_epoch(n, 0, 0, aug)
    planned = time.process_time() - start
    tiny_view = View(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    images = torch.zeros(batch, 3, 8, 8, dtype=torch.uint8)
    labels = torch.zeros(batch, dtype=torch.long)
    settings = MixSettings(0.8, 1.0)
    torch.set_num_threads(1)
    start = time.process_time()
    batches = n // batch
    for b in range(batches):
        draws = plan.draws.take(slice(b * batch, (b + 1) * batch))
        x = augment(images, tiny_view, draws)
        m = draw_mix(mix_generator(0, 0, b, 0), batch, side, settings)
        mix(x, m), mixed_targets(labels, 10, m, 0.1)
    dispatched = time.process_time() - start
    return planned / n + dispatched / (batches * batch)


def _timm_host_seconds(images: list[Any], side: int, batch: int) -> float:
    """Host seconds per image of timm's train transform with RandAugment and erasing, and its Mixup per batch."""
    from timm.data import Mixup, create_transform

    tf = create_transform(side, is_training=True, auto_augment=AA, re_prob=0.25, re_mode="pixel",
                          interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)
    torch.set_num_threads(1)
    start = time.process_time()
    for lo in range(0, len(images) - batch + 1, batch):
        x = torch.stack([tf(im) for im in images[lo:lo + batch]])
        mixup(x, torch.zeros(batch, dtype=torch.long))
    return (time.process_time() - start) / (len(images) // batch * batch)


def host(args: argparse.Namespace) -> dict[str, Any]:
    """Host CPU time per image: ours (plan + dispatch) against timm's per-image pipeline, at 32 and 224 px."""
    from trainer.data.loading import find_columns, get_split, open_dataset

    train = get_split(open_dataset(args.dataset), "train", "--train-split")
    img_col, _ = find_columns(train.features)
    images = [im.convert("RGB") for im in train.select(range(args.host_images))[img_col]]
    out: dict[str, Any] = {"images": args.host_images, "batch_size": 64}
    for side in (32, 224):
        ours = _ours_host_seconds(max(args.host_images, 1024), side, 64)
        theirs = _timm_host_seconds(images, side, 64)
        out[f"px{side}"] = {"ours_us_per_image": round(ours * 1e6, 1), "timm_us_per_image": round(theirs * 1e6, 1),
                            "host_ratio": round(theirs / ours, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--what", choices=("table", "cost", "host", "all"), default="all")
    p.add_argument("--per-class", type=int, default=1000, help="table: training images per class")
    p.add_argument("--eval-per-class", type=int, default=100, help="table: eval images per class")
    p.add_argument("--epochs", type=int, default=5, help="table: epochs of every run")
    p.add_argument("--seeds", type=int, default=3, help="table: seeds of the plain recipe")
    p.add_argument("--standin-per-class", type=int, default=150, help="table: stand-in pretraining images per class")
    p.add_argument("--standin-epochs", type=int, default=3)
    p.add_argument("--scratch-only", action="store_true", help="table: leave out the fine-tune job")
    p.add_argument("--cost-per-class", type=int, default=100, help="cost: training images per class")
    p.add_argument("--repeats", type=int, default=3, help="cost: interleaved repeats, fastest kept")
    p.add_argument("--cost-model", help="cost: another timm model than the small ViT (e.g. vit_base_patch16_224)")
    p.add_argument("--cost-img-size", type=int, default=224, help="cost: with --cost-model")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="cost: e.g. bf16 on a GPU")
    p.add_argument("--host-images", type=int, default=512, help="host: images through timm's pipeline")
    p.add_argument("--json", action="store_true", help="quiet runs; the JSON lines only")
    args = p.parse_args()
    result: dict[str, Any] = {"benchmark": "recipe", "device": "cuda" if torch.cuda.is_available() else "cpu",
                              "torch_threads": torch.get_num_threads(), "per_class": args.per_class,
                              "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        if args.what in ("host", "all"):
            result["host"] = host(args)
            print(json.dumps({"host": result["host"]}), flush=True)
        if args.what in ("cost", "all"):
            torch.set_num_threads(result["torch_threads"])
            result["cost"] = cost(args, tmp)
            print(json.dumps({"cost": result["cost"]}), flush=True)
        if args.what in ("table", "all"):
            torch.set_num_threads(result["torch_threads"])
            result["table"] = table(args, tmp)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
