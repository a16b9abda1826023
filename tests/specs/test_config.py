"""Contract tests over every YAML file and registry, and suite validation at the boundary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalbench.core.errors import ConfigError
from evalbench.data.splits import make_split
from evalbench.protocols import PROBES
from evalbench.run.plan import plan_suite
from evalbench.specs.protocol import builtin_protocol_files, resolve_protocol
from evalbench.specs.suite import load_suite
from evalbench.specs.task import builtin_task_files, resolve_task
from tests.conftest import PREP, write_suite

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(builtin_protocol_files()))
def test_protocol_yaml__loads_with_registered_implementation(name):
    spec = resolve_protocol(name)
    assert spec.name == name and spec.version >= 1
    assert spec.implementation in PROBES
    assert spec.num_cpus > 0


@pytest.mark.parametrize("name", sorted(builtin_task_files()))
def test_task_yaml__loads_and_has_split_file(name):
    spec = resolve_task(name)
    assert spec.name == name and spec.num_classes > 1
    split = json.loads(spec.split_file.read_text())
    val, test = set(split["val"]), set(split.get("test", []))
    assert val and not (val & test), "val and test indices must be disjoint"
    assert max(val | test) < split["train_size"]


@pytest.mark.parametrize("path", sorted((REPO / "examples").rglob("*suite*.yaml")), ids=lambda p: p.name)
def test_example_suites__parse(path):
    suite = load_suite(path)
    assert suite.checkpoints and suite.tasks and suite.protocols


def test_every_probe_has_a_protocol_yaml():
    implementations = {resolve_protocol(n).implementation for n in builtin_protocol_files()}
    assert set(PROBES.names()) <= implementations


def test_make_split__is_seeded_disjoint_and_sized():
    a = make_split(1000, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert a == make_split(1000, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert len(a["val"]) == 100 and len(a["test"]) == 200 and not set(a["val"]) & set(a["test"])
    assert a["val"] != make_split(1000, val_fraction=0.1, test_fraction=0.2, seed=1)["val"]


def _suite(tmp_path, **overrides):
    suite = {"checkpoints": [{"name": "r", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}],
             "tasks": ["digits"], "protocols": ["knn"], "seeds": [0]}
    return write_suite(tmp_path / "suite.yaml", **{**suite, **overrides})


@pytest.mark.parametrize("overrides, expected", [
    ({"protocol": ["knn"]}, "unknown key 'protocol'; known keys: checkpoints, tasks, protocols"),
    ({"protocols": ["knnn"]}, "unknown protocol 'knnn'; known: diagnostics, fewshot, finetune_100pct, invariance, knn, linear, "
     "rotation, semisup_10pct, semisup_1pct"),
    ({"tasks": ["digit"]}, "unknown task 'digit'; known: "),
    ({"protocols": [{"name": "knn", "params": {"kk": 3}}]}, "has no param 'kk'; known: settings"),
    ({"checkpoints": [{"name": "r", "arch": "builtin:small-cnn", "init": "random", "lr": 1}]}, "unknown key 'lr'"),
    ({"checkpoints": [{"name": "r", "arch": "builtin:nope", "init": "random"}]}, "unknown built-in encoder 'nope'"),
    ({"checkpoints": [{"name": "r", "arch": "resnet18", "init": "random"}]}, "must be FAMILY:NAME"),
    ({"seeds": []}, "suite.yaml: seeds: got []; allowed: a non-empty list of non-negative integers"),
    ({"checkpoints": [{"name": "r", "arch": "timm:not_a_model", "init": "random"}]}, "unknown timm model 'not_a_model'"),
])
def test_suite__bad_yaml_fails_naming_the_problem(tmp_path, overrides, expected):
    path = _suite(tmp_path, **overrides)
    with pytest.raises((ConfigError, KeyError)) as e:
        plan_suite(load_suite(path))
    assert expected in str(e.value)


def test_suite__malformed_yaml_says_which_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("checkpoints: [\n  - name: x\n")
    with pytest.raises(ConfigError, match="broken.yaml: malformed YAML"):
        load_suite(path)


def test_data_status__ready_for_packaged_data_missing_for_absent_files(tmp_path):
    from evalbench.specs.task import data_status, parse_task

    assert data_status(resolve_task("digits")) == "ready"
    absent = parse_task({"name": "c", "version": 1, "loader": "cifar10", "root": str(tmp_path), "num_classes": 10,
                         "splits": {"file": "c.json"}}, source=tmp_path / "c.yaml")
    assert data_status(absent) == "missing"
