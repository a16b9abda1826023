"""``evalbench convert``: a checkpoint's encoder weights, mapped and checked, as a clean safetensors file.

The file holds the architecture's own names (a ``plain`` layout that loads with no rules) and,
in its metadata, where they came from: the source's sha256, layout, candidate, the rules and the
full mapping (encoder name -> the source's name), so a shared file says how it was made.
Tensors a ``skip_missing`` rule left unfilled are absent (loading it needs the same skip).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from evalbench.checkpoints.load import load_strict
from evalbench.checkpoints.mapping import LoadReport
from evalbench.checkpoints.read import read_checkpoint
from evalbench.checkpoints.rules import LoadRules
from evalbench.core.atomic import atomic_path
from evalbench.core.filehash import sha256_file
from evalbench.encoders import build_encoder, default_data_config

CONVERT_MARK = "evalbench_convert"  # metadata key (format version) of a converted file


def convert_checkpoint(path: Path, *, arch: str, out: Path, in_chans: Optional[int] = None,
                       rules: LoadRules = LoadRules(), trust_pickle: bool = False) -> LoadReport:
    """Map ``path`` strictly onto ``arch`` and write the encoder's tensors to ``out`` (safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    raw = read_checkpoint(path, trust_pickle=trust_pickle)
    in_chans = in_chans or default_data_config(arch).in_chans
    report = load_strict(build_encoder(arch, in_chans=in_chans).model, raw, arch=arch, rules=rules)
    tensors = {enc: raw.tensors[name].detach().cpu().contiguous().clone() for enc, name in report.mapping.items()}
    meta = {CONVERT_MARK: "1", "arch": arch, "in_chans": str(in_chans), "source": path.name,
            "source_sha256": sha256_file(path), "layout": report.layout, "selected": report.selected,
            "rules": json.dumps(rules.payload()), "mapping": json.dumps(report.mapping),
            "skipped": json.dumps(list(report.skipped))}
    with atomic_path(Path(out)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return report
