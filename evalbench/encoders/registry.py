"""Architecture families and the public encoder functions: ``FAMILY:NAME`` -> Encoder, DataConfig.

Each family module (``builtin``, ``timm_family``, ``torchvision_family``) registers one
:class:`Family` in :data:`FAMILIES` where it is defined; nothing here branches on family names.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import torch
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.core.registry import Registry
from evalbench.encoders.base import DataConfig, Encoder, EncoderContractError

T = TypeVar("T")

# check_encoder's probe side for families that take any size, when no input_size is given
ANY_SIZE_PROBE = 32


@dataclass(frozen=True)
class Family:
    """How one family builds encoders and says what input they expect.

    build: (model name, in_chans) -> Encoder with random weights.
    check: (model name) -> None; raises ConfigError for an unknown name, saying how to list them.
    data_config: (model name, in_chans or None for the family's own) -> the default DataConfig.
    listing: () -> names for ``evalbench list encoders`` (``<name>`` where the family is open-ended).
    """

    build: Callable[[str, int], Encoder]
    check: Callable[[str], None]
    data_config: Callable[[str, Optional[int]], DataConfig]
    listing: Callable[[], list[str]] = lambda: ["<name>"]


FAMILIES: Registry[Family] = Registry("architecture family", "evalbench list encoders")
# built-in small CNNs for 8x8..32x32 inputs: name -> builder(in_chans) -> nn.Module with num_features
BUILTIN: Registry[Callable[[int], nn.Module]] = Registry("built-in encoder", "evalbench list encoders")


def lookup(registry: Registry[T], name: str) -> T:
    """``registry.get`` with its KeyError (which lists the known names) as a ConfigError."""
    try:
        return registry.get(name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None


def split_arch(arch: str) -> tuple[str, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``; ConfigError for a malformed or unknown one."""
    family, sep, name = str(arch).partition(":")
    if not sep or not family or not name:
        raise ConfigError(
            f"architecture {arch!r} must be FAMILY:NAME, e.g. timm:resnet18, torchvision:resnet50, "
            f"builtin:small-cnn; families: {', '.join(FAMILIES.names())} (evalbench list encoders)"
        )
    lookup(FAMILIES, family).check(name)
    return family, name


def build_encoder(arch: str, *, in_chans: int) -> Encoder:
    """The encoder with random weights (the caller loads a checkpoint into ``encoder.model``)."""
    family, name = split_arch(arch)
    return FAMILIES.get(family).build(name, int(in_chans))


def default_data_config(arch: str, *, in_chans: Optional[int] = None) -> DataConfig:
    """The family's default preprocessing for ``arch`` (for ``in_chans`` channels if given)."""
    family, name = split_arch(arch)
    return FAMILIES.get(family).data_config(name, None if in_chans is None else int(in_chans))


def list_encoders() -> list[str]:
    """``builtin:small-cnn``, ..., ``timm:<name>``, ``torchvision:<name>``."""
    return [f"{family}:{n}" for family in FAMILIES for n in FAMILIES.get(family).listing()]


def check_encoder(arch: str, cfg: DataConfig) -> int:
    """Plan-time check that ``arch`` takes ``cfg``'s input and honours the (B, D) contract; returns D.

    Builds the encoder on the ``meta`` device (shapes only: no memory, no compute) and runs a
    forward of a (2, in_chans, S, S) input, S = ``cfg.input_size``; where a model cannot be built
    or run on ``meta`` it falls back to CPU. Raises:

    * ConfigError when the forward fails at ``cfg.input_size`` but works at the family's default
      size (e.g. a ViT with a fixed patch grid fed 28x28 images), naming both sizes;
    * EncoderContractError when the features are not (B, num_features), or the model fails even
      at its default size.

    ``cfg.input_size`` None (the task's native size, known only when the task loads) skips the
    size check; the contract is then checked at the default size (ANY_SIZE_PROBE for families
    that take any size). Memoised per (arch, in_chans, input_size).
    """
    return _check_encoder(arch, int(cfg.in_chans), None if cfg.input_size is None else int(cfg.input_size))


@functools.lru_cache(maxsize=None)
def _check_encoder(arch: str, in_chans: int, input_size: Optional[int]) -> int:
    family, name = split_arch(arch)
    fam = FAMILIES.get(family)
    needs = fam.data_config(name, in_chans).input_size  # None: the family takes any size
    size = input_size or needs or ANY_SIZE_PROBE
    errors: list[str] = []
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                encoder = fam.build(name, in_chans)
        except ConfigError:
            raise
        except Exception as e:  # e.g. torchvision regnet computes its widths with .tolist(): not on meta
            errors.append(f"building on {device}: {type(e).__name__}: {e}")
            continue
        failure = _probe(encoder, in_chans, size, device)
        if failure is None:
            return encoder.num_features
        if input_size is not None and needs is not None and needs != input_size \
                and _probe(encoder, in_chans, needs, device) is None:
            raise ConfigError(
                f"{arch} cannot take {input_size}x{input_size} inputs (it needs {needs}x{needs}; set "
                f"preprocessing.input_size: {needs} or remove it to use the model's default): {_first_line(failure)}"
            )
        errors.append(f"forward on {device}: {failure}")  # maybe an op meta does not support: retry on CPU
    raise EncoderContractError(f"{arch} fails a forward of a (2, {in_chans}, {size}, {size}) input: "
                               + "; ".join(_first_line(e) for e in errors))


def _probe(encoder: Encoder, in_chans: int, size: int, device: str) -> Optional[str]:
    """None if a (2, in_chans, size, size) forward works, else its error; a (B, D) violation raises."""
    encoder.eval()
    try:
        with torch.device(device), torch.no_grad():  # tensors the forward creates land on `device` too
            encoder(torch.zeros(2, in_chans, size, size))  # (2, C, S, S) -> (2, D), checked in Encoder.forward
    except EncoderContractError:
        raise
    except Exception as e:  # shape mismatches surface as AssertionError / RuntimeError / ValueError
        return f"{type(e).__name__}: {e}"
    return None


def _first_line(msg: str) -> str:
    return msg.strip().splitlines()[0] if msg.strip() else msg
