"""SSL methods composed from small parts (DESIGN.md §5): an encoder, a projection head, an
optional predictor, a loss, and where the method has one an EMA target network and a queue.

A method is an ``nn.Module`` with ``loss(x1, x2, labels) -> scalar`` on two normalised views
(labels are read by ``supervised`` only) and ``after_step(step, total_steps)`` for the updates
that follow an optimiser step (EMA target, queue). ``encoder`` is the evalbench ``Encoder``
whose ``model`` weights become the checkpoint. Sources:

- SimCLR (Chen et al. 2020; google-research/simclr ``objective.py``): NT-Xent over 2N views.
- MoCo v2 (Chen et al. 2020, "Improved Baselines"; facebookresearch/moco ``moco/builder.py``):
  query encoder + projector, momentum key encoder, queue of negative keys.
- BYOL (Grill et al. 2020; deepmind/deepmind-research ``byol/byol_experiment.py``): online
  network with predictor, EMA target, symmetric regression loss, no negatives.
- SimSiam (Chen & He 2021; facebookresearch/simsiam ``simsiam/builder.py``): predictor +
  stop-gradient, no negatives, no momentum.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from evalbench.core.registry import Registry
from evalbench.encoders import Encoder
from evalbench.pretrain.config import PretrainConfig
from evalbench.pretrain.distributed import gather, gather_with_grad
from evalbench.pretrain.heads import predictor, projection_head
from evalbench.pretrain.losses import byol_loss, info_nce, negative_cosine, nt_xent
from evalbench.pretrain.momentum import NegativeQueue, copy_for_target, ema_update, momentum_at


class Method(nn.Module):
    """The method interface; ``after_step`` does nothing unless the method has an EMA target or a queue."""

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        pass

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(x1, x2, labels)  # what DistributedDataParallel calls


class Projected(nn.Module):
    """encoder -> projection head: (B, C, H, W) -> (B, out_dim)."""

    def __init__(self, encoder: Encoder, cfg: PretrainConfig) -> None:
        super().__init__()
        self.encoder = encoder
        h = cfg.head
        self.head, self.out_dim = projection_head(h.kind, encoder.num_features, hidden_dim=h.hidden_dim,
                                                  out_dim=h.out_dim, depth=h.depth, bn_out=h.bn_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class SimCLR(Method):
    def __init__(self, cfg: PretrainConfig, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.online = Projected(encoder, cfg)
        self.encoder = encoder
        self.temperature = cfg.loss.temperature

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # data-parallel: the negatives are the whole global batch (pretrain/distributed.py)
        z1, z2 = gather_with_grad(self.online(x1)), gather_with_grad(self.online(x2))
        return nt_xent(z1, z2, temperature=self.temperature)

def _maybe_predictor(cfg: PretrainConfig, dim: int) -> nn.Module:
    return predictor(dim, hidden_dim=cfg.predictor.hidden_dim) if cfg.predictor.enabled else nn.Identity()


class MoCo(Method):
    def __init__(self, cfg: PretrainConfig, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.online = Projected(encoder, cfg)
        self.encoder = encoder
        self.target = copy_for_target(self.online)  # the momentum key encoder (+ its projector)
        g = torch.Generator().manual_seed(cfg.seed)
        self.queue = NegativeQueue(cfg.queue.size, self.online.out_dim, generator=g)
        self.temperature, self.ema = cfg.loss.temperature, cfg.ema
        self._keys: Optional[torch.Tensor] = None

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        q = self.online(x1)  # (B, D) queries
        with torch.no_grad():
            k = F.normalize(self.target(x2), dim=1)  # (B, D) keys from the momentum encoder
        loss = info_nce(q, k, self.queue.vectors(), temperature=self.temperature)
        self._keys = k
        return loss

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.target, self.online, momentum=momentum_at(step, total_steps, base=self.ema.momentum,
                                                                 schedule=self.ema.schedule))
        if self._keys is not None:
            self.queue.enqueue(gather(self._keys))  # every worker's keys, after the loss used the old queue
            self._keys = None


class BYOL(Method):
    def __init__(self, cfg: PretrainConfig, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.online = Projected(encoder, cfg)
        self.encoder = encoder
        self.predictor = _maybe_predictor(cfg, self.online.out_dim)
        self.target = copy_for_target(self.online)
        self.ema = cfg.ema

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p1, p2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        with torch.no_grad():
            z1, z2 = self.target(x1), self.target(x2)
        return byol_loss(p1, z2) + byol_loss(p2, z1)  # symmetric, as in BYOL

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.target, self.online, momentum=momentum_at(step, total_steps, base=self.ema.momentum,
                                                                 schedule=self.ema.schedule))


class SimSiam(Method):
    def __init__(self, cfg: PretrainConfig, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.online = Projected(encoder, cfg)
        self.encoder = encoder
        self.predictor = _maybe_predictor(cfg, self.online.out_dim)
        self.stop_gradient = cfg.loss.stop_gradient

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.online(x1), self.online(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        sg = self.stop_gradient
        return 0.5 * (negative_cosine(p1, z2, stop_gradient=sg) + negative_cosine(p2, z1, stop_gradient=sg))

class Supervised(Method):
    """The supervised reference: encoder + linear classifier, cross-entropy on the first view."""

    def __init__(self, cfg: PretrainConfig, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.num_features, num_classes)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(self.encoder(x1)), labels)

MethodBuilder = Callable[[PretrainConfig, Encoder, int], Method]
METHODS: Registry[MethodBuilder] = Registry("pretraining method", "evalbench pretrain --help")
for _name, _cls in {"simclr": SimCLR, "moco": MoCo, "byol": BYOL, "simsiam": SimSiam, "supervised": Supervised}.items():
    METHODS.register(_name)(_cls)

READS_LABELS = frozenset({"supervised"})  # every other method never reads a label
