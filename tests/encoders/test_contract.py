"""The encoder contract: pooled pre-logit features (B, D), the family's default preprocessing,
and the plan-time check. References are independent of evalbench's rules: a forward hook on the
untouched torchvision / timm classifier captures the input of its logits Linear."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.encoders import (BUILTIN, FAMILIES, DataConfig, Encoder, EncoderContractError, Family, SmallCNN,
                                build_encoder, check_encoder, default_data_config, list_encoders, preprocess,
                                split_arch)

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _input_of(module: nn.Module, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of ``module`` during ``model(x)`` (a forward hook, removed afterwards)."""
    seen: dict = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen["x"]


# (model, its final logits Linear as named in torchvision/models/*.py, input side, batch, D)
TORCHVISION = [
    ("resnet18", "fc", 32, 2, 512),
    ("convnext_tiny", "classifier.2", 32, 2, 768),  # [LayerNorm2d, Flatten, Linear]
    ("efficientnet_b0", "classifier.1", 32, 2, 1280),  # [Dropout, Linear]
    ("mobilenet_v3_small", "classifier.3", 32, 2, 1024),  # [Linear, Hardswish, Dropout, Linear]
    ("vit_b_16", "heads.head", 224, 1, 768),  # fixed 224 patch grid
    ("swin_t", "head", 32, 2, 768),
    ("maxvit_t", "classifier.5", 224, 1, 512),  # [AvgPool, Flatten, LayerNorm, Linear, Tanh, Linear]; 224 only
]


@pytest.fixture(scope="module")
def torchvision_pair():
    """(name, logits) -> (untouched torchvision model, our encoder with the same weights), in eval mode;
    each built once for this module (random init of the big ones dominates the runtime)."""
    built: dict = {}

    def get(name: str, logits: str) -> tuple[nn.Module, Encoder]:
        if name not in built:
            torch.manual_seed(0)
            ref = torchvision.models.get_model(name, weights=None).eval()
            enc = build_encoder(f"torchvision:{name}", in_chans=3).eval()
            # strict: the encoder's state_dict is the original's less the logits layer
            enc.model.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith(logits + ".")})
            built[name] = ref, enc
        return built[name]

    yield get
    built.clear()


@pytest.mark.parametrize("name,logits,size,batch,dim", TORCHVISION, ids=[c[0] for c in TORCHVISION])
def test_torchvision_features_are_the_input_of_the_logits_linear(torchvision_pair, name, logits, size, batch, dim):
    ref, enc = torchvision_pair(name, logits)
    head = ref.get_submodule(logits)
    assert isinstance(head, nn.Linear) and head.out_features == 1000
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        feats = enc(x)
    assert enc.num_features == dim and feats.shape == (batch, dim)
    torch.testing.assert_close(feats, _input_of(head, ref, x))


def test_torchvision_convnext_features_keep_the_head_layernorm(torchvision_pair):
    _, enc = torchvision_pair("convnext_tiny", "classifier.2")
    assert "classifier.0.weight" in enc.model.state_dict()  # the LayerNorm2d stays, only classifier.2 goes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = enc(x)
        pooled = enc.model.avgpool(enc.model.features(x)).flatten(1)  # (B, 768, 1, 1) -> (B, 768), pre-norm
    ln = enc.model.classifier[0]
    assert feats.shape == (2, 768)
    torch.testing.assert_close(feats, F.layer_norm(pooled, (768,), ln.weight, ln.bias, ln.eps))
    assert not torch.allclose(feats, pooled, atol=1e-3)


def test_torchvision_maxvit_features_are_pooled_after_the_tanh(torchvision_pair):
    _, enc = torchvision_pair("maxvit_t", "classifier.5")
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 224, 224))
    assert feats.shape == (1, 512) and feats.abs().max() < 1  # (B, D), Tanh range


