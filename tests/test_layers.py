"""The package's imports run one way (DESIGN.md §1): each package imports only packages of its
own or a lower layer, so suite -> plan -> executor -> store -> report never loops back, the
registry is the bottom layer, Ray is imported only by the executor (and by run/train_ray.py,
which starts Ray Train's data-parallel workers), and matplotlib only by the report module."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "evalbench"

# lower layers first; a package may import its own layer and the ones above it in this list
LAYERS = [
    {"core"},
    {"data", "encoders", "checkpoints"},
    {"features"},
    {"protocols"},
    {"specs"},
    {"pretrain"},
    {"results"},
    {"run"},
    {"default", "cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "evalbench" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module imported anywhere in the file (function-level imports included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def _own_package(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_layers__every_module_has_a_layer():
    owners = {_own_package(p) for p in PKG.rglob("*.py")} - {"__init__"}
    assert owners <= set(RANK), f"add {owners - set(RANK)} to LAYERS"


def test_layers__imports_only_point_down():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        own = _own_package(path)
        if own == "__init__":
            continue
        for module, line in _imports(path):
            target = _package_of(module)
            if target and target in RANK and RANK[target] > RANK[own]:
                wrong.append(f"{path.relative_to(PKG.parent)}:{line} ({own}) imports {module} ({target})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_layers__ray_only_in_the_executor_and_ray_train():
    users = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py")
                   if any(m == "ray" or m.startswith("ray.") for m, _ in _imports(p)))
    assert users == ["evalbench/run/executors.py", "evalbench/run/train_ray.py"]


def test_layers__matplotlib_only_in_the_report_module():
    users = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py")
                   if any(m == "matplotlib" or m.startswith("matplotlib.") for m, _ in _imports(p)))
    assert users == ["evalbench/results/report.py"]


def test_layers__the_driver_imports_no_training_stack():
    """`evalbench run` plans and schedules without torchvision or timm (1.4 s of imports on a 2-core host,
    paid before Ray starts): the stages that train or extract import them in the workers."""
    import subprocess
    import sys

    code = ("import sys, evalbench.cli, evalbench.default, evalbench.run.runner, evalbench.run.plan, "
            "evalbench.run.executors, evalbench.results.tables; "
            "print(sorted(m for m in ('torchvision', 'timm', 'evalbench.pretrain.trainer', 'evalbench.run.train_ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout.strip()
    assert out == "[]", out
