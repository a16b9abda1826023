"""The leaderboard's plots (results/report.py): which plots the records give, their bytes are the same
for the same records (no dates, no software tags, fixed SVG ids, seeded t-SNE), ablation points are
means over pretraining seeds, and t-SNE reads the features artifact (errors say how to fix)."""
from __future__ import annotations


import numpy as np
import pytest

from evalbench.core.errors import EvalbenchError
from evalbench.features.artifact import Features, save_features
from evalbench.results.cells import leaderboard_cells
from evalbench.results.record import Record
from evalbench.results.report import ablation_points, label_fraction_points, make_plots, tsne_embedding, varying_knobs
from tests.results.test_leaderboard import fixture_records, record


def sweep_record(point: int, temperature: float, batch: int, seed: int, value: float, *, knobs_extra=None) -> Record:
    r = record("a", "knn", {"top1_k20_T0.07": value, "top1_k200_T0.1": value - 0.1}).to_dict()
    name = f"p{point} s{seed}"
    knobs = {"method": "simclr", "seed": seed, "loss.temperature": temperature, "batch_size": batch, **(knobs_extra or {})}
    r["key"] = f"sweep-{point}-{seed}"
    r["checkpoint"] = {**r["checkpoint"], "name": name, "sha256": None, "weights": {"stage": f"{point}{seed}"},
                       "meta": {"pretrain": {"method": "simclr", "seed": seed, "knobs": knobs},
                                "sweep": {"name": "t-x-b", "point": point, "label": name, "base": point == 0,
                                          "overrides": {"loss.temperature": temperature, "batch_size": batch},
                                          "seed": seed}}}
    return Record.from_dict(r)


def grid_records(*, batches=(32, 64)) -> list[Record]:
    """A temperature x batch-size grid, two pretraining seeds per point: value = 0.5 + t + b / 1000 + seed / 100."""
    out, point = [], 0
    for t in (0.1, 0.5):
        for b in batches:
            out += [sweep_record(point, t, b, s, 0.5 + t + b / 1000 + s / 100) for s in (0, 1)]
            point += 1
    return out


def test_report__label_fraction_plot_only_where_fine_tuning_records_are():
    plots = make_plots(leaderboard_cells(fixture_records()))
    assert [p.name for p in plots] == ["label-fraction", "ablation-simclr-pretraining-digits"]
    knn_only = [r for r in fixture_records() if r.protocol["name"] == "knn" and r.checkpoint["name"] != "b"]
    assert make_plots(leaderboard_cells(knn_only)) == []
    label = plots[0]
    assert label.png.startswith(b"\x89PNG") and label.svg.lstrip().startswith(b"<?xml")
    assert "1%, 10% and 100%" in label.caption and "std over draws" in label.caption


def test_report__label_fraction_points_are_the_fine_tuning_means_over_draws():
    """The plotted points: per task and checkpoint, (label fraction, mean top-1 over the draws) by fraction
    (fixture: top-1 = v (0.5 + 0.2 i) + 0.01 seed for the i-th fraction, seeds 0 and 1)."""
    points = label_fraction_points(leaderboard_cells(fixture_records()))
    assert list(points) == ["digits"] and list(points["digits"]) == ["a", "b", "base", "sup"]
    for name, v in {"base": 0.80, "sup": 0.97, "a": 0.93, "b": 0.90}.items():
        pts = points["digits"][name]
        assert [f for f, _ in pts] == [0.01, 0.1, 1.0]
        assert [c.mean for _, c in pts] == pytest.approx([v * (0.5 + 0.2 * i) + 0.005 for i in range(3)])
        assert all(c.n == 2 and c.std == pytest.approx(0.01 / 2 ** 0.5) for _, c in pts)


def test_report__the_same_records_give_the_same_bytes():
    recs = fixture_records() + grid_records()
    first, second = make_plots(leaderboard_cells(recs)), make_plots(leaderboard_cells(list(reversed(recs))))
    assert [(p.name, p.png, p.svg) for p in first] == [(p.name, p.png, p.svg) for p in second]
    for p in first:
        assert b"Software" not in p.png and b"<dc:date>" not in p.svg and b"matplotlib.org" not in p.svg


def test_report__two_knobs_give_a_heatmap_of_means_over_seeds():
    cells = leaderboard_cells(grid_records())
    assert varying_knobs([c.records[0] for c in cells]) == ["batch_size", "loss.temperature"]
    k20 = [c for c in cells if c.metric == "top1_k20_T0.07"]
    points = ablation_points(k20, ["batch_size", "loss.temperature"])
    assert len(points) == 4
    p = points[("32", "0.1")]
    assert p.n == 2 and p.mean == pytest.approx(100 * (0.5 + 0.1 + 0.032 + 0.005))
    assert p.std == pytest.approx(100 * np.std([0.0, 0.01], ddof=1))
    (plot,) = make_plots(cells)
    assert plot.name == "ablation-sweep-t-x-b-digits" and "heatmap" in plot.caption


def test_report__one_knob_gives_a_line_and_more_give_a_panel_per_knob():
    (one,) = make_plots(leaderboard_cells(grid_records(batches=(64,))))
    assert "against the knob that varies" in one.caption
    three = grid_records() + [sweep_record(9, 0.1, 32, 0, 0.7, knobs_extra={"head.out_dim": 32})]
    (many,) = make_plots(leaderboard_cells(three))
    assert "against each knob that varies" in many.caption


def _features_store(tmp_path, identity: str):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + rng.normal(size=(120, 16))).astype(np.float32)
    feats = Features({"train": x[:6], "test": x}, {"train": y[:6].astype(np.int64), "test": y.astype(np.int64)}, 3)
    save_features(tmp_path / "artifacts" / "features" / identity, feats)
    return x, y


def _with_features(identity: str) -> list[Record]:
    out = []
    for r in fixture_records():
        if r.checkpoint["name"] == "a" and r.protocol["name"] == "knn" and r.task["name"] == "digits":
            d = r.to_dict()
            d["details"]["features"] = {"identity": identity, "view": "identity"}
            r = Record.from_dict(d)
        out.append(r)
    return out


def test_report__tsne_of_a_checkpoints_test_features(tmp_path):
    x, y = _features_store(tmp_path, "f" * 32)
    emb = tsne_embedding(x)
    assert np.array_equal(emb, tsne_embedding(x))  # seeded, one thread: the same embedding
    centres = np.stack([emb[y == c].mean(0) for c in range(3)])
    nearest = np.argmin(((emb[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.95  # well-separated classes stay separated
    cells = leaderboard_cells(_with_features("f" * 32))
    plots = make_plots(cells, storage=tmp_path, tsne=["a"])
    tsne = plots[-1]
    assert tsne.name == "tsne-a" and "digits: 120 images" in tsne.caption
    assert tsne.png == make_plots(cells, storage=tmp_path, tsne=["a"])[-1].png


def test_report__tsne_errors_say_what_to_do(tmp_path):
    cells = leaderboard_cells(_with_features("e" * 32))
    with pytest.raises(EvalbenchError, match=r"no ok record of that checkpoint has extracted features; known "
                                             r"checkpoints: a, b, base, sup"):
        make_plots(cells, storage=tmp_path, tsne=["nope"])
    with pytest.raises(EvalbenchError, match="pass the --storage the run used"):
        make_plots(cells, storage=tmp_path, tsne=["a"])
