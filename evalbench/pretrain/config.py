"""The pretraining config: every knob the SSL literature ablates is a typed, validated field
(DESIGN.md §5). Read once, at the edge; the rest of ``pretrain/`` trusts it.

```yaml
method: simclr            # simclr | moco | byol | simsiam | supervised
arch: builtin:small-cnn
preprocessing: {in_chans: 1, mean: [0.5], std: [0.5], input_size: 28}   # as in suites
task: mnist5k             # its train split; SSL methods never read labels
seed: 0
epochs: 10
batch_size: 256
checkpoint_every: 1       # epochs between resumable states (not part of the identity)
workers: 1                # >1: data-parallel over that many Ray Train workers (global batch_size split)
optimizer: {name: sgd, lr: 0.06, weight_decay: 5.0e-4, momentum: 0.9, warmup_epochs: 0, schedule: cosine}
head: {kind: mlp, hidden_dim: 512, out_dim: 128, depth: 2, bn_out: false}
predictor: {enabled: false, hidden_dim: 512}
loss: {temperature: 0.5, stop_gradient: true}
ema: {momentum: 0.99, schedule: cosine}
queue: {size: 4096}
augment: {crop: {enabled: true, scale: [0.2, 1.0]}, color_jitter: {...}, grayscale: {...}, blur: {...},
          flip: {...}, rotation: {...}}
```

Three tables, all data:

- ``KNOBS``: dotted knob path -> its check (type and range). The dataclasses below mirror it.
- ``METHOD_DEFAULTS``: method -> a full nested mapping of every knob. A knob missing from the
  YAML takes its METHOD's default; a knob that does not apply to the method holds a neutral
  value ("mechanism absent": no head, no predictor, EMA momentum 0, queue size 0, ...).
- ``APPLIES``: method -> the knobs (or whole sections) it reads. Giving an inapplicable knob in
  the YAML is an error, and inapplicable knobs never enter ``as_dict()`` / ``knobs()``, so
  changing a neutral value never changes a checkpoint's identity.
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from evalbench.core.errors import ConfigError
from evalbench.core.yamlio import check_mapping, read_yaml
from evalbench.encoders import DataConfig, split_arch
from evalbench.pretrain.heads import HEADS
from evalbench.pretrain.momentum import MOMENTUM_SCHEDULES
from evalbench.pretrain.optim import LR_SCHEDULES, OPTIMIZERS
from evalbench.specs.checkpoint import PREP_KEYS, parse_data_config


# --- the dataclasses (fields = the KNOBS paths below) -------------------------------------------

@dataclass(frozen=True)
class OptimizerConfig:
    name: str             # OPTIMIZERS: sgd | adamw | lars
    lr: float             # peak learning rate (after warm-up)
    weight_decay: float   # on >1-D params only (optim.param_groups)
    momentum: float       # SGD/LARS momentum; AdamW's beta1
    warmup_epochs: int    # linear warm-up from 0
    schedule: str         # LR_SCHEDULES after warm-up: cosine (to 0) | constant


@dataclass(frozen=True)
class HeadConfig:
    kind: str             # heads.HEADS: none | linear | mlp
    hidden_dim: int
    out_dim: int
    depth: int            # Linear layers of an mlp head (>= 2)
    bn_out: bool          # BatchNorm on the head's output (SimSiam)


@dataclass(frozen=True)
class PredictorConfig:
    enabled: bool
    hidden_dim: int


@dataclass(frozen=True)
class LossConfig:
    temperature: float    # InfoNCE / NT-Xent temperature (SimCLR, MoCo)
    stop_gradient: bool   # SimSiam's stop-gradient on the target branch


@dataclass(frozen=True)
class EmaConfig:
    momentum: float       # target <- m * target + (1 - m) * online; 0: target == online
    schedule: str         # momentum.MOMENTUM_SCHEDULES: constant (MoCo) | cosine (BYOL, towards 1)


@dataclass(frozen=True)
class QueueConfig:
    size: int             # MoCo's negatives; 0: no queue


@dataclass(frozen=True)
class CropConfig:
    enabled: bool
    scale: tuple[float, float]   # area fraction range of RandomResizedCrop


@dataclass(frozen=True)
class ColorJitterConfig:
    enabled: bool
    brightness: float
    contrast: float
    saturation: float     # RGB only
    hue: float            # RGB only, in [0, 0.5]
    p: float


@dataclass(frozen=True)
class ProbConfig:
    enabled: bool
    p: float


@dataclass(frozen=True)
class BlurConfig:
    enabled: bool
    sigma: tuple[float, float]
    p: float


@dataclass(frozen=True)
class RotationConfig:
    enabled: bool
    degrees: float        # angle ~ U[-degrees, degrees]
    p: float


@dataclass(frozen=True)
class AugmentConfig:
    crop: CropConfig
    color_jitter: ColorJitterConfig
    grayscale: ProbConfig
    blur: BlurConfig
    flip: ProbConfig
    rotation: RotationConfig


@dataclass(frozen=True)
class PretrainConfig:
    method: str
    arch: str
    data: DataConfig
    task: str
    seed: int
    epochs: int
    batch_size: int
    checkpoint_every: int
    workers: int  # data-parallel workers (Ray Train); batch_size is the global batch
    optimizer: OptimizerConfig
    head: HeadConfig
    predictor: PredictorConfig
    loss: LossConfig
    ema: EmaConfig
    queue: QueueConfig
    augment: AugmentConfig

    def applies(self, path: str) -> bool:
        """Whether the knob (dotted path) is read by this config's method."""
        return applies(self.method, path)

    def as_dict(self) -> dict:
        """Plain JSON values nested like the YAML, with the knobs that apply to the method only.

        This is what the pretrain stage's identity hashes and what its metadata records;
        ``checkpoint_every`` is left out (it does not change the weights), ``workers`` is left out
        at 1 (``HASHED_UNLESS``), and ``preprocessing``
        is the resolved ``DataConfig.as_dict()``, so ``parse_pretrain_config(cfg.as_dict())``
        gives ``cfg`` back (with the default checkpoint_every).
        """
        out: dict = {"method": self.method, "arch": self.arch, "preprocessing": self.data.as_dict(), "task": self.task}
        for path in KNOBS:
            if path in NOT_IN_IDENTITY or not applies(self.method, path):
                continue
            if path in HASHED_UNLESS and _get_attr_path(self, path) == HASHED_UNLESS[path]:
                continue
            _set_path(out, path, _plain(_get_attr_path(self, path)))
        return out

    def knobs(self) -> dict[str, Any]:
        """``as_dict()`` flattened to dotted paths (the ablation table's columns), e.g.
        ``{"method": "simclr", ..., "loss.temperature": 0.5, "augment.crop.scale": [0.2, 1.0]}``."""
        return _flatten(self.as_dict())


