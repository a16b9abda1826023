"""`evalbench pretrain`: writes a safetensors checkpoint + JSON metadata that `evalbench run`
loads like any other (its knobs in the record), and a killed pretraining resumes from its last
saved epoch to the same weights as an uninterrupted run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

from evalbench.cli import main
from tests.conftest import write_suite

CONFIG = {"method": "simclr", "arch": "builtin:small-cnn", "preprocessing": {"in_chans": 1, "mean": [0.5], "std": [0.5]},
          "task": "digits", "seed": 3, "epochs": 5, "batch_size": 64, "checkpoint_every": 1,
          "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
          "head": {"kind": "mlp", "hidden_dim": 32, "out_dim": 16, "depth": 2}, "loss": {"temperature": 0.5}}


def _cfg(tmp_path: Path) -> Path:
    path = tmp_path / "simclr.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_pretrain__checkpoint_and_metadata_then_run_loads_it(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    out = tmp_path / "ckpt" / "simclr.safetensors"
    assert main(["pretrain", str(cfg), "--storage", str(tmp_path / "store"), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["method"] == "simclr" and meta["seed"] == 3 and meta["epochs"] == 5
    assert len(meta["loss_curve"]) == 5 and meta["knobs"]["loss.temperature"] == 0.5
    assert meta["task"]["name"] == "digits" and meta["code"]["evalbench"] and meta["wall_s"] > 0
    assert "features.0.weight" in load_file(str(out))
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[{"name": "mine", "arch": "builtin:small-cnn",
                                                           "path": str(out), "preprocessing": CONFIG["preprocessing"]}],
                        tasks=["digits"], protocols=["knn"])
    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(tmp_path / "res"), "--executor", "local"]) == 0
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "res" / "records").glob("*.json")]
    assert rec["checkpoint"]["meta"]["pretrain"]["method"] == "simclr"
    assert rec["checkpoint"]["meta"]["pretrain"]["knobs"]["loss.temperature"] == 0.5


def test_pretrain__killed_run_resumes_from_its_last_epoch_to_the_same_weights(tmp_path):
    cfg = _cfg(tmp_path)
    cmd = [sys.executable, "-m", "evalbench.cli", "pretrain", str(cfg)]
    full = subprocess.run(cmd + ["--storage", str(tmp_path / "a"), "--out", str(tmp_path / "full.safetensors")],
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    store = tmp_path / "b"
    proc = subprocess.Popen(cmd + ["--storage", str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(store.glob("artifacts/pretrain-state/*/state.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(store.glob("artifacts/pretrain-state/*/state.pt")), "killed before the first saved epoch"
    assert not list(store.glob("artifacts/checkpoints/*/model.safetensors")), "killed too late to mean anything"
    again = subprocess.run(cmd + ["--storage", str(store), "--out", str(tmp_path / "resumed.safetensors")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed_from = int(again.stderr.split("resumed from epoch ")[1].split(")")[0])
    assert 1 <= resumed_from < 5
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(str(tmp_path / "resumed.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert json.loads((tmp_path / "resumed.json").read_text())["loss_curve"] == \
        json.loads((tmp_path / "full.json").read_text())["loss_curve"]
