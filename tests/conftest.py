"""Shared fixtures: one Ray session per test session, tiny suites on the built-in digits task."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

# a quick linear probe for tests: small grid, few L-BFGS iterations
FAST_LINEAR = {"name": "linear", "params": {"l2_grid": [1e-4, 1e-2], "max_iter": 50}}
PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5]}


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 << 20, _temp_dir=str(tmp),
             logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def write_suite(path: Path, **suite) -> Path:
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture
def saved_small_cnn(tmp_path) -> Path:
    """A builtin:small-cnn checkpoint (random weights, seed 1) saved as a plain state_dict."""
    import torch

    from evalbench.encoders import build_encoder

    torch.manual_seed(1)
    path = tmp_path / "small-cnn.pt"
    torch.save(build_encoder("builtin:small-cnn", in_chans=1).model.state_dict(), path)
    return path
