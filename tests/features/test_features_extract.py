"""extract_features: streamed, batched, in order, equal to encoding every image at once in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evalbench.core.errors import DatasetCorruptError
from evalbench.data import LOADERS, ArraySource, SubsetSource
from evalbench.data.base import array_items
from evalbench.encoders.base import DataConfig, Encoder
from evalbench.features import ExtractionError, extract_features
from tests.features.tiny_encoders import (CFG, reference_features, synthetic_image, tiny_encoder, tree_images,
                                          tree_order, write_tree)

CPU = torch.device("cpu")


def _extract(encoder: Encoder, source, **kwargs) -> np.ndarray:
    return extract_features(encoder, source, cfg=kwargs.pop("cfg", CFG), device=CPU, **kwargs)


def _array_source(n: int = 50, *, size: int = 12, channels: int = 3) -> ArraySource:
    images = np.random.default_rng(0).integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    return ArraySource(images, np.arange(n) % 5)


def _folder(root: Path, n: int, size: int) -> None:
    write_tree(root, range(n), size=size, classes=4)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_array_source__equals_in_memory_reference(num_workers: int) -> None:
    source = _array_source()
    encoder = tiny_encoder()  # in train mode: extraction must switch to eval (dropout)
    x = _extract(encoder, source, batch_size=7, num_workers=num_workers)  # 50 = 7 * 7 + 1
    assert x.shape == (50, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, reference_features(encoder, source.images), rtol=1e-5, atol=1e-6)
    assert not encoder.training


@pytest.mark.parametrize("num_workers", [0, 2])
def test_folder_source__equals_in_memory_reference(tmp_path: Path, num_workers: int) -> None:
    _folder(tmp_path, 90, size=16)
    source = LOADERS.get("imagefolder").load(root=tmp_path, image_size=16).train
    encoder = tiny_encoder(seed=1)
    x = _extract(encoder, source, batch_size=32, num_workers=num_workers)
    order = tree_order(90, 4)
    (_, images), = tree_images(order, size=16, classes=4, chunk=90)  # generated in memory, not decoded
    np.testing.assert_allclose(x, reference_features(encoder, images), rtol=1e-5, atol=1e-6)
    assert source.labels.tolist() == (order % 4).tolist()


def test_folder_source__resized_gray_subset_equals_reference_of_decoded_images(tmp_path: Path) -> None:
    _folder(tmp_path, 40, size=24)
    source = SubsetSource(LOADERS.get("imagefolder").load(root=tmp_path, image_size=20, channels=1).train,
                          np.arange(39, -1, -3))
    images = np.stack([source[i][0].numpy() for i in range(len(source))])
    assert images.shape == (14, 1, 20, 20)
    encoder = tiny_encoder(seed=2)  # in_chans 3: preprocess repeats the gray channel
    x = _extract(encoder, source, batch_size=5, num_workers=2)
    np.testing.assert_allclose(x, reference_features(encoder, images), rtol=1e-5, atol=1e-6)


def test_native_size_and_empty_source() -> None:
    encoder = tiny_encoder(in_chans=1, dim=8)
    cfg = DataConfig(in_chans=1, input_size=None, mean=(0.5,), std=(0.5,))
    source = _array_source(9, size=5, channels=1)
    x = _extract(encoder, source, cfg=cfg, batch_size=4)
    np.testing.assert_allclose(x, reference_features(encoder, source.images, cfg), rtol=1e-5, atol=1e-6)
    empty = ArraySource(np.zeros((0, 1, 5, 5), np.uint8), np.zeros(0, np.int64))
    assert _extract(encoder, empty, cfg=cfg).shape == (0, 8)


class _Liar(Encoder):
    """Declares 32 features, returns the flattened input (B, 3*16*16), bypassing Encoder's own check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_wrong_output_shape_names_the_encoder() -> None:
    encoder = _Liar("tiny-liar", torch.nn.Identity(), lambda m, x: m(x), 32)
    with pytest.raises(ExtractionError, match=r"encoder 'tiny-liar' returned features of shape \(4, 768\).*\(4, 32\)"):
        _extract(encoder, _array_source(4))