# --- checks: (value, where) -> the validated value ---------------------------------------------

Check = Callable[[Any, str], Any]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _not_a_number(v: Any, where: str, what: str) -> ConfigError:
    hint = ""
    if isinstance(v, str):
        try:
            float(v)
            hint = " (YAML reads a number like 1e-3 as a string: write 1.0e-3)"
        except ValueError:
            pass
    return ConfigError(f"{where} must be {what}, got {v!r}{hint}")


def _number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None) -> Check:
    bounds = [(gt, ">", lambda v, b: v > b), (ge, ">=", lambda v, b: v >= b),
              (lt, "<", lambda v, b: v < b), (le, "<=", lambda v, b: v <= b)]
    bounds = [(b, op, ok) for b, op, ok in bounds if b is not None]
    what = "a finite number" + ("" if not bounds else " " + " and ".join(f"{op} {b}" for b, op, _ in bounds))

    def check(v: Any, where: str) -> float:
        if not _is_number(v) or not math.isfinite(v):
            raise _not_a_number(v, where, what)
        if not all(ok(v, b) for b, _, ok in bounds):
            raise ConfigError(f"{where} must be {what}, got {v!r}")
        return float(v)

    return check


def _integer(*, ge: int, lt: int | None = None) -> Check:
    what = f"an integer >= {ge}" + ("" if lt is None else f" and < {lt}")

    def check(v: Any, where: str) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < ge or (lt is not None and v >= lt):
            raise _not_a_number(v, where, what)
        return int(v)

    return check


