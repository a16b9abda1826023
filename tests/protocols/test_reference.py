"""Golden tests: the k-NN and linear probes against independent reference implementations.

k-NN: a plain-numpy weighted vote (full similarity matrix, argsort, per-query loop) and
scikit-learn's brute-force cosine KNeighborsClassifier with weights exp((1 - d) / T), which
is exp(sim / T) since the cosine distance is d = 1 - sim.
Linear: scikit-learn's LogisticRegression (lbfgs, multinomial for > 2 classes) with
C = 1 / (l2 * n), the same objective as mean CE + l2/2 ||W||^2 with an unpenalised bias.

Small fixed random arrays, so the whole file runs in a few seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from evalbench.features.artifact import Features
from evalbench.protocols import knn
from evalbench.protocols.knn import BankTooSmallError, knn_predict, torch_topk
from evalbench.protocols.linear import fit_logreg, linear_probe, objective, standardise

NUM_CLASSES = 5


# (k, T): DINO and InstDisc settings, k=1, k above the chunk size (64) and k = the whole bank (300).
SETTINGS = [(1, 0.07), (5, 0.07), (20, 0.07), (100, 0.1), (200, 0.1), (300, 0.5)]
# The search engines: torch everywhere, faiss (IndexFlatIP) where installed.
ENGINES = ["torch"] + (["faiss"] if knn.faiss is not None else [])


@pytest.fixture(scope="module")
def knn_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(NUM_CLASSES, 16))
    bank_y = rng.integers(0, NUM_CLASSES, 300)
    bank_x = (centers[bank_y] + 1.5 * rng.normal(size=(300, 16))).astype(np.float32)
    query_y = rng.integers(0, NUM_CLASSES, 100)
    query_x = (centers[query_y] + 1.5 * rng.normal(size=(100, 16))).astype(np.float32)
    return bank_x, bank_y, query_x


def reference_knn(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, *, k: int, T: float,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy, float64: predictions and (k-boundary gap, top-2 class-score gap) per query."""
    b = bank_x.astype(np.float64)
    q = query_x.astype(np.float64)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sim = q @ b.T
    k = min(k, len(b))
    order = np.argsort(-sim, axis=1, kind="stable")
    preds, gaps = [], []
    for i in range(len(q)):
        scores = np.zeros(num_classes)
        for j in order[i, :k]:
            scores[bank_y[j]] += np.exp(sim[i, j] / T)
        preds.append(int(np.argmax(scores)))
        top2 = np.sort(scores)[-2:]
        boundary = sim[i, order[i, k - 1]] - sim[i, order[i, k]] if k < len(b) else np.inf
        gaps.append((boundary, (top2[1] - top2[0]) / top2[1]))
    return np.array(preds), np.array(gaps)


def evalbench_knn(bank_x, bank_y, query_x, *, chunk: int, engine: str = "torch") -> dict[tuple[int, float], np.ndarray]:
    preds = knn_predict(torch.from_numpy(bank_x), torch.from_numpy(bank_y), torch.from_numpy(query_x),
                        settings=[{"k": k, "T": T} for k, T in SETTINGS], num_classes=NUM_CLASSES, chunk=chunk,
                        engine=engine)
    return {key: p.numpy() for key, p in preds.items()}


@pytest.mark.parametrize("engine", ENGINES)
def test_knn__matches_reference_weighted_vote(knn_data, engine):
    bank_x, bank_y, query_x = knn_data
    # chunk 64: 64 * 64 // 300 = 13 queries per block (the last one shorter); 1024: all queries at once.
    for chunk in (64, 1024):
        ours = evalbench_knn(bank_x, bank_y, query_x, chunk=chunk, engine=engine)
        assert set(ours) == set(SETTINGS)
        for k, T in SETTINGS:
            ref, gaps = reference_knn(bank_x, bank_y, query_x, k=k, T=T, num_classes=NUM_CLASSES)
            # The fixture has no near-ties (neither at the k-th neighbour nor between the two best
            # classes), so float32 vs float64 cannot legitimately flip a prediction.
            assert gaps[:, 0].min() > 1e-6 and gaps[:, 1].min() > 1e-4, (k, T)
            np.testing.assert_array_equal(ours[(k, T)], ref, err_msg=f"k={k} T={T} chunk={chunk}")
            if k <= len(bank_x):  # sklearn refuses n_neighbors > n_samples_fit
                clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine",
                                           weights=lambda d, T=T: np.exp((1.0 - d) / T))
                sk = clf.fit(bank_x.astype(np.float64), bank_y).predict(query_x.astype(np.float64))
                np.testing.assert_array_equal(ours[(k, T)], sk, err_msg=f"sklearn k={k} T={T}")
    # The settings actually disagree somewhere, so the per-setting comparison is not vacuous.
    assert not np.array_equal(ours[(1, 0.07)], ours[(300, 0.5)])


