"""One identity for every stage: a golden test pins the keys of a fixed suite, and changing any
field that changes the numbers changes the key, while moving the same data or weights does not."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalbench.core.filehash import FileHashIndex
from evalbench.data import LOADERS
from evalbench.data.base import Loader
from evalbench.encoders import build_encoder
from evalbench.run.plan import plan_suite
from evalbench.specs.checkpoint import FileWeights, RandomWeights, parse_checkpoint
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.suite import Suite
from evalbench.specs.task import parse_task, resolve_task

PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5]}
SMALL = "builtin:small-cnn"


def make_folder(root: Path, *, n_per_class: int = 6, classes: tuple[str, ...] = ("a", "b")) -> Path:
    for ci, c in enumerate(classes):
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(np.full((8, 8), 40 + 200 * ci + i, np.uint8)).save(root / "train" / c / f"{i}.png")
    return root


def folder_task(tmp: Path, root: Path, **over):
    split = tmp / "split.json"
    if not split.exists():
        n = sum(1 for _ in (root / "train").rglob("*.png"))
        split.write_text(json.dumps({"train_size": n, "val": [0, n - 1], "test": [1, n - 2]}))
    d = {"name": "folder", "version": 1, "loader": "imagefolder", "num_classes": 2, "root": str(root),
         "params": {"image_size": 8, "channels": 1}, "splits": {"file": str(split)}}
    return parse_task({**d, **over}, source=tmp / "folder.yaml")


@pytest.fixture
def setup(tmp_path):
    root = make_folder(tmp_path / "data")
    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    torch.save(build_encoder(SMALL, in_chans=1).model.state_dict(), ckpt)
    spec = parse_checkpoint({"name": "c", "arch": SMALL, "path": str(ckpt), "preprocessing": PREP}, where="t",
                            base_dir=tmp_path)
    suite = Suite("s", (spec,), (folder_task(tmp_path, root),), (resolve_protocol("knn"),), (0,))
    return tmp_path, suite


def keys(suite: Suite) -> list[str]:
    return plan_suite(suite).keys


def _task(suite, **over):
    return replace(suite, tasks=(replace(suite.tasks[0], **over),))


def _ckpt(suite, **over):
    return replace(suite, checkpoints=(replace(suite.checkpoints[0], **over),))


def _data(suite, **over):
    return _ckpt(suite, data=replace(suite.checkpoints[0].data, **over))


def _copy_loader(tmp, suite):
    name = "imagefolder-copy-for-test"
    if name not in LOADERS:
        LOADERS.register(name)(Loader(LOADERS.get("imagefolder").load, LOADERS.get("imagefolder").fingerprint))
    return _task(suite, loader=name)


def _shuffle_labels(tmp, suite):
    shutil.move(tmp / "data/train/a/0.png", tmp / "data/train/b/x.png")
    shutil.move(tmp / "data/train/b/0.png", tmp / "data/train/a/x.png")
    return suite


def _new_split(tmp, suite):
    p = Path(suite.tasks[0].split_file)
    p.write_text(json.dumps({**json.loads(p.read_text()), "val": [0, 2]}))
    return suite


def _new_weights(tmp, suite):
    sd = torch.load(tmp / "w.pt", weights_only=True)
    sd["features.0.weight"][0, 0, 0, 0] += 1.0
    torch.save(sd, tmp / "w.pt")
    return suite


CHANGES = {
    "task params image_size": lambda tmp, s: _task(s, params={"image_size": 10, "channels": 1}),
    "task params channels": lambda tmp, s: _task(s, params={"image_size": 8, "channels": 3}),
    "task version": lambda tmp, s: _task(s, version=2),
    "task num_classes": lambda tmp, s: _task(s, num_classes=3),
    "task loader": _copy_loader,
    "split file": _new_split,
    "data: shuffled labels": _shuffle_labels,
    "checkpoint bytes": _new_weights,
    "arch": lambda tmp, s: _ckpt(s, arch="builtin:small-cnn-wide", weights=RandomWeights(0)),
    "skip_missing": lambda tmp, s: _ckpt(s, skip_missing=("features.1.*",)),
    "preprocessing mean": lambda tmp, s: _data(s, mean=(0.4,)),
    "preprocessing std": lambda tmp, s: _data(s, std=(0.2,)),
    "preprocessing input_size": lambda tmp, s: _data(s, input_size=16),
    "preprocessing interpolation": lambda tmp, s: _data(s, input_size=16, interpolation="bicubic"),
    "preprocessing in_chans": lambda tmp, s: _data(s, in_chans=3),
    "protocol params": lambda tmp, s: replace(s, protocols=(s.protocols[0].with_params({"chunk_size": 7}, where="t"),)),
    "protocol version": lambda tmp, s: replace(s, protocols=(replace(s.protocols[0], version=2),)),
    "amp extraction": lambda tmp, s: replace(s, amp=True),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_plan__changing_what_fixes_the_numbers_changes_the_key(setup, change):
    tmp, suite = setup
    before = keys(suite)
    after = keys(CHANGES[change](tmp, suite))
    assert len(before) == len(after) == 1 and before != after


def test_plan__random_init_seed_changes_the_key(setup):
    tmp, suite = setup
    rnd = _ckpt(suite, weights=RandomWeights(0))
    assert keys(rnd) != keys(_ckpt(suite, weights=RandomWeights(1)))


def test_plan__same_data_and_weights_at_other_paths_keep_their_keys(setup):
    tmp, suite = setup
    before = keys(suite)
    shutil.copytree(tmp / "data", tmp / "elsewhere")
    shutil.copy(tmp / "w.pt", tmp / "w-copy.pt")
    moved = _task(_ckpt(suite, weights=FileWeights(tmp / "w-copy.pt")), root=str(tmp / "elsewhere"))
    assert keys(moved) == before
    # names and descriptions label things; they do not change numbers
    assert keys(_task(suite, description="other words")) == before


def test_plan__deterministic_protocols_run_once_stochastic_ones_per_seed(setup):
    tmp, suite = setup
    seeds = replace(suite, seeds=(0, 1, 2))
    assert len(keys(seeds)) == 1  # knn is deterministic: one record, whatever seeds says
    stochastic = replace(seeds, protocols=(replace(suite.protocols[0], stochastic=True),))
    assert len(set(keys(stochastic))) == 3


def test_plan__frozen_protocols_share_one_extraction(setup):
    tmp, suite = setup
    plan = plan_suite(replace(suite, protocols=(resolve_protocol("knn"), resolve_protocol("linear"))))
    kinds = [s.kind for s in plan.stages.values()]
    assert kinds == ["extract", "probe", "probe"]
    assert {s.deps for s in plan.records()} == {(next(iter(plan.stages)),)}


def test_plan__unchanged_checkpoint_files_are_not_read_again(setup):
    tmp, suite = setup
    index = FileHashIndex(tmp / "index.json")
    plan_suite(suite, hash_file=index)
    assert str((tmp / "w.pt").resolve()) in index.hashed
    index.save()
    again = FileHashIndex(tmp / "index.json")
    plan_suite(suite, hash_file=again)
    assert again.hashed == []


def test_plan__golden_keys_of_a_fixed_suite():
    """Pins the identity function: a change here invalidates every user's stored results, so it
    must be deliberate (bump the stage kind's version instead of editing payloads casually)."""
    spec = parse_checkpoint({"name": "r", "arch": SMALL, "init": "random", "preprocessing": PREP}, where="t",
                            base_dir=Path("."))
    suite = Suite("golden", (spec,), (resolve_task("digits"),), (resolve_protocol("knn"), resolve_protocol("linear")), (0,))
    plan = plan_suite(suite)
    assert [(s.kind, s.identity) for s in plan.stages.values()] == GOLDEN


# extract version 3 (CPU: the encoder compiled for inference, features/extract.py inference_module; version 2:
# channels_last convolutions); probe version 2 (records carry intervals and predictions)
GOLDEN = [("extract", "de3271d9a17928dfc61858b096903956"), ("probe", "70ef1d130d8d1e23af928e2db409edda"),
          ("probe", "06d316767b5e6c571b8ed770a08cf125")]
