"""``timm:<name>``: any model ``timm.create_model`` knows, with an optional pretrained tag
(``timm:resnet18.tv_in1k``), built with random weights.

Features follow timm's own two-stage forward (timm docs, "Feature Extraction" > "Pre-Pooling
and Pre-Logits"; ``timm/models/resnet.py``, ``vision_transformer.py``: ``forward_features`` /
``forward_head``):

* ``forward_features(x)``: unpooled features, (B, C, H', W') for CNNs, (B, N, C) tokens for ViTs;
* ``forward_head(f, pre_logits=True)``: global pooling (avg / cls token / ...), plus any head
  norm or hidden layers (e.g. MobileNetV3's conv_head), stopping before the classifier:
  (B, D) with D = ``model.head_hidden_size`` where the head has hidden layers, else
  ``model.num_features`` (mobilenetv3_small_100: num_features 576, features 1024).

The model is created with ``num_classes=0`` (classifier = Identity), so ``encoder.model``'s
state_dict holds no classifier keys.

Default preprocessing: ``timm.data.resolve_model_data_config(model)``, which reads the model's
``pretrained_cfg`` (input size, mean, std, interpolation) without downloading anything.
"""
from __future__ import annotations

import difflib
import functools
from typing import Optional

import torch
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.encoders.base import DataConfig, Encoder, fit_channels, interpolation_mode
from evalbench.encoders.registry import FAMILIES, Family

LIST_HINT = "list them with `python -c \"import timm; print(timm.list_models('*resnet*'))\"`"


def _check(name: str) -> None:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    base, tag = split_model_name_tag(name)
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown timm model {name!r}{hint} ({LIST_HINT})")
    if tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:  # "Invalid pretrained tag (x) for resnet18."
            raise ConfigError(f"timm model {base!r} has no pretrained tag {tag!r}; its tags: "
                              f"`python -c \"import timm; print(timm.list_pretrained('{base}.*'))\"`") from None


def _create(name: str, in_chans: int) -> nn.Module:
    import timm

    # random weights, classifier removed (Identity); timm adapts the stem to in_chans
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # (B, C, H, W) -> forward_features: (B, C', H', W') or (B, N, C') -> forward_head(pre_logits): (B, D)
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _build(name: str, in_chans: int) -> Encoder:
    _check(name)
    model = _create(name, in_chans)
    dim = getattr(model, "head_hidden_size", None) or model.num_features  # pre-logit width, see module doc
    return Encoder(f"timm:{name}", model, _features, dim)


@functools.lru_cache(maxsize=None)
def _resolved(name: str) -> dict:
    """``resolve_model_data_config`` of the model: {'input_size': (C, H, W), 'mean', 'std', 'interpolation', ...}."""
    from timm.data import resolve_model_data_config

    try:
        with torch.device("meta"):  # no weights are allocated: only the model's pretrained_cfg is read
            model = _create(name, 3)
    except Exception:  # a model that cannot be built on meta
        model = _create(name, 3)
    return dict(resolve_model_data_config(model))


def _data_config(name: str, in_chans: Optional[int]) -> DataConfig:
    _check(name)
    cfg = _resolved(name)
    chans, height, width = cfg["input_size"]
    c = chans if in_chans is None else in_chans
    return DataConfig(
        in_chans=c,
        input_size=int(height),  # square resize; timm's fixed-size models are square
        mean=fit_channels(cfg["mean"], c),
        std=fit_channels(cfg["std"], c),
        interpolation=interpolation_mode(cfg.get("interpolation", "bicubic"), arch=f"timm:{name}"),
    )


FAMILIES.register("timm")(Family(build=_build, check=_check, data_config=_data_config))
