"""Fine-tuning (pretrain/finetune.py, the train stage of semisup_1pct / semisup_10pct / finetune_100pct)
on digits at 8x8: it changes the encoder's weights, chooses the lr on val, and with every label it
beats the frozen linear probe of the same random-init encoder; LP-FT's head is scikit-learn's logistic
regression of the frozen features."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from evalbench.core.errors import EvalbenchError
from evalbench.encoders import build_encoder
from evalbench.protocols import PROBES
from evalbench.protocols.finetune import FinetuneParams
from evalbench.pretrain.finetune import Classifier, finetune, logistic_head, optimizer
from evalbench.specs.checkpoint import CheckpointSpec, RandomWeights, parse_data_config
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.subsets import task_subset
from evalbench.specs.task import resolve_task

CPU = torch.device("cpu")
ARCH = "builtin:small-cnn"
DATA = parse_data_config(ARCH, {"in_chans": 1, "mean": [0.5], "std": [0.5]}, where="test")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread, as a 1-CPU stage gets (run/worker.py stage_threads): on a busy 2-core host two threads
    made the 100% fine-tuning test 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return resolve_task("digits")


def _encoder(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_encoder(ARCH, in_chans=1)


def _params(name: str, **over) -> dict:
    return resolve_protocol(name).with_params({"min_steps": 0, **over}, where="test").params


def test_finetune__changes_the_encoder_weights_and_not_the_input_encoder(digits):
    sets, idx, info = task_subset(digits, fraction=0.1, draw=0)
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    r = finetune(enc, sets, idx, num_classes=10, data=DATA, params=_params("semisup_10pct", epochs=2, lr_grid=[0.1]),
                 seed=0, device=CPU, subset=info)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # a copy was trained
    after = r.encoder.state_dict()
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert len(moved) >= len([k for k in before if k.endswith("weight")]) // 2
    assert r.details["weights_moved"] > 0.01
    assert r.details["train_images"] == len(idx) == 130 and r.details["subset"]["source"] == "file"
    assert r.predictions.y_pred["top1"].shape == (len(sets.test.labels),)
    assert r.metrics["top1"] == pytest.approx(float((r.predictions.y_pred["top1"] == r.predictions.y_true).mean()))


def test_finetune__the_lr_is_chosen_on_val(digits):
    sets, idx, _ = task_subset(digits, fraction=0.1, draw=1)
    grid = [1e-4, 0.03, 0.1]
    r = finetune(_encoder(), sets, idx, num_classes=10, data=DATA,
                 params=_params("semisup_10pct", epochs=2, lr_grid=grid, head_init="random"), seed=0, device=CPU)
    curve = r.details["val_curve"]
    assert list(curve) == [repr(v) for v in grid]
    best = max(grid, key=lambda lr: (curve[repr(lr)], -grid.index(lr)))  # ties: the first of the grid
    assert r.details["lr"] == best and r.details["val_top1"] == curve[repr(best)]
    assert curve[repr(1e-4)] < curve[repr(best)]  # the grid's values really differ on val


def test_finetune__with_every_label_beats_the_frozen_linear_probe_of_the_same_random_init(digits):
    from evalbench.run.worker import extract_task_features

    spec = CheckpointSpec(name="r", arch=ARCH, data=DATA, weights=RandomWeights(0))
    feats = extract_task_features(spec, digits, weights_file=None, device=CPU)
    linear = resolve_protocol("linear")
    frozen = PROBES.get("linear")(feats, params=linear.params, seed=None, device=CPU).metrics["top1"]
    sets, idx, info = task_subset(digits, fraction=1.0, draw=0)
    r = finetune(_encoder(0), sets, idx, num_classes=10, data=DATA, seed=0, device=CPU, subset=info,
                 params=_params("finetune_100pct", epochs=15, lr_grid=[0.1]))
    assert info["source"] == "all" and len(idx) == len(sets.train.labels)
    assert r.metrics["top1"] > frozen, (r.metrics, frozen)


def test_finetune__every_lr_diverging_is_an_error(digits):
    sets, idx, _ = task_subset(digits, fraction=0.01, draw=0)
    with pytest.raises(EvalbenchError, match="diverged at every lr"):
        finetune(_encoder(), sets, idx, num_classes=10, data=DATA, seed=0, device=CPU,
                 params=_params("semisup_1pct", epochs=3, lr_grid=[1e12]))


def test_finetune__min_steps_adds_epochs_to_a_small_subset(digits):
    sets, idx, _ = task_subset(digits, fraction=0.01, draw=0)  # 10 images: one batch, one step per epoch
    r = finetune(_encoder(), sets, idx, num_classes=10, data=DATA, seed=0, device=CPU,
                 params=_params("semisup_1pct", epochs=2, min_steps=5, lr_grid=[0.1]))
    assert r.details["epochs"] == 5 and len(r.details["loss_curves"]["0.1"]) == 5


def test_finetune__not_a_probe_on_features():
    with pytest.raises(EvalbenchError, match="train"):
        PROBES.get("finetune")(None, params={}, seed=0, device=CPU)


@pytest.mark.parametrize("l2", [1e-3, 0.1, 1.0])
def test_logistic_head__equals_sklearn_logistic_regression(l2):
    rng = np.random.default_rng(0)
    n, d, c = 150, 12, 4
    x = rng.normal(size=(n, d)) * rng.uniform(0.05, 5.0, d) + rng.normal(size=d)  # features of very different scales
    y = rng.integers(0, c, n)
    x[y == 1, :3] += 1.0
    head = logistic_head(torch.tensor(x, dtype=torch.float32), torch.tensor(y), num_classes=c, l2=l2)
    ref = LogisticRegression(C=1 / (l2 * n), tol=1e-10, max_iter=10_000).fit(x, y)  # mean CE + l2/2 |W|^2
    with torch.no_grad():
        prob = torch.softmax(head(torch.tensor(x, dtype=torch.float32)), 1).numpy()
    np.testing.assert_allclose(prob, ref.predict_proba(x), atol=1e-4)


def test_optimizer__backbone_lr_scale_and_nesterov():
    model = Classifier(_encoder(), 10)
    p = FinetuneParams.model_validate({**resolve_protocol("finetune_100pct").params, "backbone_lr_scale": 0.1,
                                       "nesterov": True, "weight_decay": 1e-4})
    opt = optimizer(model, p, 0.3)
    ids = {id(q): name for name, q in model.named_parameters()}
    seen = set()
    for g in opt.param_groups:
        names = [ids[id(q)] for q in g["params"]]
        seen.update(names)
        assert all(n.startswith("head.") for n in names) or all(n.startswith("encoder.") for n in names)
        assert g["lr"] == pytest.approx(0.3 if names[0].startswith("head.") else 0.03)
        assert g["nesterov"] and g["weight_decay"] == (1e-4 if g["params"][0].ndim > 1 else 0.0)
    assert seen == set(ids.values())  # every parameter trained, once
