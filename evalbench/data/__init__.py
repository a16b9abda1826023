"""Datasets as image sources (DESIGN.md §4): registered loaders (:data:`LOADERS`) give each
dataset's parts as :class:`ImageSource` objects whose labels are known without decoding;
:mod:`evalbench.data.splits` carves train/val/test out of them; :data:`VIEWS` are what a
protocol extracts features from."""
from evalbench.data.base import LOADERS, ArraySource, ImageSource, Loader, SourceParts, SubsetSource
from evalbench.data import loaders as _loaders  # noqa: F401  (registers the packaged datasets)
from evalbench.data import disk as _disk  # noqa: F401  (registers Fashion-MNIST, CIFAR, STL-10)
from evalbench.data.folder import FolderSource
from evalbench.data.splits import SplitSets, apply_split, make_split, read_split_file, write_split_file
from evalbench.data.views import VIEWS, View

__all__ = [
    "LOADERS", "Loader", "ImageSource", "ArraySource", "SubsetSource", "FolderSource", "SourceParts",
    "SplitSets", "apply_split", "make_split", "read_split_file", "write_split_file", "VIEWS", "View",
]
