"""The study's figures (trainer/study/plots.py)."""
from __future__ import annotations

from trainer.run_records import RunSummary
from trainer.study.plots import plot_curves
from trainer.study.results import StudyRun


def test_the_curves_show_the_loss_parts_of_a_distillation(tmp_path):
    def records(parts: bool) -> list:
        return [{"event": event, "epoch": float(e), "step": e, "loss": 1.0 / e, "top1": 0.1 * e,
                 **({"loss_ce": 1.2 / e, "loss_kd": 0.8 / e} if parts and event == "train" else {})}
                for e in (1, 2, 3) for event in ("train", "eval")]

    def run(parts: bool) -> StudyRun:
        return StudyRun(RunSummary.from_json({"final": {"eval_top1": 0.3}}), records(parts))

    alone = {"part3_tiny_pretrained": run(False)}
    assert len(plot_curves(alone, str(tmp_path / "a.png"))) == 2
    titles = plot_curves({**alone, "part4_tiny_distilled": run(True)}, str(tmp_path / "b.png"))
    assert len(titles) == 3 and "teacher term (KD)" in titles[2]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
