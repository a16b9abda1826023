"""Datasets as uint8 image arrays; loaders are registered by name in :mod:`evalbench.data.loaders`."""
from evalbench.data.base import LOADERS, ImageArrays, SourceParts
from evalbench.data import loaders as _loaders  # noqa: F401  (registers the built-in loaders)

__all__ = ["LOADERS", "ImageArrays", "SourceParts"]
