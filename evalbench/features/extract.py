"""Frozen-feature extraction: stream an image source through an encoder.

Images in memory (an ``ArraySource`` or subsets of one: the packaged and on-disk array datasets) are
read a block of batches at a time (``PREPROCESS_BLOCK_BYTES``) by one fancy index of their uint8 array;
other sources decode batch by batch in ``DataLoader`` workers. Batches are preprocessed on the device
(uint8 batch -> normalised float, :func:`evalbench.encoders.base.preprocess`) and encoded in eval mode
under ``torch.inference_mode``; their features are written into one preallocated (N, D) float32 array,
so the memory peak is the output plus a block or a few batches, whatever the dataset size. On CPU a source of at least
``COMPILE_MIN_IMAGES`` images runs through the encoder compiled for inference by TorchScript
(:func:`inference_module`: convolutions fused with their BatchNorm and ReLU, weights prepacked for
oneDNN), checked against the eager encoder on two batch sizes first, and kept for the next call with
the same encoder, weights and input size (:func:`compiled_forward`: a task's three splits compile once);
the CPU forward runs over chunks of ``FORWARD_IMAGES_PER_THREAD`` images per thread.
Caching and identities live with the caller (:mod:`evalbench.features.artifact` stores them).
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from evalbench.core.errors import EvalbenchError
from evalbench.data.base import ImageSource, array_items
from evalbench.encoders.base import DataConfig, Encoder, preprocess


# NHWC: on CPU (oneDNN) 2.2x the images/s of NCHW for builtin:small-cnn at 28 px and 1.25x for
# timm:resnet18 at 32 px (1 thread, same features to 1e-7); the layout GPUs' tensor cores want too.
# Parameters of other ranks (ViT token layers) are left as they are.
MEMORY_FORMAT = torch.channels_last


# CPU: images from which the encoder is compiled for inference (tracing, freezing and checking on 16
# images cost ~0.05 s for builtin:small-cnn on a loaded host). Raw forward, compiled vs eager channels_last
# (benchmarks/run_all.py extraction rows, 2026-12-06): small-cnn 28 px 1.20x (1 thread) and 1.26x (2),
# timm:resnet18 64 px 1.23x; 1.3-1.9x in one-off runs on the loaded host. Features differ from eager by
# float rounding (3e-7 relative: BatchNorm folded into the weights).
COMPILE_MIN_IMAGES = 2048
COMPILE_RTOL = 1e-4  # largest |compiled - eager| accepted, relative to the largest |eager| feature
COMPILE_EXAMPLE = 16  # images traced and checked (the first batch's first ones): tracing a whole batch of 256 cost 4-7x more

# CPU forward: images per chunk and intra-op thread (a batch of 256 runs as 2 chunks of 128 at 1 thread, whole at 2).
# Smaller chunks keep a layer's activations in cache: at 1 thread, compiled, 128 vs 256 images per forward gave
# 1.03-1.06x the images/s for builtin:small-cnn at 28 px and 1.02x for timm:resnet18 at 64 px (2-core AMD EPYC,
# 2 MiB L2 per core, load 1; 1.08-1.2x at load 2.5); bit-identical features (oneDNN computes each image alike
# whatever the batch size; 70,000 fashion-mnist images checked).
FORWARD_IMAGES_PER_THREAD = 128
# In-memory arrays are read and preprocessed in blocks of about this many bytes of encoder input (whole
# batches; at least one): every elementwise op is a parallel region, and on a shared host each region's
# threads wait for one another, so fewer, larger ones (28 px gray: 20 batches of 256 per block). small-cnn, 2
# threads: 1.13x the images/s of one batch per block at load 2.5, the same (0.98-1.03x) at load 1.
PREPROCESS_BLOCK_BYTES = 16 << 20

# The last compiled module per encoder (dropped with the encoder), keyed by its weights and the input size.
_COMPILED: "weakref.WeakKeyDictionary[Encoder, tuple[tuple, Callable[[torch.Tensor], torch.Tensor]]]" = \
    weakref.WeakKeyDictionary()


def to_memory_format(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=MEMORY_FORMAT) if x.ndim == 4 else x


class ExtractionError(EvalbenchError):
    """The images of a source cannot be batched, or the encoder's output is not (B, num_features)."""


