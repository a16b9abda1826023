"""Fine-tuning protocols (semi-supervised 1% / 10%, full fine-tuning): their typed params.

Unlike a probe, a fine-tuning protocol does not read frozen features: it trains the whole encoder
with a linear head on a labelled subset of the train split (a ``train`` stage, run/plan.py; the
loop is ``pretrain/finetune.py``, which reuses pretraining's augmentation and optimiser code).
Its implementation name is registered in PROBES only so that protocol files are validated like
every other (an unknown implementation is an error); calling it on features is an error.

Recipe: SimCLR (Chen et al. 2020) appendix B.5 / SimCLRv2 (Chen et al. 2020b): momentum SGD
(``nesterov``), no weight decay, random resized crop (+ horizontal flip: ``flip_p``), cosine schedule;
the head starts from the linear probe of the frozen features (LP-FT, Kumar et al. 2022: ``head_init``);
the lr is chosen on val from ``lr_grid``, the test top-1 is that lr's model.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from evalbench.core.errors import EvalbenchError
from evalbench.core.validate import Mapping_, NonNegFloat, PositiveFloat, PositiveInt
from evalbench.protocols.base import PARAMS, PROBES, ProbeParams, ProbeResult

FINETUNE_IMPLEMENTATIONS = ("finetune",)


def is_finetune(implementation: str) -> bool:
    """Whether a protocol trains the encoder (a ``train`` stage) instead of probing frozen features."""
    return implementation in FINETUNE_IMPLEMENTATIONS


@PARAMS.register("finetune")
class FinetuneParams(ProbeParams):
    label_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, description=(
        "a number in (0, 1] (the fraction of the train split's labels: 0.01 = 1%)"))]
    lr_grid: Annotated[list[PositiveFloat], Field(min_length=1, description=(
        "a non-empty list of finite numbers > 0 (learning rates tried; the best on val is reported)"))]
    epochs: PositiveInt
    batch_size: PositiveInt
    # at least this many optimiser steps: a small subset trains for more epochs (1% of digits is one
    # batch: 300 epochs of it, not 30), a large one for `epochs` (0: exactly `epochs`)
    min_steps: Annotated[int, Field(ge=0, description="an integer >= 0")] = 0
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False, description="a number in [0, 1)")] = 0.9
    nesterov: bool = False  # Nesterov momentum (SimCLR appendix B.5)
    # the new head's start: `random` (nn.Linear's init), or `probe`: a logistic regression fitted on the
    # frozen features of the labelled images (LP-FT, Kumar et al. 2022), L2 `probe_l2`, then everything fine-tuned
    head_init: Literal["random", "probe"] = "random"
    probe_l2: PositiveFloat = 1e-2
    # the encoder's lr = lr x backbone_lr_scale (the head's: lr); 1: one lr for the whole network
    backbone_lr_scale: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, description="a number in (0, 1]")] = 1.0
    weight_decay: NonNegFloat = 0.0
    crop_scale: Annotated[list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]], Field(
        min_length=2, max_length=2, description="[min, max] area fractions of the random resized crop, in (0, 1]")] \
        = [0.5, 1.0]
    flip_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, description="a number in [0, 1]")] = 0.5
    eval_batch_size: PositiveInt = 256
    # the published full-scale recipe (ImageNet subsets): documentation for GPU clusters, not read here;
    # set the params above to its values in a suite's `params:` to run it
    reference_recipe: Mapping_ = {}

    @field_validator("lr_grid")
    @classmethod
    def _distinct(cls, grid: list[float]) -> list[float]:
        dup = next((v for v in grid if grid.count(v) > 1), None)
        if dup is not None:
            raise ValueError(f"{dup:g} is listed twice; list each learning rate once")
        return grid

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, scale: list[float]) -> list[float]:
        if scale[0] > scale[1]:
            raise ValueError(f"crop_scale [{scale[0]:g}, {scale[1]:g}]: the first is the smaller area fraction")
        return scale


@PROBES.register("finetune")
def finetune_on_features(features, *, params: dict, seed, device) -> ProbeResult:  # noqa: ANN001
    raise EvalbenchError("implementation 'finetune' trains the encoder: it runs as a `train` stage "
                         "(run/plan.py plans one for it), not on frozen features")
