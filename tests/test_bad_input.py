"""Bad input ends with exit code 2, one line on stderr naming problem and fix, and nothing written.

One table of cases, run in-process through each entry point's main (what the scripts call), plus a few through
real fresh interpreters, as a user would meet them."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from trainer.commands.benchmark import main as benchmark_main
from trainer.commands.train import main_cls, main_kd
from trainer.commands.evaluate import main as evaluate_main
from trainer.commands.study import main as study_main
from trainer.commands.report import main as report_main

from .helpers import SMALL_VIT, make_dataset, run_here, run_script

MAINS: dict[str, Callable] = {"train_cls.py": main_cls, "train_kd.py": main_kd, "evaluate": evaluate_main,
                              "benchmark": benchmark_main, "study": study_main, "report": report_main}


def _prepare(case: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files (and pretended machine sizes) some cases need in place before the command runs."""
    if case == "device_too_small":
        monkeypatch.setenv("VIT_TRAINER_DEVICE_FREE_BYTES", "1000")
    elif case == "disk_full":
        monkeypatch.setattr("trainer.data.decode_cache.shutil.disk_usage",
                            lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    elif case in ("cache_dir_unwritable", "teacher_cache_dir_unwritable"):
        (tmp / "a-file").write_text("x")
    elif case == "corrupt_pretrained":
        (tmp / "w.safetensors").write_bytes(b"\x00" * 64)
    elif case == "output_is_file":
        (tmp / "out").write_text("x")
    elif case in ("output_in_use", "teacher_is_output"):
        (tmp / "out").mkdir()
        (tmp / "out" / "summary.json").write_text("{}")
    elif case == "one_class":
        make_dataset(tmp / "one-class", {"train": 5, "test": 5}, num_classes=1)
    elif case == "string_labels":
        import datasets
        from PIL import Image

        images = [Image.new("RGB", (8, 8))] * 4
        split = datasets.Dataset.from_dict({"img": images, "label": ["cat", "dog", "cat", "dog"]},
                                           features=datasets.Features({"img": datasets.Image(),
                                                                       "label": datasets.Value("string")}))
        datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp / "strings"))


BEFORE_DECODING = ("opt_unknown", "patch_zero", "embed_dim_odd", "depth_negative", "drop_rate", "patch_over_image",
                   "patch_grid", "seed", "weight_decay_inf", "samples_zero", "output_empty", "teacher_is_output",
                   "one_class", "string_labels")


