"""Issue 11, defects 1-3: every bad value in a suite, task or protocol is refused before any work,
with exit code 2 and one paragraph naming the file, the field and what is allowed.

Before the fix these ran and stored ok records (defect 1), kept the last of two duplicated keys or
ran duplicated jobs (defect 2), or ended in a Python traceback (defect 3)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from evalbench.cli import main
from evalbench.protocols import PARAMS, PROBES
from evalbench.specs.protocol import resolve_protocol
from tests.conftest import PREP

REPO = Path(__file__).resolve().parents[2]
DIGITS_SPLIT = REPO / "tasks" / "splits" / "digits.json"
BASE = {"checkpoints": [{"name": "r", "arch": "builtin:small-cnn", "init": "random", "preprocessing": dict(PREP)}],
        "tasks": ["digits"], "protocols": ["knn"], "seeds": [0]}


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def refused(tmp_path: Path, capsys, suite_text: str, *, args: tuple = ()) -> str:
    """Run the suite; assert exit 2, one paragraph, no traceback and no record; return the message."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text)
    results = tmp_path / "res"
    capsys.readouterr()
    rc = main(["run", str(suite), "--results", str(results), "--executor", "local", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("evalbench: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not list(results.glob("records/*.json"))
    return err.removeprefix("evalbench: error: ").strip()


def refused_at(tmp_path: Path, capsys, text: str, expected: str) -> None:
    """The suite text is refused, the message starting with the suite file and holding ``expected``."""
    message = refused(tmp_path, capsys, text)
    assert message.startswith(f"{tmp_path / 'suite.yaml'}: ") and expected in message, message


KNN = ("protocols", 0)
PREPROCESSING = ("checkpoints", 0, "preprocessing")

# defect 1: values that ran and stored ok records
WRONG_NUMBERS = {
    "k: 0": ({"name": "knn", "params": {"settings": [{"k": 0, "T": 0.07}]}}, KNN, "protocols[0].params.settings[0].k: got 0"),
    "k: -5": ({"name": "knn", "params": {"settings": [{"k": -5, "T": 0.07}]}}, KNN, "settings[0].k: got -5"),
    "k above the bank": ({"name": "knn", "params": {"settings": [{"k": 100000, "T": 0.07}]}}, KNN,
                         "protocols[0].params.settings[0].k: got 100000; allowed: at most 1438, the size of the k-NN "
                         "bank of task 'digits' (train + val)"),
    "T: 0": ({"name": "knn", "params": {"settings": [{"k": 5, "T": 0}]}}, KNN, "settings[0].T: got 0; allowed: a finite number > 0"),
    "T: -1": ({"name": "knn", "params": {"settings": [{"k": 5, "T": -1}]}}, KNN, "settings[0].T: got -1"),
    "T: .inf": ({"name": "knn", "params": {"settings": [{"k": 5, "T": float("inf")}]}}, KNN, "settings[0].T: got inf"),
    "max_iter: 0": ({"name": "linear", "params": {"max_iter": 0}}, KNN, "protocols[0].params.max_iter: got 0; allowed: an integer >= 1"),
    "max_iter: -1": ({"name": "linear", "params": {"max_iter": -1}}, KNN, "protocols[0].params.max_iter: got -1"),
    "std: [inf]": ([float("inf")], PREPROCESSING + ("std",), "checkpoints[0].preprocessing.std[0]: got inf; allowed: a finite number > 0"),
    "std: [0]": ([0.0], PREPROCESSING + ("std",), "checkpoints[0].preprocessing.std[0]: got 0.0"),
    "input_size: 1": (1, PREPROCESSING + ("input_size",), "checkpoints[0].preprocessing.input_size: got 1"),
    "in_chans: 2": (2, PREPROCESSING + ("in_chans",), "checkpoints[0].preprocessing.in_chans: got 2; allowed: 1 or 3"),
    "chunk_size: 0": ({"name": "knn", "params": {"chunk_size": 0}}, KNN, "protocols[0].params.chunk_size: got 0"),
    "l2_grid: []": ({"name": "linear", "params": {"l2_grid": []}}, KNN, "protocols[0].params.l2_grid: got []"),
    "l2_grid: [0]": ({"name": "linear", "params": {"l2_grid": [0.0]}}, KNN, "protocols[0].params.l2_grid[0]: got 0.0"),
    "tol: 0": ({"name": "linear", "params": {"tol": 0}}, KNN, "protocols[0].params.tol: got 0"),
    "max_samples: 1": ({"name": "diagnostics", "params": {"max_samples": 1}}, KNN, "protocols[0].params.max_samples: got 1"),
}


def test_defect1__a_builtin_protocols_default_k_above_a_tasks_bank_is_refused(tmp_path, capsys):
    """knn's shipped k=200 on a task whose bank holds 150 images: an error naming the default, not a clamp."""
    task = tmp_path / "tiny.yaml"
    task.write_text(f"name: tiny\nversion: 1\nloader: sklearn-digits\nnum_classes: 10\nsplits: {{file: tiny.json}}\n")
    (tmp_path / "tiny.json").write_text('{"task": "tiny", "train_size": 200, "val": [0], "test": ' +
                                        str(list(range(1, 51))) + "}")
    message = refused(tmp_path, capsys, yaml.safe_dump({**BASE, "tasks": [str(task)]}))
    assert f"protocols[0]: {REPO / 'protocols' / 'knn.yaml'}: params.settings[1].k: got 200; allowed: at most 150" \
        in message, message


# defect 2: silent data loss in YAML
DUPLICATES = {
    "a key given twice": ("checkpoints: []\ntasks: [mnist5k]\nprotocols: [knn]\ntasks: [digits]\n",
                          "key 'tasks' is given twice (line 2 and line 4)"),
    "a task twice": (yaml.safe_dump({**BASE, "tasks": ["digits", "digits"]}), "tasks[1]: the same task as tasks[0]"),
    "a protocol twice": (yaml.safe_dump({**BASE, "protocols": ["knn", {"name": "knn", "params": {"chunk_size": 4096}}]}),
                         "protocols[1]: the same protocol with the same params as protocols[0]"),
    "a seed twice": (yaml.safe_dump({**BASE, "seeds": [0, 1, 0]}), "seeds[2]: the same seed as seeds[0]"),
    "a checkpoint name twice": (yaml.safe_dump({**BASE, "checkpoints": BASE["checkpoints"] * 2}),
                                "checkpoints[1].name: 'r' is used by checkpoints[0] too"),
    "a knn setting twice": (yaml.safe_dump(_set(BASE, KNN, {"name": "knn", "params": {"settings": [{"k": 5, "T": 0.1}] * 2}})),
                            "protocols[0].params.settings: two settings report the same metric 'top1_k5_T0.1'"),
    "a float seed": (yaml.safe_dump({**BASE, "seeds": [1.5]}), "seeds[0]: got 1.5; allowed: a non-negative integer"),
    "a boolean seed": (yaml.safe_dump({**BASE, "seeds": [True]}), "seeds[0]: got True"),
    "a float init_seed": (yaml.safe_dump(_set(BASE, ("checkpoints", 0, "init_seed"), 2.7)), "checkpoints[0].init_seed: got 2.7"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_defect2__duplicates_and_truncating_values_are_refused(tmp_path, capsys, case):
    refused_at(tmp_path, capsys, *DUPLICATES[case])


TASK = {"name": "digits-copy", "version": 1, "loader": "sklearn-digits", "num_classes": 10,
        "splits": {"file": str(DIGITS_SPLIT), "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}}


@pytest.mark.parametrize("path, value, expected", [
    (("splits", "seed"), 1.5, "splits.seed: got 1.5; allowed: a non-negative integer"),  # was int(1.5) == 1
    (("version",), True, "version: got True; allowed: an integer >= 1"),  # was int(True) == 1
    (("num_classes",), 10.5, "num_classes: got 10.5"),
    (("num_classes",), 1, "num_classes: got 1; allowed: an integer >= 2"),
    (("splits", "val_fraction"), 0.95, "splits: val_fraction + test_fraction = 1.15 leaves no training images"),
    (("params",), {"image_size": 32}, "params: loader 'sklearn-digits' takes no param 'image_size'"),
    (("loader",), "nope", "loader: unknown dataset loader 'nope'"),
])
def test_defect2__task_files_are_typed_too(tmp_path, capsys, path, value, expected):
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(_set(TASK, path, value)))
    message = refused(tmp_path, capsys, yaml.safe_dump({**BASE, "tasks": [str(task)]}))
    assert f"{task}: " in message and expected in message, message


def test_defect2__protocol_files_are_typed_too(tmp_path, capsys):
    text = (REPO / "protocols" / "linear.yaml").read_text().replace("max_iter: 100", "max_iter: 0")
    protocol = tmp_path / "lin.yaml"
    protocol.write_text(text)
    message = refused(tmp_path, capsys, yaml.safe_dump({**BASE, "protocols": [str(protocol)]}))
    assert f"{protocol}: params.max_iter: got 0; allowed: an integer >= 1" in message, message


# defect 3: tracebacks instead of errors
TYPES = {
    "init_seed: a": (("checkpoints", 0, "init_seed"), "a", "checkpoints[0].init_seed: got 'a'"),
    "in_chans: '1'": (PREPROCESSING + ("in_chans",), "1", "checkpoints[0].preprocessing.in_chans: got '1'"),
    "mean: x": (PREPROCESSING + ("mean",), "x", "checkpoints[0].preprocessing.mean[0]: got 'x'; allowed: a finite number"),
    "seeds: [1e999]": (("seeds",), [float("inf")], "seeds[0]: got inf"),
    "path: 123": (("checkpoints", 0), {"name": "c", "arch": "builtin:small-cnn", "path": 123},
                  "checkpoints[0].path: got 123; allowed: a file path"),
    "params: x": (KNN, {"name": "knn", "params": "x"}, "protocols[0].params: got 'x'; allowed: a mapping"),
    "name: 7": (("checkpoints", 0, "name"), 7, "checkpoints[0].name: got 7; allowed: a non-empty string"),
    "arch: null": (("checkpoints", 0, "arch"), None, "checkpoints[0].arch: got None"),
    "tasks: digits": (("tasks",), "digits", "tasks: got 'digits'; allowed: a non-empty list"),
    "protocols: [7]": (("protocols",), [7], "protocols[0]: got 7; allowed: a protocol name, a protocol YAML path, or {name, params}"),
    "settings: [[20, 0.07]]": (KNN, {"name": "knn", "params": {"settings": [[20, 0.07]]}}, "protocols[0].params.settings[0]: got [20, 0.07]"),
    "amp: 'yes'": (("amp",), "yes", "amp: got 'yes'; allowed: true or false"),
    "unknown arch": (("checkpoints", 0, "arch"), "builtin:nope", "checkpoints[0].arch: unknown built-in encoder 'nope'"),
    "unknown task": (("tasks",), ["digit"], "tasks[0]: unknown task 'digit'; known: "),
}


BAD_VALUES = {**{f"defect 1, {k}": (p, v, e) for k, (v, p, e) in WRONG_NUMBERS.items()},
              **{f"defect 3, {k}": t for k, t in TYPES.items()}}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_defects1_and_3__bad_values_are_refused_naming_file_and_field(tmp_path, capsys, case):
    """Defect 1: these ran and stored ok records. Defect 3: these ended in a traceback."""
    path, value, expected = BAD_VALUES[case]
    refused_at(tmp_path, capsys, yaml.safe_dump(_set(BASE, path, value)), expected)


def test_defect3__a_non_utf8_suite_and_a_directory_are_errors_naming_them(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(yaml.safe_dump(BASE).encode() + b"description: r\xe9sum\xe9\n")
    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(tmp_path / "res"), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert f"{suite}: not UTF-8 text: byte 0xe9 at byte offset" in err and "Traceback" not in err
    assert main(["run", str(tmp_path), "--results", str(tmp_path / "res"), "--executor", "local"]) == 2
    assert f"{tmp_path}: is a directory; expected a YAML file" in capsys.readouterr().err


def test_every_probe_has_a_typed_params_model_that_accepts_its_shipped_params():
    assert set(PROBES.names()) == set(PARAMS.names())
    for name in ("knn", "linear", "diagnostics"):
        spec = resolve_protocol(name)
        PARAMS.get(spec.implementation).model_validate(spec.params)
