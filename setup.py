"""Package list only; everything else is in pyproject.toml.

pyproject.toml cannot combine `packages.find` with packages that have no directory under
evalbench/, so the discovery lives here: every evalbench* package (namespace packages included,
as pyproject's packages.find would find them) plus the data-only packages evalbench._builtin.*,
whose directories (tasks/, protocols/ at the top of the repository) pyproject.toml's
[tool.setuptools.package-dir] maps.
"""
from setuptools import find_namespace_packages, setup

BUILTIN = ["evalbench._builtin.protocols", "evalbench._builtin.tasks", "evalbench._builtin.tasks.splits"]

setup(packages=sorted(find_namespace_packages(include=["evalbench", "evalbench.*"], exclude=["*__pycache__*"])) + BUILTIN)