def test_non_finite_features_are_an_error() -> None:
    encoder = Encoder("tiny-nan", torch.nn.Identity(), lambda m, x: x.mean(dim=(2, 3)) / 0.0, 3)
    with pytest.raises(ExtractionError, match="tiny-nan.*non-finite"):
        _extract(encoder, _array_source(4))


class _MixedSizes(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.labels = np.zeros(6, np.int64)

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        side = 8 if i < 5 else 9
        return torch.zeros((3, side, side), dtype=torch.uint8), 0


@pytest.mark.parametrize("num_workers", [0, 2])
def test_images_of_different_sizes_are_a_clear_error(num_workers: int) -> None:
    with pytest.raises(ExtractionError, match=r"images 4\.\.5 .*different shapes.*must share a size"):
        _extract(tiny_encoder(), _MixedSizes(), batch_size=4, num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_image_names_the_file(tmp_path: Path, num_workers: int) -> None:
    _folder(tmp_path, 12, size=8)
    bad = tmp_path / "train" / "c2" / "000006.png"
    bad.write_bytes(b"\x89PNG garbage")
    source = LOADERS.get("imagefolder").load(root=tmp_path, image_size=8).train
    with pytest.raises(DatasetCorruptError, match=str(bad)):  # the worker's error keeps its type
        _extract(tiny_encoder(), source, batch_size=4, num_workers=num_workers)


def test_synthetic_images_are_distinct() -> None:
    """The reference comparisons above would be weak if images (hence features) repeated."""
    flat = {synthetic_image(i, 16, 4).tobytes() for i in range(200)}
    assert len(flat) == 200


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", [False, True])
def test_cuda__pinned_batches_and_amp_match_the_cpu_reference(amp: bool) -> None:
    source = _array_source(40)
    encoder = tiny_encoder()
    ref = reference_features(encoder, source.images)
    x = extract_features(encoder, source, cfg=CFG, device=torch.device("cuda"), batch_size=16, num_workers=2, amp=amp)
    assert x.dtype == np.float32 and x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=1e-2 if amp else 1e-4, atol=1e-2 if amp else 1e-4)


def test_compiled_inference__equals_eager_reference_and_is_used(monkeypatch) -> None:
    """A source of at least COMPILE_MIN_IMAGES images runs through the TorchScript-optimised encoder
    (BatchNorm folded: equal to rounding); its output is what the eager encoder gives."""
    import evalbench.features.extract as extract_mod
    calls = []
    real = extract_mod.inference_module
    monkeypatch.setattr(extract_mod, "COMPILE_MIN_IMAGES", 20)
    monkeypatch.setattr(extract_mod, "inference_module", lambda enc, x: calls.append(len(x)) or real(enc, x))
    source = _array_source()
    encoder = tiny_encoder()
    compiled = real(encoder.eval(), torch.randn(7, 3, 12, 12))
    assert compiled is not encoder  # the tiny encoder traces: the compiled path is taken
    x = _extract(encoder, source, batch_size=7)  # 50 = 7 * 7 + 1: the last batch has another size
    assert calls == [extract_mod.COMPILE_EXAMPLE]  # compiled once, on the first block's first images
    np.testing.assert_allclose(x, reference_features(encoder, source.images), rtol=1e-5, atol=1e-6)


def test_compiled_inference__falls_back_to_eager_where_tracing_changes_the_output() -> None:
    """A model whose trace bakes in the batch size (a Python int from x.shape) fails the check on the
    other batch size: the eager encoder is kept."""

    class BakesBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :4] * float(x.shape[0])

    from evalbench.features.extract import inference_module
    encoder = Encoder("test:bakes-batch", BakesBatch(), lambda m, x: m(x), 4).eval()
    assert inference_module(encoder, torch.randn(8, 1, 4, 4)) is encoder


# --- in-memory arrays: batched reads, blocks, forward chunks, the compiled module reused ------------


class _PerItem(torch.utils.data.Dataset):
    """The images of ``source`` item by item (not an ArraySource): extraction goes through the DataLoader."""

    def __init__(self, source) -> None:
        self.source, self.labels = source, source.labels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.source[i]


