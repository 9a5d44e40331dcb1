"""The study's report: one table, two plots and observations computed from the runs' own files.

    python -m trainer.study.report runs/demo      # rewrite runs/demo/report.md, curves.png, tradeoff.png
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

from ..errors import UsageError, exit_on_usage_error
from ..metrics import read_jsonl

TITLES = {
    "part1_base_scratch": "1. ViT-B from scratch",
    "part2_base_pretrained": "2. ViT-B pretrained",
    "part3_tiny_pretrained": "3. ViT-Ti pretrained",
    "part4_tiny_distilled": "4. ViT-Ti pretrained + teacher",
    "part4_tiny_scratch": "4'. ViT-Ti from scratch",
}


def _load(out_dir: str, run: str) -> Optional[dict]:
    folder = os.path.join(out_dir, run)
    if not os.path.exists(os.path.join(folder, "summary.json")):
        return None
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    summary["records"] = read_jsonl(os.path.join(folder, "metrics.jsonl"))
    return summary


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float], fmt: str = "{:.3f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def plot_curves(runs: dict, path: str) -> None:
    """Loss and top-1 against epoch: eval (solid, every evaluation) and train (dashed, epoch averages)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for i, s in enumerate(runs.values()):
        recs = s["records"]
        evals = [r for r in recs if r["event"] == "eval" and r.get("loss") is not None]
        # Train lines are running averages over the epoch so far; the epoch-end value is the epoch's average.
        trains = [r for r in recs if r["event"] == "train" and float(r["epoch"]).is_integer()]
        for ax, key, scale in ((axes[0], "loss", 1), (axes[1], "top1", 100)):
            ax.plot([r["epoch"] for r in evals], [scale * r[key] for r in evals], "-", marker=".", color=f"C{i}")
            ax.plot([r["epoch"] for r in trains], [scale * r[key] for r in trains], "--", marker="x", color=f"C{i}",
                    alpha=0.8)
    axes[0].set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="top-1 (%)", title="Top-1 accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=f"C{i}", lw=3, label=TITLES[run]) for i, run in enumerate(runs)]
    handles += [Line2D([], [], color="k", ls="-", marker=".", label="eval"),
                Line2D([], [], color="k", ls="--", marker="x", label="train (epoch average)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(runs: dict, throughput: dict, path: str, device: str) -> None:
    """Final eval top-1 against test-time images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.8))
    xs = []
    for i, (run, s) in enumerate(runs.items()):
        key = "base" if "base" in run else "tiny"
        if key not in throughput or s["final"]["eval_top1"] is None:
            continue
        x, y = throughput[key]["images_per_s"], 100 * s["final"]["eval_top1"]
        xs.append(x)
        ax.scatter([x], [y], color=f"C{i}", s=60, zorder=3)
        # Runs of one model share an x: alternate the labels above and below so close points stay readable.
        ax.annotate(TITLES[run], (x, y), textcoords="offset points", xytext=(-7, 6 if i % 2 else -12), fontsize=8,
                    ha="right")
    ax.set_xscale("log")
    if xs:
        ax.set_xlim(min(xs) / 3, max(xs) * 1.8)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=f"test-time throughput (images/s, {device}, log scale)", ylabel="final eval top-1 (%)",
           title="Accuracy against speed")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def observations(runs: dict, study: dict) -> list[str]:
    """Short sentences computed from the numbers."""
    out = []
    top = {r: s["final"]["eval_top1"] for r, s in runs.items()}
    loss = {r: s["final"]["eval_loss"] for r, s in runs.items()}
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
    if "part4_tiny_distilled" in top and "part3_tiny_pretrained" in top:
        line = (f"The teacher added {100 * (top['part4_tiny_distilled'] - top['part3_tiny_pretrained']):+.1f} points "
                f"to the pretrained ViT-Ti ({_pct(top['part3_tiny_pretrained'])} alone, "
                f"{_pct(top['part4_tiny_distilled'])} distilled; the teacher itself "
                f"{_pct(runs['part4_tiny_distilled'].get('teacher_eval_top1'))})")
        if "part4_tiny_distilled" in agree and "part3_tiny_pretrained" in agree:
            line += (f"; agreement with the teacher went from {_pct(agree['part3_tiny_pretrained'])} to "
                     f"{_pct(agree['part4_tiny_distilled'])}")
        out.append(line + ".")
    if "part4_tiny_scratch" in top and "part3_tiny_pretrained" in top:
        out.append(f"ViT-Ti from scratch reached {_pct(top['part4_tiny_scratch'])}: pretraining is worth "
                   f"{100 * (top['part3_tiny_pretrained'] - top['part4_tiny_scratch']):+.1f} points to the small "
                   "model too.")
    return out


def write_report(out_dir: str) -> str:
    """Write report.md, curves.png and tradeoff.png from a study folder; return the report's path."""
    with open(os.path.join(out_dir, "study.json")) as f:
        study = json.load(f)
    runs = {r: s for r in TITLES if (s := _load(out_dir, r)) is not None}
    thr = study.get("throughput", {})
    agree = study.get("agreement_with_teacher", {})
    lines = [f"# ViT study: {study['preset']}", "",
             f"{study.get('description', '')}. Measured on {study.get('device', 'unknown hardware')}; "
             f"the whole study took {study.get('study_wall_s', 0):.0f} s of wall time.", ""]
    lines += ["| run | model | init | params | train loss | train top-1 | eval loss | eval top-1 | best eval top-1 "
              "| test images/s | agreement with teacher | training time |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run, title in TITLES.items():
        s = runs.get(run)
        init = study.get("inits", {}).get(run, "")
        init = "stand-in (see below)" if "STAND-IN" in init else init
        if s is None:
            lines.append(f"| {title} | | {init} | | | | | | | | | not run |")
            continue
        key = "base" if "base" in run else "tiny"
        ips = f"{thr[key]['images_per_s']:.0f}" if key in thr else "n/a"
        f = s["final"]
        lines.append(f"| {title} | {s['model']} | {init} | {s['num_params'] / 1e6:.1f}M | {_num(f['train_loss'])} | "
                     f"{_pct(f['train_top1'])} | {_num(f['eval_loss'])} | {_pct(f['eval_top1'])} | "
                     f"{_pct(s['best_eval_top1'])} | {ips} | {_pct(agree.get(run)) if run in agree else '-'} | "
                     f"{s['train_time_s']:.0f} s |")
    lines += ["", "Train loss is each run's own objective (for the distilled run (1 - alpha) x CE + alpha x KD, which "
                  "is not a cross-entropy), so compare runs by their eval loss."]
    if thr:
        lines += ["", "Test-time throughput: synthetic batch, eval mode, `torch.inference_mode()`, warm-up then timed "
                      "iterations; " + "; ".join(
                          f"{k}: {v['images_per_s']:.0f} images/s at batch {v['batch_size']} ({v['device']}, "
                          f"{v['precision']}), batch-1 CPU latency {v['cpu_latency_ms_bs1']:.1f} ms"
                          for k, v in thr.items()) + "."]
    lines += ["", "## Observations", ""] + [f"- {o}" for o in observations(runs, study)]
    if study.get("notes"):
        lines += ["", "## Not run", ""] + [f"- {n}" for n in study["notes"]]
    stand_ins = {r: i for r, i in study.get("inits", {}).items() if "STAND-IN" in i}
    if stand_ins:
        lines += ["", "## Pretrained weights", "",
                  "ImageNet weights were not used here. " + "; ".join(f"{TITLES[r]}: {i}" for r, i in stand_ins.items())
                  + ". These runs show how the toolkit handles a pretrained start and a head swap, not what "
                  "ImageNet pretraining is worth."]
    if runs:
        plot_curves(runs, os.path.join(out_dir, "curves.png"))
        plot_tradeoff(runs, thr, os.path.join(out_dir, "tradeoff.png"),
                      next(iter(thr.values()))["device"] if thr else "")
        lines += ["", "![curves](curves.png)", "", "![tradeoff](tradeoff.png)"]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


@exit_on_usage_error
def main(argv: Optional[list[str]] = None) -> str:
    """Rewrite the report of a study folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise UsageError("usage: python -m trainer.study.report STUDY_DIR")
    if not os.path.isfile(os.path.join(args[0], "study.json")):
        raise UsageError(f"{args[0]} holds no study.json: pass a folder written by python -m trainer.study")
    path = write_report(args[0])
    print(path)
    return path


if __name__ == "__main__":
    main()
