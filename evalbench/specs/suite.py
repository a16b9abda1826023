"""Suites: checkpoints x tasks x protocols x seeds, parsed and validated once at the edge.

Every field is typed with its range (``SuiteDoc`` and the documents it holds, validated by
pydantic through :func:`evalbench.core.validate.validate`); a list entry given twice is an
error; a protocol param the suite's tasks are too small for (a k-NN k above a task's bank) is an
error. Each error names the file, the path inside it, the bad value and what is allowed.

The plan (stages and their identities) is made from a suite by :mod:`evalbench.run.plan`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from evalbench.core.errors import ConfigError
from evalbench.core.validate import (Doc, FiniteFloat, Flag, Mapping_, Name, PositiveFloat, Seed, Text, format_loc,
                                     join_where, one_or_more, validate)
from evalbench.core.yamlio import read_yaml
from evalbench.encoders import INTERPOLATIONS, split_arch
from evalbench.specs.checkpoint import CheckpointSpec, parse_checkpoint
from evalbench.specs.protocol import ProtocolSpec, resolve_protocol
from evalbench.specs.task import TaskSpec, resolve_task, task_sizes

SUITE_KEYS = ("checkpoints", "tasks", "protocols", "seeds", "amp", "name", "description")
INPUT_SIZE_RANGE = (8, 4096)  # pixels per side: from the smallest task images (digits, 8x8) to far above any model's


@dataclass(frozen=True)
class Suite:
    name: str
    checkpoints: tuple[CheckpointSpec, ...]
    tasks: tuple[TaskSpec, ...]
    protocols: tuple[ProtocolSpec, ...]
    seeds: tuple[int, ...] = (0,)
    amp: bool = False  # extract features under float16 autocast on CUDA (part of the features' identity)


# --- the documents --------------------------------------------------------------------------------


def _channels(value: int) -> int:
    if value not in (1, 3):
        raise ValueError(f"got {value!r}; allowed: 1 or 3 (grayscale or RGB input channels)")
    return value


class PreprocessingDoc(Doc):
    in_chans: Optional[Annotated[int, AfterValidator(_channels), Field(description="1 or 3")]] = None
    input_size: Optional[Annotated[int, Field(
        ge=INPUT_SIZE_RANGE[0], le=INPUT_SIZE_RANGE[1],
        description=f"an integer number of pixels from {INPUT_SIZE_RANGE[0]} to {INPUT_SIZE_RANGE[1]} "
                    "(within that, what the architecture takes is checked when planning)")]] = None
    mean: one_or_more(FiniteFloat, description="a finite number or a list of 1 or in_chans of them") = None
    std: one_or_more(PositiveFloat, description="a finite number > 0 or a list of 1 or in_chans of them") = None
    interpolation: Literal[INTERPOLATIONS] = None  # None: not given (the family's default)


class CheckpointDoc(Doc):
    """The typed part of a suite's checkpoint entry; its other keys (loading rules, meta) are
    checked by :func:`evalbench.specs.checkpoint.parse_checkpoint`, which refuses unknown ones."""

    model_config = ConfigDict(extra="allow")

    name: Name
    arch: Annotated[str, Field(min_length=1, description="FAMILY:NAME, e.g. builtin:small-cnn, timm:resnet18")]
    path: Optional[Annotated[str, Field(min_length=1, description="a file path (relative to the suite file)")]] = None
    init: Literal["checkpoint", "random"] = "checkpoint"
    init_seed: Seed = 0
    preprocessing: Optional[PreprocessingDoc] = None

    @model_validator(mode="after")
    def _weights(self) -> "CheckpointDoc":
        if (self.init == "random") == (self.path is not None):
            raise ValueError("give a path, or init: random for the random-weights baseline (not both)")
        if "init_seed" in self.model_fields_set and self.init != "random":
            raise ValueError("init_seed applies to init: random only (a checkpoint file's weights are fixed)")
        return self


def _protocol_entry(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class ProtocolEntryDoc(Doc):
    name: Name
    params: Mapping_ = {}


class SuiteDoc(Doc):
    checkpoints: Annotated[list[CheckpointDoc], Field(min_length=1, description="a non-empty list of checkpoints")]
    tasks: Annotated[list[Name], Field(min_length=1, description="a non-empty list of task names or task YAML paths")]
    protocols: Annotated[list[Annotated[ProtocolEntryDoc, BeforeValidator(_protocol_entry), Field(
        description="a protocol name, a protocol YAML path, or {name, params}")]],
        Field(min_length=1, description="a non-empty list of protocols")]
    seeds: Annotated[list[Seed], Field(min_length=1, description="a non-empty list of non-negative integers")] = [0]
    amp: Flag = False
    name: Optional[Name] = None
    description: Text = ""


# --- parsing --------------------------------------------------------------------------------------


def _first_repeat(keys: list[Any]) -> Optional[tuple[int, int]]:
    """(first index, repeated index) of the first entry equal to an earlier one."""
    seen: dict[Any, int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            return seen[k], i
        seen[k] = i
    return None


def _no_repeats(keys: list[Any], *, where: str, field: str, what: str) -> None:
    rep = _first_repeat(keys)
    if rep:
        raise ConfigError(f"{join_where(where, (field, rep[1]))}: {what} as {field}[{rep[0]}]; list each once")


def _within(where: str, fn, *args, **kwargs):
    """Run a resolver, prefixing its error with ``where`` when the message does not say where it is."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except KeyError as e:  # a registry lookup: its message lists the known names
        raise ConfigError(f"{where}: {e.args[0]}") from None


