"""Train and eval presets on torchvision.transforms.v2: image and label map move together.

Elastic deformation follows the U-Net paper (arXiv 1505.04597, section 3.1): displacement vectors on a
coarse grid (3 x 3 there), drawn from a Gaussian with `elastic` pixels standard deviation (10 there) and
interpolated bicubically to a smooth per-pixel field; the image is warped bilinearly, labels with nearest
neighbour, on the training crop. (torchvision's ElasticTransform blurs per-pixel noise with a Gaussian
instead; for smooth fields that needs kernels of hundreds of taps, ~40x slower per 256x256 crop here.)

`build_transform(cfg, train)` returns a callable Sample -> (image float32 (C,H,W) normalized,
target int64 (H,W) with 255 = void). Geometric ops act on both (labels resized with nearest neighbour and
padded with 255); photometric ops act on the image only.

Multi-band images (the recipe's band keys, `pixelwise.data.bands`): the geometric ops act on the raw
bands, every band alike (8-bit images stay uint8, others become float32 with their values kept), and the
training crop then becomes its C model channels (selected bands / scale, then indices) and is normalised.
So indices are computed from resampled bands, as they are from the image itself at prediction time, and
only the crop pays for them. Colour jitter is defined for 8-bit RGB only: it runs on the raw RGB crop,
before the indices are derived from it (so an RGB index such as exg sees the jittered colours); a recipe
asking for it on other images is refused (`check_jitter`).
"""
from __future__ import annotations

import random
from typing import Protocol

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pixelwise.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from pixelwise.data.bands import BandSettings, BandSpec, spec_for
from pixelwise.data.colour import AffineColorJitter
from pixelwise.data.sample import Sample
from pixelwise.errors import DataError

FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


