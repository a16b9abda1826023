"""``torchvision:<name>``: torchvision's classification models (``torchvision.models.list_models(
module=torchvision.models)``), built with ``get_model(name, weights=None)``.

Features are the INPUT of the model's final logits ``nn.Linear``: that one layer is replaced by
``Identity`` and everything before it stays, including norm / pooling / flatten / hidden layers
that torchvision puts in the head. From the model definitions in ``torchvision/models/``:

==================  =====================================================  =======================
model               head (attribute)                                       features (B, D)
==================  =====================================================  =======================
resnet18            ``fc = Linear``                                        avgpool+flatten, 512
convnext_tiny       ``classifier = [LayerNorm2d, Flatten, Linear]``        after the LayerNorm, 768
efficientnet_b0     ``classifier = [Dropout, Linear]``                     avgpool+flatten, 1280
mobilenet_v3_small  ``classifier = [Linear, Hardswish, Dropout, Linear]``  hidden layer, 1024
vit_b_16            ``heads = [head: Linear]``                             class token, 768
swin_t              ``head = Linear``                                      norm+avgpool, 768
maxvit_t            ``classifier = [AvgPool, Flatten, LayerNorm, Linear,   after Tanh, 512
                    Tanh, Linear]``
==================  =====================================================  =======================

The rule: the head is the first of ``fc``, ``classifier``, ``heads``, ``head`` the model has; its
last ``nn.Linear`` (in definition order, which is execution order for these Sequential heads)
is the logits layer, and no other layer but Dropout may follow it. A head without a Linear
(squeezenet's Conv2d classifier) is not supported. Replacing the whole head (as evalbench did
before) lost convnext's LayerNorm and maxvit's pooling.

Default preprocessing: ``get_model_weights(name).DEFAULT.transforms()`` (torchvision's
``ImageClassification`` preset: crop_size, mean, std, interpolation; building it downloads
nothing); models without weights get ImageNet mean/std at 224, bilinear.
"""
from __future__ import annotations

import difflib
import functools
from typing import Optional

import torch
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.encoders.base import IMAGENET_MEAN, IMAGENET_STD, DataConfig, Encoder, interpolation_mode
from evalbench.encoders.registry import FAMILIES, Family

HEAD_ATTRS = ("fc", "classifier", "heads", "head")
LIST_HINT = ("list them with `python -c \"import torchvision; "
             "print(torchvision.models.list_models(module=torchvision.models))\"`")


@functools.lru_cache(maxsize=1)
def _classification_models() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))  # no detection / video / quantized


def _check(name: str) -> None:
    names = _classification_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown torchvision classification model {name!r}{hint} ({LIST_HINT})")


def _require_rgb(name: str, in_chans: int) -> None:
    if in_chans != 3:
        raise ConfigError(f"torchvision:{name} takes 3 input channels; set in_chans: 3 (grayscale is repeated)")


def logits_layer(model: nn.Module, arch: str) -> tuple[str, nn.Linear]:
    """(state_dict prefix, module) of the final logits Linear of a torchvision classifier."""
    attr = next((a for a in HEAD_ATTRS if isinstance(getattr(model, a, None), nn.Module)), None)
    if attr is None:
        raise ConfigError(f"{arch} is not supported: it has no classifier head among {', '.join(HEAD_ATTRS)}")
    head: nn.Module = getattr(model, attr)
    leaves = [(n, m) for n, m in head.named_modules() if not any(True for _ in m.children())]  # definition order
    last = max((i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)), default=None)
    if last is None:
        raise ConfigError(f"{arch} is not supported: its head ({attr}) has no nn.Linear logits layer, so it has "
                          f"no pooled pre-logit features; use another torchvision model or a timm one")
    after = [n for n, m in leaves[last + 1:] if not isinstance(m, (nn.Dropout, nn.Identity))]
    if after:
        raise ConfigError(f"{arch} is not supported: layers follow its last Linear in {attr}: {', '.join(after)}")
    sub = leaves[last][0]
    return (f"{attr}.{sub}" if sub else attr), leaves[last][1]


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)  # (B, 3, H, W) -> (B, D): the logits Linear is Identity
    # googlenet / inception_v3 in training mode return (logits, aux...) namedtuples
    return out if isinstance(out, torch.Tensor) else out[0]


def _build(name: str, in_chans: int) -> Encoder:
    import torchvision

    _check(name)
    _require_rgb(name, in_chans)
    arch = f"torchvision:{name}"
    model = torchvision.models.get_model(name, weights=None)
    path, linear = logits_layer(model, arch)
    model.set_submodule(path, nn.Identity())  # state_dict loses only `<path>.weight` / `<path>.bias`
    return Encoder(arch, model, _features, linear.in_features)


def _data_config(name: str, in_chans: Optional[int]) -> DataConfig:
    import torchvision

    _check(name)
    _require_rgb(name, 3 if in_chans is None else in_chans)
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        weights = None
    if weights is None:
        return DataConfig(3, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    t = weights.transforms()  # ImageClassification(crop_size=[S], resize_size, mean, std, interpolation)
    return DataConfig(3, int(t.crop_size[0]), tuple(map(float, t.mean)), tuple(map(float, t.std)),
                      interpolation_mode(t.interpolation, arch=f"torchvision:{name}"))


FAMILIES.register("torchvision")(Family(build=_build, check=_check, data_config=_data_config))
