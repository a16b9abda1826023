"""Stale numbers are never reused: other data under the same task name@version, an edited task
YAML, or a model that cannot take the configured input size are each caught before any work."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from evalbench.results.store import RecordStore
from evalbench.run.runner import run_suite
from evalbench.specs.suite import load_suite
from tests.conftest import PREP, write_suite

RANDOM = {"name": "random", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}


def _separable_folder(root: Path, n: int = 20) -> None:
    """Class 'dark' images are dark, class 'light' images light: any encoder separates them."""
    rng = np.random.default_rng(0)
    for c, base in (("dark", 20), ("light", 230)):
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            img = np.clip(base + rng.integers(-15, 15, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "train" / c / f"{c}{i:02d}.png")


def _task(tmp: Path, root: Path, image_size: int = 8) -> Path:
    (tmp / "split.json").write_text(json.dumps({"train_size": 40, "val": list(range(0, 40, 8)),
                                                "test": list(range(1, 40, 2))}))
    task = tmp / "folder.yaml"
    task.write_text(f"name: folder\nversion: 1\nloader: imagefolder\nnum_classes: 2\nroot: {root}\n"
                    f"params: {{image_size: {image_size}, channels: 1}}\nsplits: {{file: split.json}}\n")
    return task


def _top1(store: RecordStore) -> float:
    (rec,) = [r for r in store.records()]
    return rec.metrics["top1_k20_T0.07"]


def test_stale__shuffled_labels_in_the_same_folder_are_evaluated_again(tmp_path):
    root = tmp_path / "images"
    _separable_folder(root)
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=[str(_task(tmp_path, root))],
                        protocols=[{"name": "knn", "params": {"settings": [{"k": 20, "T": 0.07}]}}])
    first_store = RecordStore(tmp_path / "res")
    assert run_suite(load_suite(suite), results=first_store, executor="local").ok == 1
    assert _top1(first_store) == 1.0
    (first_key,) = [r.key for r in first_store.records()]
    # shuffle the labels: swap half of each class into the other folder (same names@version, same file count)
    for i in range(0, 20, 2):
        shutil.move(root / "train/dark" / f"dark{i:02d}.png", root / "train/light" / f"dark{i:02d}.png")
        shutil.move(root / "train/light" / f"light{i:02d}.png", root / "train/dark" / f"light{i:02d}.png")
    second = run_suite(load_suite(suite), results=first_store, executor="local")
    assert (second.ok, second.skipped) == (1, 0) and second.stages_run == {"extract": 1, "probe": 1}
    (new,) = [r for r in first_store.records() if r.key != first_key]
    assert new.task["data"] != first_store.get(first_key).task["data"]
    assert new.metrics["top1_k20_T0.07"] <= 0.75  # labels no longer follow brightness: far from the stale 100%


def test_stale__editing_task_params_without_a_version_bump_reevaluates(tmp_path):
    root = tmp_path / "images"
    _separable_folder(root)
    task = _task(tmp_path, root, image_size=8)
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=[str(task)],
                        protocols=[{"name": "knn", "params": {"settings": [{"k": 20, "T": 0.07}]}}])  # bank: 20
    store = RecordStore(tmp_path / "res")
    assert run_suite(load_suite(suite), results=store, executor="local").ok == 1
    task.write_text(task.read_text().replace("image_size: 8", "image_size: 12"))
    again = run_suite(load_suite(suite), results=store, executor="local")
    assert (again.ok, again.skipped) == (1, 0) and again.stages_run == {"extract": 1, "probe": 1}
    sizes = sorted(r.task["params"]["image_size"] for r in store.records())
    assert sizes == [8, 12]


def test_stale__input_size_the_model_cannot_take_fails_at_plan_time(tmp_path):
    vit = {"name": "vit", "arch": "timm:vit_tiny_patch16_224", "init": "random",
           "preprocessing": {"in_chans": 3, "input_size": 28}}
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[vit, RANDOM], tasks=["digits"], protocols=["knn"])
    store = RecordStore(tmp_path / "res")
    summary = run_suite(load_suite(suite), results=store, executor="local")
    assert summary.ok == 1 and len(summary.failed) == 1
    label, error = summary.failed[0]
    assert label.startswith("vit |") and "28" in error and "224" in error
    assert summary.stages_run == {"extract": 1, "probe": 1}  # only the good checkpoint's stages ran
    (bad,) = [r for r in store.records() if r.status == "error"]
    assert bad.checkpoint["name"] == "vit" and bad.metrics == {}
