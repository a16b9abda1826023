"""A proposed rename mapping for a checkpoint whose names do not match the architecture's.

When the names differ but the tensors are the same ones (a port that renamed the modules, a
``Sequential`` wrapper, a scrambled state dict), the shapes still line up in order. Per class of
(shape, floating or not), the k-th encoder tensor that is still unfilled (in the model's order) is
paired with the k-th checkpoint tensor of that class that is still unused (in file order), so
shapes that occur once pair wherever they sit and repeated shapes pair in order. Pairing by
position needs the file's order to be the model's: when the position-paired tensors are not in
the same order in both (a safetensors file stores its tensors sorted by name), the pairs are shown
but not offered as rules. Checkpoint tensors left over become ``skip_unexpected`` entries the user
can read; heads stay dropped.

The pairs are written as rename rules: one rule per shared prefix where a prefix maps
consistently (``^backbone\\.0\\.`` -> ``conv1.``), else one exact rule per tensor. Every proposal
is checked by loading with it (``fit_checkpoint``): each encoder tensor gets a checkpoint tensor of
its shape, and each pair is the one proposed. A proposal that does not check out is not offered
as rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from evalbench.checkpoints.layouts import Unwrapped
from evalbench.checkpoints.mapping import COUNTERS, Target, fit_checkpoint, head_part
from evalbench.checkpoints.rules import LoadRules, matches, rename


@dataclass(frozen=True)
class Proposal:
    pairs: dict[str, str]  # checkpoint name (after the given rules) -> encoder name
    rename: tuple[tuple[str, str], ...] = ()  # checked rules; empty when none check out
    skip_unexpected: tuple[str, ...] = ()  # checkpoint tensors left over (the file's names)
    unmatched: list[str] = field(default_factory=list)  # encoder tensors with no tensor of their shape left
    in_order: bool = True  # same-shaped tensors sit in the file in the model's order (else pairs are guesses)

    @property
    def checked(self) -> bool:
        return bool(self.rename) and not self.unmatched and self.in_order

    def rules(self, base: LoadRules = LoadRules()) -> LoadRules:
        """``base`` followed by this proposal (what ``--write-rules`` writes)."""
        return base.merged(LoadRules(rename=self.rename, skip_unexpected=self.skip_unexpected))

    def as_dict(self) -> dict:
        return {"checked": self.checked, "in_order": self.in_order, "pairs": dict(self.pairs),
                "rename": [list(r) for r in self.rename], "skip_unexpected": list(self.skip_unexpected),
                "unmatched": list(self.unmatched)}


def _class(shape: tuple[int, ...], floating: bool) -> tuple:
    return (tuple(shape), floating)


def _pair_by_shape(needed: list[str], pool: list[str], *, unwrapped: Unwrapped, target: Target,
                   names: dict[str, str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(checkpoint name -> encoder name, encoder names left unpaired, checkpoint names left over)."""
    queues: dict[tuple, list[str]] = {}
    for new in pool:
        t = unwrapped.tensors[names[new]]
        queues.setdefault(_class(tuple(t.shape), t.is_floating_point()), []).append(new)
    pairs, unmatched = {}, []
    for enc in needed:
        queue = queues.get(_class(target.shapes[enc], target.floating[enc]), [])
        if queue:
            pairs[queue.pop(0)] = enc
        elif not matches(enc, COUNTERS):  # a counter the file lacks stays defaulted
            unmatched.append(enc)
    left = [n for n in pool if n not in pairs]
    return pairs, unmatched, left


def _in_order(pairs: dict[str, str], pool: list[str], needed: list[str], *, unwrapped: Unwrapped,
              names: dict[str, str]) -> bool:
    """Whether the tensors paired by position (those whose shape class has several members) follow the
    model's order in the file too; if not (a safetensors file keeps its tensors sorted by name), the
    file's order says nothing and pairing same-shaped tensors by it would be a guess."""
    sizes: dict[tuple, int] = {}
    for new in pool:
        t = unwrapped.tensors[names[new]]
        key = _class(tuple(t.shape), t.is_floating_point())
        sizes[key] = sizes.get(key, 0) + 1
    at_file, at_model = {n: i for i, n in enumerate(pool)}, {n: i for i, n in enumerate(needed)}
    shared = [(at_model[enc], at_file[new]) for new, enc in pairs.items()
              if sizes[_class(tuple(unwrapped.tensors[names[new]].shape),
                              unwrapped.tensors[names[new]].is_floating_point())] > 1]
    file_order = [f for _, f in sorted(shared)]
    return file_order == sorted(file_order)


def _compressed(pairs: dict[str, str]) -> list[tuple[str, str]]:
    """One prefix rule per (source prefix, target prefix) sharing a dotted suffix; exact rules otherwise."""
    rules: list[tuple[str, str]] = []
    for src, dst in pairs.items():
        a, b = src.split("."), dst.split(".")
        k = 0
        while k < min(len(a), len(b)) - 1 and a[-1 - k] == b[-1 - k]:
            k += 1
        rule = ((f"^{re.escape('.'.join(a[:len(a) - k]))}\\.", ".".join(b[:len(b) - k]) + ".") if k
                else (f"^{re.escape(src)}$", dst))
        if rule not in rules:
            rules.append(rule)
    return rules


def _exact(pairs: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"^{re.escape(src)}$", dst) for src, dst in pairs.items()]


def propose(unwrapped: Unwrapped, target: Target, *, arch: str, rules: LoadRules = LoadRules(),
            source: str = "checkpoint") -> Optional[Proposal]:
    """A checked mapping by shape for what ``rules`` leave unmatched; None when the load already fits."""
    fit = fit_checkpoint(unwrapped, target, arch=arch, rules=rules, source=source)
    if fit.ok:
        return None
    names = {rename(rel, rules.rename): rel for rel in unwrapped.tensors}  # name after the rules -> relative name
    used = set(fit.mapping.values())
    pool = [new for new, rel in names.items()
            if unwrapped.sources[rel] not in used and head_part(unwrapped.sources[rel]) is None]
    needed = [enc for enc in target.shapes if enc not in fit.mapping]
    pairs, unmatched, left = _pair_by_shape(needed, pool, unwrapped=unwrapped, target=target, names=names)
    in_order = _in_order(pairs, pool, needed, unwrapped=unwrapped, names=names)
    # the destination keeps the wrapper prefix the matched names sit under, so they keep matching
    pairs = {new: fit.prefix + enc for new, enc in pairs.items()}
    skips = tuple(unwrapped.sources[names[n]] for n in left)
    if unmatched or not in_order:
        return Proposal(pairs, (), skips, unmatched, in_order)
    for candidate in (_compressed(pairs), _exact(pairs)):
        proposal = Proposal(pairs, tuple(candidate), skips)
        check = fit_checkpoint(unwrapped, target, arch=arch, rules=proposal.rules(rules), source=source)
        expected = {enc: f for enc, f in fit.mapping.items()}
        expected.update({pairs[new][len(fit.prefix):]: unwrapped.sources[names[new]] for new in pairs})
        if check.ok and check.mapping == expected:
            return proposal
    return Proposal(pairs, (), skips)
