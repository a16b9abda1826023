"""The encoder contract (DESIGN.md §2): a model maps a normalised image batch (B, C, H, W) to
pooled pre-logit features (B, D), with the preprocessing (DataConfig) it expects.

``Encoder.model`` is the family's own module, whose ``state_dict`` names are the ones its
checkpoints use (timm, torchvision, builtin); ``Encoder`` adds only the forward rule that
yields pooled pre-logit features. Load checkpoints into ``encoder.model``.

``Encoder.forward`` checks the (B, D) contract on every call (a shape comparison, no compute):
a family rule that leaves spatial dims or un-pooled tokens fails loudly here instead of
producing a silently wrong feature matrix downstream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evalbench.core.errors import ConfigError, EvalbenchError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # the modes preprocess() applies (F.interpolate)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class EncoderContractError(EvalbenchError):
    """An encoder's output is not pooled pre-logit features (B, D) with D == num_features.

    Not a user mistake in the YAML: the family rule does not fit this model. The message names
    the architecture and the shape it produced.
    """


@dataclass(frozen=True)
class DataConfig:
    """How task images become encoder input: channels, resize, normalisation."""

    in_chans: int
    input_size: Optional[int]  # side in pixels; None: the task's native size (families that take any size)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def as_dict(self) -> dict:
        return {"in_chans": self.in_chans, "input_size": self.input_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation}


FeaturesFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class Encoder(nn.Module):
    """``forward(x) -> (B, num_features)`` pooled pre-logit features of ``model``."""

    def __init__(self, arch: str, model: nn.Module, features_fn: FeaturesFn, num_features: int) -> None:
        super().__init__()
        self.arch = arch
        self.model = model
        self._features_fn = features_fn
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self._features_fn(self.model, x)  # (B, C, H, W) -> (B, D)
        if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[1] != self.num_features:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise EncoderContractError(
                f"{self.arch}: features for a {tuple(x.shape)} input have shape {shape}; the encoder "
                f"contract is pooled pre-logit features (B, D) with D = num_features = {self.num_features}"
            )
        return feats

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_features={self.num_features}"


def fit_channels(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """Per-channel mean/std for ``in_chans`` channels from a family's values for its own count.

    Same count: unchanged. Otherwise (e.g. ImageNet RGB values for a 1-channel model, or one
    value for a 3-channel model) the values are averaged to one and repeated ``in_chans`` times,
    which matches ``preprocess``: grayscale repeated to RGB, RGB averaged to grayscale.
    """
    vals = tuple(float(v) for v in values)
    if len(vals) == in_chans:
        return vals
    return (sum(vals) / len(vals),) * in_chans


def interpolation_mode(value: object, *, arch: str) -> str:
    """A family's interpolation name (timm's string, torchvision's ``InterpolationMode``) as one
    of INTERPOLATIONS, the ``F.interpolate`` modes ``preprocess`` applies; anything else is a
    ConfigError rather than a silent substitute."""
    mode = str(getattr(value, "value", value)).lower()  # torchvision InterpolationMode.BICUBIC.value == "bicubic"
    if mode not in INTERPOLATIONS:
        raise ConfigError(f"{arch}: its default interpolation {mode!r} is not supported; evalbench resizes with "
                          f"one of {', '.join(INTERPOLATIONS)}")
    return mode


def channel_adaptation(image_chans: int, in_chans: int) -> Optional[str]:
    """How ``preprocess`` feeds images of ``image_chans`` channels to an ``in_chans`` encoder, in words
    (recorded with the features); None when the counts agree."""
    if image_chans == in_chans:
        return None
    if image_chans == 1:
        return f"grayscale repeated to {in_chans} channels"
    if in_chans == 1:
        return f"{image_chans} channels averaged to grayscale"
    raise ValueError(f"cannot map {image_chans} image channels to in_chans={in_chans}")


def preprocess(batch: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float (B, in_chans, S, S), on batch's device."""
    x = batch.float().div_(255.0)
    c = x.shape[1]
    if channel_adaptation(c, cfg.in_chans) is not None:
        # grayscale -> repeated channels; RGB -> their mean
        x = x.expand(-1, cfg.in_chans, -1, -1) if c == 1 else x.mean(dim=1, keepdim=True)
    if cfg.input_size is not None and tuple(x.shape[-2:]) != (cfg.input_size, cfg.input_size):
        size = (cfg.input_size, cfg.input_size)
        if cfg.interpolation == "nearest":
            x = F.interpolate(x, size=size, mode="nearest")
        else:  # antialias: a downscale averages pixels, as PIL's resize does
            x = F.interpolate(x, size=size, mode=cfg.interpolation, align_corners=False, antialias=True)
    mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std
