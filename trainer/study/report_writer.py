"""The study's report (report.md): its tables, plots and observations, computed from the runs' own files."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from ..escape import markdown_cell
from .plots import plot_confusion, plot_curves, plot_tradeoff
from .results import TITLES, StudyRun, load_study_runs

def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float], fmt: str = "{:.3f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def observations(runs: dict[str, StudyRun], study: dict[str, Any]) -> list[str]:
    """Short sentences computed from the numbers."""
    out = []
    top = {r: s.summary.eval_top1 for r, s in runs.items()}
    loss = {r: s.summary.final["eval_loss"] for r, s in runs.items()}
    thr = study.get("throughput", {})
    agree = study.get("agreement_with_teacher", {})
    if "part1_base_scratch" in top and "part2_base_pretrained" in top:
        out.append(f"Pretraining added {100 * (top['part2_base_pretrained'] - top['part1_base_scratch']):+.1f} "
                   f"points of eval top-1 to ViT-B ({_pct(top['part1_base_scratch'])} from scratch, "
                   f"{_pct(top['part2_base_pretrained'])} pretrained) and changed its eval loss from "
                   f"{loss['part1_base_scratch']:.3f} to {loss['part2_base_pretrained']:.3f}.")
    if "base" in thr and "tiny" in thr:
        speed = thr["tiny"]["images_per_s"] / thr["base"]["images_per_s"]
        lat = thr["base"]["cpu_latency_ms_bs1"] / thr["tiny"]["cpu_latency_ms_bs1"]
        cost = ""
        if "part2_base_pretrained" in top and "part3_tiny_pretrained" in top:
            gap = 100 * (top["part2_base_pretrained"] - top["part3_tiny_pretrained"])
            cost = (f"; its top-1 is {abs(gap):.1f} points {'lower' if gap >= 0 else 'higher'} "
                    f"({_pct(top['part3_tiny_pretrained'])} against {_pct(top['part2_base_pretrained'])})")
        out.append(f"ViT-Ti is {speed:.1f}x faster than ViT-B at test time ({thr['tiny']['images_per_s']:.0f} against "
                   f"{thr['base']['images_per_s']:.0f} images/s on {thr['tiny']['device']}, "
                   f"{thr['tiny']['precision']}) and {lat:.1f}x faster at batch 1 on the CPU{cost}.")
    if "ort_int8_latency_ms_bs1" in thr.get("tiny", {}) and "base" in thr:
        base, tiny = thr["base"], thr["tiny"]
        loss_pts = 100 * (base.get("top1_torch", 0.0) - tiny["top1_int8"])
        speedup = base["cpu_latency_ms_bs1"] / tiny["ort_int8_latency_ms_bs1"]
        out.append(f"Deployed on this CPU at batch 1, int8 ViT-Ti in ONNX Runtime answers in "
                   f"{tiny['ort_int8_latency_ms_bs1']:.1f} ms, {speedup:.1f}x "
                   f"faster than fp32 ViT-B in PyTorch ({base['cpu_latency_ms_bs1']:.1f} ms), for "
                   f"{abs(loss_pts):.1f} points of top-1 {'lost' if loss_pts >= 0 else 'gained'} "
                   f"({_pct(tiny['top1_int8'])} against {_pct(base.get('top1_torch'))} on "
                   f"{tiny['onnx_check_images']} eval images).")
    if "part4_tiny_distilled" in top and "part3_tiny_pretrained" in top:
        line = (f"The teacher added {100 * (top['part4_tiny_distilled'] - top['part3_tiny_pretrained']):+.1f} points "
                f"to the pretrained ViT-Ti ({_pct(top['part3_tiny_pretrained'])} alone, "
                f"{_pct(top['part4_tiny_distilled'])} distilled; the teacher itself "
                f"{_pct(runs['part4_tiny_distilled'].summary.task.get('teacher_eval_top1'))})")
        if "part4_tiny_distilled" in agree and "part3_tiny_pretrained" in agree:
            line += (f"; agreement with the teacher went from {_pct(agree['part3_tiny_pretrained'])} to "
                     f"{_pct(agree['part4_tiny_distilled'])}")
        out.append(line + ".")
    if "part4_tiny_feature" in top and "part4_tiny_distilled" in top:
        feat, logit = top["part4_tiny_feature"], top["part4_tiny_distilled"]
        proj = runs["part4_tiny_feature"].summary.task.get("kd_projection", "")
        how = "through a learned linear projection" if proj.startswith("Linear") else "of the student's own width"
        line = (f"At the same budget, distilling the teacher's pooled features ({how}) gave {_pct(feat)}, "
                f"{100 * (feat - logit):+.1f} points against distilling its logits")
        if "part4_tiny_feature" in agree and "part4_tiny_distilled" in agree:
            line += (f"; agreement with the teacher {_pct(agree['part4_tiny_feature'])} against "
                     f"{_pct(agree['part4_tiny_distilled'])}")
        out.append(line + ". Token distillation needs a student with a distillation token, which ViT-Ti has not "
                   "(`benchmarks/kd.py --what types` compares it with a DeiT-Ti-distilled student).")
    if "part4_tiny_scratch" in top and "part3_tiny_pretrained" in top:
        out.append(f"ViT-Ti from scratch reached {_pct(top['part4_tiny_scratch'])}: pretraining is worth "
                   f"{100 * (top['part3_tiny_pretrained'] - top['part4_tiny_scratch']):+.1f} points to the small "
                   "model too.")
    return out


def deployment_lines(thr: dict) -> list[str]:
    """Part 3 as a deployer asks it: batch-1 CPU latency in PyTorch and ONNX Runtime (fp32, int8), int8's top-1."""
    have = {k: v for k, v in thr.items() if "ort_int8_latency_ms_bs1" in v}
    if not have:
        return []
    lines = ["", "## Deployment on a CPU", "", "Batch-1 latency on this machine's CPU; each model exported with "
             "`python -m trainer.export --int8` (files `model.onnx`, `model.int8.onnx` in its run folder), top-1 on "
             "the first eval images of its run.", "",
             "| model | PyTorch fp32 | ONNX Runtime fp32 | ONNX Runtime int8 | top-1 PyTorch | top-1 ONNX | "
             "top-1 int8 | images |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, v in have.items():
        lines.append(f"| {'ViT-B' if key == 'base' else 'ViT-Ti'} ({v['run']}) | {v['cpu_latency_ms_bs1']:.1f} ms | "
                     f"{v['ort_fp32_latency_ms_bs1']:.1f} ms | {v['ort_int8_latency_ms_bs1']:.1f} ms | "
                     f"{_pct(v['top1_torch'])} | {_pct(v['top1_onnx'])} | {_pct(v['top1_int8'])} | "
                     f"{v['onnx_check_images']} |")
    return lines


PHONE_ROWS = (("torch_fp32", "PyTorch eager fp32", "top1_torch"), ("ort_fp32", "ONNX Runtime fp32", "top1_onnx"),
              ("ort_int8", "ONNX Runtime int8", "top1_int8"), ("et_fp32", "ExecuTorch fp32 (XNNPACK)", "et_top1"),
              ("et_int8", "ExecuTorch int8 (XNNPACK)", "et_int8_top1"))


def phone_lines(thr: dict) -> list[str]:
    """Part 3 at a phone's budget: batch-1 latency at 1 and 4 threads in each runtime and precision, with the top-1
    of each format's file."""
    have = {k: v for k, v in thr.items() if "phone_latency_ms_bs1" in v}
    if not have:
        return []
    threads = sorted({t for v in have.values() for t in v["phone_latency_ms_bs1"]}, key=int)
    names = {"base": "ViT-B", "tiny": "ViT-Ti"}
    head = " | ".join(f"{names.get(k, k)} {t} thread{'s' if t != '1' else ''}" for k in have for t in threads)
    lines = ["", "## Deployment at a phone's budget", "",
             "Batch-1 latency on this machine's CPU with 1 and 4 threads (a phone app's budget: one core, or the big "
             "cores), each model as `python -m trainer.export --format executorch --int8` and `--format onnx --int8` "
             "write it into its run folder (`model.pte`, `model.int8.pte`, `model.onnx`, `model.int8.onnx`); top-1 of "
             "each file on the first eval images of its run.", "",
             f"| runtime | {head} | " + " | ".join(f"top-1 {names.get(k, k)}" for k in have) + " |",
             "| --- |" + " ---: |" * (len(have) * len(threads) + len(have))]
    for key, label, top in PHONE_ROWS:
        if not any(key in v["phone_latency_ms_bs1"][t] for v in have.values() for t in threads):
            continue
        cells = [f"{v['phone_latency_ms_bs1'][t][key]:.1f} ms" if key in v["phone_latency_ms_bs1"][t] else "n/a"
                 for v in have.values() for t in threads]
        tops = [_pct(v.get(top)) for v in have.values()]
        lines.append(f"| {label} | " + " | ".join(cells + tops) + " |")
    return lines


def sweep_lines(out_dir: str) -> list[str]:
    """A line for each sweep kept in the study's folder (`python -m trainer.sweep --output-dir STUDY/NAME`)."""
    found = []
    for name in sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []:
        try:
            with open(os.path.join(out_dir, name, "sweep.json")) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        best = record.get("best") or {}
        said = (f"best trial {best['number']}, {record.get('metric')} {best['value']:.4f} with "
                + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best["params"].items())
                if best else "no trial complete")
        found.append(f"- [{name}]({name}/sweep.md): {len(record.get('trials', []))} trials; {said}")
    return ["", "## Sweeps", ""] + found if found else []


