"""The embedded default run: a small built-in CNN with random weights beside the same CNN
briefly trained with labels (the supervised reference, trained by a ``pretrain`` stage of the
plan), on digits and mnist5k (plus fashion-mnist where Debian's dataset-fashion-mnist is
installed), with knn and linear."""
from __future__ import annotations

from dataclasses import asdict

from evalbench.specs.checkpoint import CheckpointSpec, RandomWeights, StageWeights, parse_data_config
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.suite import Suite
from evalbench.specs.task import data_status, resolve_task
from evalbench.pretrain.supervised import SupervisedRecipe

ARCH = "builtin:small-cnn"
PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5], "input_size": 28}
TRAIN_TASKS = ("digits", "mnist5k")  # both 0-9 handwritten digits: one label space
RECIPE = SupervisedRecipe(epochs=6)


def default_suite() -> Suite:
    data = parse_data_config(ARCH, PREP, where="default suite")
    train_tasks = tuple(resolve_task(t) for t in TRAIN_TASKS)
    reference = StageWeights(kind="pretrain", inputs={"method": "supervised", "recipe": asdict(RECIPE),
                                                      "tasks": train_tasks})
    ckpts = (
        CheckpointSpec(name="small-cnn", arch=ARCH, data=data, weights=RandomWeights(0)),
        CheckpointSpec(name=f"small-cnn supervised ({'+'.join(TRAIN_TASKS)}, {RECIPE.epochs} ep)", arch=ARCH, data=data,
                       weights=reference, meta={"method": "supervised", **asdict(RECIPE),
                                                "tasks": [t.ref for t in train_tasks]}),
    )
    tasks = ["digits", "mnist5k"] + [t for t in ("fashion-mnist",) if data_status(resolve_task(t)) == "ready"]
    return Suite(name="default", checkpoints=ckpts, tasks=tuple(resolve_task(t) for t in tasks),
                 protocols=(resolve_protocol("knn"), resolve_protocol("linear")), seeds=(0,))
