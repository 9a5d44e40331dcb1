"""Bad input ends with exit code 2, one line on stderr naming problem and fix, and nothing written."""
from __future__ import annotations

import pytest

from .conftest import SMALL_VIT, run_script

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _fails_cleanly(res, out, *needles):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("extra, needles", [
    (["--epochs", "0"], ["--epochs must be at least 1"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1"]),
    (["--lr", "-1"], ["--lr must be in (0, 10)"]),
    (["--label-smoothing", "1.5"], ["--label-smoothing"]),
    (["--samples-per-class", "-3"], ["--samples-per-class must be at least 1"]),
    (["--model-kwargs", "depth"], ["key=value"]),
    (["--no-such-flag"], ["unrecognized arguments"]),
    (["--checkpoint-every", "sometimes"], ["--checkpoint-every"]),
])
def test_numbers_and_flags(tmp_path, toy_dataset, extra, needles):
    out = tmp_path / "out"
    res = run_script("train_cls.py", "--dataset", str(toy_dataset), "--output-dir", str(out), *extra)
    _fails_cleanly(res, out, *needles)


def test_kd_numbers(tmp_path, toy_dataset):
    out = tmp_path / "out"
    for extra, needle in ((["--kd-alpha", "1.5"], "--kd-alpha must be in [0, 1]"),
                          (["--kd-temperature", "0"], "--kd-temperature must be > 0")):
        res = run_script("train_kd.py", "--teacher", str(tmp_path), "--dataset", str(toy_dataset),
                         "--output-dir", str(out), *extra)
        _fails_cleanly(res, out, needle)


@pytest.mark.parametrize("case", ["unknown_model", "missing_folder", "hub_offline", "label_column", "too_many",
                                  "corrupt_pretrained", "output_is_file", "output_in_use"])
def test_setup_errors(tmp_path, toy_dataset, cache_dir, case):
    out = tmp_path / "out"
    base = [*SMALL_VIT, "--dataset", str(toy_dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "10", "--epochs", "1", "--no-progress"]
    env, needles = OFFLINE, []
    if case == "unknown_model":
        base += ["--model", "vit_tinny_patch16_224"]
        needles = ["unknown timm model 'vit_tinny_patch16_224'", "did you mean"]
    elif case == "missing_folder":
        base += ["--dataset", str(tmp_path / "nope")]
        needles = ["does not exist", "--dataset"]
    elif case == "hub_offline":
        base += ["--dataset", "someone/no-such-dataset"]
        needles = ["could not load dataset 'someone/no-such-dataset' from the Hugging Face Hub", "save_to_disk"]
    elif case == "label_column":
        base += ["--label-column", "labels"]
        needles = ["column 'labels' (--label-column) not found", "['img', 'label']"]
    elif case == "too_many":
        base += ["--samples-per-class", "500"]
        needles = ["class 'class0' has only 60 images in split 'train'", "--samples-per-class 500"]
    elif case == "corrupt_pretrained":
        bad = tmp_path / "w.safetensors"
        bad.write_bytes(b"\x00" * 64)
        base += ["--pretrained-file", str(bad)]
        needles = ["not a readable safetensors file"]
    elif case == "output_is_file":
        out.write_text("x")
        res = run_script("train_cls.py", *base, env=env)
        assert res.returncode == 2 and "is a file" in res.stderr and out.read_text() == "x"
        return
    elif case == "output_in_use":
        out.mkdir()
        (out / "summary.json").write_text("{}")
        res = run_script("train_cls.py", *base, env=env)
        assert res.returncode == 2 and "already holds a run" in res.stderr and "--overwrite" in res.stderr
        assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
        return
    res = run_script("train_cls.py", *base, env=env)
    _fails_cleanly(res, out, *needles)


def test_evaluate_and_benchmark_bad_checkpoint(tmp_path):
    for module in ("-m trainer.evaluate", "-m trainer.benchmark"):
        res = run_script(module, "--checkpoint", str(tmp_path / "nowhere"))
        _fails_cleanly(res, tmp_path / "unused", "does not exist")


def test_report_of_a_folder_without_a_study(tmp_path):
    res = run_script("-m trainer.report", str(tmp_path))
    _fails_cleanly(res, tmp_path / "unused", "holds no study.json")


def test_study_without_its_dataset(tmp_path):
    out = tmp_path / "study"
    res = run_script("-m trainer.study", "--preset", "hw2", "--dataset", str(tmp_path / "no-cifar"),
                     "--output-dir", str(out))
    _fails_cleanly(res, out, "dataset folder", "does not exist")
