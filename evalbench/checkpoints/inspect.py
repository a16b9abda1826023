"""``evalbench inspect``: what a checkpoint file holds and how it would load, running nothing but the reading.

``inspect_checkpoint`` returns plain values (the ``--json`` output); ``format_inspection`` words
them for a terminal; ``write_rules`` writes a proposal as a rules file the suite references.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from evalbench.checkpoints.layouts import unwrap
from evalbench.checkpoints.mapping import FEW, Target, fit_checkpoint
from evalbench.checkpoints.propose import propose
from evalbench.checkpoints.read import read_checkpoint
from evalbench.checkpoints.rules import MAX_SKIPPED_FRACTION, LoadRules
from evalbench.core.filehash import sha256_file
from evalbench.encoders import build_encoder, default_data_config


def inspect_checkpoint(path: Path, *, arch: Optional[str] = None, in_chans: Optional[int] = None,
                       rules: LoadRules = LoadRules(), trust_pickle: bool = False) -> dict:
    """Layout, candidates, selection, tensors, drops; with ``arch``: the fit and, if it fails, a proposal."""
    path = Path(path)
    raw = read_checkpoint(path, trust_pickle=trust_pickle)
    u = unwrap(raw, select=rules.select, where=f"checkpoint {path}")
    info = {
        "file": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path), "format": raw.format,
        "unpickled": raw.unpickled, "other_entries": list(raw.other), "metadata": dict(raw.metadata),
        "layout": {"name": u.layout.name, "description": u.layout.description, "default": u.layout.default},
        "candidates": [{"name": c, "tensors": n, "values": u.values[c], "selected": c == u.selected}
                       for c, n in u.candidates.items()],
        "selected": u.selected, "selected_by": u.selected_by, "prefix": u.prefix,
        "tensors": [{"name": rel, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                    for rel, t in u.tensors.items()],
        "values": sum(t.numel() for t in u.tensors.values()),
        "dropped": dict(u.dropped), "outside_candidates": list(u.rest), "rules": rules.payload(),
    }
    if arch is None:
        return info
    data = default_data_config(arch, in_chans=in_chans)
    in_chans = data.in_chans
    target = Target.of(build_encoder(arch, in_chans=in_chans).model)
    fit = fit_checkpoint(u, target, arch=arch, rules=rules, source=str(path))
    info["fit"] = {
        "arch": arch, "in_chans": in_chans, "preprocessing": data.as_dict(), "ok": fit.ok, "prefix": u.prefix + fit.prefix, "renamed": fit.renamed,
        "filled": len(fit.mapping), "encoder_tensors": fit.encoder_tensors, "encoder_total": len(target.shapes),
        "encoder_values": target.values,
        "missing": fit.missing, "mismatched": fit.mismatched, "unexpected": fit.unexpected,
        "dropped": {k: v for k, v in fit.dropped.items() if k not in u.dropped}, "skipped": fit.skipped,
        "skipped_fraction": round(fit.skipped_fraction, 6), "max_skipped_fraction": MAX_SKIPPED_FRACTION,
        "defaulted": fit.defaulted, "error": fit.problems(),
    }
    proposal = propose(u, target, arch=arch, rules=rules, source=str(path))
    info["proposal"] = None if proposal is None else {**proposal.as_dict(),
                                                       "rules": proposal.rules(rules).payload()}
    return info


def _few(items: list, *, n: int = FEW) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def format_inspection(info: dict) -> str:
    """The inspection in words (``evalbench inspect`` without ``--json``)."""
    size = f"{info['bytes'] / 1024:.1f} KiB" if info["bytes"] < 1 << 20 else f"{info['bytes'] / (1 << 20):.1f} MiB"
    lay = info["layout"]
    lines = [f"file        {info['file']} ({size})", f"sha256      {info['sha256']}",
             f"format      {info['format']}" + (" (read with full unpickling: trust_pickle)" if info["unpickled"]
                                                else " (no code run: weights only)"),
             f"layout      {lay['name']}: {lay['description']}"]
    cands = "  ".join(f"{'*' if c['selected'] else ' '}{c['name']} ({c['tensors']} tensors, {c['values']:,} values)"
                      for c in info["candidates"])
    lines.append(f"candidates {cands}")
    how = "`select:` in the suite" if info["selected_by"] == "select" else f"the {lay['name']} layout's default"
    lines.append(f"selected    {info['selected']} ({how}), under prefix {info['prefix']!r}: "
                 f"{len(info['tensors'])} tensors, {info['values']:,} values")
    if info["dropped"]:
        lines.append(f"dropped     {len(info['dropped'])} by the layout: "
                     + _few([f"{k} [{v}]" for k, v in info["dropped"].items()], n=4))
    if info["outside_candidates"]:
        lines.append(f"outside     {len(info['outside_candidates'])} tensors outside every candidate: "
                     + _few(info["outside_candidates"], n=4))
    if info["other_entries"]:
        lines.append(f"other       {', '.join(info['other_entries'])} (not weights)")
    lines.append("tensors     " + _few([f"{t['name']} {tuple(t['shape'])}" for t in info["tensors"]], n=12))
    fit = info.get("fit")
    if fit is None:
        lines.append("(give --arch FAMILY:NAME to check the fit and get a proposed mapping)")
        return "\n".join(lines)
    counters = f" ({len(fit['defaulted'])} BatchNorm counters absent: default)" if fit["defaulted"] else ""
    lines += ["", f"against     {fit['arch']} (in_chans {fit['in_chans']}): {fit['encoder_total']} tensors, "
                  f"{fit['encoder_values']:,} values",
              "preprocess  " + ", ".join(f"{k} {v}" for k, v in fit["preprocessing"].items())
              + " (the arch's default; a suite entry overrides it with `preprocessing:`)",
              f"fit         {'loads strictly' if fit['ok'] else 'does NOT load'}: {fit['filled']} of "
              f"{fit['encoder_tensors']} filled{counters}, prefix {fit['prefix']!r}, {fit['renamed']} renamed by rules"]
    for key, label in (("missing", "missing"), ("mismatched", "mis-shaped"), ("unexpected", "unexpected"),
                       ("skipped", "skipped")):
        if fit[key]:
            lines.append(f"{label:11s} {len(fit[key])}: {_few(fit[key])}")
    if fit["dropped"]:
        lines.append(f"heads       {len(fit['dropped'])} dropped: "
                     + _few([f"{k} [{v}]" for k, v in fit["dropped"].items()], n=4))
    p = info.get("proposal")
    if p is not None:
        lines.append("")
        if p["unmatched"]:
            lines.append(f"proposal    none: {len(p['unmatched'])} encoder tensors have no checkpoint tensor of their "
                         f"shape left: {_few(p['unmatched'])}")
        elif not p["in_order"]:
            lines.append(f"proposal    none checked: same-shaped tensors are not in the model's order in the file (a "
                         "safetensors file stores them sorted by name), so pairing them by position would be a guess; "
                         "map them by hand, or re-save the state dict with torch.save in the model's order")
        elif not p["checked"]:
            lines.append(f"proposal    {len(p['pairs'])} pairs by shape, but no rule set reproduces them; map them "
                         "by hand: " + _few([f"{a} -> {b}" for a, b in p["pairs"].items()]))
        else:
            lines.append(f"proposal    {len(p['pairs'])} tensors paired by shape in order, checked shape by shape: "
                         f"{len(p['rename'])} rename rules" + (f", {len(p['skip_unexpected'])} checkpoint tensors "
                                                              "left over (skip_unexpected)" if p["skip_unexpected"] else ""))
            lines += [f"  {a!r} -> {b!r}" for a, b in p["rename"][:12]]
            lines += [f"  (+{len(p['rename']) - 12} more)"] if len(p["rename"]) > 12 else []
            lines.append("write them with --write-rules FILE, review, and add `rules: FILE` to the suite entry")
    return "\n".join(lines)


def write_rules(info: dict, out: Path) -> Path:
    """The checked proposal as a rules file (YAML): the given rules, then the proposed ones."""
    p = info.get("proposal")
    if not p or not p["checked"]:
        raise ValueError("no checked proposal to write")
    fit = info["fit"]
    head = (f"# evalbench inspect: loading rules for {Path(info['file']).name} (sha256 {info['sha256'][:16]}...)\n"
            f"# into {fit['arch']} (in_chans {fit['in_chans']}), layout {info['layout']['name']}, candidate "
            f"{info['selected']}.\n# Checked: with these rules each of its {fit['encoder_tensors']} tensors gets a "
            "checkpoint tensor of its shape\n# (paired by shape, in order). Review the pairs, then reference this "
            "file from the suite entry: `rules: FILE`.\n")
    rules = {k: v for k, v in p["rules"].items() if v}
    rules["rename"] = [{"from": a, "to": b} for a, b in rules.get("rename", [])]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + yaml.safe_dump(rules, sort_keys=False, width=200))
    return out
