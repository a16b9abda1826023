"""Projection heads and predictors: output shapes and the exact layer structure per kind and flags."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.pretrain.heads import HEADS, predictor, projection_head


def _structure(module: nn.Module) -> list[str]:
    """Layer names with the shapes that matter: Linear(in, out, bias), BN(features)."""
    out = []
    for m in module.modules() if isinstance(module, nn.Sequential) else [module]:
        if isinstance(m, nn.Linear):
            out.append(f"Linear({m.in_features},{m.out_features},bias={m.bias is not None})")
        elif isinstance(m, nn.BatchNorm1d):
            out.append(f"BN({m.num_features})")
        elif isinstance(m, nn.ReLU):
            out.append("ReLU")
        elif isinstance(m, nn.Identity):
            out.append("Identity")
    return out


def test_heads__registry_lists_the_kinds():
    assert HEADS.names() == ["linear", "mlp", "none"]


def test_projection_head__none_is_identity_with_the_input_dim():
    head, dim = projection_head("none", 16, hidden_dim=32, out_dim=8)
    assert isinstance(head, nn.Identity) and dim == 16
    x = torch.randn(3, 16)
    assert torch.equal(head(x), x)


@pytest.mark.parametrize("bn_out, want", [
    (False, ["Linear(16,8,bias=True)"]),
    (True, ["Linear(16,8,bias=False)", "BN(8)"]),
])
def test_projection_head__linear(bn_out, want):
    head, dim = projection_head("linear", 16, hidden_dim=32, out_dim=8, bn_out=bn_out)
    assert dim == 8 and _structure(head) == want
    assert head(torch.randn(4, 16)).shape == (4, 8)


@pytest.mark.parametrize("depth, bn_hidden, bn_out, want", [
    (2, True, False, ["Linear(16,32,bias=False)", "BN(32)", "ReLU", "Linear(32,8,bias=True)"]),
    (2, False, False, ["Linear(16,32,bias=True)", "ReLU", "Linear(32,8,bias=True)"]),  # MoCo v2
    (3, True, True, ["Linear(16,32,bias=False)", "BN(32)", "ReLU",                   # SimSiam
                     "Linear(32,32,bias=False)", "BN(32)", "ReLU",
                     "Linear(32,8,bias=False)", "BN(8)"]),
])
def test_projection_head__mlp_structure(depth, bn_hidden, bn_out, want):
    head, dim = projection_head("mlp", 16, hidden_dim=32, out_dim=8, depth=depth, bn_hidden=bn_hidden, bn_out=bn_out)
    assert dim == 8 and _structure(head) == want
    assert head(torch.randn(4, 16)).shape == (4, 8)
    if bn_out:
        bn = head[-1]
        assert isinstance(bn, nn.BatchNorm1d) and bn.affine  # a plain BatchNorm1d


def test_projection_head__unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown projection head 'mpl'; known: linear, mlp, none"):
        projection_head("mpl", 16, hidden_dim=32, out_dim=8)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 0}, "depth must be an integer >= 1"),
    ({"depth": 1}, "depth >= 2.*'linear'"),
    ({"hidden_dim": 0}, "hidden_dim must be"),
    ({"out_dim": -3}, "out_dim must be"),
])
def test_projection_head__bad_values_are_config_errors(kwargs, match):
    args = {"hidden_dim": 32, "out_dim": 8, **kwargs}
    with pytest.raises(ConfigError, match=match):
        projection_head("mlp", 16, **args)
    with pytest.raises(ConfigError, match="in_dim must be"):
        projection_head("linear", 0, hidden_dim=32, out_dim=8)


def test_predictor__linear_bn_relu_linear_out_dim_defaults_to_in_dim():
    pred = predictor(8, hidden_dim=4)
    assert _structure(pred) == ["Linear(8,4,bias=False)", "BN(4)", "ReLU", "Linear(4,8,bias=True)"]
    assert pred(torch.randn(5, 8)).shape == (5, 8)
    assert predictor(8, hidden_dim=4, out_dim=6)(torch.randn(5, 8)).shape == (5, 6)
    with pytest.raises(ConfigError, match="predictor: hidden_dim"):
        predictor(8, hidden_dim=0)