def per_class_lines(runs: dict[str, StudyRun]) -> list[str]:
    """Each class's eval accuracy (recall) in every run: where each model fails."""
    have = {r: pc for r, s in runs.items() if (pc := s.summary.per_class) is not None}
    if not have:
        return []
    names = next(iter(have.values()))["label_names"]
    lines = ["", "## Per class", "", "Eval accuracy of each class (recall); precision, F1 and the confusion matrix "
             "of every run are in its `summary.json` (`per_class`).", "",
             "| class | " + " | ".join(TITLES[r] for r in have) + " |", "| --- |" + " ---: |" * len(have)]
    for k, name in enumerate(names):
        lines.append(f"| {markdown_cell(name)} | " + " | ".join(_pct(pc["recall"][k]) for pc in have.values()) + " |")
    lines.append("| macro F1 | " + " | ".join(f"{pc['macro_f1']:.3f}" for pc in have.values()) + " |")
    return lines


def best_of_each_model(runs: dict[str, StudyRun]) -> dict[str, dict]:
    """The per-class figures of the best ViT-B and the best ViT-Ti run, by eval top-1, titled for the plot."""
    out = {}
    for kind in ("base", "tiny"):
        mine = [r for r, s in runs.items() if kind in r and s.summary.per_class is not None]
        if mine:
            best = max(mine, key=lambda r: runs[r].summary.eval_top1)
            out[TITLES[best]] = runs[best].summary.per_class or {}
    return out