@pytest.mark.parametrize("engine", ENGINES)
def test_knn__k_above_the_bank_is_an_error_not_a_clamp(knn_data, engine):
    """A number labelled k=301 must not be computed with k=300 (DESIGN.md §7.3)."""
    bank_x, bank_y, query_x = knn_data
    with pytest.raises(BankTooSmallError, match=r"k=301 neighbours but the bank \(train \+ val\) holds only 300"):
        knn_predict(torch.from_numpy(bank_x), torch.from_numpy(bank_y), torch.from_numpy(query_x),
                    settings=[{"k": 20, "T": 0.07}, {"k": 301, "T": 0.1}], num_classes=NUM_CLASSES, engine=engine)


@pytest.mark.skipif(knn.faiss is None, reason="faiss not installed")
def test_knn__faiss_and_torch_find_the_same_neighbours(knn_data):
    bank_x, _, query_x = knn_data
    q = F.normalize(torch.from_numpy(query_x), dim=1)
    b = F.normalize(torch.from_numpy(bank_x), dim=1)
    v_t, i_t = torch_topk(q, b, 200, chunk=64)
    v_f, i_f = knn.search(q, b, 200, chunk=64, engine="faiss")
    assert torch.equal(i_t, i_f.long())
    torch.testing.assert_close(v_t, v_f, rtol=0, atol=1e-6)


def test_knn__chunk_size_does_not_change_result(knn_data):
    bank_x, bank_y, query_x = knn_data
    q = F.normalize(torch.from_numpy(query_x), dim=1)
    b = F.normalize(torch.from_numpy(bank_x), dim=1)
    full_v, full_i = (q @ b.T).topk(200, dim=1)
    base = evalbench_knn(bank_x, bank_y, query_x, chunk=1024)
    for chunk in (7, 64, 100, 101, 299, 300):
        v, i = torch_topk(q, b, 200, chunk=chunk)
        assert v.shape == i.shape == (100, 200)
        torch.testing.assert_close(v, full_v, rtol=0, atol=1e-6)
        assert torch.equal(i, full_i), chunk
        got = evalbench_knn(bank_x, bank_y, query_x, chunk=chunk)
        for key in SETTINGS:
            np.testing.assert_array_equal(got[key], base[key], err_msg=f"chunk={chunk} {key}")


@pytest.fixture(scope="module")
def linear_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(NUM_CLASSES, 16))
    y = rng.integers(0, NUM_CLASSES, 300)
    x = centers[y] + 1.5 * rng.normal(size=(300, 16))
    yt = rng.integers(0, NUM_CLASSES, 100)
    xt = centers[yt] + 1.5 * rng.normal(size=(100, 16))
    return x.astype(np.float32), y, xt.astype(np.float32), yt


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("l2", [1e-2, 1e-1])
def test_linear__matches_sklearn_logistic_regression(linear_data, l2, dtype):
    x, y, xt, yt = linear_data
    xs, xts = standardise(torch.from_numpy(x).to(dtype), torch.from_numpy(xt).to(dtype))
    tol = 1e-9 if dtype == torch.float64 else 1e-6  # max-abs gradient; float32 resolves about 1e-7
    w, b = fit_logreg(xs, torch.from_numpy(y), l2=l2, num_classes=NUM_CLASSES, max_iter=100, tol=tol)
    sk = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=10_000).fit(xs.double().numpy(), y)
    w_sk, b_sk = sk.coef_.T, sk.intercept_
    assert w_sk.shape == tuple(w.shape)  # multinomial: one column per class
    rel = np.linalg.norm(w.double().numpy() - w_sk) / np.linalg.norm(w_sk)
    assert rel < (1e-5 if dtype == torch.float64 else 1e-3), rel
    # At least as converged as sklearn at a tight tolerance: the same objective value (float64).
    x64, y64 = xs.double(), torch.from_numpy(y)
    f_ours = float(objective(w.double(), b.double(), x64, y64, l2=l2))
    f_sk = float(objective(torch.from_numpy(w_sk), torch.from_numpy(b_sk), x64, y64, l2=l2))
    assert f_ours <= f_sk + (1e-12 if dtype == torch.float64 else 1e-8), (f_ours, f_sk)
    # The bias is unpenalised, so softmax fixes it only up to a shared shift: compare centred.
    b_ours = b.double().numpy() - b.double().numpy().mean()
    np.testing.assert_allclose(b_ours, b_sk - b_sk.mean(), atol=1e-2 * np.abs(b_sk).max() + 1e-6)
    acc_ours = float(((xts @ w + b).argmax(1).numpy() == yt).mean())
    acc_sk = sk.score(xts.double().numpy(), yt)
    assert abs(acc_ours - acc_sk) <= 0.01


