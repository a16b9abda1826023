"""Projection heads and predictors of the SSL methods (DESIGN.md §5).

A projection head maps the encoder's pooled features (B, in_dim) to the space the loss sees
(B, out_dim); ``HEADS`` registers the kinds ("none", "linear", "mlp"), so an unknown kind fails
listing the known ones. A Linear directly followed by BatchNorm has no bias (the BN's shift
makes it redundant), as in facebookresearch/simsiam ``simsiam/builder.py`` and lightly
``models/modules/heads.py``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.core.registry import Registry

# builder(in_dim, hidden_dim=, out_dim=, depth=, bn_hidden=, bn_out=) -> (module, output dim)
HeadBuilder = Callable[..., tuple[nn.Module, int]]
HEADS: Registry[HeadBuilder] = Registry("projection head", "evalbench.pretrain.heads.HEADS; DESIGN.md §5")


def _check_dims(what: str, **dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{what}: {name} must be an integer >= 1, got {value!r}")


@HEADS.register("none")
def _none(in_dim: int, *, hidden_dim: int, out_dim: int, depth: int, bn_hidden: bool,
          bn_out: bool) -> tuple[nn.Module, int]:
    """No head: the loss sees the encoder's features (B, in_dim); the other arguments are unused."""
    return nn.Identity(), in_dim


@HEADS.register("linear")
def _linear(in_dim: int, *, hidden_dim: int, out_dim: int, depth: int, bn_hidden: bool,
            bn_out: bool) -> tuple[nn.Module, int]:
    """One Linear (B, in_dim) -> (B, out_dim) (+ BatchNorm1d if bn_out); depth/hidden unused.

    SimCLR's "linear projection" ablation (Chen et al. 2020, Fig. 8)."""
    if not bn_out:
        return nn.Linear(in_dim, out_dim), out_dim
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim)), out_dim


@HEADS.register("mlp")
def _mlp(in_dim: int, *, hidden_dim: int, out_dim: int, depth: int, bn_hidden: bool,
         bn_out: bool) -> tuple[nn.Module, int]:
    """(depth - 1) x [Linear, BatchNorm1d if bn_hidden, ReLU], then Linear(hidden, out) (+ BN if bn_out).

    SimCLR: depth 2 (v1) / 3 (v2) with BN (google-research/simclr ``model_util.py``
    ``projection_head``); MoCo v2: depth 2, no BN (facebookresearch/moco ``moco/builder.py``,
    ``mlp=True``); BYOL: depth 2, bn_hidden (Grill et al. 2020, §3.3); SimSiam: depth 3,
    bn_hidden and bn_out (facebookresearch/simsiam ``simsiam/builder.py``; its final BN has
    affine=False, here a plain BatchNorm1d).
    """
    if depth < 2:
        raise ConfigError(f"projection head 'mlp' needs depth >= 2 (got {depth}); use kind 'linear' for one layer")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth - 1):                                    # hidden blocks: (B, dim) -> (B, hidden_dim)
        layers.append(nn.Linear(dim, hidden_dim, bias=not bn_hidden))
        if bn_hidden:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not bn_out))       # (B, hidden_dim) -> (B, out_dim)
    if bn_out:
        layers.append(nn.BatchNorm1d(out_dim))
    return nn.Sequential(*layers), out_dim


def projection_head(kind: str, in_dim: int, *, hidden_dim: int, out_dim: int, depth: int = 2,
                    bn_hidden: bool = True, bn_out: bool = False) -> tuple[nn.Module, int]:
    """The projection head of ``kind`` and its output dimension (what the loss sees).

    ConfigError for an unknown kind (listing the known ones) or a dimension / depth below 1.
    """
    try:
        build = HEADS.get(kind)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    _check_dims(f"projection head {kind!r}", in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, depth=depth)
    return build(in_dim, hidden_dim=hidden_dim, out_dim=out_dim, depth=depth, bn_hidden=bn_hidden, bn_out=bn_out)


def predictor(in_dim: int, *, hidden_dim: int, out_dim: int | None = None) -> nn.Module:
    """BYOL / SimSiam predictor: Linear-BN-ReLU-Linear, (B, in_dim) -> (B, out_dim or in_dim).

    Grill et al. 2020 §3.3 (deepmind-research ``byol/utils/networks.py`` ``MLP``); Chen & He 2021
    (facebookresearch/simsiam ``simsiam/builder.py``: the bottleneck predictor, hidden_dim = dim / 4).
    """
    out_dim = in_dim if out_dim is None else out_dim
    _check_dims("predictor", in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),               # (B, in_dim) -> (B, hidden_dim)
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),                           # (B, hidden_dim) -> (B, out_dim)
    )
