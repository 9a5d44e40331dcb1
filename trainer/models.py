"""Models through timm: created from scratch, from the hub or from a weights file (with the head swap), their input
view, and the one place that rebuilds a finished run's model from its folder."""
from __future__ import annotations

import difflib
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import timm
import torch
from torch import nn

from .data.augment import View
from .errors import UsageError, first_line
from .run_files import read_weight_shapes, resolve_run
from .run_records import RunConfig


def check_model_name(name: str) -> None:
    """UsageError with close matches when timm does not know the name."""
    if timm.is_model(name):
        return
    arch = name.split(".")[0]
    close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models('vit_*')"
    raise UsageError(f"unknown timm model '{name}': {hint}")


def _linear(in_features: int, out_features: int) -> str:
    return f"Linear({in_features}->{out_features})"


def _refused_keyword(err: TypeError) -> str:
    return str(err).rsplit("'", 2)[-2] if str(err).count("'") >= 2 else ""


def _rejected(name: str, err: TypeError, kwargs: dict) -> UsageError:
    """The line for a keyword timm's constructor refuses (one of --model-kwargs)."""
    given = {k: v for k, v in kwargs.items() if k != "img_size"}
    return UsageError(f"timm model '{name}' rejects --model-kwargs {given} ({err}): check the names")


def _timm_create(name: str, kwargs: dict, **extra: Any) -> nn.Module:
    """timm.create_model, giving img_size only to models built for one input size (ViTs): a convnet takes any size,
    and the input view resizes its images to img_size instead."""
    try:
        return timm.create_model(name, **extra, **kwargs)
    except TypeError as err:
        if "img_size" not in kwargs or _refused_keyword(err) != "img_size":
            raise
    return timm.create_model(name, **extra, **{k: v for k, v in kwargs.items() if k != "img_size"})


def _unbuildable(name: str, err: BaseException, kwargs: dict) -> UsageError:
    """The line for values timm's constructor or forward cannot work with (patch_size=0, embed_dim=7, a patch larger
    than the image, ...)."""
    given = {k: v for k, v in kwargs.items() if k != "img_size"}
    lines = str(err).strip().splitlines()
    why = f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__
    size = f" at --img-size {kwargs['img_size']}" if "img_size" in kwargs else ""
    return UsageError(f"timm model '{name}' cannot be built{size} with --model-kwargs {given} ({why}): check the values")


def _hub_unreachable(name: str, err: BaseException) -> UsageError:
    return UsageError(f"could not get pretrained weights for '{name}' from the Hugging Face Hub "
                      f"({type(err).__name__}: {first_line(err, 160)}); offline, "
                      "download the weights elsewhere and pass --pretrained-file FILE")


def probe_model(name: str, kwargs: dict, pretrained: bool = False) -> None:
    """Build the model on the meta device (nothing allocated, a fraction of a second) and run one forward: what timm
    refuses, and a patch grid that would drop edge pixels, are one line before any image is decoded. With pretrained,
    the hub weights are fetched now (into the hub's cache, where the real model finds them), so that weights that
    cannot be had are found before decoding too."""
    check_model_name(name)
    if pretrained:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loading into meta tensors is a no-op, and torch says so per tensor
                _timm_create(name, {k: v for k, v in kwargs.items() if k != "img_size"}, pretrained=True)
        except TypeError as err:
            raise _rejected(name, err, kwargs) from None
        except Exception as err:
            raise _hub_unreachable(name, err) from None
    try:
        with torch.device("meta"):
            model = _timm_create(name, kwargs, pretrained=False, num_classes=2)
            size = input_view(model, kwargs.get("img_size")).size
            model(torch.empty(1, 3, size, size))
    except TypeError as err:
        raise _rejected(name, err, kwargs) from None
    except Exception as err:
        raise _unbuildable(name, err, kwargs) from None
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch and not getattr(model.patch_embed, "dynamic_img_pad", False) and size % int(patch[0]):
        p = int(patch[0])
        raise UsageError(f"--img-size {size} is not a multiple of the patch size {p}: the last {size % p} pixel(s) of "
                         f"each row and column would be dropped; pass --img-size {size - size % p} or {size + p - size % p}")


