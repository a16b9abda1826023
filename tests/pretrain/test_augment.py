"""Augmentations: uint8 batches in and out, every sample with its own parameters from the global
RNG (reproducible under a seed), each augmentation off is the identity, and the vectorised ops
equal torchvision's functional ops on one image (golden tests)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

from evalbench.pretrain import augment as A
from evalbench.pretrain.augment import AUGMENT_IMPLS, build_augment, two_views
from evalbench.pretrain.config import (AugmentConfig, BlurConfig, ColorJitterConfig, CropConfig, ProbConfig,
                                       RotationConfig)

IMPLS = sorted(AUGMENT_IMPLS.names())
OFF = AugmentConfig(
    crop=CropConfig(False, (0.2, 1.0)),
    color_jitter=ColorJitterConfig(False, 0.4, 0.4, 0.4, 0.1, 0.8),
    grayscale=ProbConfig(False, 0.2),
    blur=BlurConfig(False, (0.1, 2.0), 0.5),
    flip=ProbConfig(False, 0.5),
    rotation=RotationConfig(False, 15.0, 0.5),
)
ALL_ON = replace(OFF, crop=CropConfig(True, (0.2, 1.0)), color_jitter=replace(OFF.color_jitter, enabled=True),
                 grayscale=ProbConfig(True, 0.2), blur=replace(OFF.blur, enabled=True), flip=ProbConfig(True, 0.5),
                 rotation=replace(OFF.rotation, enabled=True))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy shared CPU OpenMP's
    spinning threads make each op 10-100x slower; the results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def images(n: int = 8, c: int = 3, side: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, side, side), dtype=torch.uint8, generator=g)


def only(**sections) -> AugmentConfig:
    return replace(OFF, **sections)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chans", [1, 3])
def test_augment__uint8_batch_in_uint8_batch_out(impl, chans):
    x = images(c=chans, side=20)
    for size in (None, 12, 24):
        out = build_augment(ALL_ON, size=size, impl=impl)(x)
        side = size or 20
        assert out.dtype == torch.uint8 and out.shape == (8, chans, side, side)
    v1, v2_ = two_views(build_augment(ALL_ON, size=None, impl=impl), x)
    assert v1.shape == v2_.shape == x.shape and not torch.equal(v1, v2_)


@pytest.mark.parametrize("impl", IMPLS)
def test_augment__every_sample_gets_its_own_crop(impl):
    x = images(n=1, c=1, side=16).expand(6, -1, -1, -1).contiguous()  # six identical images
    out = build_augment(only(crop=CropConfig(True, (0.1, 0.5))), size=16, impl=impl)(x)
    assert len({bytes(o.flatten().tolist()) for o in out}) > 1


@pytest.mark.parametrize("impl", IMPLS)
def test_augment__seeded_global_rng_repeats_the_augmentations(impl):
    fn = build_augment(ALL_ON, size=16, impl=impl)
    x = images()
    torch.manual_seed(7)
    a = fn(x)
    torch.manual_seed(7)
    b = fn(x)
    c = fn(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chans", [1, 3])
def test_augment__everything_disabled_leaves_the_batch_unchanged(impl, chans):
    x = images(c=chans)
    for size in (None, 16):
        assert torch.equal(build_augment(OFF, size=size, impl=impl)(x), x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("section", [
    {"crop": CropConfig(True, (1.0, 1.0))},                     # the whole image at the same size
    {"color_jitter": ColorJitterConfig(True, 0.4, 0.4, 0.4, 0.1, 0.0)},
    {"color_jitter": ColorJitterConfig(True, 0.0, 0.0, 0.0, 0.0, 1.0)},
    {"grayscale": ProbConfig(True, 0.0)},
    {"blur": BlurConfig(True, (0.1, 2.0), 0.0)},
    {"flip": ProbConfig(True, 0.0)},
    {"rotation": RotationConfig(True, 30.0, 0.0)},
    {"rotation": RotationConfig(True, 0.0, 1.0)},
], ids=lambda s: next(iter(s)))
def test_augment__an_augmentation_that_cannot_fire_is_the_identity(impl, section):
    x = images()
    assert torch.equal(build_augment(only(**section), size=16, impl=impl)(x), x)


@pytest.mark.parametrize("impl", IMPLS)
def test_augment__flip_with_p1_is_torch_flip(impl):
    x = images()
    out = build_augment(only(flip=ProbConfig(True, 1.0)), size=None, impl=impl)(x)
    assert torch.equal(out, torch.flip(x, dims=[-1]))


@pytest.mark.parametrize("impl", IMPLS)
def test_augment__grayscale_with_p1_makes_equal_channels_and_is_a_noop_on_one_channel(impl):
    out = build_augment(only(grayscale=ProbConfig(True, 1.0)), size=None, impl=impl)(images(c=3))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    x1 = images(c=1)
    assert torch.equal(build_augment(only(grayscale=ProbConfig(True, 1.0)), size=None, impl=impl)(x1), x1)


@pytest.mark.parametrize("impl", IMPLS)
def test_augment__one_channel_jitter_ignores_saturation_and_hue(impl):
    x = images(c=1)
    cfg = only(color_jitter=ColorJitterConfig(True, 0.0, 0.0, 0.9, 0.5, 1.0))
    assert torch.equal(build_augment(cfg, size=None, impl=impl)(x), x)
    cfg = only(color_jitter=ColorJitterConfig(True, 0.5, 0.5, 0.9, 0.5, 1.0))
    assert not torch.equal(build_augment(cfg, size=None, impl=impl)(x), x)


def test_augment__bad_batches_are_errors():
    fn = build_augment(OFF, size=None)
    with pytest.raises(ValueError, match="uint8"):
        fn(images().float())
    with pytest.raises(ValueError, match="output size"):
        fn(torch.zeros(2, 1, 8, 10, dtype=torch.uint8))
    with pytest.raises(KeyError, match="unknown augmentation implementation 'fast'; known: batched, per_sample"):
        build_augment(OFF, size=None, impl="fast")


# --- golden: the vectorised ops equal torchvision's functional ops on one float image -------------

def test_augment__crop_boxes_fit_and_follow_the_scale_range():
    torch.manual_seed(0)
    boxes = A.crop_boxes(2000, 20, 30, (0.25, 0.5))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 30).all() and (boxes[:, 3] <= 20).all()
    area = w * h / 600
    assert area.min() > 0.2 and area.max() < 0.56 and 0.35 < area.mean() < 0.4
    ratio = w / h
    assert ratio.min() > 0.6 and ratio.max() < 1.6


def test_augment__crop_resize_equals_torchvision_resized_crop():
    x = torch.rand(2, 3, 16, 16)
    boxes = torch.tensor([[2.0, 3.0, 13.0, 12.0], [0.0, 0.0, 16.0, 16.0]])  # [x1, y1, x2, y2]
    out = A.crop_resize(x, boxes, 16)
    torch.testing.assert_close(out[0], TF.resized_crop(x[0], 3, 2, 9, 11, [16, 16], antialias=False))
    torch.testing.assert_close(out[1], x[1])
    small = A.crop_resize(x, boxes, 8)  # a 2x downscale averages 2x2 samples: here exactly the 2x2 pixels
    torch.testing.assert_close(small[1], F.avg_pool2d(x[1:2], 2)[0])


def test_augment__rotate_equals_torchvision_rotate():
    x = torch.rand(3, 3, 12, 12)
    angles = torch.tensor([10.0, -33.0, 77.0])
    out = A.rotate(x, angles)
    for i, a in enumerate(angles.tolist()):
        ref = TF.rotate(x[i], a, interpolation=v2.InterpolationMode.BILINEAR, fill=None)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, fn, factor", [
    ("brightness", TF.adjust_brightness, 1.3), ("contrast", TF.adjust_contrast, 0.6),
    ("saturation", TF.adjust_saturation, 1.7), ("hue", TF.adjust_hue, -0.3), ("hue", TF.adjust_hue, 0.45),
])
def test_augment__jitter_ops_equal_torchvision(name, fn, factor):
    x = torch.rand(2, 3, 10, 10)
    out = A.JITTER_OPS[name][0](x.clone(), torch.tensor([factor, factor]))
    torch.testing.assert_close(out[1], fn(x[1], factor), atol=1e-5, rtol=0)


def test_augment__blur_equals_torchvision_gaussian_blur():
    x = torch.rand(2, 3, 12, 12)
    out = A.gaussian_blur(x, torch.tensor([0.4, 1.7]), 7)
    for i, s in enumerate([0.4, 1.7]):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [7, 7], [s, s]), atol=1e-5, rtol=0)
    assert A.blur_kernel_size(2.0, 32) == 13 and A.blur_kernel_size(2.0, 4) == 7