def parse_protocol_entry(entry: Any, *, where: str, base: Optional[Path] = None) -> ProtocolSpec:
    """A protocol name, a YAML path (relative to ``base``, the suite's directory), or {name, params}
    with overrides of its params."""
    d = validate(ProtocolEntryDoc, _protocol_entry(entry), where=where)
    name = str(base / d.name) if base is not None and d.name.endswith((".yaml", ".yml")) else d.name
    spec = _within(where, resolve_protocol, name)
    return spec.with_params(dict(d.params), where=where) if isinstance(entry, dict) and "params" in entry else spec


def _checkpoint(doc: CheckpointDoc, raw: dict, *, where: str, base: Path) -> CheckpointSpec:
    _within(join_where(where, ("arch",)), split_arch, doc.arch)
    return parse_checkpoint(raw, where=where, base_dir=base)


def check_sizes(tasks: tuple[TaskSpec, ...], protocols: tuple[ProtocolSpec, ...], entries: list, *, where: str) -> None:
    """Protocol params no task can take (a k-NN k above the bank size, a few-shot K above the smallest
    class): errors when the suite or sweep is read, not after extraction."""
    for task in tasks:
        sizes = task_sizes(task)
        if sizes is None:  # no split file: planning records that for the task's jobs
            continue
        for j, protocol in enumerate(protocols):
            for loc, msg in protocol.check_sizes(sizes):
                if isinstance(entries[j], dict) and "params" in entries[j]:
                    raise ConfigError(f"{join_where(where, ('protocols', j, *loc))}: {msg}")
                raise ConfigError(f"{join_where(where, ('protocols', j))}: {protocol.file or protocol.name}: "
                                  f"{format_loc(loc)}: {msg}; or override it in the suite with "
                                  f"{{name: {protocol.name}, params: {{...}}}}")


def parse_suite(data: Any, *, source: Path) -> Suite:
    where = str(source)
    d = validate(SuiteDoc, data, where=where)
    base = source.parent
    raw = data  # validated: the raw entries are what parse_checkpoint and the overrides read
    ckpts = tuple(_checkpoint(c, raw["checkpoints"][i], where=join_where(where, ("checkpoints", i)), base=base)
                  for i, c in enumerate(d.checkpoints))
    names = [c.name for c in ckpts]
    rep = _first_repeat(names)
    if rep:
        raise ConfigError(f"{join_where(where, ('checkpoints', rep[1], 'name'))}: {names[rep[1]]!r} is used by "
                          f"checkpoints[{rep[0]}] too; names label the table rows, so each must be different")
    tasks = tuple(_within(join_where(where, ("tasks", i)), resolve_task,
                          t if not t.endswith((".yaml", ".yml")) else str(base / t))
                  for i, t in enumerate(d.tasks))
    _no_repeats([str(t.source or t.ref) for t in tasks], where=where, field="tasks", what="the same task")
    protocols = tuple(parse_protocol_entry(p, where=join_where(where, ("protocols", i)), base=base)
                      for i, p in enumerate(raw["protocols"]))
    _no_repeats([repr(p.identity_payload()) for p in protocols], where=where, field="protocols",
                what="the same protocol with the same params")
    _no_repeats(list(d.seeds), where=where, field="seeds", what="the same seed")
    check_sizes(tasks, protocols, raw["protocols"], where=where)
    return Suite(d.name or source.stem, ckpts, tasks, protocols, tuple(d.seeds), d.amp)


def load_suite(path: Path) -> Suite:
    path = Path(path)
    return parse_suite(read_yaml(path), source=path.resolve())