def _timm(model: nn.Module) -> Any:
    """A timm model's own API (get_classifier, pretrained_cfg, num_classes), which nn.Module's types do not know."""
    return model


def num_classes(model: nn.Module) -> int:
    """The size of a timm classifier's output."""
    return int(_timm(model).num_classes)


def _head_in_features(model: nn.Module) -> int:
    head = _timm(model).get_classifier()
    return int(getattr(head, "in_features", getattr(model, "num_features", 0)))


def create_model(name: str, num_classes: int, *, img_size: Optional[int] = None, model_kwargs: Optional[dict] = None,
                 pretrained: bool = False, pretrained_file: Optional[str] = None) -> tuple[nn.Module, str]:
    """Build a timm model with a `num_classes` head; returns it and a one-line note on the head."""
    check_model_name(name)
    kwargs = dict(model_kwargs or {})
    if img_size is not None:
        kwargs["img_size"] = img_size
    if pretrained_file:
        return _from_file(name, num_classes, pretrained_file, kwargs)
    if not pretrained:
        probe_model(name, kwargs)
    try:
        model = _timm_create(name, kwargs, pretrained=pretrained, num_classes=num_classes)
    except TypeError as err:
        raise _rejected(name, err, kwargs) from None
    except Exception as err:
        if not pretrained:
            raise _unbuildable(name, err, kwargs) from None
        raise _hub_unreachable(name, err) from None
    width = _head_in_features(model)
    if pretrained:
        source = int(_timm(model).pretrained_cfg.get("num_classes", num_classes))
        note = (f"head: {_linear(width, source)} replaced by {_linear(width, num_classes)}" if source != num_classes
                else f"head: {_linear(width, source)} kept from the pretrained weights")
    else:
        note = f"head: {_linear(width, num_classes)}, every layer from scratch"
    return model, note


def check_weights_file(name: str, path: str, kwargs: dict, flag: str = "--pretrained-file"
                       ) -> tuple[dict[str, tuple[int, ...]], str]:
    """(the file's tensor shapes, the model's classifier name) once a weights file is found readable and holding every
    backbone weight of the model (built on the meta device: names only, nothing allocated); UsageError otherwise."""
    shapes = read_weight_shapes(path, flag)
    try:
        with torch.device("meta"):
            probe = _timm_create(name, kwargs, pretrained=False, num_classes=2)
    except TypeError as err:
        raise _rejected(name, err, kwargs) from None
    classifier = _timm(probe).pretrained_cfg.get("classifier", "head")
    classifier = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
    wanted = [k for k in probe.state_dict() if not k.startswith(f"{classifier}.")]
    missing = [k for k in wanted if k not in shapes]
    if missing:
        raise UsageError(f"{flag} {path} does not fit model '{name}': {len(missing)} of {len(wanted)} "
                         f"backbone weights are missing (e.g. {missing[0]}); pass a file saved from the same "
                         "architecture and --model-kwargs")
    return shapes, classifier


def _from_file(name: str, num_classes: int, path: str, kwargs: dict) -> tuple[nn.Module, str]:
    shapes, classifier = check_weights_file(name, path, kwargs)
    head_shape = shapes.get(f"{classifier}.weight")
    source = int(head_shape[0]) if head_shape else num_classes
    overlay = dict(file=os.path.abspath(path), num_classes=source, custom_load=False)
    try:
        model = _timm_create(name, kwargs, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)
    except Exception as err:
        raise UsageError(f"--pretrained-file {path} does not load into '{name}' "
                         f"({type(err).__name__}: {first_line(err)}): pass a file saved from the same "
                         "architecture and --model-kwargs") from None
    width = _head_in_features(model)
    note = (f"head: {_linear(width, source)} replaced by {_linear(width, num_classes)}" if source != num_classes
            else f"head: {_linear(width, source)} kept from {os.path.basename(path)}")
    return model, note


