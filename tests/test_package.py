"""Packaging: a non-editable wheel carries the built-in tasks and protocols and runs from anywhere.

The wheel is built from a copy of the source tree (setuptools' build/ directory must not collect
stale modules from the shared checkout) and installed into a fresh venv that lives inside a
temporary git repository with a commit: the records of the installed package must not report that
repository's revision. The fresh venv sees this interpreter's dependencies through a .pth file
(paths only: the editable install's finder in this interpreter's site-packages is not run), so
nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)

_IGNORE_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
_IGNORE_AT_ROOT = {".git", ".venv", "venv", "build", "dist", "results", ".ci"}


def _copy_ignore(d: str, names: list[str]) -> set[str]:
    top = set(names) & _IGNORE_AT_ROOT if Path(d) == ROOT else set()
    return top | _IGNORE_ANYWHERE(d, names)


BUILTIN = {"tasks": "*.yaml", "tasks/splits": "*.json", "protocols": "*.yaml"}
PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5]}


def _sh(cmd: list, *, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"{p.args} -> rc {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    return p.stdout


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return _ok(_sh(["git", "-c", "user.name=evalbench-test", "-c", "user.email=test@example.invalid",
                    "-c", "commit.gpgsign=false", *args], cwd=repo, env=env)).strip()


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "EVALBENCH_TASKS_DIR", "EVALBENCH_PROTOCOLS_DIR")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", TQDM_DISABLE="1", PYTHONNOUSERSITE="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not running from a source tree")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_copy_ignore, symlinks=True)
    env = {**_clean_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _ok(_sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
             "-w", tmp / "dist", src], cwd=tmp, env=env, timeout=600))
    (whl,) = (tmp / "dist").glob("evalbench-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv inside a git repository with one commit, the wheel installed in it."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to build the enclosing repository")
    outer = tmp_path_factory.mktemp("outer-repo")
    _git(outer, "init", "-q")
    (outer / "README").write_text("some other project\n")
    _git(outer, "add", "README")
    _git(outer, "commit", "-q", "-m", "other project")
    outer_sha = _git(outer, "rev-parse", "HEAD")

    venv = outer / "venv"
    _ok(_sh([sys.executable, "-m", "venv", "--without-pip", venv], cwd=outer))
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_ok(_sh([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=outer)).strip())
    deps = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))  # this interpreter's, in order
    (site / "zz_evalbench_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    _ok(_sh([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
            cwd=outer, env={**_clean_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}))
    work = outer / "work"  # the commands run from here: inside the other repository, far from this checkout
    work.mkdir()
    exe = venv / ("Scripts/evalbench.exe" if os.name == "nt" else "bin/evalbench")
    assert exe.exists()
    return {"py": py, "exe": exe, "site": site, "work": work, "outer_sha": outer_sha, "env": _clean_env()}


def test_wheel__ships_every_package_and_the_builtin_yaml(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names} == {"evalbench", wheel.name.split("-py")[0] + ".dist-info"}
    for d, pattern in BUILTIN.items():  # every built-in file, at evalbench/_builtin/<same relative path>
        files = sorted((ROOT / d).glob(pattern))
        assert files, f"no {d}/{pattern} in the checkout"
        for f in files:
            assert f"evalbench/_builtin/{d}/{f.name}" in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "evalbench").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources - names == set(), "modules missing from the wheel (package discovery)"
    assert {n for n in names if n.endswith(".py")} - sources == set(), "modules in the wheel that the checkout lacks"


def test_installed__imports_and_resources_from_the_venv(installed):
    code = ("import json, evalbench; from evalbench.core import paths, env; "
            "print(json.dumps({'file': evalbench.__file__, 'repo': paths.REPO_DIR and str(paths.REPO_DIR), "
            "'tasks': str(paths.TASKS_DIR), 'protocols': str(paths.PROTOCOLS_DIR), 'code': env.code_version()}))")
    info = json.loads(_ok(_sh([installed["py"], "-c", code], cwd=installed["work"], env=installed["env"])))
    pkg = installed["site"] / "evalbench"
    assert Path(info["file"]) == pkg / "__init__.py"
    assert info["repo"] is None
    assert Path(info["tasks"]) == pkg / "_builtin" / "tasks" and (Path(info["tasks"]) / "digits.yaml").is_file()
    assert Path(info["protocols"]) == pkg / "_builtin" / "protocols"
    assert info["code"] == {"evalbench": info["code"]["evalbench"], "git": None}


def test_installed__list_tasks_and_protocols(installed):
    run = lambda *a: _ok(_sh([installed["exe"], *a], cwd=installed["work"], env=installed["env"], timeout=120))
    tasks = {line.split()[0]: line.split() for line in run("list", "tasks").splitlines() if line.strip()}
    for name in ("digits", "mnist5k", "fashion-mnist", "cifar10", "cifar100", "stl10"):
        assert name in tasks and {"ready", "missing"} & set(tasks[name]), tasks
    assert "ready" in tasks["digits"]  # scikit-learn's digits ship with scikit-learn
    protocols = {line.split()[0] for line in run("list", "protocols").splitlines() if line.strip()}
    assert {"knn", "linear"} <= {p.split("@")[0] for p in protocols}


def test_installed__tiny_run_records_no_foreign_git_revision(installed):
    work = installed["work"]
    suite = work / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "checkpoints": [{"name": "random", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}],
        "tasks": ["digits"], "protocols": ["knn"], "seeds": [0]}, sort_keys=False))
    _ok(_sh([installed["exe"], "run", suite, "--executor", "local", "--results", work / "R"],
            cwd=work, env=installed["env"], timeout=300))
    records = sorted((work / "R" / "records").glob("*.json"))
    assert len(records) == 1
    text = records[0].read_text()
    record = json.loads(text)
    assert record["status"] == "ok"
    outer = installed["outer_sha"]
    assert outer[:7] not in text, "the record carries the enclosing repository's commit"
    holders = [h for h in (record.get("env"), record.get("code")) if isinstance(h, dict) and "git" in h]
    assert holders, "the record has no git revision field (env.git)"
    assert all(h["git"] is None for h in holders)  # an installed package has no revision of its own
