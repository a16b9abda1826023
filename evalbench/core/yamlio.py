"""YAML reading with errors that name the file, and strict key checking for config mappings.

``read_yaml`` reads the file as UTF-8 (an undecodable byte is an error naming its offset) and
parses it with :class:`StrictLoader`: a key given twice in one mapping is an error (YAML would
keep the last one silently), and ``1e-6`` is a number as in YAML 1.2 (PyYAML's YAML 1.1 reads
it as the string "1e-6").
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from evalbench.core.errors import ConfigError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads exponent floats without a dot (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides are deliberate
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise DuplicateKeyError(problem=(
                    f"key {key!r} is given twice (line {first.line + 1} and line {key_node.start_mark.line + 1}); "
                    "YAML would keep only the last one: remove one of them"))
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def parse_yaml(text: str, *, where: str) -> Any:
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as e:
        raise ConfigError(f"{where}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: malformed YAML{at}: {' '.join(str(what).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: malformed YAML: nested too deeply") from None


def read_text(path: Path) -> str:
    """A config file's text, UTF-8; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at byte offset {e.start} (line {line}) "
                          "cannot be decoded; save the file as UTF-8") from None


def read_yaml(path: Path) -> Any:
    return parse_yaml(read_text(path), where=str(path))


def check_mapping(
    data: Any, *, where: str, required: Iterable[str] = (), optional: Iterable[str] = ()
) -> Mapping[str, Any]:
    """Fail on a non-mapping, a missing required key or an unknown key, naming the known keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    required, optional = list(required), list(optional)
    known = required + optional
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    return data


def yaml_files(directory: Path) -> dict[str, Path]:
    """Built-in YAML files of a directory by stem (tasks/digits.yaml -> 'digits')."""
    return {p.stem: p for p in sorted(Path(directory).glob("*.yaml"))}


def find_yaml(name_or_path: str, directory: Path, *, kind: str) -> Path:
    """A path to a YAML file, or the name of a built-in one under ``directory``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path.resolve()
    files = yaml_files(directory)
    if name_or_path not in files:
        raise ConfigError(f"unknown {kind} {name_or_path!r}; known: {', '.join(files)} (evalbench list {kind}s), "
                          f"or give the path to a {kind} YAML file")
    return files[name_or_path]
