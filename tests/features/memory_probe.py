"""Subprocess for the memory test: extract features of an ImageFolder tree, report the RSS growth.

    python -m tests.features.memory_probe ROOT N --size 64 --classes 10 --out result.json  (from the repo root)

Measures the resident set size (RSS) just before ``extract_features`` and its peak during the
call: Linux's high-water mark ``VmHWM`` reset with ``/proc/self/clear_refs`` (falls back to a
1 ms sampling thread where that is not allowed). Then checks the features against the
reference computed from the same images generated in memory, in chunks.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
import torch

from evalbench.data import LOADERS, FolderSource
from evalbench.features import extract_features
from tests.features.tiny_encoders import CFG, reference_features, tiny_encoder, tree_images, tree_order

MB = 1 << 20


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss() -> int:
    return _status_kb("VmRSS") * 1024


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, rss())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("n", type=int)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    import torchvision.datasets.folder  # noqa: F401  (imported by the loader; not part of the listing)

    encoder = tiny_encoder()
    rss_start = rss()
    source = LOADERS.get("imagefolder").load(root=a.root, image_size=a.size).train
    assert isinstance(source, FolderSource) and len(source) == a.n, (type(source), len(source))
    rss_before = rss()
    hwm = reset_peak()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    x = extract_features(encoder, source, cfg=CFG, device=torch.device("cpu"), batch_size=a.batch_size,
                         num_workers=a.workers)
    extract_s = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    peak = max(sampler.peak, _status_kb("VmHWM") * 1024 if hwm else 0)
    order = tree_order(a.n, a.classes)
    assert np.array_equal(source.labels, order % a.classes)
    max_diff = 0.0
    for start, images in tree_images(order, size=a.size, classes=a.classes, chunk=1000):
        ref = reference_features(encoder, images)
        max_diff = max(max_diff, float(np.abs(x[start:start + len(ref)] - ref).max()))
    result = {"n": a.n, "workers": a.workers, "batch_size": a.batch_size, "extract_s": round(extract_s, 3),
              "rss_start_mb": rss_start / MB, "listing_mb": (rss_before - rss_start) / MB,
              "rss_before_mb": rss_before / MB, "peak_mb": peak / MB, "growth_mb": (peak - rss_before) / MB,
              "total_growth_mb": (peak - rss_start) / MB,
              "features_mb": x.nbytes / MB, "peak_method": "VmHWM" if hwm else "sampled",
              "max_abs_diff": max_diff, "decoded_images_mb": a.n * 3 * a.size * a.size / MB,
              "shape": list(x.shape), "probe_s": round(time.perf_counter() - t_start, 3)}
    a.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