class Augmentation(BandSettings, Protocol):
    """The settings `build_transform` reads (the `data` section of a recipe, pixelwise.config.DataConfig),
    the band keys included."""

    resize: int | None
    scale_range: tuple[float, float] | None
    rotate: float
    crop_size: int
    elastic: float
    elastic_grid: int
    hflip: bool
    vflip: bool
    color_jitter: float
    val_resize: int | None
    mean: list[float] | None
    std: list[float] | None


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from [lo, hi] (both sides by the same factor); with `shorter`, of
    the image first resized to that shorter side: the fixed resize and the random scale in one resampling
    (one pass over the full image instead of two)."""

    def __init__(self, lo: float, hi: float, shorter: int | None = None):
        super().__init__()
        self.lo, self.hi, self.shorter = lo, hi, shorter

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        s = random.uniform(self.lo, self.hi)
        if self.shorter:
            s *= self.shorter / min(h, w)
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt, params):
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class GridElastic(v2.Transform):
    """The U-Net paper's elastic deformation: grid x grid random displacements (std `std_px` pixels),
    upsampled bicubically to the image size, applied with torchvision's elastic kernels (bilinear for
    images, nearest for masks; void fill for labels moved in from outside)."""

    def __init__(self, std_px: float, grid: int = 3):
        super().__init__()
        if grid < 2:
            raise ValueError(f"elastic grid must be at least 2, got {grid}")
        self.std_px, self.grid = float(std_px), int(grid)

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        coarse = torch.randn(1, 2, self.grid, self.grid) * self.std_px
        field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        scale = torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)  # pixels -> normalised [-1, 1] coordinates
        return {"displacement": (field * scale).permute(0, 2, 3, 1)}  # 1 x H x W x 2 (dx, dy)

    def transform(self, inpt, params):
        fill = FILL.get(type(inpt), 0)
        return self._call_kernel(F.elastic, inpt, params["displacement"], fill=fill)


def _pixels(image: np.ndarray) -> torch.Tensor:
    """(H, W, B) array -> (B, H, W) tensor sharing its memory where it can."""
    pixels = np.ascontiguousarray(image)
    if not pixels.flags.writeable:  # memory-mapped or cached read-only arrays
        pixels = pixels.copy()
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _to_tv(sample: Sample, spec: BandSpec | None = None):
    """(image, target) tv_tensors of a Sample: the uint8 RGB image as it is, or with a multi-band `spec`
    its raw bands (uint8 kept, anything else as float32 of the same values)."""
    if spec is None:
        image = tv_tensors.Image(_pixels(sample.image))
    else:
        where = sample.meta.get("path", sample.name) or "image"
        raw = _pixels(spec.check_image(np.asarray(sample.image), str(where)))
        image = tv_tensors.Image(raw if raw.dtype == torch.uint8 else raw.float())
    if sample.semantic is None:
        raise DataError(f"{sample.meta.get('path', sample.name)}: sample has no semantic labels")
    labels = np.asarray(sample.semantic)
    if labels.dtype != np.uint8:  # uint8 label stacks (0..254, 255 = void) stay small through the preset
        labels = labels.astype(np.int64)
    target = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(labels)))
    return image, target


def _jitter(strength: float):
    return AffineColorJitter(strength, hue=min(0.05, strength / 4))


def check_jitter(cfg: Augmentation, spec: BandSpec, dtype) -> None:
    """Colour jitter needs 8-bit RGB raw images; a DataError naming the key otherwise."""
    if cfg.color_jitter and not (spec.raw_bands == 3 and np.dtype(dtype) == np.uint8):
        raise DataError(f"config key 'data.color_jitter': colour jitter is defined for 8-bit RGB images; these "
                        f"have {spec.raw_bands} bands of {np.dtype(dtype)} (set data.color_jitter: 0)")


def build_transform(cfg: Augmentation, train: bool):
    """The preset for training (augmenting) or evaluation (resize only, if asked)."""
    spec = spec_for(cfg)
    spec = None if spec.is_rgb else spec
    jitter = _jitter(cfg.color_jitter) if train and cfg.color_jitter and spec is not None else None
    ops: list = []
    if train:
        scaled = cfg.scale_range and tuple(cfg.scale_range) != (1.0, 1.0)
        if cfg.resize and not scaled:
            ops.append(v2.Resize(cfg.resize, antialias=True))
        if scaled:
            ops.append(RandomScale(*cfg.scale_range, shorter=cfg.resize))
        if cfg.rotate:
            ops.append(v2.RandomRotation(cfg.rotate, fill=FILL))
        ops.append(v2.RandomCrop(cfg.crop_size, pad_if_needed=True, fill=FILL))
        if cfg.elastic:  # on the crop: the displacement field costs O(crop area), not O(image area)
            ops.append(GridElastic(cfg.elastic, cfg.elastic_grid))
        if cfg.hflip:
            ops.append(v2.RandomHorizontalFlip())
        if cfg.vflip:
            ops.append(v2.RandomVerticalFlip())
        if cfg.color_jitter and spec is None:
            ops.append(_jitter(cfg.color_jitter))
    elif cfg.val_resize:
        ops.append(v2.Resize(cfg.val_resize, antialias=True))
    mean, std = list(cfg.mean or IMAGENET_MEAN), list(cfg.std or IMAGENET_STD)
    if spec is None:
        ops += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                v2.Normalize(mean=mean, std=std)]
    pipeline = v2.Compose(ops)
    if spec is not None:
        m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def apply(sample: Sample):
        image, target = pipeline(*_to_tv(sample, spec))
        image = image.as_subclass(torch.Tensor)
        if spec is not None:  # the crop's raw bands -> (jitter) -> model channels -> normalised
            if jitter is not None:
                image = jitter(image)
            image = (spec.apply_tensor(image[None])[0] - m) / s
        return image, target.as_subclass(torch.Tensor).long()

    return apply


def normalize_image(image: np.ndarray, mean, std, spec: BandSpec | None = None) -> torch.Tensor:
    """uint8 (H,W,3) -> float32 (1,3,H,W) normalized, as the eval preset does; with a multi-band `spec`,
    raw (H,W,B) -> its (1,C,H,W) channels normalized."""
    if spec is not None and not spec.is_rgb:
        x = spec.apply_tensor(_pixels(image)[None])[0]
    else:
        x = _pixels(image).float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return ((x - m) / s).unsqueeze(0)


def pad_collate(batch):
    """Stack (image, target) pairs of different sizes: images padded with 0, targets (..., H, W) with 255."""
    images, targets = zip(*batch)
    h = max(t.shape[-2] for t in targets)
    w = max(t.shape[-1] for t in targets)
    x = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    y = targets[0].new_full((len(targets), *targets[0].shape[:-2], h, w), IGNORE_INDEX)
    for i, (im, t) in enumerate(zip(images, targets)):
        x[i, :, :im.shape[-2], :im.shape[-1]] = im
        y[i, ..., :t.shape[-2], :t.shape[-1]] = t
    return x, y
