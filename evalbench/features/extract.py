"""Frozen-feature extraction: stream an image source through an encoder.

Images decode in ``DataLoader`` workers, are preprocessed on the device (uint8 batch ->
normalised float, :func:`evalbench.encoders.base.preprocess`) and encoded in eval mode under
``torch.inference_mode``; each batch's features are written into one preallocated (N, D)
float32 array, so the memory peak is the output plus a few batches, whatever the dataset size.
Caching and identities live with the caller (:mod:`evalbench.features.artifact` stores them).
"""
from __future__ import annotations

import contextlib
from typing import Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from evalbench.core.errors import EvalbenchError
from evalbench.data.base import ImageSource
from evalbench.encoders.base import DataConfig, Encoder, preprocess


# NHWC: on CPU (oneDNN) 2.2x the images/s of NCHW for builtin:small-cnn at 28 px and 1.25x for
# timm:resnet18 at 32 px (1 thread, same features to 1e-7); the layout GPUs' tensor cores want too.
# Parameters of other ranks (ViT token layers) are left as they are.
MEMORY_FORMAT = torch.channels_last


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


def _check_output(encoder: Encoder, out: torch.Tensor, batch_size: int, start: int) -> None:
    expected = (batch_size, encoder.num_features)
    if tuple(out.shape) != expected:
        raise ExtractionError(f"encoder {encoder.arch!r} returned features of shape {tuple(out.shape)} for a batch "
                              f"of {batch_size} images; expected {expected} (batch, num_features)")
    if not torch.isfinite(out).all():
        raise ExtractionError(f"encoder {encoder.arch!r} returned non-finite features for images "
                              f"{start}..{start + batch_size - 1} (with amp, try without it)")


def make_loader(source: ImageSource, *, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """In-order batches of uint8 images (B, C, H, W), decoded in ``num_workers`` processes."""
    return DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_images, pin_memory=pin_memory, drop_last=False)


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
    start = 0
    with torch.inference_mode():
        for batch in make_loader(source, batch_size=batch_size, num_workers=num_workers, pin_memory=cuda):
            images = _check_batch(batch, start).to(device, non_blocking=cuda)
            with autocast:
                feats = encoder(to_memory_format(preprocess(images, cfg)))
            b = len(images)
            _check_output(encoder, feats, b, start)
            if start + b > n:
                raise ExtractionError(f"image source gave more than its len() of {n} images")
            out[start:start + b] = feats.float().cpu().numpy()
            start += b
    if start != n:
        raise ExtractionError(f"image source gave {start} images but its len() is {n}")
    return out