def input_view(model: nn.Module, img_size: Optional[int] = None) -> View:
    """The input the model expects: size, interpolation, mean and std from timm's data config."""
    dc = timm.data.resolve_data_config({}, model=model)
    size = img_size
    if size is None:
        patch_embed_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        size = int(patch_embed_size[0]) if patch_embed_size else int(dc["input_size"][-1])
    return View(int(size), tuple(dc["mean"]), tuple(dc["std"]), dc.get("interpolation", "bicubic"),
                float(dc.get("crop_pct") or 0.875))


@dataclass
class TrainedModel:
    """A finished run's model rebuilt through timm (eval mode, on the CPU), its config.json and its weights file."""

    model: nn.Module
    config: RunConfig
    weights: str  # the model.safetensors it was loaded from


def load_trained(path: str, what: str = "checkpoint") -> TrainedModel:
    """Rebuild the model of a run folder (or of its model.safetensors) through timm; UsageError on a damaged folder."""
    weights, config_path = resolve_run(path, what)
    cfg = RunConfig.read(config_path, what)
    read_weight_shapes(weights, what)  # a truncated file fails here, with a clear line
    kwargs = dict(cfg.model_kwargs)
    if cfg.img_size:
        kwargs["img_size"] = cfg.img_size
    overlay = dict(file=os.path.abspath(weights), num_classes=cfg.num_classes, custom_load=False)
    check_model_name(cfg.architecture)
    try:
        model = _timm_create(cfg.architecture, kwargs, pretrained=True, num_classes=cfg.num_classes,
                             pretrained_cfg_overlay=overlay)
    except Exception as err:
        raise UsageError(f"{what} {weights} does not match its {os.path.basename(config_path)} "
                         f"({type(err).__name__}: {first_line(err)}): keep the files of one run together"
                         ) from None
    return TrainedModel(model.eval(), cfg, weights)


def hub_entries(model: nn.Module, view: View, model_kwargs: dict, crop_mode: str) -> dict[str, Any]:
    """config.json's `model_args` and `pretrained_cfg`, as timm's Hub loader (local-dir:, hf-hub:) and transformers'
    timm wrapper read them: the constructor's keyword arguments (num_classes apart: both loaders pass it themselves)
    and the input the weights expect. Written here, field by field, rather than by timm's own writer, whose output
    changes between releases."""
    source = dict(getattr(model, "pretrained_cfg", None) or {})
    embed = getattr(model, "patch_embed", None)
    fixed = getattr(embed, "img_size", None) is not None and not getattr(embed, "dynamic_img_pad", False)
    args = {**model_kwargs, **({"img_size": view.size} if fixed else {})}
    pretrained_cfg = {
        "input_size": [3, view.size, view.size], "fixed_input_size": bool(fixed), "interpolation": view.interpolation,
        # "squash": square images of one size resized whole, which timm's eval transform does at crop_pct 1.
        "crop_pct": 1.0 if crop_mode == "squash" else view.crop_pct, "crop_mode": crop_mode,
        "mean": list(view.mean), "std": list(view.std), "num_classes": num_classes(model),
        "first_conv": source.get("first_conv", "patch_embed.proj"), "classifier": source.get("classifier", "head"),
        "custom_load": False}
    return {"model_args": args, "pretrained_cfg": pretrained_cfg}


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """timm's attention as its explicit matmuls, softmax and scale instead of torch's fused SDPA, for as long as the
    block runs (tracers and FLOP counters see every product); each module's setting given back after."""
    fused: list[tuple[Any, bool]] = [(m, bool(m.fused_attn)) for m in model.modules() if hasattr(m, "fused_attn")]
    for m, _ in fused:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, was in fused:
            m.fused_attn = was
