"""Data-parallel pretraining through Ray Train's TorchTrainer with 2 CPU workers on gloo
(run/train_ray.py, pretrain/distributed.py), checked against a hand-written emulation of the
same two workers in one process: per-worker batches from the same DistributedSampler shares,
gradients averaged (DDP), SimCLR's loss over the gathered global batch."""
from __future__ import annotations

import copy

import pytest
import torch

from evalbench.encoders import build_encoder, preprocess
from evalbench.pretrain.config import parse_pretrain_config
from evalbench.pretrain.methods import METHODS
from evalbench.pretrain.optim import build_optimizer, build_scheduler, param_groups
from evalbench.pretrain.trainer import epoch_seed
from evalbench.specs.task import load_task, resolve_task
from torch.utils.data import DataLoader, DistributedSampler

PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5]}
NO_AUGMENT = {k: {"enabled": False} for k in ("crop", "color_jitter", "grayscale", "blur", "flip", "rotation")}


def _config(method: str, **extra):
    raw = {"method": method, "arch": "builtin:small-cnn", "task": "digits", "preprocessing": PREP, "seed": 3,
           "epochs": 1, "batch_size": 64, "workers": 2, "augment": NO_AUGMENT,
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}, **extra}
    return parse_pretrain_config(raw, where="test")


def _emulate_two_workers(cfg, source, num_classes: int) -> dict[str, torch.Tensor]:
    """What 2 DDP workers compute, in one process: worker r's model copy sees its sampler share;
    the update uses the mean of the two gradients (SimCLR: each copy's part of the gathered loss,
    summed, as the gather-with-grad + DDP mean gives). Returns worker 0's final state_dict."""
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.arch, in_chans=cfg.data.in_chans)
    m0 = METHODS.get(cfg.method)(cfg, encoder, num_classes)  # NCHW, as the trainer's data-parallel path
    models = [m0, copy.deepcopy(m0)]
    opts = [build_optimizer(cfg.optimizer, param_groups(m, cfg.optimizer.weight_decay)) for m in models]
    steps = len(source) // cfg.batch_size
    scheds = [build_scheduler(o, cfg.optimizer, steps_per_epoch=steps, epochs=cfg.epochs) for o in opts]
    for epoch in range(cfg.epochs):
        seed = epoch_seed(cfg.seed, epoch) + 1
        loaders = [DataLoader(source, batch_size=cfg.batch_size // 2, drop_last=True,
                              sampler=DistributedSampler(source, num_replicas=2, rank=r, shuffle=True, seed=seed,
                                                         drop_last=True)) for r in (0, 1)]
        for m in models:
            m.train()
        for (xa, ya), (xb, yb) in zip(*loaders):
            xa, xb = preprocess(xa, cfg.data), preprocess(xb, cfg.data)
            for o in opts:
                o.zero_grad(set_to_none=True)
            if cfg.method == "simclr":  # the loss over the gathered 2 x 32 projections; each copy gets its part
                from evalbench.pretrain.losses import nt_xent

                # two forwards per view pair, as SimCLR.loss does (BatchNorm statistics move twice)
                z1 = torch.cat([models[0].online(xa), models[1].online(xb)])
                z2 = torch.cat([models[0].online(xa), models[1].online(xb)])
                nt_xent(z1, z2, temperature=cfg.loss.temperature).backward()
                scale = 2.0  # every worker computes the whole loss: its gradient is 2x its part; DDP halves the sum
            else:
                models[0].loss(xa, xa, ya).backward()
                models[1].loss(xb, xb, yb).backward()
                scale = 1.0
            for p0, p1 in zip(models[0].parameters(), models[1].parameters()):
                if p0.grad is not None:
                    mean = (p0.grad + p1.grad) * scale / 2
                    p0.grad, p1.grad = mean.clone(), mean.clone()
            for o, s in zip(opts, scheds):
                o.step()
                s.step()
            models[1].load_state_dict({**models[1].state_dict(), **{k: v for k, v in models[0].state_dict().items()
                                                                      if "running" in k or "num_batches" in k}})
    return m0.encoder.model.state_dict()


