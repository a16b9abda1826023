"""Label subsets for semi-supervised fine-tuning (DESIGN.md §3): class-balanced draws of a task's
train split, written once as an index file beside the split file (``tasks/splits/<task>-subsets.json``).

As SimCLR's ImageNet 1% / 10% subset files (Chen et al. 2020, appendix B.5): every class gets the
same number of labelled images, ``round(fraction x train_size / num_classes)``; a draw ``d`` of
fraction ``f`` takes, for each class, the first ``k(f)`` items of ONE seeded permutation of that
class's train indices (``np.random.default_rng([seed, d, class])``), so the 1% draw ``d`` lies
inside the 10% draw ``d`` (nested by construction) and any fraction is the same function of
(labels, seed, draw) on every machine. Where the rounding would leave a class empty, each class
gets one image, and the file says so (``min_one_per_class: true``). A class smaller than ``k``
gives all its images (``capped_classes``). Fraction 1.0 is the whole train split (no file entry).

Indices are positions in the train split as ``data.splits.apply_split`` makes it (the train part
minus val and test), sorted. The file carries the split file's sha256 and the train split's size:
one made for other splits is refused with how to remake it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from evalbench.core.atomic import write_text
from evalbench.core.errors import ConfigError

ALGORITHM = 1  # bump if make_subsets changes (the committed files would then disagree with it)
FRACTIONS = (0.01, 0.1)
DRAWS = 3
SEED = 0


def check_fraction(fraction: Any, *, where: str = "label_fraction") -> float:
    """A label fraction in (0, 1], else a ConfigError (before any work)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < float(fraction) <= 1 \
            or fraction != fraction:
        raise ConfigError(f"{where}: a label fraction must be a number in (0, 1] (0.01 = 1% of the train labels), "
                          f"got {fraction!r}")
    return float(fraction)


def fraction_key(fraction: float) -> str:
    return repr(float(fraction))  # 0.01 -> "0.01", 0.1 -> "0.1"


def subsets_path(split_file: Path) -> Path:
    """tasks/splits/digits.json -> tasks/splits/digits-subsets.json"""
    split_file = Path(split_file)
    return split_file.with_name(f"{split_file.stem}-subsets.json")


def per_class(fraction: float, train_size: int, num_classes: int) -> tuple[int, bool]:
    """(images per class, whether the one-per-class floor applied)."""
    k = int(round(fraction * train_size / num_classes))
    return max(1, k), k < 1


def draw_indices(labels: np.ndarray, *, fraction: float, draw: int, num_classes: int, seed: int = SEED) -> np.ndarray:
    """Sorted train-split positions of draw ``draw`` of ``fraction`` (the whole split at 1.0)."""
    labels = np.asarray(labels, dtype=np.int64)
    fraction = check_fraction(fraction)
    if fraction == 1.0:
        return np.arange(len(labels), dtype=np.int64)
    k, _ = per_class(fraction, len(labels), num_classes)
    out = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        perm = np.random.default_rng([seed, draw, c]).permutation(members)  # one permutation per (draw, class)
        out.append(perm[:k])  # the first k: a smaller fraction's draw is a prefix of a larger one's
    return np.sort(np.concatenate(out)).astype(np.int64)


def make_subsets(labels: np.ndarray, *, num_classes: int, task: str, split_sha256: str,
                 fractions: Sequence[float] = FRACTIONS, draws: int = DRAWS, seed: int = SEED) -> dict[str, Any]:
    """The subsets document (see the module doc) for the train split's ``labels``."""
    labels = np.asarray(labels, dtype=np.int64)
    if draws < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")
    counts = np.bincount(labels, minlength=num_classes)
    doc: dict[str, Any] = {"task": task, "algorithm": ALGORITHM, "seed": seed, "split_sha256": split_sha256,
                           "train_size": int(len(labels)), "num_classes": int(num_classes),
                           "draws": int(draws), "fractions": {}}
    for f in fractions:
        f = check_fraction(f, where="fractions")
        if f == 1.0:
            continue
        k, floored = per_class(f, len(labels), num_classes)
        doc["fractions"][fraction_key(f)] = {
            "per_class": k, "min_one_per_class": floored,
            "capped_classes": [int(c) for c in np.flatnonzero(counts < k)],
            "indices": [draw_indices(labels, fraction=f, draw=d, num_classes=num_classes, seed=seed).tolist()
                        for d in range(draws)]}
    return doc


