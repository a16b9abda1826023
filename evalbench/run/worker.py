"""What runs on a worker: one function per stage kind, registered with its code version.

``run_stage`` wraps them all: it never raises for bad input (the error becomes the output, so
a failing stage never stops the others), times the work and names where it ran. Stage
functions read and write artifacts in the store by identity and return small outputs; arrays
never travel through the executor.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

from evalbench.checkpoints import load_file
from evalbench.core.atomic import atomic_path
from evalbench.core.errors import EvalbenchError
from evalbench.data.views import VIEWS
from evalbench.encoders import Encoder, build_encoder
from evalbench.encoders.base import channel_adaptation
from evalbench.features.artifact import Features, features_exist, load_features, save_features
from evalbench.features.extract import extract_features
from evalbench.pretrain.config import PretrainConfig
from evalbench.protocols import PROBES, ProbeResult
from evalbench.results.predictions import interval_details
from evalbench.results.store import ArtifactStore
from evalbench.run.stages import CHECKPOINT_FILE, STAGE_KINDS, Stage, StageKind, StageOutput, WorkerContext
from evalbench.specs.checkpoint import CheckpointSpec, FileWeights, RandomWeights, StageWeights
from evalbench.specs.subsets import task_subset
from evalbench.specs.task import TaskSpec, load_task



def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def worker_info(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": device.type, "device_name": name}


def describe_error(e: BaseException) -> str:
    if isinstance(e, EvalbenchError):
        return f"{type(e).__name__}: {e}"
    tb = traceback.format_exception(type(e), e, e.__traceback__, limit=-3)
    return f"{type(e).__name__}: {e} (unexpected; last frames: {''.join(tb).strip()[-600:]})"


@contextmanager
def stage_threads(stage: Stage) -> Iterator[None]:
    """torch's intra-op threads = the CPUs the stage asked for, under every executor.

    Ray already gives a 1-CPU task one thread (OMP_NUM_THREADS); the local executor must match,
    or a stage runs with every core's threads while other work shares them: on a loaded 2-core
    host a small CNN step was 10-20x slower with 2 threads than with 1 (same numbers).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(stage.resources.num_cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_stage(stage: Stage, upstream: list[StageOutput], ctx: WorkerContext) -> StageOutput:
    """Run one stage; errors (its own or an upstream stage's) become its output."""
    device = pick_device()
    info = {**worker_info(device), "node": ctx.node}
    failed = next((u for u in upstream if not u.ok), None)
    if stage.error or failed is not None:
        return StageOutput(stage.identity, "error", error=stage.error or failed.error, worker=info)
    t0 = time.perf_counter()
    try:
        with stage_threads(stage):
            out = STAGE_KINDS.get(stage.kind).run(stage, upstream, ctx)
    except Exception as e:  # noqa: BLE001 - recorded in this stage's output
        return StageOutput(stage.identity, "error", error=f"{stage.kind} failed: {describe_error(e)}",
                           timing={stage.kind: round(time.perf_counter() - t0, 3)}, worker=info)
    timing = {**out.timing, stage.kind: round(time.perf_counter() - t0, 3)}
    return StageOutput(stage.identity, "ok", out.metrics, out.details, None, timing, {**info, **out.worker})


# --- weights ----------------------------------------------------------------------------------

def load_encoder(spec: CheckpointSpec, weights_file: Optional[Path]) -> tuple[Encoder, dict]:
    """Build the architecture and fill it strictly from ``weights_file`` (or seeded random init)."""
    if isinstance(spec.weights, RandomWeights):
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(spec.weights.seed)
            encoder = build_encoder(spec.arch, in_chans=spec.data.in_chans)
        return encoder, {"random_init": True, "init_seed": spec.weights.seed}
    assert weights_file is not None
    encoder = build_encoder(spec.arch, in_chans=spec.data.in_chans)
    report = load_file(encoder.model, weights_file, arch=spec.arch, rules=spec.load_rules, trust_pickle=spec.trust_pickle)
    return encoder, report.as_dict()


# --- pretrain ---------------------------------------------------------------------------------

def run_pretrain(stage: Stage, upstream: list[StageOutput], ctx: WorkerContext) -> StageOutput:
    """Train (or resume training) one checkpoint; its weights and metadata land in the store at once."""
    # the training stack (torchvision's transforms, Ray Train) is imported by the stages that train, not by the driver
    from evalbench.pretrain.checkpoint import pretrain_metadata, save_checkpoint
    from evalbench.pretrain.trainer import pretrain
    from evalbench.run.train_ray import fit_data_parallel

    store = ArtifactStore(Path(ctx.storage))
    target = store.checkpoint_dir(stage.identity)
    if (target / CHECKPOINT_FILE).is_file():  # made by another run meanwhile
        return StageOutput(stage.identity, "ok", details={"cache": "hit"})
    cfg: PretrainConfig = stage.inputs["config"]
    task: TaskSpec = stage.inputs["task"]
    state_dir = store.pretrain_state_dir(stage.identity)
    if cfg.workers > 1:  # data-parallel: Ray Train workers (run/train_ray.py)
        result = fit_data_parallel(cfg, task, state_dir=state_dir)
    else:
        result = pretrain(cfg, load_task(task).train, num_classes=task.num_classes, state_dir=state_dir,
                          device=pick_device())
    meta = pretrain_metadata(cfg, result, identity=stage.identity, task=stage.inputs["task_payload"] or {})
    with atomic_path(target) as tmp:
        tmp.mkdir()
        save_checkpoint(result.encoder, tmp / CHECKPOINT_FILE, metadata=meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the resumable state is not needed once the weights exist
    details = {"cache": "miss", "loss_curve": meta["loss_curve"], "resumed_from": result.resumed_from,
               "images_per_s": meta["images_per_s"]}
    return StageOutput(stage.identity, "ok", details=details, timing={"train": meta["wall_s"]})


# --- extract ----------------------------------------------------------------------------------

def _weights_file(stage: Stage, upstream: list[StageOutput], store: ArtifactStore) -> Optional[Path]:
    """Where the extract stage's weights are: the suite's file, or the upstream stage's artifact."""
    spec: CheckpointSpec = stage.inputs["checkpoint"]
    if isinstance(spec.weights, StageWeights):
        return store.checkpoint_dir(upstream[0].identity) / CHECKPOINT_FILE
    return spec.weights.path if isinstance(spec.weights, FileWeights) else None


def _channels(source, in_chans: int) -> dict:
    """The task's image channels, the encoder's, and how preprocessing adapts one to the other (recorded)."""
    c = int(source[0][0].shape[0])
    return {"images": c, "encoder": in_chans, "adapted": channel_adaptation(c, in_chans)}


def extract_task_features(spec: CheckpointSpec, task: TaskSpec, *, weights_file: Optional[Path], view: str = "identity",
                          device: torch.device, num_workers: int = 0, amp: bool = False) -> Features:
    """Features of every split of ``task`` under ``spec``'s encoder (no store: benchmarks, notebooks)."""
    t0 = time.perf_counter()
    splits = load_task(task)
    v = VIEWS.get(view)
    sources = {s: v.apply(getattr(splits, s)) for s in v.splits}  # only the splits the view's probes read
    encoder, load_report = load_encoder(spec, weights_file)
    t1 = time.perf_counter()
    x = {s: extract_features(encoder, sources[s], cfg=spec.data, device=device, num_workers=num_workers,
                             amp=amp and device.type == "cuda") for s in v.splits}
    y = {s: sources[s].labels for s in v.splits}
    first = v.splits[0]
    meta = {"checkpoint": spec.name, "task": task.ref, "view": view, "amp": amp and device.type == "cuda",
            "load": load_report, "channels": _channels(sources[first], spec.data.in_chans),
            "dim": int(x[first].shape[1]), "sizes": {s: len(y[s]) for s in v.splits},
            "dataset_s": round(t1 - t0, 3), "extract_s": round(time.perf_counter() - t1, 3)}
    return Features(x, y, v.num_classes or task.num_classes, meta)  # a view's own labels (rotation: 4)


def run_extract(stage: Stage, upstream: list[StageOutput], ctx: WorkerContext) -> StageOutput:
    store = ArtifactStore(Path(ctx.storage))
    target = store.features_dir(stage.identity)
    if features_exist(target):  # made by another run meanwhile
        return StageOutput(stage.identity, "ok", details={**load_features(target).meta, "cache": "hit"})
    feats = extract_task_features(stage.inputs["checkpoint"], stage.inputs["task"],
                                  weights_file=_weights_file(stage, upstream, store), view=stage.inputs["view"],
                                  device=pick_device(), num_workers=max(0, int(stage.resources.num_cpus) - 1),
                                  amp=stage.inputs["amp"])
    meta = {"identity": stage.identity, **feats.meta, "host": socket.gethostname(), "node": ctx.node}
    save_features(target, Features(feats.x, feats.y, feats.num_classes, meta))
    return StageOutput(stage.identity, "ok", details={**meta, "cache": "miss"})


# --- probe ------------------------------------------------------------------------------------

def run_probe(stage: Stage, upstream: list[StageOutput], ctx: WorkerContext) -> StageOutput:
    store = ArtifactStore(Path(ctx.storage))
    where = store.features_dir(stage.inputs["features"])
    features = load_features(where)
    if features is None:
        raise EvalbenchError(f"features artifact {where} is missing (deleted while the run went on?); run again to "
                             "extract it")
    protocol = stage.inputs["protocol"]
    t0 = time.perf_counter()
    result = PROBES.get(protocol.implementation)(features, params=protocol.params, seed=stage.inputs["seed"],
                                                  device=pick_device())
    details = {**result.details, "feature_dim": features.dim, "features": features.meta,
               **interval_details(result, storage=Path(ctx.storage), key=stage.identity)}
    return StageOutput(stage.identity, "ok", result.metrics, details, timing={"probe": round(time.perf_counter() - t0, 3)})


# --- train (fine-tuning protocols) -------------------------------------------------------------

def run_train(stage: Stage, upstream: list[StageOutput], ctx: WorkerContext) -> StageOutput:
    """Fine-tune the checkpoint's encoder on the protocol's labelled subset (draw = the seed), lr chosen
    on val, test top-1 with its bootstrap interval and predictions (pretrain/finetune.py)."""
    from evalbench.pretrain.finetune import finetune

    spec: CheckpointSpec = stage.inputs["checkpoint"]
    task: TaskSpec = stage.inputs["task"]
    protocol = stage.inputs["protocol"]
    seed = stage.inputs["seed"] or 0
    store = ArtifactStore(Path(ctx.storage))
    encoder, load_report = load_encoder(spec, _weights_file(stage, upstream, store))
    sets, labelled, subset = task_subset(task, fraction=protocol.params["label_fraction"], draw=seed)
    t0 = time.perf_counter()
    result = finetune(encoder, sets, labelled, num_classes=task.num_classes, data=spec.data, params=protocol.params,
                      seed=seed, device=pick_device(), subset=subset)
    probe = ProbeResult(result.metrics, result.details, predictions=result.predictions)
    details = {**result.details, "load": load_report,
               **interval_details(probe, storage=Path(ctx.storage), key=stage.identity)}
    return StageOutput(stage.identity, "ok", result.metrics, details, timing={"finetune": round(time.perf_counter() - t0, 3)})


# version 2 of pretrain and extract: convolutions in channels_last (features/extract.py MEMORY_FORMAT),
# the same numbers to float rounding, but not bit-identical: earlier artifacts are not reused.
# version 3 of extract: on CPU the encoder compiled for inference (features/extract.py inference_module:
# BatchNorm folded into the convolutions), features equal to ~1e-7, not bit-identical
STAGE_KINDS.register("pretrain")(StageKind("pretrain", version=2, produces="artifact", run=run_pretrain))
STAGE_KINDS.register("extract")(StageKind("extract", version=3, produces="artifact", run=run_extract))
# version 2 of probe: records carry a 95% interval per metric (details.ci95) and their per-example test
# predictions (artifacts/predictions/<key>.npz); version-1 records have neither, so they are computed again
STAGE_KINDS.register("probe")(StageKind("probe", version=2, produces="record", run=run_probe))
# train: fine-tuning protocols (semisup_1pct, semisup_10pct, finetune_100pct): checkpoint x task x protocol x draw -> record
STAGE_KINDS.register("train")(StageKind("train", version=1, produces="record", run=run_train))
