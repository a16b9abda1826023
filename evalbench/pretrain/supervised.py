"""Supervised training of an encoder + linear head: the default suite's reference checkpoint
(the "supervised baseline" row of DESIGN.md §3), run as a ``pretrain`` stage."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from evalbench.data.base import ImageSource
from evalbench.encoders import DataConfig, Encoder, build_encoder, preprocess


@dataclass(frozen=True)
class SupervisedRecipe:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def _batch(source: ImageSource, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    items = [source[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


def train_supervised(recipe: SupervisedRecipe, sources: Sequence[ImageSource], *, num_classes: int, arch: str,
                     cfg: DataConfig, device: torch.device) -> Encoder:
    """AdamW + cross-entropy on the given train splits only (val and test stay unseen).

    Each batch comes from one source (image sizes may differ; preprocessing resizes them alike).
    """
    torch.manual_seed(recipe.seed)
    encoder = build_encoder(arch, in_chans=cfg.in_chans).to(device)
    head = nn.Linear(encoder.num_features, num_classes).to(device)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=recipe.lr, weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(recipe.seed)
    encoder.train()
    for _ in range(recipe.epochs):
        batches = [(s, idx) for s in sources for idx in torch.randperm(len(s), generator=g).split(recipe.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            images, labels = _batch(*batches[b])
            loss = F.cross_entropy(head(encoder(preprocess(images.to(device), cfg))), labels.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return encoder.eval()


def save_checkpoint(encoder: Encoder, path: Path, *, metadata: dict) -> Path:
    """safetensors weights (the family's own state_dict names) + a JSON sidecar saying how they were made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1))
    return path