def _boolean(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where} must be true or false, got {v!r}")
    return v


def _choice(names: Callable[[], list[str]]) -> Check:
    def check(v: Any, where: str) -> str:
        if not isinstance(v, str) or v not in names():
            raise ConfigError(f"{where}: unknown value {v!r}; known: {', '.join(names())}")
        return v

    return check


def _interval(*, hi: float | None) -> Check:
    """[lo, hi] with 0 < lo <= hi (<= ``hi`` when given)."""
    what = "a pair [lo, hi] of finite numbers with 0 < lo <= hi" + ("" if hi is None else f" <= {hi}")

    def check(v: Any, where: str) -> tuple[float, float]:
        if (not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_number(x) and math.isfinite(x) for x in v)
                or not 0 < v[0] <= v[1] or (hi is not None and v[1] > hi)):
            raise ConfigError(f"{where} must be {what}, got {v!r}")
        return float(v[0]), float(v[1])

    return check


_PROB = _number(ge=0.0, le=1.0)
_DIM = _integer(ge=1)

# every knob: dotted path -> check. Sections are the path prefixes; order = the YAML's.
KNOBS: dict[str, Check] = {
    "seed": _integer(ge=0, lt=2**63),
    "epochs": _integer(ge=1),
    "batch_size": _integer(ge=2),
    "checkpoint_every": _integer(ge=1),
    "workers": _integer(ge=1, lt=1025),
    "optimizer.name": _choice(OPTIMIZERS.names),
    "optimizer.lr": _number(gt=0.0),
    "optimizer.weight_decay": _number(ge=0.0),
    "optimizer.momentum": _number(ge=0.0, lt=1.0),
    "optimizer.warmup_epochs": _integer(ge=0),
    "optimizer.schedule": _choice(LR_SCHEDULES.names),
    "head.kind": _choice(HEADS.names),
    "head.hidden_dim": _DIM,
    "head.out_dim": _DIM,
    "head.depth": _DIM,
    "head.bn_out": _boolean,
    "predictor.enabled": _boolean,
    "predictor.hidden_dim": _DIM,
    "loss.temperature": _number(gt=0.0),
    "loss.stop_gradient": _boolean,
    "ema.momentum": _number(ge=0.0, le=1.0),
    "ema.schedule": _choice(MOMENTUM_SCHEDULES.names),
    "queue.size": _DIM,
    "augment.crop.enabled": _boolean,
    "augment.crop.scale": _interval(hi=1.0),
    "augment.color_jitter.enabled": _boolean,
    "augment.color_jitter.brightness": _number(ge=0.0),
    "augment.color_jitter.contrast": _number(ge=0.0),
    "augment.color_jitter.saturation": _number(ge=0.0),
    "augment.color_jitter.hue": _number(ge=0.0, le=0.5),
    "augment.color_jitter.p": _PROB,
    "augment.grayscale.enabled": _boolean,
    "augment.grayscale.p": _PROB,
    "augment.blur.enabled": _boolean,
    "augment.blur.sigma": _interval(hi=None),
    "augment.blur.p": _PROB,
    "augment.flip.enabled": _boolean,
    "augment.flip.p": _PROB,
    "augment.rotation.enabled": _boolean,
    "augment.rotation.degrees": _number(ge=0.0, le=180.0),
    "augment.rotation.p": _PROB,
}
# section path -> its dataclass ("" is the top level, built separately)
SECTIONS: dict[str, type] = {
    "optimizer": OptimizerConfig, "head": HeadConfig, "predictor": PredictorConfig, "loss": LossConfig,
    "ema": EmaConfig, "queue": QueueConfig, "augment": AugmentConfig, "augment.crop": CropConfig,
    "augment.color_jitter": ColorJitterConfig, "augment.grayscale": ProbConfig, "augment.blur": BlurConfig,
    "augment.flip": ProbConfig, "augment.rotation": RotationConfig,
}
SPECIAL_KEYS = ("method", "arch", "preprocessing", "task")  # not knobs: required / parsed on their own
NOT_IN_IDENTITY = frozenset({"checkpoint_every"})  # how often state is saved does not change the weights
# knobs hashed only where they differ from this value, so configs written before the knob existed
# keep their identity (one worker: the single-process loop, unchanged)
HASHED_UNLESS = {"workers": 1}