@pytest.mark.parametrize("name,size,dim", [
    ("resnet18", 32, 512),
    ("vit_tiny_patch16_224", 224, 192),
    ("mobilenetv3_small_100", 32, 1024),  # pre-logits = conv_head (head_hidden_size 1024), not num_features 576
])
def test_timm_features_are_pre_logits(name, size, dim):
    torch.manual_seed(0)
    enc = build_encoder(f"timm:{name}", in_chans=3).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = enc(x)
        torch.testing.assert_close(feats, enc.model.forward_head(enc.model.forward_features(x), pre_logits=True))
    assert enc.num_features == dim and feats.shape == (2, dim)

    clf = timm.create_model(name, pretrained=False, num_classes=10).eval()
    head = clf.get_classifier()
    head_name = next(n for n, m in clf.named_modules() if m is head)
    assert isinstance(head, nn.Linear) and head.out_features == 10
    missing, unexpected = clf.load_state_dict(enc.model.state_dict(), strict=False)
    assert unexpected == [] and sorted(missing) == [f"{head_name}.bias", f"{head_name}.weight"]
    torch.testing.assert_close(feats, _input_of(head, clf, x))


@pytest.mark.parametrize("name,interpolation", [
    ("resnet18", "bicubic"), ("resnet18.tv_in1k", "bilinear"), ("vit_tiny_patch16_224", "bicubic")])
def test_timm_default_data_config_is_timms(name, interpolation):
    ref = timm.data.resolve_model_data_config(timm.create_model(name, pretrained=False))
    assert ref["input_size"] == (3, 224, 224) and ref["interpolation"] == interpolation
    assert default_data_config(f"timm:{name}") == DataConfig(3, 224, tuple(ref["mean"]), tuple(ref["std"]),
                                                             interpolation)


def test_timm_default_data_config_adapts_channels():
    gray = default_data_config("timm:resnet18", in_chans=1)
    assert gray.in_chans == 1 and gray.input_size == 224
    assert gray.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert gray.std == pytest.approx((sum(IMAGENET_STD) / 3,))
    assert default_data_config("timm:vit_tiny_patch16_224", in_chans=1).mean == (0.5,)
    assert build_encoder("timm:resnet18", in_chans=1).model.conv1.in_channels == 1