# (case, entry point, arguments ({data}, {tmp} filled in), words the one line must hold)
CASES = [
    ("epochs", "train_cls.py", ["--epochs", "0"], ["--epochs must be at least 1"]),
    ("batch_size", "train_cls.py", ["--batch-size", "0"], ["--batch-size must be at least 1"]),
    ("lr", "train_cls.py", ["--lr", "-1"], ["--lr must be in (0, 10)"]),
    ("label_smoothing", "train_cls.py", ["--label-smoothing", "1.5"], ["--label-smoothing must be in [0, 1)"]),
    ("samples", "train_cls.py", ["--samples-per-class", "-3"], ["--samples-per-class must be at least 1"]),
    ("kwargs_form", "train_cls.py", ["--model-kwargs", "depth"], ["key=value"]),
    ("unknown_flag", "train_cls.py", ["--no-such-flag"], ["unrecognized arguments"]),
    ("checkpoint_every", "train_cls.py", ["--checkpoint-every", "sometimes"],
     ["--checkpoint-every", "positive step count or 'epoch'"]),
    ("kd_alpha", "train_kd.py", ["--teacher", "{tmp}", "--kd-alpha", "1.5"], ["--kd-alpha must be in [0, 1]"]),
    ("kd_temperature", "train_kd.py", ["--teacher", "{tmp}", "--kd-temperature", "0"], ["--kd-temperature must be > 0"]),
    ("teacher_cache_dir_unwritable", "train_kd.py", ["--teacher", "{tmp}", "--teacher-cache-dir", "{tmp}/a-file/kd"],
     ["--teacher-cache-dir", "is a file: pass a folder path"]),
    ("scale", "train_cls.py", ["--random-resized-crop", "--scale", "0.5", "1.5"],
     ["--scale must be two fractions 0 < MIN <= MAX <= 1, got [0.5, 1.5]"]),
    ("ratio", "train_cls.py", ["--random-resized-crop", "--ratio", "0", "1"], ["--ratio must be two ratios 0 < MIN <= MAX"]),
    ("two_crops", "train_cls.py", ["--random-resized-crop", "--random-crop", "4"], ["exclude each other"]),
    ("unknown_model", "train_cls.py", ["--model", "vit_tinny_patch16_224"],
     ["unknown timm model 'vit_tinny_patch16_224'", "did you mean"]),
    ("model_kwargs_name", "train_cls.py", ["--model-kwargs", "depth=2", "dept=3"], ["rejects --model-kwargs", "dept"]),
    ("missing_folder", "train_cls.py", ["--dataset", "{tmp}/nope"], ["does not exist", "--dataset"]),
    ("label_column_missing", "train_cls.py", ["--label-column", "labels"],
     ["column 'labels' (--label-column) not found", "['img', 'label']"]),
    ("label_column_is_images", "train_cls.py", ["--label-column", "img"],
     ["column 'img' holds Image, not class labels", "--label-column"]),
    ("image_column_is_labels", "train_cls.py", ["--image-column", "label"], ["column 'label' holds", "not images"]),
    ("too_many", "train_cls.py", ["--samples-per-class", "500"],
     ["class 'class0' has only 60 images in split 'train'", "--samples-per-class 500"]),
    ("missing_split", "train_cls.py", ["--eval-split", "validation"], ["split 'validation' not found", "--eval-split"]),
    ("corrupt_pretrained", "train_cls.py", ["--pretrained-file", "{tmp}/w.safetensors"],
     ["not a readable safetensors file"]),
    ("output_is_file", "train_cls.py", [], ["is a file"]),
    ("output_in_use", "train_cls.py", [], ["already holds a run", "--overwrite"]),
    ("resume_without_checkpoint", "train_cls.py", ["--resume-from", "latest"], ["no checkpoint"]),
    ("device_too_small", "train_cls.py", ["--data-on", "device"],
     ["--data-on device: the decoded images (0.4 MB) do not fit in 40% of the cpu device's 0.0 MB free",
      "--data-on host", "disk"]),
    ("data_on_choice", "train_cls.py", ["--data-on", "gpu"], ["--data-on", "invalid choice: 'gpu'"]),
    ("disk_full", "train_cls.py", ["--cache-dir", "{tmp}/cache"],
     ["the decode cache needs", " MB in ", "which has 0.0 MB free", "--cache-dir"]),
    ("cache_dir_unwritable", "train_cls.py", ["--cache-dir", "{tmp}/a-file/cache"],
     ["cannot write the decode cache in", "a-file/cache (Not a directory)", "pass --cache-dir"]),
    ("evaluate_missing", "evaluate", ["--checkpoint", "{tmp}/nowhere"], ["does not exist"]),
    ("benchmark_missing", "benchmark", ["--run", "{tmp}/nowhere"], ["does not exist"]),
    ("benchmark_batch", "benchmark", ["--model", "vit_tiny_patch16_224", "--batch-size", "0"],
     ["--batch-size must be positive, got 0"]),
    ("report_without_study", "report", ["{tmp}"], ["holds no study.json"]),
    # What timm's constructor refuses, found before any image is decoded (a fresh --cache-dir stays empty).
    ("patch_zero", "train_cls.py", ["--model-kwargs", "patch_size=0"], ["cannot be built", "ZeroDivisionError"]),
    ("embed_dim_odd", "train_cls.py", ["--model-kwargs", "patch_size=8", "embed_dim=7"],
     ["cannot be built", "divisible by num_heads"]),
    ("depth_negative", "train_cls.py", ["--model-kwargs", "patch_size=8", "depth=-1"], ["cannot be built"]),
    ("drop_rate", "train_cls.py", ["--model-kwargs", "patch_size=8", "drop_rate=2"],
     ["cannot be built", "dropout probability"]),
    ("patch_over_image", "train_cls.py", ["--model-kwargs", "patch_size=64"], ["cannot be built at --img-size 32"]),
    ("patch_grid", "train_cls.py", ["--img-size", "10", "--model-kwargs", "patch_size=4"],
     ["--img-size 10 is not a multiple of the patch size 4", "--img-size 8 or 12"]),
    ("seed", "train_cls.py", ["--seed", "-1"], ["--seed must be in [0, 2^32), got -1"]),
    ("weight_decay_inf", "train_cls.py", ["--weight-decay", "inf"], ["--weight-decay must be a finite number"]),
    ("samples_zero", "train_cls.py", ["--samples-per-class", "0"], ["--samples-per-class must be at least 1"]),
    ("output_empty", "train_cls.py", ["--output-dir", ""], ["--output-dir is empty"]),
    ("teacher_is_output", "train_kd.py", ["--teacher", "{tmp}/out", "--overwrite"],
     ["the student would replace its teacher", "pass another --output-dir"]),
    ("one_class", "train_cls.py", ["--dataset", "{tmp}/one-class"], ["a classifier needs at least two"]),
    ("string_labels", "train_cls.py", ["--dataset", "{tmp}/strings"], ["class_encode_column('label')"]),
    ("study_epochs_negative", "study", ["--preset", "demo", "--epochs", "-1", "--output-dir", "{tmp}/out"],
     ["--epochs must be at least 1, got -1"]),
    ("study_epochs_zero", "study", ["--preset", "demo", "--epochs", "0", "--output-dir", "{tmp}/out"],
     ["--epochs must be at least 1, got 0"]),
    ("opt_unknown", "train_cls.py", ["--opt", "adamww"], ["--opt adamww is not one of timm's optimizers",
                                                          "did you mean adamw"]),
    ("layer_decay_range", "train_cls.py", ["--layer-decay", "1.5"], ["--layer-decay must be in (0, 1]"]),
    ("layer_decay_feature", "train_kd.py", ["--teacher", "{tmp}", "--kd-type", "feature", "--layer-decay", "0.7"],
     ["--layer-decay with --kd-type feature"]),
    ("drop_path_range", "train_cls.py", ["--drop-path", "1"], ["--drop-path must be in [0, 1)"]),
    ("cutmix_minmax", "train_cls.py", ["--cutmix-minmax", "0.8", "0.2"],
     ["--cutmix-minmax must be two increasing fractions 0 < MIN < MAX <= 1"]),
    ("mixup_prob", "train_cls.py", ["--mixup-prob", "1.5"], ["--mixup-prob must be in [0, 1]"]),
    ("mixup_mode", "train_cls.py", ["--mixup-mode", "row"], ["--mixup-mode", "invalid choice"]),
    ("mixup_cache", "train_kd.py", ["--teacher", "{tmp}", "--mixup", "0.8", "--teacher-cache"],
     ["--teacher-cache with --mixup/--cutmix"]),
    ("aa_unparsed", "train_cls.py", ["--aa", "rand-m9-q1"], ["--aa 'rand-m9-q1': unknown section 'q1'",
                                                             "pass rand-m9-mstd0.5-inc1"]),
    ("aa_policy", "train_cls.py", ["--aa", "original"], ["--aa 'original': unknown policy", "or trivial"]),
    ("reprob_range", "train_cls.py", ["--reprob", "1.2"], ["--reprob must be in [0, 1], got 1.2"]),
    ("remode_choice", "train_cls.py", ["--remode", "noise"], ["--remode", "invalid choice"]),
    ("recount_zero", "train_cls.py", ["--recount", "0"], ["--recount must be at least 1"]),
    ("recipe_unknown", "train_cls.py", ["--recipe", "mae"], ["--recipe", "invalid choice: 'mae'", "deit"]),
    ("benchmark_img_size", "benchmark", ["--model", "vit_tiny_patch16_224", "--img-size", "7"],
     ["--img-size must be at least 8, got 7"]),
    ("benchmark_classes", "benchmark", ["--model", "vit_tiny_patch16_224", "--num-classes", "-1"],
     ["--num-classes must be at least 1, got -1"]),
    ("study_without_data", "study", ["--preset", "hw2", "--dataset", "{tmp}/no-cifar", "--output-dir", "{tmp}/out"],
     ["dataset folder", "does not exist"]),
]
TRAINING = ("train_cls.py", "train_kd.py")