# --- applicability: method -> the knobs/sections it reads ---------------------------------------

COMMON = frozenset({"seed", "epochs", "batch_size", "checkpoint_every", "workers", "optimizer", "augment"})
APPLIES: dict[str, frozenset[str]] = {
    "simclr": COMMON | {"head", "loss.temperature"},
    "moco": COMMON | {"head", "loss.temperature", "ema", "queue"},
    "byol": COMMON | {"head", "predictor", "ema"},
    "simsiam": COMMON | {"head", "predictor", "loss.stop_gradient"},
    "supervised": COMMON,  # encoder + linear classifier on one augmented view
}


def applies(method: str, path: str) -> bool:
    """Whether ``method`` reads the knob ``path`` (itself or a section above it is in APPLIES)."""
    parts = path.split(".")
    return any(".".join(parts[:i]) in APPLIES[method] for i in range(1, len(parts) + 1))


def _applies_under(method: str, path: str) -> bool:
    """Whether ``method`` reads ``path`` or any knob under it (for a section)."""
    return any(applies(method, k) for k in KNOBS if k == path or k.startswith(path + "."))


# --- per-method defaults --------------------------------------------------------------------------

def _merge(base: Mapping, over: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


# "mechanism absent": the value an inapplicable section holds (never validated, never hashed)
NEUTRAL = {
    "head": {"kind": "none", "hidden_dim": 0, "out_dim": 0, "depth": 0, "bn_out": False},
    "predictor": {"enabled": False, "hidden_dim": 0},
    "loss": {"temperature": 1.0, "stop_gradient": False},
    "ema": {"momentum": 0.0, "schedule": "constant"},  # momentum 0: the target is the online network
    "queue": {"size": 0},
}
AUGMENT_OFF = {
    "crop": {"enabled": False, "scale": [0.08, 1.0]},
    "color_jitter": {"enabled": False, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "p": 0.8},
    "grayscale": {"enabled": False, "p": 0.2},
    "blur": {"enabled": False, "sigma": [0.1, 2.0], "p": 0.5},
    "flip": {"enabled": False, "p": 0.5},
    "rotation": {"enabled": False, "degrees": 15.0, "p": 0.5},  # not from a paper: a small-image ablation knob
}
# SimCLR's CIFAR-10 pipeline (Chen et al. 2020, App. B.9): crop 0.08-1, jitter strength 0.5
# (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, flip; no blur on 32x32 images
AUGMENT_SIMCLR = _merge(AUGMENT_OFF, {
    "crop": {"enabled": True, "scale": [0.08, 1.0]}, "color_jitter": {"enabled": True},
    "grayscale": {"enabled": True}, "flip": {"enabled": True}})
# MoCo v2's pipeline (facebookresearch/moco main_moco.py, --aug-plus), also SimSiam's:
# crop 0.2-1, the same jitter and grayscale, gaussian blur sigma 0.1-2 with p 0.5, flip
AUGMENT_MOCO = _merge(AUGMENT_SIMCLR, {"crop": {"scale": [0.2, 1.0]}, "blur": {"enabled": True}})
SSL_COMMON = {
    "seed": 0, "epochs": 10, "batch_size": 256, "checkpoint_every": 1, "workers": 1,
    # SGD lr 0.06, wd 5e-4, momentum 0.9, cosine: the MoCo CIFAR-10 demo (facebookresearch/moco colab),
    # a recipe that trains small models at small batches; methods below that differ say so
    "optimizer": {"name": "sgd", "lr": 0.06, "weight_decay": 5.0e-4, "momentum": 0.9, "warmup_epochs": 0,
                  "schedule": "cosine"},
    **NEUTRAL,
}

METHOD_DEFAULTS: dict[str, dict] = {
    # SimCLR (Chen et al. 2020): NT-Xent temperature 0.5 (CIFAR-10, App. B.9); MLP head 2048->128
    # in the paper, CPU-sized 512->128 here (google-research/simclr ``model_util.py``: BN in hidden layers).
    # The paper's LARS recipe (lr 0.3 x B/256, wd 1e-6, 10 warm-up epochs) is optimizer.name: lars.
    "simclr": _merge(SSL_COMMON, {
        "head": {"kind": "mlp", "hidden_dim": 512, "out_dim": 128, "depth": 2, "bn_out": False},
        "loss": {"temperature": 0.5},
        "augment": AUGMENT_SIMCLR}),
    # MoCo v2 (Chen et al. 2020, "Improved Baselines"): temperature 0.2, MLP head 2048->128 (512->128
    # here); queue 65536 and momentum 0.999 on ImageNet, 4096 and 0.99 (constant) in the CIFAR-10 demo
    "moco": _merge(SSL_COMMON, {
        "head": {"kind": "mlp", "hidden_dim": 512, "out_dim": 128, "depth": 2, "bn_out": False},
        "loss": {"temperature": 0.2},
        "ema": {"momentum": 0.99, "schedule": "constant"},
        "queue": {"size": 4096},
        "augment": AUGMENT_MOCO}),
    # BYOL (Grill et al. 2020 §3.3): projector 4096->256 and predictor 4096 with BN (512->128 and 512
    # here); target EMA 0.996 -> 1 by cosine (0.99 for short runs, as the paper's 300-epoch runs);
    # crop 0.08-1, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, blur (the paper blurs view 1
    # always and view 2 with p 0.1; one pipeline for both views here: p 0.5); no solarisation
    "byol": _merge(SSL_COMMON, {
        "head": {"kind": "mlp", "hidden_dim": 512, "out_dim": 128, "depth": 2, "bn_out": False},
        "predictor": {"enabled": True, "hidden_dim": 512},
        "ema": {"momentum": 0.99, "schedule": "cosine"},
        "augment": _merge(AUGMENT_SIMCLR, {"color_jitter": {"saturation": 0.2}, "blur": {"enabled": True}})}),
    # SimSiam (Chen & He 2021): 3-layer projector 2048->2048 with BN on its output, bottleneck
    # predictor 512 (dim / 4); CPU-sized 512->512 and 128. SGD lr 0.05 x B/256, wd 1e-4 (§4);
    # MoCo v2's augmentations (facebookresearch/simsiam main_simsiam.py)
    "simsiam": _merge(SSL_COMMON, {
        "optimizer": {"lr": 0.05, "weight_decay": 1.0e-4},
        "head": {"kind": "mlp", "hidden_dim": 512, "out_dim": 512, "depth": 3, "bn_out": True},
        "predictor": {"enabled": True, "hidden_dim": 128},
        "loss": {"stop_gradient": True},
        "augment": AUGMENT_MOCO}),
    # the default suite's supervised reference (pretrain/supervised.py SupervisedRecipe): AdamW
    # lr 2e-3, wd 1e-4, constant lr, 3 epochs of batch 64, no augmentation
    "supervised": _merge(SSL_COMMON, {
        "epochs": 3, "batch_size": 64,
        "optimizer": {"name": "adamw", "lr": 2.0e-3, "weight_decay": 1.0e-4, "momentum": 0.9, "schedule": "constant"},
        "augment": AUGMENT_OFF}),
}
METHODS = tuple(METHOD_DEFAULTS)  # the methods a config may name (pretrain/methods.py implements them)


# --- small helpers on nested mappings -----------------------------------------------------------

def _get_path(d: Mapping, path: str) -> Any:
    for part in path.split("."):
        d = d[part]
    return d


def _set_path(d: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


def _get_attr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, path + "."))
        else:
            out[path] = v
    return out