def write_report(out_dir: str) -> str:
    """Write report.md, curves.png, tradeoff.png and confusion.png from a study folder; return the report's path."""
    with open(os.path.join(out_dir, "study.json")) as f:
        study = json.load(f)
    runs = load_study_runs(out_dir)
    thr = study.get("throughput", {})
    agree = study.get("agreement_with_teacher", {})
    lines = [f"# ViT study: {study['preset']}", "",
             f"{study.get('description', '')}. Measured on {study.get('device', 'unknown hardware')}; "
             f"the whole study took {study.get('study_wall_s', 0):.0f} s of wall time"
             + (f" over {study['sessions']} sessions." if study.get("sessions", 1) > 1 else "."), ""]
    lines += ["| run | model | init | params | train loss | train top-1 | eval loss | eval top-1 | best eval top-1 "
              "| test images/s | agreement with teacher | training time |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run, title in TITLES.items():
        s = runs[run].summary if run in runs else None
        init = study.get("inits", {}).get(run, "")
        init = "stand-in (see below)" if "STAND-IN" in init else init
        if s is None:
            lines.append(f"| {title} | | {init} | | | | | | | | | not run |")
            continue
        key = "base" if "base" in run else "tiny"
        ips = f"{thr[key]['images_per_s']:.0f}" if key in thr else "n/a"
        final = s.final
        lines.append(f"| {title} | {runs[run].model_words()} | {init} | {s.num_params / 1e6:.1f}M | "
                     f"{_num(final['train_loss'])} | "
                     f"{_pct(final['train_top1'])} | {_num(final['eval_loss'])} | {_pct(final['eval_top1'])} | "
                     f"{_pct(s.best_eval_top1)} | {ips} | {_pct(agree.get(run)) if run in agree else '-'} | "
                     f"{s.train_time_s:.0f} s |")
    lines += ["", "Train loss is each run's own objective (for the distilled runs (1 - alpha) x CE + alpha x KD, where "
                  "KD is a KL divergence (4) or a feature MSE (4f)), so compare runs by their eval loss."]
    if thr:
        lines += ["", "Test-time throughput: synthetic batch, eval mode, `torch.inference_mode()`, warm-up then timed "
                      "iterations; " + "; ".join(
                          f"{k}: {v['images_per_s']:.0f} images/s at batch {v['batch_size']} ({v['device']}, "
                          f"{v['precision']}), batch-1 CPU latency {v['cpu_latency_ms_bs1']:.1f} ms"
                          for k, v in thr.items()) + "."]
    lines += deployment_lines(thr)
    lines += phone_lines(thr)
    lines += per_class_lines(runs)
    lines += sweep_lines(out_dir)
    lines += ["", "## Observations", ""] + [f"- {o}" for o in observations(runs, study)]
    if study.get("notes"):
        lines += ["", "## Not run", ""] + [f"- {n}" for n in study["notes"]]
    stand_ins: dict[str, list[str]] = {}  # one sentence per stand-in, with the runs that started from it
    for r, i in study.get("inits", {}).items():
        if "STAND-IN" in i:
            stand_ins.setdefault(i, []).append(TITLES[r])
    if stand_ins:
        lines += ["", "## Pretrained weights", "",
                  "ImageNet weights were not used here. " + " ".join(
                      f"{', '.join(titles)}: {words}."
                      for words, titles in stand_ins.items())
                  + " These runs show how the toolkit handles a pretrained start and a head swap, not what "
                  "ImageNet pretraining is worth."]
    if runs:
        plot_curves(runs, os.path.join(out_dir, "curves.png"))
        plot_tradeoff(runs, thr, os.path.join(out_dir, "tradeoff.png"),
                      next(iter(thr.values()))["device"] if thr else "")
        lines += ["", "![curves](curves.png)", "", "![tradeoff](tradeoff.png)"]
    if best := best_of_each_model(runs):
        plot_confusion(best, os.path.join(out_dir, "confusion.png"))
        lines += ["", "![confusion matrices of the best ViT-B and ViT-Ti runs](confusion.png)"]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
