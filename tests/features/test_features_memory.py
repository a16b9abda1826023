"""THE MEMORY TEST: extraction streams, so its memory does not grow with the number of images.

A 2,000-image and a 20,000-image ImageFolder tree (64x64 RGB PNGs, 10 classes) are extracted
in one subprocess each (``python -m tests.features.memory_probe``), which reports the RSS
growth during ``extract_features`` and checks the features against an in-memory reference. Decoded, the 20k
images would take 20000 * 3 * 64 * 64 B = 234 MiB; the growth from 2k to 20k images must stay
under 40 MiB plus the feature array's own growth. Run with ``-s`` to see the figures.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import pytest

from tests.features.tiny_encoders import write_tree

REPO = Path(__file__).resolve().parents[2]
SIZE, CLASSES = 64, 10
SMALL, LARGE = 2_000, 20_000
BOUND_MB = 40.0


def _write_part(args: tuple[str, int, int]) -> None:
    root, start, stop = args
    write_tree(Path(root), range(start, stop), size=SIZE, classes=CLASSES)


def _make_trees(base: Path) -> dict[int, Path]:
    """The large tree, written by 2 processes; the small tree hard-links its first SMALL images."""
    large, small = base / f"tree-{LARGE}", base / f"tree-{SMALL}"
    step = LARGE // 8
    with get_context("fork").Pool(min(2, os.cpu_count() or 1)) as pool:
        pool.map(_write_part, [(str(large), s, min(s + step, LARGE)) for s in range(0, LARGE, step)])
    for p in sorted((large / "train").rglob("*.png")):
        if int(p.stem) < SMALL:
            dest = small / p.relative_to(large)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, dest)
            except OSError:  # a file system without hard links
                shutil.copyfile(p, dest)
    return {SMALL: small, LARGE: large}


@pytest.fixture(scope="session")
def trees() -> Iterator[dict[int, Path]]:
    """Written once per session into a private temp dir (not pytest's tmp_path_factory, whose
    old base directories other pytest sessions on the machine may rotate away meanwhile)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evalbench-memory-trees-") as base:
        out = _make_trees(Path(base))
        print(f"\n[memory] wrote {LARGE} + {SMALL} (hard-linked) 64x64 PNGs in {time.perf_counter() - t0:.1f} s")
        yield out


def _probe(root: Path, n: int, out: Path, *, workers: int = 0) -> dict:
    cmd = [sys.executable, "-m", "tests.features.memory_probe", str(root), str(n), "--size", str(SIZE),
           "--classes", str(CLASSES), "--workers", str(workers), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_extraction_memory_does_not_grow_with_the_dataset(trees: dict[int, Path], tmp_path: Path) -> None:
    small = _probe(trees[SMALL], SMALL, tmp_path / "small.json")
    large = _probe(trees[LARGE], LARGE, tmp_path / "large.json")
    for r in (small, large):
        print(f"[memory] {r['n']:>6} images: RSS before {r['rss_before_mb']:.1f} MiB (listing {r['listing_mb']:.1f}), "
              f"peak growth {r['growth_mb']:.1f} MiB ({r['peak_method']}), features {r['features_mb']:.2f} MiB, "
              f"decoded images would be {r['decoded_images_mb']:.0f} MiB, extract {r['extract_s']:.1f} s "
              f"(probe {r['probe_s']:.1f} s), "
              f"max |x - ref| {r['max_abs_diff']:.1e}")
    growth = large["growth_mb"] - small["growth_mb"]
    total_growth = large["total_growth_mb"] - small["total_growth_mb"]  # listing + extraction
    allowed = BOUND_MB + (large["features_mb"] - small["features_mb"])
    print(f"[memory] peak growth 2k -> 20k: extraction {growth:.1f} MiB, load + extraction {total_growth:.1f} MiB "
          f"(allowed {allowed:.1f}; 20k decoded images: {large['decoded_images_mb']:.0f} MiB)")
    assert large["shape"] == [LARGE, 32] and small["shape"] == [SMALL, 32]
    assert large["max_abs_diff"] < 1e-5 and small["max_abs_diff"] < 1e-5  # (a) same as in memory
    assert growth < allowed and total_growth < allowed  # (b) streaming: no per-image memory
    assert large["growth_mb"] < large["decoded_images_mb"]  # fixed costs (one batch, kernels) included
