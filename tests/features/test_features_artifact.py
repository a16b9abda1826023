"""The features artifact: a directory written whole or not at all, read back exactly or refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evalbench.features import Features, FeaturesCorruptError, features_exist, load_features, save_features


def _features(d: int = 4, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    sizes = {"train": 6, "val": 3, "test": 2}
    x = {s: rng.standard_normal((n, d)).astype(np.float32) for s, n in sizes.items()}
    y = {s: rng.integers(0, 3, n).astype(np.int64) for s, n in sizes.items()}
    return Features(x, y, num_classes=3, meta={"features_key": "abc", "extract_s": 0.5})


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".tmp-")]


def test_roundtrip(tmp_path: Path) -> None:
    d = tmp_path / "features" / "abc"
    assert load_features(d) is None and not features_exist(d)  # absent: None, not an error
    f = _features()
    assert save_features(d, f) == d and features_exist(d)
    g = load_features(d)
    assert g is not None and g.num_classes == 3 and g.meta == f.meta and g.dim == 4
    for s in ("train", "val", "test"):
        assert np.array_equal(g.x[s], f.x[s]) and g.x[s].dtype == np.float32
        assert np.array_equal(g.y[s], f.y[s]) and g.y[s].dtype == np.int64
    assert sorted(p.name for p in d.iterdir()) == ["features.npz", "meta.json"] and not _leftovers(d.parent)


def test_tensors_are_writable_copies_on_the_device() -> None:
    f = _features()
    for a in (*f.x.values(), *f.y.values()):
        a.flags.writeable = False  # as from Ray's object store
    x, y = f.tensors("train", "val", device=torch.device("cpu"))
    assert x.shape == (9, 4) and x.dtype == torch.float32 and y.dtype == torch.long
    x += 1
    assert np.array_equal(f.x["train"], _features().x["train"])


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "abc"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_features(d, _features())
    assert not d.exists() and not _leftovers(tmp_path) and load_features(d) is None


def test_invalid_features_are_refused_before_writing(tmp_path: Path) -> None:
    f = _features()
    with pytest.raises(ValueError, match="'val'.*float64"):
        save_features(tmp_path / "a", Features({**f.x, "val": f.x["val"].astype(np.float64)}, f.y, 3))
    with pytest.raises(ValueError, match="differ"):
        save_features(tmp_path / "b", Features(f.x, {"train": f.y["train"]}, 3))
    with pytest.raises(ValueError):  # meta must be JSON (no NaN)
        save_features(tmp_path / "c", Features(f.x, f.y, 3, meta={"loss": float("nan")}))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_artifact_is_kept(tmp_path: Path) -> None:
    d = tmp_path / "abc"
    save_features(d, _features(seed=0))
    save_features(d, _features(seed=1))  # same identity written again (e.g. by a concurrent job)
    assert np.array_equal(load_features(d).x["train"], _features(seed=0).x["train"]) and not _leftovers(tmp_path)


@pytest.mark.parametrize("damage", ["truncated-npz", "missing-npz", "missing-meta", "bad-meta", "wrong-dim"])
def test_damage_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "abc"
    save_features(d, _features())
    npz, meta = d / "features.npz", d / "meta.json"
    if damage == "truncated-npz":
        npz.write_bytes(npz.read_bytes()[:300])
    elif damage == "missing-npz":
        npz.unlink()
    elif damage == "missing-meta":
        meta.unlink()
    elif damage == "bad-meta":
        meta.write_text("{")
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "dim": 5}))
    bad = meta if damage in ("missing-meta", "bad-meta") else npz
    assert features_exist(d) == (damage in ("truncated-npz", "bad-meta", "wrong-dim"))
    with pytest.raises(FeaturesCorruptError, match=f"{bad}.*delete {d} to extract the features again"):
        load_features(d)
