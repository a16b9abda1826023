"""Fine-tuning the whole encoder with a linear head on a labelled subset (DESIGN.md §3: the
``semisup_1pct``, ``semisup_10pct`` and ``finetune_100pct`` protocols; params in
``protocols/finetune.py``).

SimCLR appendix B.5 (Chen et al. 2020) and SimCLRv2 §3: fine-tune encoder + a new linear head with
Nesterov momentum SGD, no weight decay, random resized crop (+ horizontal flip where the task allows
it), on the 1% / 10% subsets; here a cosine schedule (``pretrain/optim.py``) and the lr chosen on the
val split from a small grid (each lr trains from the same initial weights, head, batch order and
augmentations: same seed); the reported test top-1 is the chosen lr's model (not refit on train+val).

LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"; ``head_init: probe``): the head starts as the logistic regression of the frozen
features (``logistic_head``), so the first steps do not push a random head's gradients through the
pretrained features. With a random head, crop scale 0.5 and flip 0.5 (version 1), SimCLR encoders
fine-tuned on digits scored below their own frozen linear probe.

The augmentation is pretraining's batched pipeline (``pretrain/augment.py``) with only crop and
flip enabled. channels_last everywhere (``features/extract.py`` MEMORY_FORMAT); on CUDA float16
autocast with a gradient scaler.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from evalbench.core.errors import EvalbenchError
from evalbench.data.base import ImageSource, SubsetSource
from evalbench.data.splits import SplitSets
from evalbench.encoders import DataConfig, Encoder, preprocess
from evalbench.features.extract import MEMORY_FORMAT, extract_features
from evalbench.pretrain.augment import build_augment
from evalbench.pretrain.config import (AugmentConfig, BlurConfig, ColorJitterConfig, CropConfig, OptimizerConfig,
                                       ProbConfig, RotationConfig)
from evalbench.pretrain.optim import build_scheduler, param_groups
from evalbench.protocols.bootstrap import Predictions
from evalbench.protocols.finetune import FinetuneParams
from evalbench.protocols.linear import fit_logreg


@dataclass(frozen=True)
class FinetuneResult:
    encoder: Encoder  # the chosen lr's fine-tuned encoder
    head: nn.Linear
    metrics: dict  # {"top1": test top-1 of the chosen lr}
    details: dict  # chosen lr, val curve, loss curves, how far the weights moved
    predictions: Predictions  # the chosen model's test predictions (bootstrap interval)


class Classifier(nn.Module):
    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, C) logits


def crop_flip(p: FinetuneParams) -> AugmentConfig:
    """Pretraining's AugmentConfig with only random resized crop and horizontal flip on."""
    return AugmentConfig(crop=CropConfig(True, (float(p.crop_scale[0]), float(p.crop_scale[1]))),
                         color_jitter=ColorJitterConfig(False, 0.0, 0.0, 0.0, 0.0, 0.0),
                         grayscale=ProbConfig(False, 0.0), blur=BlurConfig(False, (0.1, 2.0), 0.0),
                         flip=ProbConfig(p.flip_p > 0, float(p.flip_p)), rotation=RotationConfig(False, 0.0, 0.0))


def sgd(p: FinetuneParams, lr: float) -> OptimizerConfig:
    return OptimizerConfig(name="sgd", lr=lr, weight_decay=p.weight_decay, momentum=p.momentum, warmup_epochs=0,
                           schedule="cosine")


def optimizer(model: Classifier, p: FinetuneParams, lr: float) -> torch.optim.SGD:
    """Momentum SGD (Nesterov where ``p.nesterov``): the head at ``lr``, the encoder at ``lr x backbone_lr_scale``;
    weight decay (``p.weight_decay``) on >1-D weights only (``pretrain/optim.py`` param_groups)."""
    groups = [{**g, "lr": lr * scale} for part, scale in ((model.encoder, p.backbone_lr_scale), (model.head, 1.0))
              for g in param_groups(part, p.weight_decay)]
    return torch.optim.SGD(groups, lr=lr, momentum=p.momentum, nesterov=p.nesterov and p.momentum > 0)


