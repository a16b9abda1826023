"""YAML reading with errors that name the file, and strict key checking for config mappings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from evalbench.core.errors import ConfigError


def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None


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