def test_array_items__resolves_subsets_of_arrays_only(tmp_path: Path) -> None:
    source = _array_source(30)
    inner = SubsetSource(source, np.arange(29, -1, -2))  # 15 items: 29, 27, ..., 1
    outer = SubsetSource(inner, np.array([3, 0, 14, 3]))
    images, indices = array_items(outer)
    assert images is source.images and indices.tolist() == [23, 29, 1, 23]
    assert all(np.array_equal(images[j], outer[i][0].numpy()) for i, j in enumerate(indices))
    assert array_items(source)[1].tolist() == list(range(30))
    assert array_items(_PerItem(source)) is None
    assert array_items(SubsetSource(_PerItem(source), np.arange(3))) is None
    _folder(tmp_path, 4, size=8)
    assert array_items(LOADERS.get("imagefolder").load(root=tmp_path, image_size=8).train) is None


@pytest.mark.parametrize("compiled", [False, True])
def test_array_fast_path__bit_identical_to_the_per_item_loader(monkeypatch, compiled: bool) -> None:
    """Blocks of whole batches (one fancy index each) and forward chunks smaller than a batch give the
    features of the per-item DataLoader path, bit for bit, with a resize (12 -> 16 px) and a subset."""
    import evalbench.features.extract as extract_mod
    monkeypatch.setattr(extract_mod, "COMPILE_MIN_IMAGES", 20 if compiled else 10**9)
    source = SubsetSource(_array_source(300), np.arange(299, 0, -2))  # 150 images, reversed, every other one
    encoder = tiny_encoder(seed=3)
    slow = _extract(encoder, _PerItem(source), batch_size=32)
    monkeypatch.setattr(extract_mod, "PREPROCESS_BLOCK_BYTES", 3 * 32 * 3 * 16 * 16 * 4)  # 3 batches a block
    monkeypatch.setattr(extract_mod, "FORWARD_IMAGES_PER_THREAD", 5)  # chunks of 5 (or 10 at 2 threads)
    fast = _extract(encoder, source, batch_size=32)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_allclose(fast, reference_features(encoder, source.source.images[source.indices]),
                               rtol=1e-5, atol=1e-6)


def _nan_where_constant(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    constant = (x.amax(dim=(2, 3)) == x.amin(dim=(2, 3))).all(dim=1)
    return x.mean(dim=(2, 3)) + torch.where(constant, float("nan"), 0.0)[:, None]


def test_array_fast_path__non_finite_features_name_the_first_image() -> None:
    source = _array_source(20)
    source.images[9] = 0  # a constant image: NaN features
    encoder = Encoder("tiny-nan9", torch.nn.Identity(), _nan_where_constant, 3)
    with pytest.raises(ExtractionError, match=r"tiny-nan9.*non-finite features for 1 of images 0\.\.19, the first image 9"):
        _extract(encoder, source, batch_size=8)  # one block of 20 images


def test_compiled_module__reused_while_the_weights_are_unchanged(monkeypatch) -> None:
    """A task's splits compile once; an in-place weight update (an optimizer step) compiles again."""
    import evalbench.features.extract as extract_mod
    calls = []
    real = extract_mod.inference_module
    monkeypatch.setattr(extract_mod, "COMPILE_MIN_IMAGES", 20)
    monkeypatch.setattr(extract_mod, "inference_module", lambda enc, x: calls.append(len(x)) or real(enc, x))
    encoder, a, b = tiny_encoder(seed=4), _array_source(40), _array_source(30)
    first = _extract(encoder, a)
    _extract(encoder, b)
    np.testing.assert_array_equal(_extract(encoder, a), first)
    assert len(calls) == 1
    _extract(encoder, _array_source(30, size=8))  # other images, resized to the same input: the same module
    assert len(calls) == 1
    _extract(encoder, b, cfg=DataConfig(in_chans=3, input_size=8, mean=CFG.mean, std=CFG.std))  # 8 px input
    assert len(calls) == 2
    with torch.no_grad():
        encoder.model[0].weight.mul_(2)
    changed = _extract(encoder, a)
    assert len(calls) == 3
    np.testing.assert_allclose(changed, reference_features(encoder, a.images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed, first)
    with torch.no_grad():  # weights replaced without an in-place op (what module.to(...) does): compiles again
        encoder.model[0].weight.data = encoder.model[0].weight.data * 0.5
    restored = _extract(encoder, a)
    assert len(calls) == 4
    np.testing.assert_allclose(restored, first, rtol=1e-5, atol=1e-6)
