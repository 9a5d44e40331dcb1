"""Distillation cost and effect, on CIFAR-10 with small ViTs (3 measurements, --what):

    python benchmarks/kd.py --dataset ../shared/data/cifar10 [--what cache|sweep|types] [--teacher RUN] [--json]

Without --teacher it first trains the core issue's small ViT (patch 4, depth 4, 200 per class, 5 epochs) as the
teacher; the student is the same family at depth 2. Each run is timed end to end in this process (teacher loading,
its evaluation or the reading of its saved eval predictions, and any teacher cache included; the decoded images come
from the warm cache). The last stdout line is one JSON object.

- cache (default): the student alone, with an online teacher, and with --teacher-cache, --repeats times
  interleaved, fastest kept: cache_ratio = (kd_cached_s - student_s) / (kd_online_s - student_s), the teacher
  forwards the cache paid for, each student's eval top-1 and agreement with the teacher.
- sweep: 4 soft-KD runs (alpha 0.5 / 0.9 x T 2 / 4) with an online teacher and the same 4 with one shared
  --teacher-cache-dir (the first run fills it), each point interleaved with a run of the student alone (after an
  untimed 1-epoch warm-up): teacher_share = (sweep_cached_s - sweep_students_s) / (sweep_online_s -
  sweep_students_s), each run's teacher forwards, whether it was served from the folder.
- types: at alpha 0.5, the student alone, soft (logit) KD, feature KD and token KD (the student's architecture as
  timm's deit_tiny_distilled_patch16_224 with the same --student-kwargs): eval top-1, agreement with the teacher,
  time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.commands.train import main_cls, main_kd  # noqa: E402
from trainer.commands.evaluate import main as evaluate_main  # noqa: E402

SWEEP = [("0.5", "2"), ("0.5", "4"), ("0.9", "2"), ("0.9", "4")]  # (alpha, T)


def timed(fn: Callable[[list[str]], dict[str, Any]], argv: list[str]) -> tuple[float, dict[str, Any]]:
    """Seconds a run takes end to end, and its summary."""
    start = time.perf_counter()
    summary = fn(argv)
    return time.perf_counter() - start, summary


def cache(student: list[str], kd: list[str], tmp: str, repeats: int) -> dict[str, Any]:
    """The student alone, online teacher, --teacher-cache: fastest of interleaved repeats."""
    timings: dict[str, float] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for repeat in range(repeats):  # interleaved; the fastest of each is kept (timing noise only adds)
        for name, fn, extra in (("student", main_cls, []), ("kd_online", main_kd, kd),
                                ("kd_cached", main_kd, [*kd, "--teacher-cache"])):
            s, summaries[name] = timed(fn, [*student, *extra, "--output-dir", os.path.join(tmp, name),
                                            *(["--overwrite"] if repeat else [])])
            timings[name] = min(timings.get(name, float("inf")), s)
    s, on, ca = timings["student"], timings["kd_online"], timings["kd_cached"]
    return {"student_s": round(s, 2), "kd_online_s": round(on, 2), "kd_cached_s": round(ca, 2),
            "cache_ratio": round((ca - s) / (on - s), 3) if on > s else None,
            "teacher_cache_forwards": summaries["kd_cached"]["teacher_cache_forwards"],
            "teacher_eval_reused": summaries["kd_cached"]["teacher_eval_reused"],
            "student_eval_top1": summaries["student"]["final"]["eval_top1"],
            "kd_online_eval_top1": summaries["kd_online"]["final"]["eval_top1"],
            "kd_cached_eval_top1": summaries["kd_cached"]["final"]["eval_top1"],
            "kd_online_agreement": summaries["kd_online"]["teacher_agreement"],
            "kd_cached_agreement": summaries["kd_cached"]["teacher_agreement"]}


def sweep(student: list[str], teacher: str, tmp: str) -> dict[str, Any]:
    """4 KD runs with an online teacher and 4 through one shared teacher cache folder (the first fills it), each
    point interleaved with a run of the student alone, so that the machine's drift falls on all three alike."""
    warm = list(student)
    warm[warm.index("--epochs") + 1] = "1"
    timed(main_cls, [*warm, "--output-dir", os.path.join(tmp, "warm-up")])  # one-time costs (imports, caches)
    shared = os.path.join(tmp, "teacher-cache")
    alone_s = online_s = cached_s = 0.0
    runs = []
    for alpha, t in SWEEP:
        kd = ["--teacher", teacher, "--kd-alpha", alpha, "--kd-temperature", t]
        al, _ = timed(main_cls, [*student, "--output-dir", os.path.join(tmp, f"alone-{alpha}-{t}")])
        on, s_on = timed(main_kd, [*student, *kd, "--output-dir", os.path.join(tmp, f"online-{alpha}-{t}")])
        ca, s_ca = timed(main_kd, [*student, *kd, "--teacher-cache-dir", shared,
                                   "--output-dir", os.path.join(tmp, f"cached-{alpha}-{t}")])
        alone_s, online_s, cached_s = alone_s + al, online_s + on, cached_s + ca
        runs.append({"alpha": float(alpha), "T": float(t), "alone_s": round(al, 2), "online_s": round(on, 2),
                     "cached_s": round(ca, 2), "teacher_cache_forwards": s_ca["teacher_cache_forwards"],
                     "teacher_cache_reused": s_ca["teacher_cache_reused"],
                     "online_eval_top1": s_on["final"]["eval_top1"], "cached_eval_top1": s_ca["final"]["eval_top1"],
                     "cached_agreement": s_ca["teacher_agreement"]})
    return {"sweep_students_s": round(alone_s, 2), "sweep_online_s": round(online_s, 2),
            "sweep_cached_s": round(cached_s, 2),
            "teacher_share": round((cached_s - alone_s) / (online_s - alone_s), 3) if online_s > alone_s else None,
            "runs": runs}


