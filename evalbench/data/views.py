"""Extraction views (DESIGN.md §4): what a protocol sees of a task's images, e.g. the images
as they are (``identity``) or transformed copies with new labels (rotation prediction).

A view maps an :class:`ImageSource` to another (lazily: it must not decode the images) and
carries a ``version`` that enters the feature identity, so changing what a view does never
reuses features extracted by its older code. List them with ``evalbench list views``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from evalbench.core.registry import Registry
from evalbench.data.base import ImageSource


@dataclass(frozen=True)
class View:
    """``apply(source) -> source``: may change images and labels, never decodes eagerly.

    A view of transformed copies (:class:`CopiesSource`) names them in ``copies``, in their order;
    ``num_classes`` is the number of labels it makes where they are not the task's (rotation: 4);
    ``splits`` the splits its probes read, the only ones extracted under it.
    """

    apply: Callable[[ImageSource], ImageSource]
    version: int
    description: str
    copies: tuple[str, ...] = ()
    num_classes: Optional[int] = None
    splits: tuple[str, ...] = ("train", "val", "test")


VIEWS: Registry[View] = Registry("extraction view", "evalbench list views")


def _identity(source: ImageSource) -> ImageSource:
    return source


VIEWS.register("identity")(View(apply=_identity, version=1, description="the task's images and labels, unchanged"))


# --- copies of every image: rotation prediction and the invariance panel (protocols/invariance.py) ---

Transform = Callable[[torch.Tensor], torch.Tensor]  # uint8 (C, H, W) -> uint8 (C, H, W)


class CopiesSource(Dataset):
    """Every image of ``source`` under each transform, copy-major: item ``r * N + i`` is transform r
    of image i, so a probe finds the copies of image i at i, N + i, 2N + i, ... Its label is r
    (``label_by_copy``: the copy is what is predicted, e.g. the rotation) or image i's own label."""

    def __init__(self, source: ImageSource, transforms: tuple[Transform, ...], *, label_by_copy: bool) -> None:
        self.source, self.transforms, n = source, transforms, len(source)
        self.labels = (np.repeat(np.arange(len(transforms), dtype=np.int64), n) if label_by_copy
                       else np.tile(np.asarray(source.labels, dtype=np.int64), len(transforms)))

    def __len__(self) -> int:
        return len(self.source) * len(self.transforms)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        r, i = divmod(int(j), len(self.source))
        return self.transforms[r](self.source[i][0]), int(self.labels[j])


# module-level functions (through functools.partial): a DataLoader with workers pickles the source
def _rotate(img: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    return torch.rot90(img, quarter_turns, dims=(1, 2))  # counter-clockwise; square images keep their shape


def _same(img: torch.Tensor) -> torch.Tensor:
    return img


def _hflip(img: torch.Tensor) -> torch.Tensor:
    return img.flip(-1)


def _center_crop_area(img: torch.Tensor, scale: float) -> torch.Tensor:
    """The central crop holding ``scale`` of the area, resized back to the image's size (bilinear, antialiased)."""
    h, w = img.shape[-2:]
    ch, cw = max(1, round(h * math.sqrt(scale))), max(1, round(w * math.sqrt(scale)))
    import torchvision.transforms.functional as TF  # here, not at import: torchvision costs the CLI ~1.4 s

    return TF.resized_crop(img, (h - ch) // 2, (w - cw) // 2, ch, cw, [h, w], antialias=True)


def _color(img: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    import torchvision.transforms.functional as TF

    return TF.adjust_contrast(TF.adjust_brightness(img, brightness), contrast)


def _blur(img: torch.Tensor, sigma: float, kernel: int) -> torch.Tensor:
    import torchvision.transforms.functional as TF

    return TF.gaussian_blur(img, [kernel, kernel], [sigma, sigma])


ROTATIONS = tuple(partial(_rotate, quarter_turns=k) for k in range(4))
# The panel: the transforms SSL augmentations target, each fixed (a view is deterministic).
PANEL: dict[str, Transform] = {
    "identity": _same,
    "hflip": _hflip,
    "crop": partial(_center_crop_area, scale=0.5),  # SimCLR's random resized crop, at half the area
    "color": partial(_color, brightness=1.4, contrast=0.6),  # colour jitter's brightness and contrast
    "blur": partial(_blur, sigma=1.0, kernel=5),  # Gaussian blur, sigma 1 px
}

VIEWS.register("rotation")(View(
    apply=lambda s: CopiesSource(s, ROTATIONS, label_by_copy=True), version=1, num_classes=4,
    copies=("rot0", "rot90", "rot180", "rot270"),
    description="each image rotated by 0/90/180/270 degrees, labelled by its rotation (Gidaris et al. 2018)"))
VIEWS.register("invariance_panel")(View(
    # version 2: test split only (invariance@1 reads nothing else; v1 extracted 5 copies of train and val too)
    apply=lambda s: CopiesSource(s, tuple(PANEL.values()), label_by_copy=False), version=2, copies=tuple(PANEL),
    splits=("test",),
    description="each image as it is, flipped, centre-cropped to half its area, brighter with less contrast, "
                "blurred; labels unchanged"))