def _children(prefix: str) -> list[str]:
    """The keys a section (``""``: the top level) may hold, in KNOBS order."""
    depth = 0 if not prefix else prefix.count(".") + 1
    names: list[str] = list(SPECIAL_KEYS) if not prefix else []
    for k in KNOBS:
        if not prefix or k.startswith(prefix + "."):
            name = k.split(".")[depth]
            if name not in names:
                names.append(name)
    return names


def _build(cls: type, prefix: str, flat: Mapping[str, Any]) -> Any:
    kwargs = {}
    for f in fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        kwargs[f.name] = _build(SECTIONS[path], path, flat) if path in SECTIONS else flat[path]
    return cls(**kwargs)


# --- reading ------------------------------------------------------------------------------------

def _explicit(node: Any, *, prefix: str, method: str, where: str) -> dict[str, Any]:
    """The knobs the YAML gives under ``prefix`` (dotted path -> raw value): unknown keys and
    knobs that do not apply to ``method`` fail here, naming the known keys / the methods they apply to."""
    here = f"{where}: {prefix}" if prefix else where
    check_mapping(node, where=here, optional=_children(prefix))
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        if not prefix and key in SPECIAL_KEYS:
            continue
        if not _applies_under(method, path):
            users = [m for m in METHODS if _applies_under(m, path)]
            raise ConfigError(f"{where}: knob {path!r} does not apply to method {method!r} "
                              f"(it applies to: {', '.join(users)})")
        if path in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {path} must be a mapping of {', '.join(_children(path))}, got {value!r}")
            out.update(_explicit(value, prefix=path, method=method, where=where))
        else:
            out[path] = value
    return out