LINEAR_GRID = [1e-3, 1e-1, 10.0]


def nuisance_features(*, val_shifted: bool, seed: int = 0) -> Features:
    """3 classes; x = [mean_y + z, z, noise(4)] with a big nuisance z (std 3).

    With weak L2 the model learns x[:2] - x[2:4] = mean_y exactly (test is then 100% correct);
    strong L2 shrinks towards the class-mean direction, which mostly reads x[:2]. With
    val_shifted, val has a small-noise x[:2] and an unrelated x[2:4], so val prefers strong L2
    while test still prefers weak L2.
    """
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])

    def make(n: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 3
        z = 3 * rng.normal(size=(n, 2))
        first = means[y] + (0.5 * rng.normal(size=(n, 2)) if shifted else z)
        return np.concatenate([first, z, rng.normal(size=(n, 4))], 1).astype(np.float32), y.astype(np.int64)

    (xtr, ytr), (xv, yv), (xte, yte) = make(300, False), make(300, val_shifted), make(300, False)
    return Features({"train": xtr, "val": xv, "test": xte}, {"train": ytr, "val": yv, "test": yte}, 3)


def sklearn_sweep(f: Features, score_split: str) -> tuple[float, dict[float, float]]:
    """Independent sweep: same standardisation, cold-start sklearn fits, best on score_split (ties: stronger)."""
    xs, xv = (a.numpy() for a in standardise(torch.from_numpy(f.x["train"]), torch.from_numpy(f.x[score_split])))
    curve = {l2: LogisticRegression(C=1.0 / (l2 * len(xs)), max_iter=1000).fit(xs, f.y["train"]).score(xv, f.y[score_split])
             for l2 in LINEAR_GRID}
    best = max(curve.values())
    return max(l2 for l2, acc in curve.items() if acc == best), curve


def test_linear_probe__chooses_l2_on_val_not_test():
    params = {"l2_grid": LINEAR_GRID, "max_iter": 30}
    cpu = torch.device("cpu")

    f = nuisance_features(val_shifted=True)
    res = linear_probe(f, params=params, seed=0, device=cpu)
    l2_val, curve_val = sklearn_sweep(f, "val")
    l2_test, _ = sklearn_sweep(f, "test")
    assert l2_val == max(LINEAR_GRID) and l2_test == min(LINEAR_GRID)  # the fixture does what it says
    assert res.details["l2"] == l2_val
    assert res.details["refit_grad_max"] < 1e-3  # the recorded refit converged
    for l2, acc in curve_val.items():
        assert abs(res.details["val_curve"][f"{l2:g}"] - acc) <= 1 / 300 + 1e-6

    # Test labels play no part in the choice: scramble them and nothing but top1 may move.
    rng = np.random.default_rng(1)
    scrambled = Features(f.x, {**f.y, "test": rng.permutation(f.y["test"])}, f.num_classes)
    res2 = linear_probe(scrambled, params=params, seed=0, device=cpu)
    assert res2.details == res.details

    # And the choice is not just "the strongest": unshifted val prefers the weakest L2.
    g = nuisance_features(val_shifted=False)
    res3 = linear_probe(g, params=params, seed=0, device=cpu)
    assert res3.details["l2"] == sklearn_sweep(g, "val")[0] == min(LINEAR_GRID)
    assert res3.metrics["top1"] == 1.0
