"""Extraction views (DESIGN.md §4): what a protocol sees of a task's images, e.g. the images
as they are (``identity``) or transformed copies with new labels (rotation prediction).

A view maps an :class:`ImageSource` to another (lazily: it must not decode the images) and
carries a ``version`` that enters the feature identity, so changing what a view does never
reuses features extracted by its older code. List them with ``evalbench list views``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from evalbench.core.registry import Registry
from evalbench.data.base import ImageSource


@dataclass(frozen=True)
class View:
    """``apply(source) -> source``: may change images and labels, never decodes eagerly."""

    apply: Callable[[ImageSource], ImageSource]
    version: int
    description: str


VIEWS: Registry[View] = Registry("extraction view", "evalbench list views")


def _identity(source: ImageSource) -> ImageSource:
    return source


VIEWS.register("identity")(View(apply=_identity, version=1, description="the task's images and labels, unchanged"))