def types(student: list[str], teacher: str, tmp: str) -> dict[str, Any]:
    """The student alone and with soft, feature and token distillation, at alpha 0.5."""
    out: dict[str, Any] = {}
    s, summary = timed(main_cls, [*student, "--output-dir", os.path.join(tmp, "alone")])
    agree = evaluate_main(["--run", os.path.join(tmp, "alone"), "--compare-with", teacher])["agreement"]
    out["alone"] = {"eval_top1": summary["final"]["eval_top1"], "agreement": agree, "time_s": round(s, 2)}
    for kd_type in ("soft", "feature", "token"):
        argv = [*student, "--teacher", teacher, "--kd-alpha", "0.5", "--kd-type", kd_type, "--teacher-cache",
                "--output-dir", os.path.join(tmp, kd_type)]
        if kd_type == "token":
            argv[argv.index("vit_tiny_patch16_224")] = "deit_tiny_distilled_patch16_224"
        s, summary = timed(main_kd, argv)
        out[kd_type] = {"eval_top1": summary["final"]["eval_top1"], "agreement": summary["teacher_agreement"],
                        "time_s": round(s, 2), "model": summary["model"], "num_params": summary["num_params"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--what", choices=("cache", "sweep", "types"), default="cache")
    p.add_argument("--teacher", default=None, help="a train_cls.py run folder (default: train the small teacher)")
    p.add_argument("--epochs", type=int, default=5, help="student epochs")
    p.add_argument("--samples-per-class", type=int, default=200)
    p.add_argument("--eval-samples-per-class", type=int, default=100)
    p.add_argument("--student-kwargs", nargs="*", default=["patch_size=4", "depth=2"])
    p.add_argument("--kd-type", default="soft", help="--what cache: the distillation timed")
    p.add_argument("--kd-temperature", default="4", help="--what cache")
    p.add_argument("--repeats", type=int, default=3, help="--what cache: time each run this many times, keep the fastest")
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
        if args.what == "cache":
            kd = ["--teacher", teacher, "--kd-alpha", "1", "--kd-type", args.kd_type,
                  "--kd-temperature", args.kd_temperature]
            result = cache(student, kd, tmp, args.repeats)
        elif args.what == "sweep":
            result = sweep(student, teacher, tmp)
        else:
            result = types(student, teacher, tmp)
    print(json.dumps({"benchmark": "kd", "what": args.what, "device": "cpu", "epochs": args.epochs,
                      "student_kwargs": args.student_kwargs, **result}))


if __name__ == "__main__":
    main()
