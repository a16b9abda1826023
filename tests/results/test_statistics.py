"""Statistics against independent computations on fixed data: McNemar from the binomial by hand, the
bootstrap from its definition, the Student-t interval from closed-form quantiles, ranks that tie
exactly where the paired test is not significant."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evalbench.protocols.bootstrap import paired_bootstrap
from evalbench.results.frame import records_to_frame
from evalbench.protocols.bootstrap import bootstrap_means
from evalbench.core.errors import EvalbenchError
from evalbench.results.statistics import cell_stats, compare, mcnemar_exact, paired_test, rank_cells
from tests.results.helpers import predicted, record, with_predictions

N = 400
Y = np.arange(N) % 10


def _correct(n_wrong: int, offset: int = 0) -> np.ndarray:
    return predicted(Y, n_wrong, offset=offset) == Y


def _mcnemar_by_hand(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar: under H0 the discordant pairs split as Binomial(b + c, 1/2)."""
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.mark.parametrize("only_a,only_b", [(9, 2), (4, 0), (30, 10), (5, 5), (0, 1)])
def test_mcnemar__equals_the_binomial_tail_by_hand(only_a, only_b):
    a = np.zeros(100, bool)
    b = np.zeros(100, bool)
    a[:only_a] = True  # examples only a gets right
    b[only_a:only_a + only_b] = True  # examples only b gets right
    a[-20:] = b[-20:] = True  # concordant examples change nothing
    assert mcnemar_exact(a, b) == pytest.approx(_mcnemar_by_hand(only_a, only_b), rel=1e-12)


def test_paired_test__a_ten_point_difference_is_significant_a_zero_one_is_not():
    a, b = _correct(40), _correct(80)  # b's errors contain a's: 40 examples only a gets right
    big = paired_test(a, b)
    assert big.diff == pytest.approx(0.1) and big.only_a == 40 and big.only_b == 0
    assert big.mcnemar_p == pytest.approx(_mcnemar_by_hand(40, 0)) and big.significant
    assert big.lower > 0 and big.p_bootstrap < 0.05
    same = paired_test(a, a.copy())
    assert same.diff == 0 and same.mcnemar_p == 1.0 and same.p_bootstrap == 1.0 and not same.significant
    swapped = paired_test(_correct(40, offset=0), _correct(40, offset=200))  # same accuracy, other examples
    assert swapped.diff == 0 and swapped.mcnemar_p == pytest.approx(_mcnemar_by_hand(40, 40))
    assert not swapped.significant


def test_paired_test__few_discordant_examples_follow_mcnemar_not_the_percentile_bootstrap():
    a, b = _correct(40), _correct(44)  # 4 discordant examples, all for a: exact p = 2 / 2^4
    t = paired_test(a, b)
    assert t.mcnemar_p == pytest.approx(0.125) and not t.significant
    boot = paired_bootstrap(a, b)
    assert (t.diff, t.lower, t.upper) == (boot["diff"], boot["lower"], boot["upper"])  # the reused bootstrap


def test_paired_test__scores_averaged_over_seeds_use_the_paired_bootstrap():
    a = np.mean([_correct(40 + 5 * s, offset=3 * s) for s in range(3)], axis=0)
    b = np.mean([_correct(90 + 5 * s, offset=3 * s) for s in range(3)], axis=0)
    t = paired_test(a, b)
    boot = paired_bootstrap(a, b)
    assert t.mcnemar_p is None and t.significant == (boot["lower"] > 0) and t.significant
    assert t.diff == pytest.approx(a.mean() - b.mean())


def _frame(tmp_path, recs):
    return records_to_frame(recs, storage=tmp_path)


def _one(tmp_path, name, n_wrong, *, offset=0, seed=None, protocol="knn", metric="top1"):
    return with_predictions(record(name, {}, seed=seed, protocol=protocol, params={}), tmp_path, Y,
                            {metric: predicted(Y, n_wrong, offset=offset)})


def test_cell__one_run_keeps_its_records_interval(tmp_path):
    rec = _one(tmp_path, "a", 40)
    cell = cell_stats(_frame(tmp_path, [rec])).iloc[0]
    assert (cell["mean"], cell["n"], cell["interval"]) == (0.9, 1, "record") and math.isnan(cell["std"])
    assert [cell["lo"], cell["hi"]] == rec["details"]["ci95"]["top1"]