def test_torchvision_default_data_config_and_channels():
    imagenet = DataConfig(3, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    assert default_data_config("torchvision:convnext_tiny") == imagenet
    assert default_data_config("torchvision:efficientnet_b0").interpolation == "bicubic"
    assert default_data_config("torchvision:inception_v3").input_size == 299
    for call in (lambda: build_encoder("torchvision:resnet18", in_chans=1),
                 lambda: default_data_config("torchvision:resnet18", in_chans=1)):
        with pytest.raises(ConfigError, match=r"torchvision:resnet18 takes 3 input channels; set in_chans: 3"):
            call()


def test_builtin_defaults_and_state_dict_names_are_unchanged():
    assert default_data_config("builtin:small-cnn") == DataConfig(1, None, (0.5,), (0.5,), "bilinear")
    assert default_data_config("builtin:small-cnn", in_chans=3).mean == (0.5, 0.5, 0.5)
    enc = build_encoder("builtin:small-cnn", in_chans=1)
    assert isinstance(enc.model, SmallCNN) and enc.num_features == 128
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    # the names checkpoints saved by earlier evalbench versions use: Conv-BN-ReLU(-MaxPool) x 3
    assert list(enc.model.state_dict()) == [
        "features.0.weight", *(f"features.1.{k}" for k in bn),
        "features.4.weight", *(f"features.5.{k}" for k in bn),
        "features.8.weight", *(f"features.9.{k}" for k in bn)]
    assert [build_encoder(f"builtin:{n}", in_chans=1).num_features for n in BUILTIN] == [128, 256, 256]
    assert list(build_encoder("builtin:small-cnn-deep", in_chans=1).model.state_dict())[-1] == \
        "features.13.num_batches_tracked"


def test_check_encoder_rejects_a_size_the_model_cannot_take():
    cfg = default_data_config("timm:vit_tiny_patch16_224", in_chans=1)
    assert check_encoder("timm:vit_tiny_patch16_224", cfg) == 192
    with pytest.raises(ConfigError, match=r"timm:vit_tiny_patch16_224 cannot take 28x28 inputs \(it needs 224x224; "
                                          r"set preprocessing.input_size: 224"):
        check_encoder("timm:vit_tiny_patch16_224", DataConfig(1, 28, (0.5,), (0.5,)))
    with pytest.raises(ConfigError, match=r"torchvision:vit_b_16 cannot take 32x32 inputs \(it needs 224x224"):
        check_encoder("torchvision:vit_b_16", DataConfig(3, 32, IMAGENET_MEAN, IMAGENET_STD))
    # None: the task's native size, unknown at plan time: no size check
    assert check_encoder("timm:vit_tiny_patch16_224", DataConfig(3, None, (0.5,), (0.5,))) == 192


def test_check_encoder_accepts_and_returns_the_feature_dim():
    rgb32 = DataConfig(3, 32, IMAGENET_MEAN, IMAGENET_STD)
    assert check_encoder("timm:resnet18", rgb32) == 512
    assert check_encoder("torchvision:resnet18", rgb32) == 512
    assert check_encoder("torchvision:regnet_y_400mf", rgb32) == 440  # cannot be built on meta: CPU fallback
    for size in (8, 28, None):
        assert check_encoder("builtin:small-cnn", DataConfig(1, size, (0.5,), (0.5,))) == 128
    with pytest.raises(ConfigError, match=r"torchvision:squeezenet1_0 is not supported"):
        check_encoder("torchvision:squeezenet1_0", rgb32)


def test_contract_violations_are_named(monkeypatch):
    bad = Encoder("fake:unpooled", nn.Identity(), lambda model, x: model(x), 4)  # (B, C, H, W) passes through
    with pytest.raises(EncoderContractError, match=r"fake:unpooled: features .* have shape \(2, 4, 1, 1\)"):
        bad(torch.zeros(2, 4, 1, 1))
    monkeypatch.setitem(FAMILIES._items, "fake", Family(
        build=lambda name, in_chans: Encoder(f"fake:{name}", nn.Identity(), lambda model, x: model(x), in_chans),
        check=lambda name: None,
        data_config=lambda name, in_chans: DataConfig(in_chans or 3, None, (0.5,), (0.5,))))
    with pytest.raises(EncoderContractError, match=r"fake:unpooled: .*shape \(2, 3, 8, 8\).*num_features = 3"):
        check_encoder("fake:unpooled", DataConfig(3, 8, (0.5,), (0.5,)))


@pytest.mark.parametrize("arch,message", [
    ("timm:not_a_model", r"unknown timm model 'not_a_model'.*timm.list_models"),
    ("timm:resnet18.nope", r"timm model 'resnet18' has no pretrained tag 'nope'.*list_pretrained"),
    ("torchvision:nope", r"unknown torchvision classification model 'nope'.*list_models"),
    ("torchvision:resnet_18", r"did you mean resnet18"),
    ("torchvision:fasterrcnn_resnet50_fpn", r"unknown torchvision classification model"),
    ("builtin:nope", r"unknown built-in encoder 'nope'; known: small-cnn, small-cnn-deep, small-cnn-wide"),
    ("resnet18", r"must be FAMILY:NAME, e.g. timm:resnet18.*families: builtin, timm, torchvision"),
    ("nope:resnet18", r"unknown architecture family 'nope'; known: builtin, timm, torchvision"),
])
def test_unknown_names_say_how_to_fix(arch, message):
    for call in (lambda: split_arch(arch), lambda: build_encoder(arch, in_chans=3),
                 lambda: default_data_config(arch), lambda: check_encoder(arch, DataConfig(3, 32, (0.5,), (0.5,)))):
        with pytest.raises(ConfigError, match=message):
            call()


def test_split_and_list():
    assert split_arch("timm:resnet18.tv_in1k") == ("timm", "resnet18.tv_in1k")
    assert list_encoders() == ["builtin:small-cnn", "builtin:small-cnn-deep", "builtin:small-cnn-wide",
                               "timm:<name>", "torchvision:<name>"]


def test_default_preprocessing_feeds_the_encoder():
    """The issue's failure: a ViT on 28x28 grayscale digits. Its default DataConfig resizes to 224."""
    arch = "timm:vit_tiny_patch16_224"
    cfg = default_data_config(arch, in_chans=3)
    assert check_encoder(arch, cfg) == 192
    batch = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    x = preprocess(batch, cfg)
    assert x.shape == (2, 3, 224, 224)
    with torch.no_grad():
        assert build_encoder(arch, in_chans=3).eval()(x).shape == (2, 192)
