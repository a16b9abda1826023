"""The transfer table (results/transfer.py) on records built here: source -> target cells are means
over seeds, the mean runs over the targets other than the source, and a source no checkpoint names
is an error."""
from __future__ import annotations

import pytest

from evalbench.core.errors import EvalbenchError
from evalbench.results.transfer import MEAN, render_transfer, source_of, transfer_matrix


def rec(ckpt: str, target: str, protocol: str, value: float, *, seed=None, meta=None, impl=None, created="1"):
    metric = "top1_k20_T0.07" if protocol == "knn" else "top1"
    return {"status": "ok", "checkpoint": {"name": ckpt, "meta": meta or {}}, "task": {"name": target},
            "protocol": {"name": protocol, "version": 1, "implementation": impl or protocol, "params": {}},
            "seed": seed, "metrics": {metric: value, "other": 0.0}, "created": created}


ON_DIGITS = {"pretrained_on": "digits"}
ON_MNIST = {"pretrain": {"method": "simclr", "task": "mnist5k"}}  # evalbench-pretrained: from its metadata

RECORDS = [
    rec("a", "digits", "linear", 0.90, meta=ON_DIGITS), rec("a", "mnist5k", "linear", 0.80, meta=ON_DIGITS),
    rec("a", "fashion-mnist", "linear", 0.70, meta=ON_DIGITS),
    rec("a", "mnist5k", "knn", 0.60, meta=ON_DIGITS),
    rec("a", "mnist5k", "semisup_1pct", 0.40, seed=0, impl="finetune", meta=ON_DIGITS),
    rec("a", "mnist5k", "semisup_1pct", 0.50, seed=1, impl="finetune", meta=ON_DIGITS),
    rec("b", "digits", "linear", 0.85, meta=ON_MNIST), rec("b", "mnist5k", "linear", 0.95, meta=ON_MNIST),
    rec("b", "mnist5k", "linear", 0.97, meta=ON_MNIST, created="2"),  # newer: replaces the one above
    rec("r", "digits", "linear", 0.99),  # random init: names no source, left out
    rec("a", "digits", "diagnostics", 0.5, meta=ON_DIGITS),  # not a transfer protocol
]


def test_transfer__source_from_the_suite_or_the_pretraining_metadata():
    assert source_of({"meta": ON_DIGITS}) == "digits" and source_of({"meta": ON_MNIST}) == "mnist5k"
    assert source_of({"meta": {}}) is None


def test_transfer__cells_are_means_over_seeds_and_the_mean_skips_the_source():
    w = transfer_matrix(RECORDS)
    assert w.loc[("digits", "a", "linear top1"), "mnist5k"] == pytest.approx(0.80)
    assert w.loc[("digits", "a", "linear top1"), MEAN] == pytest.approx((0.80 + 0.70) / 2)
    assert w.loc[("digits", "a", "semisup_1pct top1"), "mnist5k"] == pytest.approx(0.45)
    assert w.loc[("digits", "a", "knn top1_k20_T0.07"), "mnist5k"] == pytest.approx(0.60)
    assert w.loc[("mnist5k", "b", "linear top1"), "mnist5k"] == pytest.approx(0.97)
    assert w.loc[("mnist5k", "b", "linear top1"), MEAN] == pytest.approx(0.85)
    assert "r" not in w.index.get_level_values("checkpoint")
    assert not any("diagnostics" in p for p in w.index.get_level_values("protocol"))


def test_transfer__other_params_of_one_protocol_are_another_row():
    other = rec("a", "mnist5k", "semisup_1pct", 0.9, seed=0, impl="finetune", meta=ON_DIGITS)
    other["protocol"]["params"] = {"epochs": 99}
    rows = list(transfer_matrix([*RECORDS, other]).index.get_level_values("protocol"))
    assert sum(r.startswith("semisup_1pct top1 #") for r in rows) == 2


def test_transfer__rendered_with_the_in_domain_cell_marked():
    text = render_transfer(RECORDS, source="digits")
    assert "digits → a / linear top1" in text and "90.0 *" in text and "75.0" in text and "mnist5k → " not in text
    assert render_transfer(RECORDS, fmt="csv").startswith("source → checkpoint / protocol,")


def test_transfer__a_source_no_checkpoint_names_is_an_error():
    with pytest.raises(EvalbenchError, match="'cifar10'.*no checkpoint was pretrained on it.*digits, mnist5k"):
        render_transfer(RECORDS, source="cifar10")
    with pytest.raises(EvalbenchError, match="pretrained_on"):
        render_transfer([rec("r", "digits", "linear", 0.9)])


def test_transfer__pretrained_on_in_a_suite_entry_is_checked_and_kept_in_meta(tmp_path):
    from evalbench.core.errors import ConfigError
    from evalbench.specs.checkpoint import parse_checkpoint

    entry = {"name": "c", "arch": "builtin:small-cnn", "init": "random", "preprocessing": {"in_chans": 1}}
    spec = parse_checkpoint({**entry, "pretrained_on": "mnist5k"}, where="s.yaml: checkpoints[0]", base_dir=tmp_path)
    assert spec.meta["pretrained_on"] == "mnist5k"
    with pytest.raises(ConfigError, match="pretrained_on"):
        parse_checkpoint({**entry, "pretrained_on": 3}, where="s.yaml: checkpoints[0]", base_dir=tmp_path)