def write_subsets_file(path: Path, doc: dict[str, Any]) -> Path:
    """One JSON object; each draw's index list on one line (diffable, compact)."""
    head = {k: v for k, v in doc.items() if k != "fractions"}
    lines = ["{" + json.dumps(head, separators=(",", ":"))[1:-1] + ',"fractions":{']
    fr = []
    for key, entry in doc["fractions"].items():
        meta = {k: v for k, v in entry.items() if k != "indices"}
        draws = ",\n".join(json.dumps(ix, separators=(",", ":")) for ix in entry["indices"])
        fr.append(f'{json.dumps(key)}:{{' + json.dumps(meta, separators=(",", ":"))[1:-1] + f',"indices":[\n{draws}]}}')
    lines.append(",\n".join(fr) + "}}\n")
    text = "\n".join(lines)
    json.loads(text)  # internal invariant: what we write parses
    return write_text(Path(path), text)


def read_subsets_file(path: Path) -> Optional[dict[str, Any]]:
    """The subsets document, or None where the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as e:
        raise ConfigError(f"subsets file {path} is not valid JSON ({e}); remake it with `evalbench subsets TASK`") \
            from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fractions"), dict):
        raise ConfigError(f"subsets file {path} must be a JSON object with 'fractions'; remake it with "
                          "`evalbench subsets TASK`")
    return doc


def file_sha256(path: Path) -> Optional[str]:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def select_subset(labels: np.ndarray, *, fraction: float, draw: int, num_classes: int, split_sha256: str,
                  doc: Optional[dict[str, Any]], where: str) -> tuple[np.ndarray, dict[str, Any]]:
    """(train-split positions, what the record says about them) for (fraction, draw).

    From the stored file where it holds the fraction (checked against these splits), else the same
    draw computed from the labels (``make_subsets``'s algorithm; the record says ``source: computed``).
    """
    fraction = check_fraction(fraction)
    labels = np.asarray(labels, dtype=np.int64)
    info: dict[str, Any] = {"fraction": fraction, "draw": draw}
    if fraction == 1.0:
        return np.arange(len(labels), dtype=np.int64), {**info, "source": "all", "n": int(len(labels))}
    entry = None
    if doc is not None:
        if doc.get("split_sha256") != split_sha256 or doc.get("train_size") != len(labels):
            raise ConfigError(f"{where} was made for other splits (split sha256 {doc.get('split_sha256')!r}, "
                              f"train size {doc.get('train_size')}; now {split_sha256!r}, {len(labels)}); remake it "
                              "with `evalbench subsets TASK`")
        entry = doc["fractions"].get(fraction_key(fraction))
    if entry is not None:
        if not 0 <= draw < len(entry["indices"]):
            raise ConfigError(f"{where} holds {len(entry['indices'])} draws of fraction {fraction}; draw {draw} "
                              "(= the seed) is not among them: use seeds below that or remake the file with more draws")
        idx = np.asarray(entry["indices"][draw], dtype=np.int64)
        return idx, {**info, "source": "file", "n": int(len(idx)), "per_class": entry["per_class"],
                     "min_one_per_class": entry["min_one_per_class"]}
    idx = draw_indices(labels, fraction=fraction, draw=draw, num_classes=num_classes)
    k, floored = per_class(fraction, len(labels), num_classes)
    return idx, {**info, "source": "computed", "n": int(len(idx)), "per_class": k, "min_one_per_class": floored}