@pytest.mark.parametrize("method", [pytest.param("supervised", marks=pytest.mark.slow), "simclr"])
def test_ray_train_two_gloo_workers_equal_the_emulated_data_parallel_update(ray_session, tmp_path, method):
    from evalbench.run.train_ray import fit_data_parallel

    cfg = _config(method)
    task = resolve_task("digits")
    source = load_task(task).train
    result = fit_data_parallel(cfg, task, state_dir=tmp_path / "state")
    assert result.epochs == 1 and len(result.loss_curve) == 1 and torch.isfinite(torch.tensor(result.loss_curve)).all()
    expected = _emulate_two_workers(cfg, source, task.num_classes)
    got = result.encoder.model.state_dict()
    assert set(got) == set(expected)
    start = build_encoder(cfg.arch, in_chans=1).model.state_dict()
    # float noise of 22 momentum-SGD steps with sums in another order: ~4e-5 here; a wrong semantics (SimCLR's
    # gradient half as large, as without gather-with-grad scaling) differs by ~1e-2 in the first layer
    for k in expected:
        assert torch.allclose(got[k].float(), expected[k].float(), atol=2e-4, rtol=1e-3), (k, (got[k].float() - expected[k].float()).abs().max(), expected[k].float().abs().max())
    moved = [k for k in expected if k.endswith("weight") and not torch.equal(expected[k], start[k])]
    assert moved, "the emulation must have trained the weights"


def test_ray_train_worker_error_is_the_worker_s_own(ray_session, tmp_path):
    """A diverging point fails with PretrainDiverged (epoch and last loss), not Ray's wrapper."""
    from evalbench.pretrain.trainer import PretrainDiverged
    from evalbench.run.train_ray import fit_data_parallel

    cfg = _config("supervised", optimizer={"name": "sgd", "lr": 1e30, "momentum": 0.0})
    with pytest.raises(PretrainDiverged, match="epoch 1"):
        fit_data_parallel(cfg, resolve_task("digits"), state_dir=tmp_path / "state")


def test_workers_need_a_batch_they_divide():
    from evalbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of workers"):
        _config("simclr", batch_size=63)
    assert "workers" not in parse_pretrain_config(
        {"method": "simclr", "arch": "builtin:small-cnn", "task": "digits"}, where="t").as_dict()
    assert _config("simclr").as_dict()["workers"] == 2  # a data-parallel point is another checkpoint


@pytest.mark.slow
def test_sweep_point_with_two_workers_trains_through_ray_train_and_is_evaluated(ray_session, tmp_path, capsys):
    """A grid point `workers: 2` is its own checkpoint (its identity differs from the 1-worker base),
    trains data-parallel inside the ray executor's graph, and gets a row of the ablation table."""
    import yaml

    from evalbench.cli import main

    base = {"method": "simclr", "arch": "builtin:small-cnn", "preprocessing": PREP, "task": "digits", "seed": 0,
            "epochs": 1, "batch_size": 64, "head": {"kind": "mlp", "hidden_dim": 32, "out_dim": 16, "depth": 2}}
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "dp", "base": base, "points": [{"workers": 2}],
                                    "evaluate": {"tasks": ["digits"], "protocols": ["knn"]}}))
    args = ["sweep", str(grid), "--results", str(tmp_path / "res"), "--executor", "ray", "--format", "csv"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "3 evaluations: 3 ran ok" in err
    assert out.splitlines()[0].startswith("point,workers,digits / knn")
    assert "\np1,2," in out


@pytest.mark.slow
def test_ray_train_killed_after_an_epoch_resumes_and_ends_with_the_uninterrupted_weights(ray_session, tmp_path):
    """Worker 0 saves the state each epoch; a run stopped after epoch 1 resumes at epoch 1 (every worker
    loads that state) and ends with the weights of an uninterrupted 2-epoch run."""
    from evalbench.run.train_ray import fit_data_parallel

    cfg = _config("simclr", epochs=2, checkpoint_every=1)
    task = resolve_task("digits")
    whole = fit_data_parallel(cfg, task, state_dir=tmp_path / "whole")
    assert fit_data_parallel(cfg, task, state_dir=tmp_path / "cut", stop_after=1) is None
    resumed = fit_data_parallel(cfg, task, state_dir=tmp_path / "cut")
    assert (whole.resumed_from, resumed.resumed_from) == (0, 1)
    assert resumed.loss_curve == pytest.approx(whole.loss_curve, abs=1e-6)
    a, b = whole.encoder.model.state_dict(), resumed.encoder.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
