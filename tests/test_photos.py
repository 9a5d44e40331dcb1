"""Real photos: mixed sizes keep their aspect ratio, are evaluated exactly as timm's eval transform would, and train
with a random-resized-crop whose boxes come from the epoch plan."""
from __future__ import annotations

import datasets
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.transforms import RandomResizedCrop

from trainer.data.augment import EvalCrop, preprocess, resized_crops
from trainer.data.plan import ResizedCrop, resized_crop_boxes
from trainer.commands.train import main_cls
from trainer.data.loading import load_data
from trainer.run_files import read_jsonl
from trainer.models import input_view

from .helpers import SMALL_VIT


@pytest.mark.parametrize("size", [48, 64])
def test_eval_pixels_are_timms_eval_transform(photo_dataset, tmp_path, size):
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=size, patch_size=8, depth=1)
    view = input_view(model, size)
    data = load_data(str(photo_dataset), samples_per_class=5, eval_samples_per_class=3, crop=view.eval_crop,
                     cache_dir=str(tmp_path))
    split = data.eval
    assert split.squares and split.images.shape[1:] == (3, EvalCrop(size, 0.9).side, EvalCrop(size, 0.9).side)
    ours = preprocess(split.images.cpu(), view, squares=True)
    reference = timm.data.create_transform(**timm.data.resolve_data_config({"input_size": (3, size, size)}, model=model))
    originals = datasets.load_from_disk(str(photo_dataset))["test"].select(split.indices.tolist())["image"]
    assert len({im.size for im in originals}) > 1  # mixed sizes and shapes
    expected = torch.stack([reference(im.convert("RGB")) for im in originals])
    assert ours.shape == expected.shape == (9, 3, size, size)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_square_images_of_one_size_are_stored_as_they_are(toy_dataset, tmp_path):
    data = load_data(str(toy_dataset), samples_per_class=5, crop=EvalCrop(224, 0.9), cache_dir=str(tmp_path))
    assert not data.train.squares and data.train.images.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("side", [(50, 80), (64, 64), (90, 30)])
def test_resized_crop_boxes_follow_torchvisions_rules(side):
    rrc = ResizedCrop(side, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    g = torch.Generator().manual_seed(0)
    boxes = resized_crop_boxes(4000, rrc, g)
    h, w = side
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert torch.equal(boxes, boxes.round())  # whole pixels, as torchvision's crop
    area = (x2 - x1) * (y2 - y1) / (h * w)
    aspect = (x2 - x1) / (y2 - y1)
    fits = (area >= 0.08 * 0.8) & (area <= 1.0) & (aspect >= 0.75 * 0.85) & (aspect <= 4 / 3 / 0.85)
    assert fits.float().mean() > 0.99  # rounding to whole pixels moves a few a little
    torch.manual_seed(0)  # the reference: torchvision's own draws, one image at a time
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
                        for _ in range(4000)], dtype=torch.float32)  # (top, left, height, width)
    ref_area, ref_aspect = ref[:, 2] * ref[:, 3] / (h * w), ref[:, 3] / ref[:, 2]
    assert abs(area.mean() - ref_area.mean()) < 0.02 and abs(area.std() - ref_area.std()) < 0.02
    assert abs(aspect.mean() - ref_aspect.mean()) < 0.02
    assert abs(x1.mean() - ref[:, 1].mean()) < 1.0 and abs(y1.mean() - ref[:, 0].mean()) < 1.0  # where the boxes sit
    assert not torch.equal(boxes, resized_crop_boxes(4000, rrc, torch.Generator().manual_seed(1)))
    assert torch.equal(boxes, resized_crop_boxes(4000, rrc, torch.Generator().manual_seed(0)))


def test_a_ratio_that_never_fits_falls_back_to_the_clamped_whole_image():
    boxes = resized_crop_boxes(5, ResizedCrop((40, 100), scale=(0.99, 1.0), ratio=(1.0, 1.0)), torch.Generator())
    assert boxes.tolist() == [[30.0, 0.0, 70.0, 40.0]] * 5  # torchvision: h = 40, w = round(40 * 1), centred


def test_resized_crops_are_bilinear_inside_and_box_averages_when_shrinking():
    x = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8)
    out = resized_crops(x, torch.tensor([[0.0, 0.0, 30.0, 20.0], [5.0, 2.0, 15.0, 12.0]]), 40)
    whole = F.interpolate(x[:1].float(), size=(40, 40), mode="bilinear", align_corners=False)
    part = F.interpolate(x[1:, :, 2:12, 5:15].float(), size=(40, 40), mode="bilinear", align_corners=False)
    assert torch.allclose(out[0], whole[0], atol=1e-4)
    assert torch.allclose(out[1, :, 2:-2, 2:-2], part[0, :, 2:-2, 2:-2], atol=1e-4)  # edges see the box's context
    shrunk = resized_crops(x[:1], torch.tensor([[0.0, 0.0, 20.0, 20.0]]), 5)
    assert torch.allclose(shrunk, F.interpolate(x[:1, :, :20, :20].float(), size=(5, 5), mode="area"), atol=1e-4)


def _args(dataset, out, cache_dir, *extra):
    return [*SMALL_VIT, "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache_dir),
            "--samples-per-class", "30", "--batch-size", "10", "--lr", "2e-3", "--warmup-epochs", "0.2",
            "--no-progress", "--random-resized-crop", "--scale", "0.3", "1", *extra]


@pytest.mark.slow
def test_photos_train_with_random_resized_crops_and_resume_exactly(photo_dataset, cache_dir, tmp_path):
    ref = main_cls(_args(photo_dataset, tmp_path / "ref", cache_dir, "--epochs", "3", "--log-every", "3"))
    trains = [r for r in read_jsonl(str(tmp_path / "ref" / "metrics.jsonl")) if r["event"] == "train"]
    assert trains[-1]["loss"] < 0.8 * trains[0]["loss"] and ref["final"]["eval_top1"] > 1 / 3
    config = (tmp_path / "ref" / "config.json").read_text()
    assert '"crop_pct": 0.9' in config and '"random_resized_crop": true' in config
    out = tmp_path / "cut"
    main_cls(_args(photo_dataset, out, cache_dir, "--epochs", "3", "--log-every", "3", "--checkpoint-every", "4",
                   "--keep-checkpoints", "9"))
    for name in ("model.safetensors", "summary.json", "config.json"):
        (out / name).unlink()
    resumed = main_cls(_args(photo_dataset, out, cache_dir, "--epochs", "3", "--log-every", "3", "--data-on", "disk",
                             "--resume-from", str(out / "checkpoints" / "step-12")))
    assert resumed["final"] == ref["final"]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_split_that_starts_square_and_turns_mixed_is_stored_framed(tmp_path):
    """The first image decides how a split is decoded and every other one is checked: a late odd size restarts it."""
    import numpy as np
    from PIL import Image

    from trainer.errors import UsageError

    sizes = [(40, 40)] * 5 + [(40, 52)]
    images = [Image.fromarray(np.full((h, w, 3), 10 * k, dtype=np.uint8)) for k, (h, w) in enumerate(sizes)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1] * 3}, features=features)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "late"))
    data = load_data(str(tmp_path / "late"), crop=EvalCrop(32, 0.9), cache_dir=str(tmp_path / "cache"))
    assert data.train.squares and data.train.images.shape == (6, 3, 35, 35)
    assert not [p for p in (tmp_path / "cache").iterdir() if "tmp" in p.name]  # the first attempt left nothing
    with pytest.raises(UsageError, match="pass --img-size"):
        load_data(str(tmp_path / "late"), cache_dir=str(tmp_path / "cache2"))
