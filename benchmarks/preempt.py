"""Time from SIGTERM to exit: how much grace period a scheduler must give the trainer.

    python benchmarks/preempt.py --dataset ../shared/data/cifar10                      # the small ViT, this CPU
    python benchmarks/preempt.py --dataset DIR -- --model vit_base_patch16_224 --img-size 224 \\
        --model-kwargs --mixed-precision bf16 --batch-size 64                           # vit_base on a GPU

Each repeat starts `train_cls.py` in its own process (the arguments after `--` replace the model arguments),
waits until it has logged --after steps, sends SIGTERM, and times until the process has exited (it finishes its
optimizer step, saves a resumable checkpoint, closes). The same command with --resume-from auto then continues
it once, to check that the checkpoint resumes.
The last stdout line is one JSON object: sigterm_to_checkpoint_s (median: from the signal to the checkpoint
folder under its final name; after that even a SIGKILL loses nothing), sigterm_to_exit_s (median; the rest is
the interpreter closing, about 1 s for `import torch` alone on the project's CPU machine), sigterm_to_exit_max_s, exit_code,
checkpoint_mb, step_s (a training step's wall time, from the run's own images/s) and resumed (true when the
continued run ended with code 0).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_VIT = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-kwargs", "patch_size=4", "depth=4",
             "--batch-size", "64"]


def _records(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):  # not written yet, or a line being written
        return []


def stop_once(cmd: list[str], out: str, after: int) -> tuple[float, float, int, list[dict]]:
    """(seconds from SIGTERM to the checkpoint in place, to exit; exit code; the metric records) of one run
    stopped after `after` steps."""
    metrics, ckpts = os.path.join(out, "metrics.jsonl"), os.path.join(out, "checkpoints")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any(r.get("step", 0) >= after for r in _records(metrics)):
        time.sleep(0.01)
    if proc.poll() is not None:
        raise SystemExit(f"the run ended (code {proc.returncode}) before step {after}: raise --epochs")
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    saved = None
    while proc.poll() is None:  # the checkpoint is in place once its folder has its final name
        if saved is None and os.path.isdir(ckpts) and any(n.startswith("step-") for n in os.listdir(ckpts)):
            saved = time.perf_counter() - sent
        time.sleep(0.005)
    exited = time.perf_counter() - sent
    return saved if saved is not None else exited, exited, proc.returncode, _records(metrics)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/cifar10")
    p.add_argument("--samples-per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--after", type=int, default=10, help="send SIGTERM once this many steps are logged")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("model_args", nargs="*", help="after --: the model and batch arguments (default: the small ViT)")
    args = p.parse_args()
    times, saves, codes, step_s, size = [], [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, os.path.join(ROOT, "train_cls.py"), *(args.model_args or SMALL_VIT),
               "--dataset", args.dataset, "--samples-per-class", str(args.samples_per_class),
               "--eval-samples-per-class", "20", "--epochs", str(args.epochs), "--log-every", "1",
               "--output-dir", out, "--no-progress", "--resume-from", "auto"]
        for _ in range(args.repeats):
            subprocess.run(["rm", "-rf", out], check=True)
            saved, seconds, code, records = stop_once(cmd, out, args.after)
            times.append(seconds)
            saves.append(saved)
            codes.append(code)
            rates = [r["images_per_s"] for r in records if r.get("event") == "train" and r.get("images_per_s")]
            batch = int(cmd[cmd.index("--batch-size") + 1]) if "--batch-size" in cmd else 64
            step_s.append(batch / statistics.median(rates) if rates else float("nan"))
            ckpt_root = os.path.join(out, "checkpoints")
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(ckpt_root) for f in files)
            if not args.json:
                print(f"SIGTERM to checkpoint {saved:.2f} s, to exit {seconds:.2f} s (exit code {code})", flush=True)
        resumed = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    print(json.dumps({"sigterm_to_checkpoint_s": round(statistics.median(saves), 3),
                      "sigterm_to_exit_s": round(statistics.median(times), 3),
                      "sigterm_to_exit_max_s": round(max(times), 3), "exit_code": max(set(codes), key=codes.count),
                      "checkpoint_mb": round(size / 1e6, 1), "step_s": round(statistics.median(step_s), 4),
                      "resumed": resumed, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
