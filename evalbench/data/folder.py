"""ImageFolder trees (DESIGN.md §4): ``root/train/<class>/<image>`` and optionally
``root/test/<class>/<image>``, the layout of torchvision's ``ImageFolder``
(https://pytorch.org/vision/stable/generated/torchvision.datasets.ImageFolder.html).

Loading lists the files (no image is opened), so a tree of any size, ImageNet included, is
cheap to load: :class:`FolderSource` keeps each image's path and label and decodes the file
when indexed, inside the ``DataLoader`` workers. The fingerprint lists the same files with
their sizes (relative paths, never ``root``), so moving an image to another class folder
changes it while a copy of the tree elsewhere keeps it. It does not read file contents: an
image rewritten in place with the very same size keeps the fingerprint.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from evalbench.core.errors import ConfigError, DatasetCorruptError, DatasetMissingError
from evalbench.core.filehash import HashFile, sha256_file
from evalbench.data.base import LOADERS, Loader, SourceParts

FOLDER_HOW = ("Set `root:` in the task YAML to a directory holding train/<class>/<image> "
              "(and optionally test/<class>/<image>) with .png, .jpg, ... images.")
PARTS = ("train", "test")


class FolderSource(Dataset):
    """Images stored one per file under ``root``, decoded when indexed.

    Holds only the relative paths (packed into one byte buffer, so forked ``DataLoader``
    workers do not copy a Python object per file) and the labels. ``self[i]`` opens the file,
    converts it to ``channels`` (1: "L", 3: "RGB"), resizes it to image_size x image_size
    (PIL bilinear) and returns ``(uint8 (C, H, W) tensor, label)``; a file that cannot be
    decoded raises :class:`DatasetCorruptError` naming it.
    """

    def __init__(self, root: Path, files: Sequence[str], labels: np.ndarray, *, image_size: int,
                 channels: int, classes: Sequence[str] = ()) -> None:
        encoded = [os.fsencode(f) for f in files]
        self.root = Path(root)
        self.labels = np.asarray(labels, dtype=np.int64)
        assert self.labels.shape == (len(encoded),), (self.labels.shape, len(encoded))
        self.image_size = int(image_size)
        self.mode = "L" if channels == 1 else "RGB"
        self.classes = list(classes)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._names = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self.labels)

    def file(self, i: int) -> str:
        """The relative path of item ``i`` (``train/<class>/<file>``)."""
        i = range(len(self.labels))[i]  # IndexError out of range; negative i counts from the end
        return os.fsdecode(self._names[self._offsets[i]:self._offsets[i + 1]].tobytes())

    def path(self, i: int) -> Path:
        return self.root / self.file(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        arr = decode_image(self.path(i), self.image_size, self.mode)
        return torch.from_numpy(arr), int(self.labels[i])


def decode_image(path: Path, size: int, mode: str) -> np.ndarray:
    """One image file as uint8 (C, size, size): converted to ``mode`` ("L" or "RGB"), resized bilinearly."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode).resize((size, size), Image.Resampling.BILINEAR))  # read-only view
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # OSError: also unidentified
        raise DatasetCorruptError(f"{path}: cannot be read as an image ({e})") from None
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (H, W[, C]) -> (C, H, W)
    return np.array(chw, order="C")  # a writable contiguous copy


# --- listing the tree --------------------------------------------------------------------------


def _check_params(image_size: Any, channels: Any) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"imagefolder: params.image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise ConfigError(f"imagefolder: params.channels must be 1 or 3, got {channels!r}")


def _folder_classes(directory: Path) -> list[str]:
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(directory))[0]  # sorted class folder names
    except FileNotFoundError as e:
        raise DatasetMissingError(f"imagefolder: {e}. {FOLDER_HOW}") from None


def _folder_samples(directory: Path, class_to_idx: dict[str, int], *, allow_empty: bool) -> list[tuple[str, int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:  # sorted by class, then by file name, as torchvision's ImageFolder
        return make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
    except FileNotFoundError as e:
        raise DatasetMissingError(f"imagefolder: {e}") from None


def scan_folder(root: Optional[Path]) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    """(classes, part -> (file paths relative to root, labels)) of the tree; reads directories only.

    Classes are numbered in sorted name order from ``train/``, the same for both parts.
    """
    train_dir = Path(root or "<root>") / "train"
    if root is None or not train_dir.is_dir():
        raise DatasetMissingError(f"imagefolder: looked for {train_dir}, not found. {FOLDER_HOW}")
    root = Path(root)
    classes = _folder_classes(train_dir)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    parts: dict[str, tuple[list[str], np.ndarray]] = {}
    for part in PARTS:
        d = root / part
        if part == "test":
            if not d.is_dir():
                break
            extra = sorted(set(_folder_classes(d)) - set(classes))
            if extra:
                raise ConfigError(f"imagefolder: {d} has classes that {train_dir} lacks: {', '.join(extra)}")
        samples = _folder_samples(d, class_to_idx, allow_empty=part == "test")
        parts[part] = (_relative(samples, d, part), np.array([label for _, label in samples], dtype=np.int64))
    return classes, parts


def _relative(samples: list[tuple[str, int]], directory: Path, part: str) -> list[str]:
    """``part/<class>/<file>`` of each sample path (which torchvision joins onto ``directory``)."""
    prefix = os.path.join(os.path.expanduser(str(directory)), "")
    assert all(p.startswith(prefix) for p, _ in samples), prefix
    return [f"{part}/{p[len(prefix):]}".replace(os.sep, "/") for p, _ in samples]


def load_imagefolder(*, root: Optional[Path], image_size: Optional[int] = None, channels: int = 3) -> SourceParts:
    """Any tree ``root/train/<class>/<image>`` (and optionally ``root/test/<class>/<image>``) as
    :class:`FolderSource` parts: every image is converted to ``channels`` (1: "L", 3: "RGB") and
    resized to image_size x image_size when read."""
    _check_params(image_size, channels)
    classes, parts = scan_folder(root)
    sources = {part: FolderSource(Path(root), files, labels, image_size=image_size, channels=channels, classes=classes)
               for part, (files, labels) in parts.items()}
    return SourceParts(train=sources["train"], test=sources.get("test"))


def fingerprint_imagefolder(*, root: Optional[Path], hash_file: HashFile = sha256_file,
                            image_size: Optional[int] = None, channels: int = 3) -> dict[str, Any]:
    """sha256 of the sorted (relative path, size in bytes) listing of every image, and the count.

    Relative paths (``train/<class>/<file>``) carry the labels; sizes catch most content
    changes without reading any file; ``hash_file`` is not used.
    """
    _check_params(image_size, channels)
    _, parts = scan_folder(root)
    files = sorted(f for names, _ in parts.values() for f in names)
    h = hashlib.sha256()
    for f in files:  # one line "relative/path<TAB>size" per image, in sorted order
        h.update(f"{f}\t{os.stat(os.path.join(root, f)).st_size}\n".encode("utf-8", "surrogateescape"))
    return {"loader": "imagefolder", "image_size": image_size, "channels": channels,
            "files": len(files), "listing_sha256": h.hexdigest()}


LOADERS.register("imagefolder")(Loader(load=load_imagefolder, fingerprint=fingerprint_imagefolder))
