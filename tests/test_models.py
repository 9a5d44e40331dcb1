"""Models: pretrained-file path with a head swap, bad weight files, unknown names."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from trainer.errors import UsageError
from trainer.models import create_model, input_view

from .helpers import SMALL_VIT_KWARGS

ARCH = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def imagenet_like_file(tmp_path_factory):
    """A 1000-class model of the small ViT, saved the way a hub download would be."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=1000, img_size=32, **SMALL_VIT_KWARGS)
    path = tmp_path_factory.mktemp("weights") / "in1k.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_file_keeps_backbone_and_swaps_head(imagenet_like_file, tmp_path, suffix):
    path, source = imagenet_like_file
    if suffix == ".pth":
        pth = tmp_path / "in1k.pth"
        torch.save(source, pth)
        path = pth
    torch.manual_seed(123)
    model, note = create_model(ARCH, 10, img_size=32, model_kwargs=SMALL_VIT_KWARGS, pretrained_file=str(path))
    assert note == "head: Linear(192->1000) replaced by Linear(192->10)"
    state = model.state_dict()
    backbone = [k for k in source if not k.startswith("head.")]
    assert backbone and all(torch.equal(state[k], source[k]) for k in backbone)
    assert state["head.weight"].shape == (10, 192)
    assert all(p.requires_grad for p in model.parameters())  # every layer trains


def test_same_class_count_keeps_the_head(tmp_path):
    model = timm.create_model(ARCH, num_classes=10, img_size=32, **SMALL_VIT_KWARGS)
    path = tmp_path / "ten.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded, note = create_model(ARCH, 10, img_size=32, model_kwargs=SMALL_VIT_KWARGS, pretrained_file=str(path))
    assert "kept" in note
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_truncated_file_is_a_usage_error(imagenet_like_file, tmp_path):
    data = imagenet_like_file[0].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="not a readable safetensors file"):
        create_model(ARCH, 10, img_size=32, model_kwargs=SMALL_VIT_KWARGS, pretrained_file=str(bad))


def test_foreign_file_is_a_usage_error(tmp_path):
    path = tmp_path / "resnet.safetensors"
    other = timm.create_model("resnet18", num_classes=1000)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(UsageError, match=r"does not fit model 'vit_tiny_patch16_224'.*missing"):
        create_model(ARCH, 10, img_size=32, model_kwargs=SMALL_VIT_KWARGS, pretrained_file=str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UsageError, match="not a readable"):
        create_model(ARCH, 10, img_size=32, model_kwargs=SMALL_VIT_KWARGS, pretrained_file=str(junk))
    with pytest.raises(UsageError, match="does not exist"):
        create_model(ARCH, 10, pretrained_file=str(tmp_path / "missing.safetensors"))


def test_unknown_model_suggests_names():
    with pytest.raises(UsageError, match=r"unknown timm model 'vit_tiny_patch16_22'.*vit_tiny_patch16_224"):
        create_model("vit_tiny_patch16_22", 10)


def test_input_view_follows_img_size_and_timm_config():
    model, note = create_model(ARCH, 10, img_size=32, model_kwargs=SMALL_VIT_KWARGS)
    view = input_view(model)
    assert view.size == 32 and view.mean == (0.5, 0.5, 0.5) and view.interpolation == "bicubic"
    assert "from scratch" in note


def test_explicit_attention_computes_the_same_and_gives_each_setting_back():
    from trainer.models import explicit_attention

    model = timm.create_model(ARCH, num_classes=10, img_size=32, **SMALL_VIT_KWARGS).eval()
    attns = [m for m in model.modules() if hasattr(m, "fused_attn")]
    attns[0].fused_attn = False  # one already explicit: it stays so after
    before = [m.fused_attn for m in attns]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        with pytest.raises(RuntimeError), explicit_attention(model):
            assert not any(m.fused_attn for m in attns)
            torch.testing.assert_close(model(x), fused, atol=1e-5, rtol=1e-4)
            raise RuntimeError("a tracer failed")
    assert [m.fused_attn for m in attns] == before and len(attns) == SMALL_VIT_KWARGS["depth"]


def test_first_line_quotes_an_error_in_one_line_even_without_a_message():
    from trainer.errors import first_line

    assert first_line(ValueError("\n  bad value  \nmore")) == "bad value"
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("")) == "OSError"
    assert first_line(ValueError("x" * 50), 10) == "xxxxxxx..."
