"""Typed validation of config documents with pydantic, and errors that name the file, the path
inside it, the bad value and what is allowed (DESIGN.md §7.10).

A config document (suite, task, protocol, protocol params) is a :class:`Doc`: strict types (an
integer field refuses ``1.5``, ``true`` and ``"1"``; a number field refuses ``"x"``, ``.inf``
and ``.nan``), unknown keys refused, every range in the field's type. The aliases below carry
a ``description`` of what they allow, which goes into the error message::

    suite.yaml: checkpoints[2].preprocessing.std[0]: got -1.0; allowed: a finite number > 0

:func:`validate` raises that as a :class:`ConfigError` (the first problem; a user fixes one at a
time and the message stays one paragraph).
"""
from __future__ import annotations

import typing
from typing import Annotated, Any, Iterable, Optional, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from evalbench.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Doc(BaseModel):
    """A strictly typed, frozen config document: unknown keys and loosely typed values are errors."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    """A single value where a list is expected is a one-item list (``mean: 0.5`` = ``mean: [0.5]``)."""
    return value if isinstance(value, list) else [value]


# --- constrained types, each with a description of what it allows -------------------------------

Name = Annotated[str, Field(min_length=1, description="a non-empty string")]
Text = Annotated[str, Field(description="a string")]
PositiveInt = Annotated[int, Field(ge=1, description="an integer >= 1")]
NonNegInt = Annotated[int, Field(ge=0, description="an integer >= 0")]
Seed = Annotated[int, Field(ge=0, description="a non-negative integer")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, description="a finite number")]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False, description="a finite number > 0")]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False, description="a finite number >= 0")]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False, description="a number in [0, 1)")]
Flag = Annotated[bool, Field(description="true or false")]
Mapping_ = Annotated[dict, Field(description="a mapping (key: value)")]


def one_or_more(item: Any, *, description: str) -> Any:
    """A list of ``item`` (at least one); a single value stands for a one-item list."""
    return Annotated[list[item], BeforeValidator(_as_list), Field(min_length=1, description=description)]


def non_empty_list(item: Any, *, description: str) -> Any:
    return Annotated[list[item], Field(min_length=1, description=description)]


# --- validation and messages ---------------------------------------------------------------------


def validate(model: type[M], data: Any, *, where: str) -> M:
    """``model`` from ``data`` or a ConfigError: ``where`` (file[: path]) + the path of the bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_error(model, e.errors()[0], where=where)) from None


def format_loc(loc: Iterable[Any], *, continued: bool = False) -> str:
    """(checkpoints, 2, std) -> ``checkpoints[2].std`` (``.checkpoints[2].std`` when continuing a path)."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path or continued else str(part))
    return path


def join_where(where: str, loc: Iterable[Any]) -> str:
    """``"s.yaml"`` + (checkpoints, 2, std) -> ``"s.yaml: checkpoints[2].std"``; a where that already
    holds a path (``"s.yaml: protocols[0]"``) is continued with ``.`` / ``[i]``."""
    path = format_loc(loc, continued=": " in where)
    if not path:
        return where
    return f"{where}{path}" if ": " in where else f"{where}: {path}"


def show(value: Any, limit: int = 80) -> str:
    """A short repr of a bad value for a message (never the whole of a large one)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def describe_error(model: type[BaseModel], err: dict, *, where: str) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"{join_where(where, loc[:-1])}: missing required key {loc[-1]!r}"
    if kind == "extra_forbidden":
        known = ", ".join(_known_keys(model, loc[:-1]))
        return f"{join_where(where, loc[:-1])}: unknown key {loc[-1]!r}; known keys: {known}"
    if kind == "value_error":  # a model's own check: its message says what is allowed
        msg = str((err.get("ctx") or {}).get("error", err["msg"]))
        return f"{join_where(where, loc)}: {msg}"
    allowed = _allowed(model, loc) or _fallback(err)
    return f"{join_where(where, loc)}: got {show(err.get('input'))}; allowed: {allowed}"


def _fallback(err: dict) -> str:
    msg = str(err["msg"])
    return msg[len("Input should be "):] if msg.startswith("Input should be ") else msg[:1].lower() + msg[1:]


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """(the bare type, its Annotated metadata), Optional[...] reduced to the non-None member."""
    meta: list[Any] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *more = typing.get_args(tp)
            meta = list(more) + meta
        elif origin is typing.Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp, meta
            tp = args[0]
        else:
            return tp, meta


def _field_at(model: type[BaseModel], loc: tuple) -> Optional[tuple[Any, list[Any]]]:
    """The annotation (and its metadata) of the field at ``loc`` inside ``model``, if it can be followed."""
    tp: Any = model
    meta: list[Any] = []
    for part in loc:
        tp, _ = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
            f = tp.model_fields[part]
            tp, meta = f.annotation, [f, *f.metadata]
        elif typing.get_origin(tp) in (list, tuple) and isinstance(part, int):
            args = typing.get_args(tp)
            tp, meta = (args[0] if args else Any), []
        else:
            return None
        tp, more = _unwrap(tp)
        meta = meta + more
    return tp, meta


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    found = _field_at(model, loc) if loc else (model, [])
    tp = found[0] if found else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _allowed(model: type[BaseModel], loc: tuple) -> Optional[str]:
    found = _field_at(model, loc)
    if found is None:
        return None
    tp, meta = found
    for m in meta:
        if isinstance(m, FieldInfo) and m.description:
            return m.description
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping with keys " + ", ".join(_known_keys(model, loc))
    simple = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}
    if tp in simple:
        bounds = [f"{op} {getattr(m, attr)}" for m in meta if not isinstance(m, FieldInfo)
                  for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if getattr(m, attr, None) is not None]
        return simple[tp] + (" " + " and ".join(bounds) if bounds else "")
    return None
