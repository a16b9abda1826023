"""Built-in small CNNs for 8x8..32x32 inputs: ``builtin:small-cnn``, ``-wide``, ``-deep``.

Their module structure, and so their ``state_dict`` names (``features.0.weight``, ...), are
those of the checkpoints saved by earlier evalbench versions: keep them unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from evalbench.encoders.base import DataConfig, Encoder, fit_channels
from evalbench.encoders.registry import BUILTIN, FAMILIES, Family, lookup

# default preprocessing: grayscale, the task's native size (they take any size), [0, 1] -> [-1, 1]
BUILTIN_IN_CHANS, BUILTIN_MEAN, BUILTIN_STD = 1, (0.5,), (0.5,)


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


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)  # SmallCNN.forward already pools: (B, C, H, W) -> (B, D)


def _check(name: str) -> None:
    lookup(BUILTIN, name)  # ConfigError listing the built-in names


def _build(name: str, in_chans: int) -> Encoder:
    model = lookup(BUILTIN, name)(in_chans)
    return Encoder(f"builtin:{name}", model, _features, model.num_features)


def _data_config(name: str, in_chans: Optional[int]) -> DataConfig:
    _check(name)
    c = BUILTIN_IN_CHANS if in_chans is None else in_chans
    return DataConfig(c, None, fit_channels(BUILTIN_MEAN, c), fit_channels(BUILTIN_STD, c), "bilinear")


FAMILIES.register("builtin")(Family(build=_build, check=_check, data_config=_data_config, listing=BUILTIN.names))
