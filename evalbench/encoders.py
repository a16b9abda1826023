"""Encoder architectures by name: ``timm:<name>``, ``torchvision:<name>``, ``builtin:<name>``.

An encoder maps a normalised image batch ``(B, C, H, W)`` to pooled features ``(B, D)`` and
exposes ``num_features`` (timm's contract, `forward_features` + pooling, classifier removed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from evalbench.errors import ConfigError
from evalbench.registry import Registry

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FamilyDefaults:
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


IMAGENET = FamilyDefaults(3, IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class Family:
    build: Callable[[str, int], nn.Module]  # (model name, in_chans) -> encoder with random weights
    check: Callable[[str], None]  # raises ConfigError (or KeyError) for an unknown model name
    defaults: FamilyDefaults = IMAGENET  # preprocessing when the suite gives none


FAMILIES: Registry[Family] = Registry("architecture family", "evalbench list encoders")
# built-in small CNNs for 8x8..32x32 inputs: name -> builder(in_chans)
BUILTIN: Registry[Callable[[int], nn.Module]] = Registry("built-in encoder", "evalbench list encoders")


def family_defaults(arch: str) -> FamilyDefaults:
    return FAMILIES.get(split_arch(arch)[0]).defaults


def split_arch(arch: str) -> tuple[str, str]:
    family, sep, name = arch.partition(":")
    if not sep or not name:
        raise ConfigError(
            f"architecture {arch!r} must be FAMILY:NAME, e.g. timm:resnet18, torchvision:resnet50, "
            f"builtin:small-cnn; families: {', '.join(FAMILIES.names())}"
        )
    FAMILIES.get(family).check(name)
    return family, name


def build_encoder(arch: str, *, in_chans: int) -> nn.Module:
    """Instantiate the encoder with random weights (the caller loads a checkpoint into it)."""
    family, name = split_arch(arch)
    model = FAMILIES.get(family).build(name, in_chans)
    assert isinstance(getattr(model, "num_features", None), int), f"{arch} has no num_features"
    return model


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with 2x2 max-pooling between them, then global average pooling."""

    def __init__(self, in_chans: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # 8x8 -> 4x4 -> 2x2; 28 -> 14 -> 7
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # (B, C, H, W) -> (B, D)


BUILTIN.register("small-cnn")(lambda in_chans: SmallCNN(in_chans, (32, 64, 128)))
BUILTIN.register("small-cnn-wide")(lambda in_chans: SmallCNN(in_chans, (64, 128, 256)))
BUILTIN.register("small-cnn-deep")(lambda in_chans: SmallCNN(in_chans, (32, 64, 128, 256)))


FAMILIES.register("builtin")(Family(build=lambda name, in_chans: BUILTIN.get(name)(in_chans), check=BUILTIN.get,
                                    defaults=FamilyDefaults(1, (0.5,), (0.5,))))


def _check_timm(name: str) -> None:
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}; list them with `python -c 'import timm; print(timm.list_models())'`")


def _timm(name: str, in_chans: int) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)


FAMILIES.register("timm")(Family(build=_timm, check=_check_timm))


# torchvision classifiers keep their head under one of these attributes
_TV_HEADS = ("fc", "classifier", "heads", "head")


def _check_torchvision(name: str) -> None:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ConfigError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")


def _torchvision(name: str, in_chans: int) -> nn.Module:
    import torchvision

    if in_chans != 3:
        raise ConfigError(f"torchvision:{name} takes 3 input channels; set in_chans: 3 (grayscale is repeated)")
    model = torchvision.models.get_model(name, weights=None)
    head = next((h for h in _TV_HEADS if hasattr(model, h)), None)
    if head is None:
        raise ConfigError(f"torchvision:{name}: no classifier attribute among {_TV_HEADS}")
    dim = _head_in_features(getattr(model, head))
    setattr(model, head, nn.Identity())
    model.num_features = dim
    return model


FAMILIES.register("torchvision")(Family(build=_torchvision, check=_check_torchvision))


def _head_in_features(head: nn.Module) -> int:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("torchvision head has no nn.Linear; cannot tell the feature dimension")
    return linears[0].in_features