def _cross_checks(flat: Mapping[str, Any], *, method: str, where: str) -> None:
    if flat["optimizer.warmup_epochs"] > flat["epochs"]:
        raise ConfigError(f"{where}: optimizer.warmup_epochs ({flat['optimizer.warmup_epochs']}) must be <= epochs "
                          f"({flat['epochs']})")
    workers, batch = flat["workers"], flat["batch_size"]
    if batch % workers or batch // workers < 2:
        raise ConfigError(f"{where}: batch_size ({batch}) is the global batch, split over workers ({workers}): it must be "
                          "a multiple of workers with at least 2 images per worker")
    if applies(method, "head") and flat["head.kind"] == "mlp" and flat["head.depth"] < 2:
        raise ConfigError(f"{where}: head.depth must be >= 2 for kind 'mlp' (got {flat['head.depth']}); "
                          "use kind 'linear' for one layer")


def parse_pretrain_config(data: Any, *, where: str) -> PretrainConfig:
    """A validated ``PretrainConfig`` from a YAML mapping; ConfigError naming ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping (a pretraining config), got {type(data).__name__}")
    method = data.get("method")
    if not isinstance(method, str) or method not in METHOD_DEFAULTS:
        raise ConfigError(f"{where}: method: unknown method {method!r}; known: {', '.join(METHODS)}")
    given = _explicit(data, prefix="", method=method, where=where)
    required = ("method", "arch", "task")
    check_mapping(data, where=where, required=required, optional=[k for k in _children("") if k not in required])
    arch, task = data["arch"], data["task"]
    if not isinstance(arch, str):
        raise ConfigError(f"{where}: arch must be FAMILY:NAME (a string), got {arch!r}")
    if not isinstance(task, str) or not task:
        raise ConfigError(f"{where}: task must be a task name or the path of a task YAML, got {task!r}")
    try:
        split_arch(arch)
    except ConfigError as e:
        raise ConfigError(f"{where}: arch: {e}") from None
    flat = _flatten(METHOD_DEFAULTS[method])
    flat.update(given)
    for path, check in KNOBS.items():
        if applies(method, path):
            flat[path] = check(flat[path], f"{where}: {path}")
        elif isinstance(flat[path], list):
            flat[path] = tuple(flat[path])
    _cross_checks(flat, method=method, where=where)
    top = {k: flat[k] for k in KNOBS if "." not in k}
    sections = {f.name: _build(SECTIONS[f.name], f.name, flat) for f in fields(PretrainConfig) if f.name in SECTIONS}
    return PretrainConfig(method=method, arch=arch, task=task,
                          data=parse_data_config(arch, data.get("preprocessing"), where=f"{where}: preprocessing"),
                          **top, **sections)


def load_pretrain_config(path: Path) -> PretrainConfig:
    return parse_pretrain_config(read_yaml(Path(path)), where=str(path))


# --- sweeps ---------------------------------------------------------------------------------------

def known_paths() -> list[str]:
    """Every dotted path ``apply_overrides`` accepts: the top-level keys, the preprocessing keys,
    every section and every knob."""
    out = ["method", "arch", "task", "preprocessing", *(f"preprocessing.{k}" for k in PREP_KEYS)]
    for k in KNOBS:
        parts = k.split(".")
        out += [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p not in out]
    return out


def apply_overrides(data: Mapping, overrides: Mapping[str, Any], *, where: str) -> dict:
    """A deep copy of the raw config ``data`` with each dotted path of ``overrides`` set
    (``{"loss.temperature": 0.1, "augment.crop.scale": [0.5, 1.0]}``); ConfigError on an unknown
    path, listing the known ones. Whether the knob applies to the method is checked when the
    result is parsed (``parse_pretrain_config``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping (a pretraining config), got {type(data).__name__}")
    out = copy.deepcopy(dict(data))
    known = known_paths()
    for path, value in overrides.items():
        if not isinstance(path, str) or path not in known:
            close = difflib.get_close_matches(str(path), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown knob {path!r}{hint}; known: {', '.join(known)}")
        node = out
        *parents, last = path.split(".")
        for i, part in enumerate(parents):
            if node.get(part) is None:
                node[part] = {}
            elif not isinstance(node[part], Mapping):
                raise ConfigError(f"{where}: cannot set {path!r}: {'.'.join(parents[:i + 1])} is not a mapping")
            node[part] = dict(node[part])
            node = node[part]
        node[last] = copy.deepcopy(value)
    return out


def _check_tables() -> None:
    """Internal invariants: KNOBS == the dataclasses' leaves, every default table is complete."""
    def leaves(cls: type, prefix: str) -> list[str]:
        out = []
        for f in fields(cls):
            path = f"{prefix}.{f.name}" if prefix else f.name
            out += leaves(SECTIONS[path], path) if path in SECTIONS else [path]
        return out

    top = [f.name for f in fields(PretrainConfig) if f.name not in SPECIAL_KEYS and f.name != "data"]
    expected = [p for name in top for p in (leaves(SECTIONS[name], name) if name in SECTIONS else [name])]
    assert expected == list(KNOBS), (expected, list(KNOBS))
    assert all(is_dataclass(c) for c in SECTIONS.values())
    assert set(APPLIES) == set(METHOD_DEFAULTS)
    for method, d in METHOD_DEFAULTS.items():
        assert set(_flatten(d)) == set(KNOBS), (method, set(_flatten(d)) ^ set(KNOBS))


_check_tables()