def logistic_head(f: torch.Tensor, y: torch.Tensor, *, num_classes: int, l2: float, max_iter: int = 100) -> nn.Linear:
    """A multinomial logistic regression on the features ``f`` (N, D) as they are: mean cross-entropy +
    l2/2 ||W||^2 (intercept not penalised), solved to max|grad| <= 1e-6 by the linear probe's solver
    (``protocols/linear.py`` ``fit_logreg``), i.e. scikit-learn's ``LogisticRegression(C=1 / (l2 N))`` on ``f``.

    Not on standardised features: a low-variance feature would get a weight of 1 / its std, and
    fine-tuning through such a head blew a random-init encoder's weights up 16-fold (digits, 8 px)."""
    w, b = fit_logreg(f.float(), y, l2=l2, num_classes=num_classes, max_iter=max_iter)  # W (D, C), b (C,)
    head = nn.Linear(f.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(w.T)
        head.bias.copy_(b)
    return head


def probe_head(encoder: Encoder, source: ImageSource, *, num_classes: int, data: DataConfig, l2: float,
               device: torch.device, batch_size: int) -> nn.Linear:
    """LP-FT's first step (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): the head is a
    logistic regression on the frozen features of the labelled images (``logistic_head``); fine-tuning
    then starts from a head that already fits, so early gradients do not distort the features."""
    f = torch.from_numpy(extract_features(encoder, source, cfg=data, device=device, batch_size=batch_size,
                                          amp=device.type == "cuda"))  # (N, D) frozen, non-augmented
    return logistic_head(f, torch.as_tensor(np.asarray(source.labels), dtype=torch.int64), num_classes=num_classes, l2=l2)


def _autocast(device: torch.device):  # noqa: ANN202
    return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda")


@torch.no_grad()
def predict(model: nn.Module, source: ImageSource, *, data: DataConfig, device: torch.device,
            batch_size: int) -> np.ndarray:
    """(N,) predicted classes of ``source`` (no augmentation, eval mode)."""
    model.eval()
    out = []
    for images, _ in DataLoader(source, batch_size=batch_size, shuffle=False):
        x = preprocess(images.to(device), data).contiguous(memory_format=MEMORY_FORMAT)
        with torch.inference_mode(), _autocast(device):  # no autograd graph for predictions
            out.append(model(x).argmax(1).cpu())
    return torch.cat(out).numpy().astype(np.int64)


def train_one(encoder: Encoder, source: ImageSource, *, num_classes: int, data: DataConfig, p: FinetuneParams,
              lr: float, seed: int, device: torch.device, head: Optional[nn.Linear] = None) -> tuple[Classifier, list[float]]:
    """Fine-tune a copy of ``encoder`` + a new linear head on ``source``; (model, per-epoch mean loss).
    Raises EvalbenchError where the loss stops being finite (that lr is then out of the choice)."""
    torch.manual_seed(seed)  # the head's init and the augmentations: the same for every lr
    model = Classifier(copy.deepcopy(encoder), num_classes)
    if head is not None:  # LP-FT: start from the linear probe's head
        model.head.load_state_dict(head.state_dict())
    model = model.to(device, memory_format=MEMORY_FORMAT)
    opt = optimizer(model, p, lr)
    batch = min(p.batch_size, len(source))
    steps = max(1, len(source) // batch)
    epochs = run_epochs(p, steps)
    sched = build_scheduler(opt, sgd(p, lr), steps_per_epoch=steps, epochs=epochs)
    augment = build_augment(crop_flip(p), size=data.input_size)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    order = torch.Generator().manual_seed(seed)
    curve = []
    for epoch in range(epochs):
        model.train()
        losses = []
        # drop_last: every step a full batch (BatchNorm needs > 1 image), `steps` per epoch as the schedule says
        for images, labels in DataLoader(source, batch_size=batch, shuffle=True, drop_last=True, generator=order):
            x = preprocess(augment(images).to(device), data).contiguous(memory_format=MEMORY_FORMAT)
            with _autocast(device):
                loss = nn.functional.cross_entropy(model(x), labels.to(device))
            if not torch.isfinite(loss):
                raise EvalbenchError(f"fine-tuning at lr {lr:g}: the loss became {loss.item()} in epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
        curve.append(float(np.mean(losses)))
    return model, curve


def run_epochs(p: FinetuneParams, steps_per_epoch: int) -> int:
    """``epochs``, or more where that many epochs would make fewer than ``min_steps`` optimiser steps."""
    return max(p.epochs, -(-p.min_steps // steps_per_epoch))


def weights_moved(before: nn.Module, after: nn.Module) -> float:
    """||after - before|| / ||before|| over the encoder's floating-point parameters."""
    a = dict(before.named_parameters())
    num = sum(float((q.detach().cpu().float() - a[n].detach().cpu().float()).pow(2).sum())
              for n, q in after.named_parameters())
    den = sum(float(t.detach().cpu().float().pow(2).sum()) for t in a.values())
    return math.sqrt(num / max(den, 1e-30))


def finetune(encoder: Encoder, sets: SplitSets, labelled: np.ndarray, *, num_classes: int, data: DataConfig,
             params: dict, seed: int, device: torch.device, subset: Optional[dict] = None) -> FinetuneResult:
    """Fine-tune on ``sets.train[labelled]`` for every lr of the grid, choose the lr on val, report test top-1."""
    p = FinetuneParams.model_validate(params)
    if not p.lr_grid:  # the params model refuses it at parse time; a direct call is checked here too
        raise EvalbenchError("fine-tuning: lr_grid is empty; give at least one learning rate")
    source = SubsetSource(sets.train, np.asarray(labelled, dtype=np.int64))
    if len(source) < 2:
        raise EvalbenchError(f"fine-tuning needs at least 2 labelled images (BatchNorm), the subset has {len(source)}")
    y_val, y_test = np.asarray(sets.val.labels), np.asarray(sets.test.labels)
    head = None if p.head_init == "random" else probe_head(
        copy.deepcopy(encoder), source, num_classes=num_classes, data=data, l2=p.probe_l2, device=device,
        batch_size=p.eval_batch_size)
    val_curve, loss_curves, best = {}, {}, None
    for lr in p.lr_grid:
        try:
            model, curve = train_one(encoder, source, num_classes=num_classes, data=data, p=p, lr=lr, seed=seed,
                                     device=device, head=head)
        except EvalbenchError as e:
            val_curve[repr(lr)], loss_curves[repr(lr)] = None, str(e)
            continue
        acc = float((predict(model, sets.val, data=data, device=device, batch_size=p.eval_batch_size) == y_val).mean())
        val_curve[repr(lr)], loss_curves[repr(lr)] = acc, curve
        if best is None or acc > best[1]:  # ties: the first lr of the grid
            best = (lr, acc, model)
    if best is None:
        raise EvalbenchError(f"fine-tuning diverged at every lr of {p.lr_grid}: {loss_curves}; lower the lr grid")
    lr, val_acc, model = best
    pred = predict(model, sets.test, data=data, device=device, batch_size=p.eval_batch_size)
    details = {"lr": lr, "val_top1": val_acc, "val_curve": val_curve, "loss_curves": loss_curves,
               "epochs": run_epochs(p, max(1, len(source) // min(p.batch_size, len(source)))),
               "batch_size": min(p.batch_size, len(source)), "train_images": len(source),
               "weights_moved": weights_moved(encoder, model.encoder), "subset": subset or {},
               "amp": device.type == "cuda"}
    return FinetuneResult(model.encoder.eval(), model.head, {"top1": float((pred == y_test).mean())}, details,
                          Predictions(y_test.astype(np.int64), {"top1": pred}))
