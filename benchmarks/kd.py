"""Distillation cost and effect: the same student alone, with an online teacher, and with --teacher-cache.

    python benchmarks/kd.py --dataset ../shared/data/cifar10 [--teacher RUN] [--epochs 5] [--json]

Without --teacher it first trains the core issue's small ViT (patch 4, depth 4, 200 per class, 5 epochs) as the
teacher; the student is the same family at depth 2. Each student run is timed end to end in this process
(teacher loading, its evaluation or the reading of its saved eval predictions, and any logit cache included;
the decoded images come from the warm cache),
--repeats times, interleaved, and the fastest time of each is reported.
The last stdout line is one JSON object: student_s, kd_online_s, kd_cached_s, cache_ratio =
(kd_cached_s - student_s) / (kd_online_s - student_s), the teacher forwards the cache paid for (each visited
(image, flip) pair once), and each student's eval top-1 and agreement with the teacher.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.cli import main_cls, main_kd  # noqa: E402
from trainer.evaluate import main as evaluate_main  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--teacher", default=None, help="a train_cls.py run folder (default: train the small teacher)")
    p.add_argument("--epochs", type=int, default=5, help="student epochs")
    p.add_argument("--samples-per-class", type=int, default=200)
    p.add_argument("--eval-samples-per-class", type=int, default=100)
    p.add_argument("--student-kwargs", nargs="*", default=["patch_size=4", "depth=2"])
    p.add_argument("--kd-type", default="soft")
    p.add_argument("--kd-temperature", default="4")
    p.add_argument("--repeats", type=int, default=3, help="time each run this many times, keep the fastest")
    p.add_argument("--json", action="store_true", help="quiet runs; print only the JSON line")
    args = p.parse_args()
    common = ["--dataset", args.dataset, "--samples-per-class", str(args.samples_per_class),
              "--eval-samples-per-class", str(args.eval_samples_per_class), "--batch-size", "64", "--lr", "1e-3",
              "--model", "vit_tiny_patch16_224", "--img-size", "32", "--log-every", "0"]
    if args.json:
        common.append("--no-progress")
    with tempfile.TemporaryDirectory() as tmp:
        teacher = args.teacher
        if teacher is None:
            teacher = os.path.join(tmp, "teacher")
            main_cls([*common, "--model-kwargs", "patch_size=4", "depth=4", "--epochs", "5", "--output-dir", teacher])
        student = [*common, "--model-kwargs", *args.student_kwargs, "--epochs", str(args.epochs)]
        kd = ["--teacher", teacher, "--kd-alpha", "1", "--kd-type", args.kd_type,
              "--kd-temperature", args.kd_temperature]
        timings, summaries = {}, {}
        for repeat in range(args.repeats):  # interleaved; the fastest of each is kept (timing noise only adds)
            for name, fn, extra in (("student", main_cls, []), ("kd_online", main_kd, kd),
                                    ("kd_cached", main_kd, [*kd, "--teacher-cache"])):
                out = os.path.join(tmp, name)
                start = time.perf_counter()
                summaries[name] = fn([*student, *extra, "--output-dir", out, *(["--overwrite"] if repeat else [])])
                timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - start)
        alone = evaluate_main(["--checkpoint", os.path.join(tmp, "student"), "--compare-with", teacher,
                               "--dataset", args.dataset])
    s, on, ca = timings["student"], timings["kd_online"], timings["kd_cached"]
    result = {
        "benchmark": "kd", "device": "cpu", "epochs": args.epochs, "repeats": args.repeats,
        "student_kwargs": args.student_kwargs,
        "student_s": round(s, 2), "kd_online_s": round(on, 2), "kd_cached_s": round(ca, 2),
        "cache_ratio": round((ca - s) / (on - s), 3) if on > s else None,
        "train_images": summaries["student"]["num_train"],
        "teacher_cache_forwards": summaries["kd_cached"]["teacher_cache_forwards"],
        "teacher_eval_reused": summaries["kd_cached"]["teacher_eval_reused"],
        "teacher_eval_top1": summaries["kd_online"]["teacher_eval_top1"],
        "student_eval_top1": summaries["student"]["final"]["eval_top1"],
        "kd_online_eval_top1": summaries["kd_online"]["final"]["eval_top1"],
        "kd_cached_eval_top1": summaries["kd_cached"]["final"]["eval_top1"],
        "student_agreement": alone["agreement"],
        "kd_online_agreement": summaries["kd_online"]["teacher_agreement"],
        "kd_cached_agreement": summaries["kd_cached"]["teacher_agreement"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