def test_cell__seeds_with_predictions_bootstrap_the_mean_over_seeds_over_test_examples(tmp_path):
    wrong = [(40, 0), (60, 13), (50, 101)]
    recs = [_one(tmp_path, "a", w, offset=o, seed=s, protocol="semisup") for s, (w, o) in enumerate(wrong)]
    cell = cell_stats(_frame(tmp_path, recs)).iloc[0]
    per_example = np.mean([_correct(w, o) for w, o in wrong], axis=0)  # fraction of seeds right, per example
    rng = np.random.default_rng(0)  # the documented draws: 1000 resamples of N examples, seed 0
    means = np.array([per_example[rng.integers(0, N, N)].mean() for _ in range(1000)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    accs = [1 - w / N for w, _ in wrong]
    assert cell["interval"] == "bootstrap-seeds" and cell["n"] == 3
    assert cell["mean"] == pytest.approx(sum(accs) / 3)
    assert cell["std"] == pytest.approx(math.sqrt(sum((x - sum(accs) / 3) ** 2 for x in accs) / 2))
    assert (cell["lo"], cell["hi"]) == pytest.approx((lo, hi))


def test_cell__seeds_without_predictions_get_a_t_interval_over_seeds(tmp_path):
    values = [0.80, 0.84, 0.85]
    recs = [record("a", {"top1": v}, seed=s, protocol="fewshot", params={}, ci95={"top1": [v - 0.01, v + 0.01]})
            for s, v in enumerate(values)]
    cell = cell_stats(_frame(tmp_path, recs)).iloc[0]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    p = 0.975  # Student t with 2 df has the closed-form quantile (2p - 1) / sqrt(2 p (1 - p))
    half = (2 * p - 1) / math.sqrt(2 * p * (1 - p)) * std / math.sqrt(3)
    assert cell["interval"] == "t-seeds"
    assert (cell["mean"], cell["std"], cell["lo"], cell["hi"]) == pytest.approx((mean, std, mean - half, mean + half))


def test_cell__runs_on_other_test_examples_are_not_pooled_per_example(tmp_path):
    a = _one(tmp_path, "a", 40, seed=0, protocol="semisup")
    other = with_predictions(record("a", {}, seed=1, protocol="semisup", params={}), tmp_path, Y[::-1],
                             {"top1": predicted(Y[::-1], 40)})
    assert cell_stats(_frame(tmp_path, [a, other])).iloc[0]["interval"] == "t-seeds"


def _ranks(tmp_path, recs):
    cells = rank_cells(cell_stats(_frame(tmp_path, recs)))
    return cells.set_index("checkpoint")


def test_rank__not_significant_differences_share_the_rank_of_the_best(tmp_path):
    # a: 90.0%; b: 89.0% (4 discordant, McNemar p = 0.125: tied); c: 75.0% (significantly behind both)
    ranks = _ranks(tmp_path, [_one(tmp_path, "a", 40), _one(tmp_path, "b", 44), _one(tmp_path, "c", 100)])
    assert ranks["rank"].to_dict() == {"a": 1, "b": 1, "c": 3}
    assert ranks["best"].to_dict() == {"a": True, "b": False, "c": False}
    assert ranks["tied_with_best"].to_dict() == {"a": False, "b": True, "c": False}
    assert ranks["rank_basis"].to_dict() == {"a": None, "b": "paired", "c": "paired"}


def test_rank__is_one_plus_the_checkpoints_significantly_better_by_the_pairwise_tests(tmp_path):
    wrong = {"a": 20, "b": 40, "c": 44, "d": 90}  # nested errors: discordant counts are the differences
    recs = [_one(tmp_path, k, w) for k, w in wrong.items()]
    ranks = _ranks(tmp_path, recs)["rank"].to_dict()
    for c, wc in wrong.items():
        better = sum(wd < wc and _mcnemar_by_hand(wc - wd, 0) < 0.05 for d, wd in wrong.items() if d != c)
        assert ranks[c] == 1 + better
    assert ranks == {"a": 1, "b": 2, "c": 2, "d": 4}


def test_rank__over_seeds_agrees_with_paired_bootstrap_pair_by_pair(tmp_path):
    spec = {"a": 40, "b": 46, "c": 70}
    recs = [_one(tmp_path, k, w + 4 * s, offset=5 * s, seed=s, protocol="semisup") for k, w in spec.items()
            for s in range(3)]
    ranks = _ranks(tmp_path, recs)["rank"].to_dict()
    scores = {k: np.mean([_correct(w + 4 * s, 5 * s) for s in range(3)], axis=0) for k, w in spec.items()}
    for c in spec:
        better = sum(paired_bootstrap(scores[d], scores[c])["lower"] > 0 for d in spec if d != c)
        assert ranks[c] == 1 + better


def test_rank__without_predictions_falls_back_to_overlapping_intervals(tmp_path):
    recs = [record("a", {"top1": 0.90}, ci95={"top1": [0.87, 0.93]}),
            record("b", {"top1": 0.88}, ci95={"top1": [0.85, 0.91]}),  # overlaps a: tied
            record("c", {"top1": 0.70}, ci95={"top1": [0.65, 0.75]}),  # below both: rank 3
            record("d", {"top1": 0.60})]  # no interval, no predictions: nothing can be said
    ranks = _ranks(tmp_path, recs)
    assert ranks.loc[["a", "b", "c"], "rank"].tolist() == [1, 1, 3]
    assert ranks.loc["a", "rank_basis"] is None and ranks.loc["b", "rank_basis"] == "intervals"  # d is below them
    assert ranks.loc["d", "rank"] is pd.NA and ranks.loc["d", "rank_basis"] == "none"
    assert not ranks.loc["d", "tied_with_best"]


def test_rank__only_accuracy_metrics_are_ranked(tmp_path):
    recs = [record(n, {"collapse_std": v}, protocol="diagnostics", params={}) for n, v in (("a", 0.5), ("b", 0.9))]
    ranks = _ranks(tmp_path, recs)
    assert ranks["rank"].isna().all() and not ranks["best"].any()


@pytest.mark.parametrize("n", [7, 400, 9000])  # 9000: several blocks of draws
def test_bootstrap_means__equal_the_means_of_the_resampled_examples(n):
    """The counts-based means equal the definition: gather each resample's examples, then average."""
    from evalbench.protocols.bootstrap import BLOCK, RESAMPLES, SEED
    scores = np.random.default_rng(3).integers(0, 4, size=(5, n)) / 3  # fractions of 3 seeds right
    rng, per_block, reference = np.random.default_rng(SEED), max(1, BLOCK // n), []
    for start in range(0, RESAMPLES, per_block):
        idx = rng.integers(0, n, size=(min(per_block, RESAMPLES - start), n))
        reference.append(scores[:, idx].mean(axis=2))
    assert np.allclose(bootstrap_means(scores), np.concatenate(reference, axis=1), rtol=0, atol=1e-12)


def test_cell__predictions_that_do_not_give_the_records_value_are_not_used(tmp_path):
    recs = [_one(tmp_path, "a", 40 + 10 * s, seed=s, protocol="semisup") for s in range(2)]
    recs[1]["metrics"]["top1"] = 0.5  # the record says 50%, its predictions file 87.5%: not this record's
    cell = cell_stats(_frame(tmp_path, recs)).iloc[0]
    assert cell["interval"] == "t-seeds" and cell["scores"] is None and cell["mean"] == pytest.approx(0.7)


def test_compare__pairs_two_checkpoints_of_a_column_and_says_when_it_cannot(tmp_path):
    recs = [_one(tmp_path, "a", 40), _one(tmp_path, "b", 80), record("c", {"top1": 0.5}, params={})]
    cells = cell_stats(_frame(tmp_path, recs))
    t = compare(cells, "a", "b", task="digits", protocol="knn@1", metric="top1")
    assert t == paired_test(_correct(40), _correct(80)) and t.significant
    with pytest.raises(EvalbenchError, match="no per-example predictions"):
        compare(cells, "a", "c", task="digits", protocol="knn@1", metric="top1")
    with pytest.raises(EvalbenchError, match="zzz / digits / knn@1 / top1: no cell; checkpoints in that column: a, b, c"):
        compare(cells, "a", "zzz", task="digits", protocol="knn@1", metric="top1")
