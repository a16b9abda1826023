"""A pretrained checkpoint on disk: safetensors weights (the family's own state_dict names, so
`evalbench run` loads them like any other checkpoint) and a JSON sidecar saying how they were
made: method, every knob, seed, data, epochs, wall time, loss curve, evalbench version."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from safetensors.torch import save_file

from evalbench.core.atomic import write_json
from evalbench.core.env import code_version
from evalbench.encoders import Encoder
from evalbench.pretrain.config import PretrainConfig
from evalbench.pretrain.trainer import PretrainResult
from evalbench.specs.checkpoint import SIDECAR_MARK



def pretrain_metadata(cfg: PretrainConfig, result: PretrainResult, *, identity: str, task: dict) -> dict:
    return {SIDECAR_MARK: 1, "identity": identity, "method": cfg.method, "arch": cfg.arch, "seed": cfg.seed,
            "config": cfg.as_dict(), "knobs": cfg.knobs(), "task": task, "epochs": result.epochs,
            "resumed_from": result.resumed_from, "wall_s": round(result.wall_s, 3),
            "images_per_s": round(result.images_per_s, 1), "loss_curve": [round(v, 6) for v in result.loss_curve],
            "code": code_version(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_checkpoint(encoder: Encoder, path: Path, *, metadata: dict) -> Path:
    """``path`` (.safetensors) + ``path.with_suffix('.json')``; the caller makes the write atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}, str(path))
    write_json(path.with_suffix(".json"), metadata)
    return path