def collate_images(items: Sequence[tuple[torch.Tensor, int]]) -> Union[torch.Tensor, list[torch.Tensor]]:
    """Stack the images of ``(image, label)`` items into (B, C, H, W) uint8 (labels are known already).

    Images of different shapes come back as a list, so the main process can name them in its
    error (an exception raised inside a worker would arrive wrapped in the worker's traceback).
    """
    images = [image for image, _ in items]
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images)
    return images


def _check_batch(batch: Union[torch.Tensor, list[torch.Tensor]], start: int) -> torch.Tensor:
    if isinstance(batch, list):
        shapes = sorted({tuple(im.shape) for im in batch})
        raise ExtractionError(
            f"images {start}..{start + len(batch) - 1} of the source have different shapes {shapes}; "
            "the images of one source must share a size (C, H, W) to be batched: have its loader resize "
            "them (e.g. imagefolder's params.image_size)"
        )
    if batch.dtype != torch.uint8 or batch.ndim != 4:
        raise ExtractionError(f"image source gave a {batch.dtype} batch of shape {tuple(batch.shape)}; "
                              "expected uint8 images (C, H, W)")
    return batch


def _check_shape(encoder: Encoder, out: torch.Tensor, batch_size: int) -> None:
    expected = (batch_size, encoder.num_features)
    if tuple(out.shape) != expected:
        raise ExtractionError(f"encoder {encoder.arch!r} returned features of shape {tuple(out.shape)} for a batch "
                              f"of {batch_size} images; expected {expected} (batch, num_features)")


def _check_finite(encoder: Encoder, feats: np.ndarray, start: int) -> None:
    """``feats`` are the features of images start, start + 1, ... (checked by numpy: no thread team to sync)."""
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if len(bad):
        raise ExtractionError(f"encoder {encoder.arch!r} returned non-finite features for {len(bad)} of images "
                              f"{start}..{start + len(feats) - 1}, the first image {start + bad[0]} "
                              "(with amp, try without it)")


def make_loader(source: ImageSource, *, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """In-order batches of uint8 images (B, C, H, W), decoded in ``num_workers`` processes."""
    return DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_images, pin_memory=pin_memory, drop_last=False)


