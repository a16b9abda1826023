"""The embedded default run: a small built-in CNN with random weights beside the same CNN
briefly trained with labels (the supervised reference), on digits and mnist5k (plus
fashion-mnist where Debian's dataset-fashion-mnist is installed), with knn and linear."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from evalbench.checkpoints import parse_checkpoint
from evalbench.protocols import resolve_protocol
from evalbench.suite import Suite
from evalbench.tasks import data_status, resolve_task
from evalbench.train import SupervisedRecipe, save_checkpoint, train_supervised
from evalbench.worker import pick_device

ARCH = "builtin:small-cnn"
PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5], "input_size": 28}
TRAIN_TASKS = ("digits", "mnist5k")  # both 0-9 handwritten digits: one label space


def supervised_reference(checkpoint_dir: Path, *, out: TextIO = sys.stderr) -> tuple[Path, SupervisedRecipe]:
    """Train (once; reused while the recipe is unchanged) the supervised reference checkpoint."""
    tasks = [resolve_task(t) for t in TRAIN_TASKS]
    recipe = SupervisedRecipe(arch=ARCH, tasks=tuple(t.ref for t in tasks), epochs=6)
    path = checkpoint_dir / f"supervised-{'+'.join(TRAIN_TASKS)}-{recipe.digest()}.safetensors"
    if not path.exists():
        ckpt = parse_checkpoint({"name": "tmp", "arch": ARCH, "init": "random", "preprocessing": PREP}, where="default", base_dir=Path("."))
        print(f"evalbench: training the supervised reference ({ARCH}, {recipe.epochs} epochs on the train splits of {', '.join(recipe.tasks)})", file=out)
        encoder = train_supervised(recipe, tasks, prep=ckpt.preprocessing, device=pick_device())
        save_checkpoint(encoder, path, metadata={"method": "supervised", "recipe": recipe.__dict__, "preprocessing": PREP})
    return path, recipe


def default_suite(results_dir: Path, *, out: TextIO = sys.stderr) -> Suite:
    path, recipe = supervised_reference(results_dir / "checkpoints", out=out)
    ckpts = [
        {"name": "small-cnn", "arch": ARCH, "init": "random", "init_seed": 0, "preprocessing": PREP},
        {"name": f"small-cnn supervised ({'+'.join(TRAIN_TASKS)}, {recipe.epochs} ep)", "arch": ARCH, "path": str(path),
         "preprocessing": PREP, "meta": {"method": "supervised", **recipe.__dict__}},
    ]
    tasks = ["digits", "mnist5k"] + [t for t in ("fashion-mnist",) if data_status(resolve_task(t)) == "ready"]
    return Suite(
        name="default",
        checkpoints=tuple(parse_checkpoint(c, where=f"default checkpoint {i}", base_dir=Path(".")) for i, c in enumerate(ckpts)),
        tasks=tuple(resolve_task(t) for t in tasks),
        protocols=(resolve_protocol("knn"), resolve_protocol("linear")),
        seeds=(0,),
    )
