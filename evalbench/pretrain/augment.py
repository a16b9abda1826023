"""The augmentation pipeline of pretraining (DESIGN.md §5): uint8 (B, C, H, W) -> uint8 (B, C, S, S),
every sample with its OWN random parameters.

torchvision.transforms.v2 applied to a batch tensor draws ONE set of parameters for the whole
batch, so two implementations are registered in ``AUGMENT_IMPLS``:

- ``batched`` (the default): the v2 semantics vectorised over the batch: parameters drawn per
  sample in one call each, crops (resize included) and rotations by one ``grid_sample`` each,
  each jitter op applied to the samples that drew it, blur as one grouped conv. On this
  project's 2-core CPU it is 9-30x faster than ``per_sample`` (``build_augment``); the tests
  check each op against torchvision's functional op on one image.
- ``per_sample``: the reference: a ``v2.Compose`` applied image by image.

The order is SimCLR's / MoCo v2's: random resized crop, rotation, horizontal flip, colour jitter
(p), grayscale (p), gaussian blur (p). Colour jitter applies brightness, contrast, saturation and
hue in a random order per sample (as ``v2.ColorJitter``); on 1-channel images only brightness and
contrast (saturation and hue need RGB) and grayscale is a no-op.

Randomness: every parameter comes from torch's GLOBAL RNG, drawn on the CPU in a fixed order, so
``torch.manual_seed(s)`` before a batch fixes its augmentations on any device. The trainer seeds
the global RNG at the start of each epoch from (seed, epoch): a resumed run repeats the same
augmentations.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from evalbench.core.registry import Registry

if TYPE_CHECKING:
    from evalbench.pretrain.config import AugmentConfig

Augment = Callable[[Tensor], Tensor]
AUGMENT_IMPLS: Registry[Callable[["AugmentConfig", Optional[int]], Augment]] = Registry(
    "augmentation implementation", "evalbench.pretrain.augment.AUGMENT_IMPLS")

CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range (torchvision default, SimCLR)
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _check_batch(batch: Tensor, size: Optional[int]) -> int:
    """The output side S; ValueError for anything but a uint8 (B, C, H, W) batch with C in (1, 3)."""
    if not isinstance(batch, Tensor) or batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] not in (1, 3):
        what = f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"augment: expected a uint8 (B, C, H, W) batch with C = 1 or 3, got {what}")
    h, w = batch.shape[-2:]
    if size is None and h != w:
        raise ValueError(f"augment: {h}x{w} images need an output size (preprocessing.input_size)")
    return int(size if size is not None else h)


def blur_kernel_size(sigma_max: float, side: int) -> int:
    """Odd kernel covering +-3 sigma_max, at most 2 * side - 1 (the reflect padding's limit).

    The kernel follows sigma, as PIL's GaussianBlur(radius=sigma) does in MoCo v2 / SimSiam, so
    ``augment.blur.sigma`` means what it says at any image size (SimCLR's "10% of the side" would
    be 3 pixels at 32x32 and truncate sigma 2 to a near box filter)."""
    return min(2 * math.ceil(3 * sigma_max) + 1, 2 * side - 1)


# --- batched: parameters per sample, vectorised ops on float images in [0, 1] -----------------

def crop_boxes(n: int, h: int, w: int, scale: tuple[float, float], *, attempts: int = 10) -> Tensor:
    """(n, 4) float boxes [x1, y1, x2, y2] in pixels, drawn as ``v2.RandomResizedCrop.make_params``
    draws one: up to 10 tries of (area ~ U(scale) * h * w, log-uniform aspect ratio in CROP_RATIO,
    rounded sides that fit), else the whole image centre-cropped to the ratio range; position
    uniform over the valid offsets."""
    area = h * w * torch.empty(n, attempts).uniform_(*scale)                         # (n, attempts)
    aspect = torch.exp(torch.empty(n, attempts).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
    cw, ch = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.to(torch.int64).argmax(1, keepdim=True)                             # (n, 1) first fitting try
    found = fits.any(1)
    ratio = w / h                                                                     # fallback: torchvision's
    fw, fh = (w, round(w / CROP_RATIO[0])) if ratio < CROP_RATIO[0] else \
        (round(h * CROP_RATIO[1]), h) if ratio > CROP_RATIO[1] else (w, h)
    cw = torch.where(found, cw.gather(1, first)[:, 0], torch.tensor(float(fw)))
    ch = torch.where(found, ch.gather(1, first)[:, 0], torch.tensor(float(fh)))
    u = torch.rand(n, 2)
    y1 = torch.where(found, torch.floor(u[:, 0] * (h - ch + 1)), torch.tensor(float((h - fh) // 2)))
    x1 = torch.where(found, torch.floor(u[:, 1] * (w - cw + 1)), torch.tensor(float((w - fw) // 2)))
    return torch.stack([x1, y1, x1 + cw, y1 + ch], dim=1)


def crop_resize(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """(B, C, H, W) float, (B, 4) boxes [x1, y1, x2, y2] -> (B, C, size, size): each box's pixels
    resized bilinearly as ``F.interpolate(crop, align_corners=False)`` would (sample points at
    pixel centres, clamped to the box, so nothing outside the box leaks in). A box larger than the
    output averages r x r samples per output pixel, r = ceil(largest box side / size), which
    anti-aliases a downscale. A full-image box at the same size is the identity."""
    n, _, h, w = x.shape
    r = max(1, math.ceil(float((boxes[:, 2:] - boxes[:, :2]).max()) / size))
    steps = (torch.arange(size * r, dtype=torch.float32) + 0.5) / (size * r)          # (S*r,) in (0, 1)
    x1, y1, x2, y2 = boxes.float().unbind(1)
    sx = (x1[:, None] + steps[None] * (x2 - x1)[:, None] - 0.5).clamp(x1[:, None], (x2 - 1)[:, None])  # (B, S*r)
    sy = (y1[:, None] + steps[None] * (y2 - y1)[:, None] - 0.5).clamp(y1[:, None], (y2 - 1)[:, None])
    gx, gy = sx / max(w - 1, 1) * 2 - 1, sy / max(h - 1, 1) * 2 - 1                # pixel index -> [-1, 1]
    grid = torch.stack([gx[:, None, :].expand(n, size * r, size * r), gy[:, :, None].expand(n, size * r, size * r)], -1)
    out = F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="border", align_corners=True)
    return F.avg_pool2d(out, r) if r > 1 else out


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """(n, C, S, S) float rotated counter-clockwise about the centre by ``degrees`` (n,): bilinear,
    zeros outside, as ``v2.functional.rotate(..., interpolation=BILINEAR, fill=None)``."""
    a = torch.deg2rad(degrees).to(x)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gray(x: Tensor) -> Tensor:
    """(n, C, H, W) -> (n, 1, H, W) luma (C = 3) or the image itself (C = 1)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, f: Tensor) -> Tensor:
    """f * x + (1 - f) * other, clamped to [0, 1] (torchvision's ``_blend``); f (n,)."""
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV, h in [0, 1) (torchvision ``_rgb_to_hsv``, after Pillow)."""
    r, g, b = x.unbind(-3)
    maxc, minc = x.amax(-3), x.amin(-3)
    eqc = maxc == minc
    rng = maxc - minc
    ones = torch.ones_like(maxc)
    s = rng / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, rng)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], -3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """(..., 3, H, W) HSV -> RGB (torchvision ``_hsv_to_rgb``)."""
    h, s, v = x.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    vpqt = torch.stack([v, p, q, t], -3)                                     # (..., 4, H, W)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=x.device)
    idx = select[:, i].movedim(0, -3)                                        # (..., 3, H, W) indices into vpqt
    return vpqt.gather(-3, idx)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, torch.zeros_like(x), f)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, gray(x), f)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1))


# name -> (op(x, factor), factor range from the strength s); v2.ColorJitter's definitions
JITTER_OPS = {
    "brightness": (_brightness, lambda s: (max(0.0, 1 - s), 1 + s)),
    "contrast": (_contrast, lambda s: (max(0.0, 1 - s), 1 + s)),
    "saturation": (_saturation, lambda s: (max(0.0, 1 - s), 1 + s)),
    "hue": (_hue, lambda s: (-s, s)),
}
RGB_ONLY = ("saturation", "hue")


def color_jitter(x: Tensor, strengths: dict[str, float], apply: Tensor) -> Tensor:
    """Jitter the samples where ``apply`` (n,) bool: each draws a factor per op and an order of
    the ops (``v2.ColorJitter``); an op of strength 0 is skipped, saturation/hue on 1 channel too."""
    names = [k for k, s in strengths.items() if s > 0 and not (x.shape[1] == 1 and k in RGB_ONLY)]
    n = len(x)
    factors = {k: torch.empty(n).uniform_(*JITTER_OPS[k][1](strengths[k])) for k in names}
    order = torch.rand(n, len(names)).argsort(1)                              # (n, ops) a permutation per sample
    for slot in range(len(names)):
        for k, name in enumerate(names):
            sel = (apply & (order[:, slot] == k)).nonzero()[:, 0].to(x.device)
            if len(sel):
                x[sel] = JITTER_OPS[name][0](x[sel], factors[name].to(x)[sel])
    return x


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """(n, C, H, W) float blurred with a per-sample sigma (n,): separable gaussian kernels over
    +-(k-1)/2 pixels, reflect padding (``v2.functional.gaussian_blur``), one grouped conv."""
    n, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.to(x)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)                 # (n*C, k) one kernel per channel
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)                       # rows
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)                       # columns
    return y.reshape(n, c, h, w)


class BatchedAugment:
    """``AugmentConfig`` applied with per-sample parameters, vectorised over the batch."""

    def __init__(self, cfg: "AugmentConfig", size: Optional[int]) -> None:
        self.cfg, self.size = cfg, size

    def _any(self) -> bool:
        c = self.cfg
        return any(t.enabled for t in (c.crop, c.color_jitter, c.grayscale, c.blur, c.flip, c.rotation))

    def __call__(self, batch: Tensor) -> Tensor:
        side = _check_batch(batch, self.size)
        n, chans, h, w = batch.shape
        if not self._any() and (h, w) == (side, side):
            return batch.clone()
        c = self.cfg
        x = batch.float().div_(255.0)                                           # (B, C, H, W) in [0, 1]
        if c.crop.enabled:
            x = crop_resize(x, crop_boxes(n, h, w, c.crop.scale), side)          # (B, C, S, S)
        elif (h, w) != (side, side):
            x = crop_resize(x, torch.tensor([[0.0, 0.0, w, h]]).expand(n, 4), side)
        if c.rotation.enabled:
            sel = torch.rand(n) < c.rotation.p
            angle = torch.empty(n).uniform_(-c.rotation.degrees, c.rotation.degrees)
            if sel.any():
                x[sel.to(x.device)] = rotate(x[sel.to(x.device)], angle[sel])
        if c.flip.enabled:
            sel = (torch.rand(n) < c.flip.p).to(x.device)
            x[sel] = x[sel].flip(-1)
        if c.color_jitter.enabled:
            j = c.color_jitter
            strengths = {"brightness": j.brightness, "contrast": j.contrast, "saturation": j.saturation, "hue": j.hue}
            x = color_jitter(x, strengths, torch.rand(n) < j.p)
        if c.grayscale.enabled:
            sel = (torch.rand(n) < c.grayscale.p).to(x.device)
            if chans == 3 and sel.any():
                x[sel] = gray(x[sel]).expand(-1, 3, -1, -1)
        if c.blur.enabled:
            sel = torch.rand(n) < c.blur.p
            sigma = torch.empty(n).uniform_(*c.blur.sigma)
            if sel.any():
                dsel = sel.to(x.device)
                x[dsel] = gaussian_blur(x[dsel], sigma[sel], blur_kernel_size(c.blur.sigma[1], side))
        return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


AUGMENT_IMPLS.register("batched")(BatchedAugment)


# --- per sample: the torchvision v2 reference --------------------------------------------------

class PerSampleAugment:
    """``AugmentConfig`` as a ``v2.Compose`` applied to each image on its own (uint8 throughout)."""

    def __init__(self, cfg: "AugmentConfig", size: Optional[int]) -> None:
        self.cfg, self.size = cfg, size
        self._pipes: dict[tuple[int, int, int, int], v2.Transform] = {}

    def pipeline(self, chans: int, h: int, w: int, side: int) -> v2.Transform:
        c, t = self.cfg, []
        bilinear = v2.InterpolationMode.BILINEAR
        if c.crop.enabled:
            t.append(v2.RandomResizedCrop(side, scale=c.crop.scale, ratio=CROP_RATIO, antialias=True))
        elif (h, w) != (side, side):
            t.append(v2.Resize((side, side), antialias=True))
        if c.rotation.enabled:
            rotation = v2.RandomRotation(c.rotation.degrees, interpolation=bilinear, fill=None)  # zeros outside
            t.append(v2.RandomApply([rotation], p=c.rotation.p))
        if c.flip.enabled:
            t.append(v2.RandomHorizontalFlip(c.flip.p))
        if c.color_jitter.enabled:
            j, rgb = c.color_jitter, chans == 3
            t.append(v2.RandomApply([v2.ColorJitter(j.brightness, j.contrast, j.saturation if rgb else 0,
                                                    j.hue if rgb else 0)], p=j.p))
        if c.grayscale.enabled and chans == 3:
            t.append(v2.RandomGrayscale(c.grayscale.p))
        if c.blur.enabled:
            k = blur_kernel_size(c.blur.sigma[1], side)
            t.append(v2.RandomApply([v2.GaussianBlur(k, sigma=c.blur.sigma)], p=c.blur.p))
        return v2.Compose(t) if t else v2.Identity()

    def __call__(self, batch: Tensor) -> Tensor:
        side = _check_batch(batch, self.size)
        key = (*batch.shape[1:], side)
        if key not in self._pipes:
            self._pipes[key] = self.pipeline(*key)
        pipe = self._pipes[key]
        return torch.stack([pipe(img) for img in batch])


AUGMENT_IMPLS.register("per_sample")(PerSampleAugment)


def build_augment(cfg: "AugmentConfig", *, size: Optional[int], impl: str = "batched") -> Augment:
    """uint8 (B, C, H, W) -> uint8 (B, C, S, S), S = ``size`` (the input side when None), each
    sample with its own parameters from torch's global RNG (module docstring).

    Measured on this project's 2-core CPU (one intra-op thread, best of 7, B = 256), per batch:

        pipeline                          image      batched   per_sample
        SimCLR (crop, jitter, gray, flip) 28x28x1    2.4 ms      58 ms
                                          32x32x3     24 ms     231 ms
        MoCo v2 (+ blur)                  28x28x1    5.8 ms     139 ms
                                          32x32x3     27 ms     266 ms

    (``python -m evalbench.pretrain.augment`` reprints it.) With two threads on a busy shared
    CPU both get slower and noisy (OpenMP threads spinning against other processes).
    """
    return AUGMENT_IMPLS.get(impl)(cfg, size)


def two_views(augment: Augment, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Two independently augmented views of the same uint8 batch (SimCLR's x_i, x_j)."""
    return augment(batch), augment(batch)


def _benchmark(repeats: int = 7) -> None:
    """Milliseconds per uint8 batch of 256 (best of ``repeats``: the machine may be shared), both
    implementations, MoCo v2's pipeline (crop, jitter, grayscale, blur, flip) and SimCLR's (no blur)."""
    import time

    from evalbench.pretrain.config import parse_pretrain_config

    print(f"torch threads: {torch.get_num_threads()}; best of {repeats}; B = 256")
    print("pipeline   image      batched ms  per_sample ms")
    for method in ("simclr", "moco"):
        cfg = parse_pretrain_config({"method": method, "arch": "builtin:small-cnn", "task": "-"}, where="bench").augment
        for chans, side in ((1, 28), (3, 32)):
            batch = torch.randint(0, 256, (256, chans, side, side), dtype=torch.uint8)
            ms = {}
            for impl in AUGMENT_IMPLS:
                fn = build_augment(cfg, size=side, impl=impl)
                fn(batch)  # warm-up
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn(batch)
                    times.append(time.perf_counter() - t0)
                ms[impl] = min(times) * 1e3
            print(f"{method:10s} {side}x{side}x{chans}  {ms['batched']:10.1f}  {ms['per_sample']:13.1f}")


if __name__ == "__main__":
    _benchmark()