def _argv(script: str, args: list[str], data: Path, tmp: Path, cache_dir: Path) -> list[str]:
    filled = [a.format(data=data, tmp=tmp) for a in args]
    if script not in TRAINING:
        return filled
    return [*SMALL_VIT, "--dataset", str(data), "--output-dir", str(tmp / "out"), "--cache-dir", str(cache_dir),
            "--samples-per-class", "10", "--epochs", "1", "--no-progress", *filled]


def _listing(out: Path) -> object:
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text() if out.exists() else None


def _one_clean_line(code, err: str, needles: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case, script, args, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, script, args, needles, toy_dataset, cache_dir, tmp_path, capsys, monkeypatch):
    _prepare(case, tmp_path, monkeypatch)
    before = _listing(tmp_path / "out")
    argv = _argv(script, args, toy_dataset, tmp_path, cache_dir)
    if case in BEFORE_DECODING:
        argv += ["--cache-dir", str(tmp_path / "fresh-cache")]
    res = run_here(MAINS[script], *argv, capsys=capsys)
    _one_clean_line(res.returncode, res.stderr, needles)  # as in a fresh interpreter (the tests below)
    assert _listing(tmp_path / "out") == before  # nothing written
    assert not (tmp_path / "fresh-cache").exists()  # and, where the problem is in the arguments, nothing decoded


@pytest.mark.slow
@pytest.mark.parametrize("case", ["epochs", "label_column_is_images", "evaluate_missing"])
def test_bad_input_in_a_fresh_interpreter(case, toy_dataset, cache_dir, tmp_path):
    _, script, args, needles = next(c for c in CASES if c[0] == case)
    command = script if script in TRAINING else f"-m trainer.{script}"
    res = run_script(command, *_argv(script, args, toy_dataset, tmp_path, cache_dir))
    _one_clean_line(res.returncode, res.stderr, needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_hub_dataset_offline(toy_dataset, cache_dir, tmp_path):
    res = run_script("train_cls.py", *_argv("train_cls.py", ["--dataset", "someone/no-such-dataset"], toy_dataset,
                                            tmp_path, cache_dir), env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    _one_clean_line(res.returncode, res.stderr,
                    ["could not load dataset 'someone/no-such-dataset' from the Hugging Face Hub", "save_to_disk"])
    assert not (tmp_path / "out").exists()
