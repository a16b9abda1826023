"""Encoder architectures by name: ``builtin:<name>``, ``timm:<name>``, ``torchvision:<name>``.

An encoder maps a normalised image batch (B, C, H, W) to pooled pre-logit features (B, D)
(``base.Encoder``); each family also says which preprocessing its models expect
(``default_data_config``), and ``check_encoder`` verifies both at plan time, cheaply.
"""
from evalbench.encoders.base import (INTERPOLATIONS, DataConfig, Encoder, EncoderContractError, fit_channels,
                                     preprocess)
from evalbench.encoders.registry import (BUILTIN, FAMILIES, Family, build_encoder, check_encoder,
                                         default_data_config, list_encoders, split_arch)

# the families register themselves on import
from evalbench.encoders import builtin, timm_family, torchvision_family  # noqa: E402,F401  isort: skip
from evalbench.encoders.builtin import SmallCNN  # noqa: E402

__all__ = [
    "BUILTIN", "FAMILIES", "INTERPOLATIONS", "DataConfig", "Encoder", "EncoderContractError", "Family", "SmallCNN",
    "build_encoder", "check_encoder", "default_data_config", "fit_channels", "list_encoders", "preprocess",
    "split_arch",
]
