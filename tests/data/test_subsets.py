"""Label subsets for the fine-tuning protocols (data/subsets.py): balanced, nested, deterministic,
identical to the committed files; bad fractions are errors before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evalbench.core.errors import ConfigError
from evalbench.data.subsets import (check_fraction, draw_indices, make_subsets, read_subsets_file, select_subset,
                                    write_subsets_file)
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.subsets import subset_plan_payload, task_subsets_path
from evalbench.specs.task import data_status, load_task, read_task_split, resolve_task

RNG = np.random.default_rng(0)
LABELS = RNG.permutation(np.repeat(np.arange(10), [120, 130, 125, 110, 140, 115, 128, 122, 133, 117]))


def test_subsets__class_balanced():
    doc = make_subsets(LABELS, num_classes=10, task="t", split_sha256="x")
    for key, entry in doc["fractions"].items():
        k = entry["per_class"]
        assert k == max(1, round(float(key) * len(LABELS) / 10))
        for ix in entry["indices"]:
            assert np.array_equal(np.bincount(LABELS[ix], minlength=10), np.full(10, k))
            assert len(set(ix)) == len(ix) and ix == sorted(ix)


def test_subsets__one_percent_inside_ten_percent_of_the_same_draw():
    doc = make_subsets(LABELS, num_classes=10, task="t", split_sha256="x", draws=3)
    one, ten = doc["fractions"]["0.01"]["indices"], doc["fractions"]["0.1"]["indices"]
    for d in range(3):
        assert set(one[d]) < set(ten[d])
    assert len({tuple(ix) for ix in ten}) == 3  # the draws differ


def test_subsets__deterministic_and_written_identically(tmp_path):
    a = make_subsets(LABELS, num_classes=10, task="t", split_sha256="x")
    b = make_subsets(LABELS.copy(), num_classes=10, task="t", split_sha256="x")
    assert a == b
    write_subsets_file(tmp_path / "a.json", a)
    write_subsets_file(tmp_path / "b.json", b)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert read_subsets_file(tmp_path / "a.json") == json.loads(json.dumps(a))


def test_subsets__one_per_class_where_the_fraction_would_leave_a_class_empty():
    labels = np.repeat(np.arange(10), 20)  # 200 images: 1% = 0.2 per class
    entry = make_subsets(labels, num_classes=10, task="t", split_sha256="x")["fractions"]["0.01"]
    assert entry["min_one_per_class"] is True and entry["per_class"] == 1
    assert all(np.array_equal(np.bincount(labels[ix], minlength=10), np.ones(10)) for ix in entry["indices"])


def test_subsets__full_fraction_is_the_whole_split():
    assert np.array_equal(draw_indices(LABELS, fraction=1.0, draw=2, num_classes=10), np.arange(len(LABELS)))


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.1", None])
def test_subsets__a_fraction_outside_0_1_is_an_error(bad):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        check_fraction(bad)


@pytest.mark.parametrize("bad", [0, 1.5, -1])
def test_subsets__a_protocol_fraction_outside_0_1_is_an_error_at_parse_time(bad):
    with pytest.raises(ConfigError, match="label_fraction"):
        resolve_protocol("semisup_1pct").with_params({"label_fraction": bad}, where="suite.yaml: protocols[0]")


def test_subsets__an_empty_lr_grid_is_an_error_at_parse_time():
    with pytest.raises(ConfigError, match="lr_grid"):
        resolve_protocol("finetune_100pct").with_params({"lr_grid": []}, where="suite.yaml: protocols[0]")


def test_subsets__a_file_made_for_other_splits_is_refused(tmp_path):
    doc = make_subsets(LABELS, num_classes=10, task="t", split_sha256="old")
    with pytest.raises(ConfigError, match="other splits"):
        select_subset(LABELS, fraction=0.1, draw=0, num_classes=10, split_sha256="new", doc=doc, where="f")


def test_subsets__a_seed_without_a_stored_draw_is_a_planning_error():
    with pytest.raises(ConfigError, match="draw 3"):
        subset_plan_payload(resolve_task("digits"), fraction=0.01, draw=3)
    assert subset_plan_payload(resolve_task("digits"), fraction=1.0, draw=7)["file_sha256"] is None


@pytest.mark.parametrize("name", ["digits", "mnist5k", "fashion-mnist"])
def test_subsets__committed_files_are_what_the_algorithm_makes(name, tmp_path):
    spec = resolve_task(name)
    if data_status(spec) != "ready":
        pytest.skip(f"{name}: data not on this machine")
    stored = task_subsets_path(spec)
    assert stored.is_file(), f"commit {stored} (`evalbench subsets {name}`)"
    labels = np.asarray(load_task(spec).train.labels)
    doc = make_subsets(labels, num_classes=spec.num_classes, task=spec.name, split_sha256=read_task_split(spec)[1])
    assert (write_subsets_file(tmp_path / "s.json", doc)).read_bytes() == stored.read_bytes()
    for d in range(3):  # the stored draws are what the record's computed path would give
        idx, info = select_subset(labels, fraction=0.01, draw=d, num_classes=spec.num_classes,
                                  split_sha256=doc["split_sha256"], doc=None, where="-")
        assert idx.tolist() == doc["fractions"]["0.01"]["indices"][d] and info["source"] == "computed"
