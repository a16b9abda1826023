"""Reading config files (core/yamlio.py) and the messages of typed validation (core/validate.py)."""
from __future__ import annotations

from typing import Annotated, Optional

import pytest
from pydantic import Field

from evalbench.core.errors import ConfigError, plain_message
from evalbench.core.validate import Doc, PositiveFloat, Seed, join_where, non_empty_list, validate
from evalbench.core.yamlio import parse_yaml, read_yaml


@pytest.mark.parametrize("text, message", [
    ("tasks: [a]\ntasks: [b]\n", "key 'tasks' is given twice (line 1 and line 2)"),
    ("a:\n  b: 1\n  b: 2\n", "key 'b' is given twice (line 2 and line 3)"),
    ("a: [\n", "malformed YAML at line 2, column 1"),
    ("a: 1\n\tb: 2\n", "malformed YAML at line 2"),
])
def test_parse_yaml__duplicate_keys_and_malformed_text_are_errors_naming_the_place(text, message):
    with pytest.raises(ConfigError) as e:
        parse_yaml(text, where="s.yaml")
    assert str(e.value).startswith("s.yaml: ") and message in str(e.value) and "\n" not in str(e.value)


def test_parse_yaml__merge_keys_may_override_and_exponents_are_numbers():
    data = parse_yaml("base: &b {k: 1, T: 2}\nx: {<<: *b, k: 3}\ny: [1e-6, 1e999, 2.5e3, 12, 1.0e-6, x1e5]\n", where="s")
    assert data["x"] == {"k": 3, "T": 2}
    assert data["y"] == [1e-6, float("inf"), 2500.0, 12, 1e-6, "x1e5"]  # YAML 1.2 floats; ints stay ints


def test_read_yaml__non_utf8_directory_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "suite.yaml"
    bad.write_bytes(b"tasks: [digits]\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"suite.yaml: not UTF-8 text: byte 0xe9 at byte offset 25 \(line 2\)"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a directory; expected a YAML file"):
        read_yaml(tmp_path)
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        read_yaml(tmp_path / "nope.yaml")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffname: café\n".encode())
    assert read_yaml(bom) == {"name": "café"}


class _Inner(Doc):
    std: non_empty_list(PositiveFloat, description="a non-empty list of finite numbers > 0")


class _Outer(Doc):
    items: list[_Inner]
    seed: Seed = 0
    name: Optional[Annotated[str, Field(min_length=1, description="a non-empty string")]] = None


@pytest.mark.parametrize("data, message", [
    ({"items": [{"std": [1.0]}, {"std": [float("inf")]}]}, "f.yaml: items[1].std[0]: got inf; allowed: a finite number > 0"),
    ({"items": [{"std": []}]}, "f.yaml: items[0].std: got []; allowed: a non-empty list of finite numbers > 0"),
    ({"items": [], "seed": True}, "f.yaml: seed: got True; allowed: a non-negative integer"),
    ({"items": [], "seed": 1.5}, "f.yaml: seed: got 1.5; allowed: a non-negative integer"),
    ({"items": [], "seed": -1}, "f.yaml: seed: got -1; allowed: a non-negative integer"),
    ({"items": [], "name": ""}, "f.yaml: name: got ''; allowed: a non-empty string"),
    ({"items": [{"std": [1], "mean": 0}]}, "f.yaml: items[0]: unknown key 'mean'; known keys: std"),
    ({}, "f.yaml: missing required key 'items'"),
    ("x", "f.yaml: got 'x'; allowed: a mapping with keys items, seed, name"),
])
def test_validate__errors_name_file_path_value_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError) as e:
        validate(_Outer, data, where="f.yaml")
    assert str(e.value) == message


def test_join_where__starts_or_continues_a_path():
    assert join_where("s.yaml", ("checkpoints", 2, "preprocessing", "std")) == "s.yaml: checkpoints[2].preprocessing.std"
    assert join_where("s.yaml: protocols[0]", ("params", "settings", 1, "k")) == "s.yaml: protocols[0].params.settings[1].k"
    assert join_where("s.yaml", ()) == "s.yaml"


def test_plain_message__one_line_without_terminal_codes_never_cut_mid_sentence():
    assert plain_message("\x1b[36mray::f()\x1b[39m (pid=1)\n  At least one input failed.\n") == \
        "ray::f() (pid=1) At least one input failed."
    long = " ".join(f"Sentence number {i} says something." for i in range(200))
    short = plain_message(long, limit=300)
    kept, rest = short.split(" [", 1)
    assert kept.endswith("says something.") and len(kept) <= 300 and rest.endswith("more characters not shown]")
    assert len(kept) + int(rest.split()[0]) == len(long)
