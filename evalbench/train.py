"""Supervised training of an encoder + linear head, used for the default suite's reference row."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from evalbench.checkpoints import Preprocessing
from evalbench.encoders import build_encoder
from evalbench.features import preprocess
from evalbench.tasks import TaskSpec, load_task


@dataclass(frozen=True)
class SupervisedRecipe:
    arch: str
    tasks: tuple[str, ...]  # task refs (name@version) whose train splits are used; same label space
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def train_supervised(recipe: SupervisedRecipe, tasks: list[TaskSpec], *, prep: Preprocessing,
                     device: torch.device) -> nn.Module:
    """AdamW + cross-entropy on the tasks' train splits only (val and test stay unseen).

    Each batch comes from one task (image sizes differ; preprocessing resizes them alike).
    """
    torch.manual_seed(recipe.seed)
    parts = [load_task(t).train for t in tasks]
    encoder = build_encoder(recipe.arch, in_chans=prep.in_chans).to(device)
    head = nn.Linear(encoder.num_features, max(t.num_classes for t in tasks)).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(recipe.seed)
    encoder.train()
    for _ in range(recipe.epochs):
        batches = [(p, idx) for p in parts for idx in torch.randperm(len(p), generator=g).split(recipe.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            part, idx = batches[b]
            x = preprocess(torch.from_numpy(part.images[idx.numpy()]).to(device), prep)
            loss = F.cross_entropy(head(encoder(x)), torch.from_numpy(part.labels[idx.numpy()]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return encoder.eval()


def save_checkpoint(encoder: nn.Module, path: Path, *, metadata: dict) -> Path:
    """safetensors weights + a JSON sidecar with how they were made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(tmp))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1))
    return path