def inference_module(encoder: Encoder, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder traced, frozen and optimised for CPU inference (``torch.jit.optimize_for_inference``:
    Conv-BN folding, Conv-ReLU fusion, oneDNN-prepacked weights; the PyTorch "Performance Tuning
    Guide", CPU inference), or the eager encoder where that fails or changes its output.

    ``example`` is a preprocessed input batch (B, C, H, W). The compiled module must give the eager
    features to COMPILE_RTOL on it and on its first 3 images (another batch size: a trace that baked in
    a shape fails there); any exception or difference keeps the eager encoder, so compiling is only ever
    a speed-up.
    """
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values baked into the trace
            compiled = torch.jit.optimize_for_inference(torch.jit.trace(encoder, example, check_trace=False))
            for x in (example, example[:3]):
                with torch.inference_mode():
                    ref, out = encoder(x), compiled(x)
                if out.shape != ref.shape or not bool(((out - ref).abs().max() <= COMPILE_RTOL * ref.abs().max()).item()):
                    return encoder
    except Exception:  # noqa: BLE001 - not every model traces (data-dependent control flow, custom ops): eager
        return encoder
    return compiled


def _weights_key(encoder: Encoder, example: torch.Tensor) -> Optional[tuple]:
    """What a compiled module depends on: the identity, version counter, storage and dtype of every
    parameter and buffer (an optimizer step or ``load_state_dict`` bumps the version; ``module.to(...)``
    and ``param.data = ...`` replace the storage), the input's (C, H, W), dtype and memory format.
    None where a tensor has no version counter (created under ``torch.inference_mode``): never reused."""
    try:
        tensors = tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in (*encoder.parameters(), *encoder.buffers()))
    except RuntimeError:
        return None
    return (tensors, tuple(example.shape[1:]), example.dtype, example.is_contiguous(memory_format=MEMORY_FORMAT))


def compiled_forward(encoder: Encoder, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`inference_module` of ``encoder`` for inputs like ``example``, reused from the last call with the
    same encoder object, unchanged weights and input size (the same module it would compile again)."""
    key = _weights_key(encoder, example)
    cached = _COMPILED.get(encoder)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    forward = inference_module(encoder, example)
    if key is not None:
        _COMPILED[encoder] = (key, forward)
    return forward


def _batches(source: ImageSource, *, batch_size: int, cfg: DataConfig, num_workers: int,
             pin_memory: bool) -> Iterator[Union[torch.Tensor, list[torch.Tensor]]]:
    """In-order uint8 batches (B, C, H, W) of ``source``: in-memory arrays by one fancy index per block of
    whole batches (``PREPROCESS_BLOCK_BYTES``; no worker processes: nothing to decode), other sources
    through :func:`make_loader`."""
    arrays = array_items(source)
    if arrays is None:
        yield from make_loader(source, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        return
    images, indices = arrays
    c, h, w = images.shape[1:]
    side = cfg.input_size or max(h, w)
    input_bytes = 4 * max(c, cfg.in_chans) * max(h * w, side * side)  # float32 input of one image, at most
    block = batch_size * max(1, PREPROCESS_BLOCK_BYTES // (input_bytes * batch_size))
    for start in range(0, len(indices), block):
        batch = torch.from_numpy(images[indices[start:start + block]])  # a copy: the array may be read-only
        yield batch.pin_memory() if pin_memory else batch


def extract_features(encoder: Encoder, source: ImageSource, *, cfg: DataConfig, device: torch.device,
                     batch_size: int = 256, num_workers: int = 0, amp: bool = False) -> np.ndarray:
    """Features (N, encoder.num_features) float32 of every image of ``source``, in order.

    Puts ``encoder`` in eval mode on ``device``. On CUDA, batches are pinned and copied
    asynchronously, and ``amp`` runs the encoder under ``torch.autocast`` (float16); elsewhere
    ``amp`` is ignored. Features are checked: shape (B, num_features), finite.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n, dim = len(source), int(encoder.num_features)
    out = np.empty((n, dim), dtype=np.float32)
    encoder.eval().to(device)
    encoder.model.to(memory_format=MEMORY_FORMAT)
    autocast = torch.autocast("cuda", dtype=torch.float16) if (amp and cuda) else contextlib.nullcontext()
    forward: Callable[[torch.Tensor], torch.Tensor] = encoder
    cpu = device.type == "cpu"
    chunk = min(batch_size, FORWARD_IMAGES_PER_THREAD * torch.get_num_threads()) if cpu else batch_size
    start = 0
    with torch.inference_mode():
        for batch in _batches(source, batch_size=batch_size, cfg=cfg, num_workers=num_workers, pin_memory=cuda):
            images = _check_batch(batch, start).to(device, non_blocking=cuda)
            x = to_memory_format(preprocess(images, cfg))
            if start == 0 and cpu and n >= COMPILE_MIN_IMAGES:
                with torch.inference_mode(False):
                    forward = compiled_forward(encoder, x[:COMPILE_EXAMPLE].clone())
            b = len(images)
            if start + b > n:
                raise ExtractionError(f"image source gave more than its len() of {n} images")
            for s in range(0, b, chunk):  # CPU: cache-sized chunks; CUDA: whole batches
                m = min(chunk, b - s)
                with autocast:
                    feats = forward(x[s:s + m])
                _check_shape(encoder, feats, m)
                out[start + s:start + s + m] = feats.float().cpu().numpy()
            _check_finite(encoder, out[start:start + b], start)
            start += b
    if start != n:
        raise ExtractionError(f"image source gave {start} images but its len() is {n}")
    return out
