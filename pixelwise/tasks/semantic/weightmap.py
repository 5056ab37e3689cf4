"""The U-Net paper's loss weight map (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", arXiv 1505.04597, eq. 2):

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

d1, d2: distances from pixel x to the border of the nearest and the second-nearest object (cell). The term
makes the thin background gaps between touching objects count many times a plain pixel, so the network
learns to keep them open and touching objects stay apart; w_c balances the class frequencies.

Pure functions over numpy arrays; `objects` maps are int (H, W) with 0 = no object and 1..K the objects.
Departures from the paper, and why:
- the border term is added on pixels outside every object only (the paper's formula gives it inside an
  object near a neighbour too; its purpose, and the issue this implements, are the separating background);
- distances are computed per object in its bounding box grown by `reach` = 4 sigma: beyond it an object
  is taken as out of reach, where the exact term is below w0 * exp(-8) (0.0034 for w0 = 10) anyway; this
  keeps the cost O(sum of object windows) instead of O(objects x image);
- w_c is the recipe's per-class weight (`train.class_weights`, e.g. from `pixelwise data check --weights`)
  or 1, rather than recomputed from each image's own frequencies, so one weighting holds for the whole set;
- `separate_touching` (optional, `gap`): instance masks that share a border (DSB's nuclei; the paper's EM
  cells always have membrane between them) are parted by background pixels first, so there is a gap to weigh.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from pixelwise.constants import IGNORE_INDEX


def objects_from_instances(masks: np.ndarray) -> np.ndarray:
    """Instance masks bool/uint8 (K, H, W) -> object ids int32 (H, W), 0 = none (a pixel in two masks goes
    to the later one)."""
    masks = np.asarray(masks)
    ids = np.zeros(masks.shape[1:], np.int32)
    for k, m in enumerate(masks, start=1):
        ids[m.astype(bool)] = k
    return ids


def objects_from_components(labels: np.ndarray, background: int) -> np.ndarray:
    """A label map (H, W) -> object ids int32 (H, W): the 4-connected components of the pixels that are
    neither `background` nor void (ISBI: the cells, between membranes)."""
    labels = np.asarray(labels)
    ids, _ = ndimage.label((labels != background) & (labels != IGNORE_INDEX))
    return ids.astype(np.int32)


def separate_touching(labels: np.ndarray, objects: np.ndarray, gap: int, background: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, objects) with the pixels of each object that lie within `gap` pixels (Chebyshev) of another
    object turned into background: instance masks that touch (DSB nuclei share borders) get the one-pixel
    gaps the U-Net paper's cells have between them, which the border term then weighs and a watershed on the
    predicted foreground splits along. The inputs are left as they are."""
    if gap <= 0:
        return labels, objects
    size = 2 * gap + 1
    top = ndimage.maximum_filter(objects, size=size)
    low = ndimage.minimum_filter(np.where(objects == 0, np.iinfo(np.int32).max, objects), size=size)
    touching = (objects > 0) & ((top != objects) | (low != objects))
    labels, objects = labels.copy(), objects.copy()
    labels[touching], objects[touching] = background, 0
    return labels, objects


def two_nearest(objects: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """(d1, d2) float32 (H, W): Euclidean distance from each pixel to the nearest and second-nearest object
    (0 on the object's own pixels for d1); inf where fewer objects lie within `reach` pixels."""
    h, w = objects.shape
    d1 = np.full((h, w), np.inf, np.float32)
    d2 = np.full((h, w), np.inf, np.float32)
    pad = int(math.ceil(reach))
    for k, box in enumerate(ndimage.find_objects(objects), start=1):
        if box is None:
            continue
        y0, y1 = max(0, box[0].start - pad), min(h, box[0].stop + pad)
        x0, x1 = max(0, box[1].start - pad), min(w, box[1].stop + pad)
        dist = ndimage.distance_transform_edt(objects[y0:y1, x0:x1] != k).astype(np.float32)
        a, b = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
        np.minimum(b, np.maximum(a, dist), out=b)
        np.minimum(a, dist, out=a)
    return d1, d2


def border_term(objects: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on pixels outside every object, 0 on objects; float32 (H, W)."""
    d1, d2 = two_nearest(objects, 4 * sigma)
    with np.errstate(over="ignore", invalid="ignore"):
        term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    term = np.nan_to_num(term, nan=0.0, posinf=0.0).astype(np.float32)
    term[objects > 0] = 0
    return term


def unet_weight_map(labels: np.ndarray, objects: np.ndarray, class_weights=None, w0: float = 10.0,
                    sigma: float = 5.0) -> np.ndarray:
    """Eq. 2 of the U-Net paper: float32 (H, W) = w_c[label] + the border term; void pixels 0.
    labels int (H, W) (255 = void); objects int (H, W); class_weights: one weight per class (None: 1)."""
    labels = np.asarray(labels)
    valid = labels != IGNORE_INDEX
    if class_weights is None:
        wc = valid.astype(np.float32)
    else:
        table = np.asarray(class_weights, np.float32)
        wc = np.where(valid, table[np.where(valid, labels, 0)], 0).astype(np.float32)
    return np.where(valid, wc + border_term(objects, w0, sigma), 0).astype(np.float32)


class WeightMapTransform:
    """The training preset with the weight map: Sample -> (image, target int64 (2, H, W) = [labels,
    round(weight * WEIGHT_SCALE)]), so the map is cropped, scaled, rotated, deformed and flipped with the
    labels it belongs to (nearest-neighbour, as every mask). Each image's map is computed once and cached
    (per process, by the image's path or name) before augmentation.

    settings: a `pixelwise.config.BorderWeight`; class_weights: one per class or None."""

    def __init__(self, preset, settings, class_weights=None):
        self.preset, self.settings, self.class_weights = preset, settings, class_weights
        self.cache: dict[str, np.ndarray] = {}

    def objects(self, sample) -> np.ndarray:
        how = self.settings.objects
        if how == "components" or (how == "auto" and sample.instances is None):
            return objects_from_components(sample.semantic, self.settings.background)
        if sample.instances is None:
            from pixelwise.errors import DataError

            raise DataError(f"{sample.meta.get('path', sample.name)}: train.border_weight.objects is 'instances', "
                            "but this dataset gives no instance masks (objects: components reads the label map)")
        masks = sample.instances.masks
        return objects_from_instances(masks) if len(masks) else np.zeros(np.shape(sample.semantic), np.int32)

    def target(self, sample) -> np.ndarray:
        """int64 (2, H, W): the labels (touching objects parted by `gap`) and round(weight * WEIGHT_SCALE)."""
        key = str(sample.meta.get("path") or sample.name)
        found = self.cache.get(key)
        if found is None or found.shape[1:] != np.shape(sample.semantic):
            from pixelwise.losses import WEIGHT_SCALE

            labels, objects = separate_touching(np.asarray(sample.semantic, np.int64), self.objects(sample),
                                                self.settings.gap, self.settings.background)
            w = unet_weight_map(labels, objects, self.class_weights, self.settings.w0, self.settings.sigma)
            found = np.stack([labels.astype(np.int32), np.rint(w * WEIGHT_SCALE).astype(np.int32)])
            self.cache[key] = found
        return found

    def weights(self, sample) -> np.ndarray:
        """int32 (H, W): round(weight * WEIGHT_SCALE) of one sample (cached)."""
        return self.target(sample)[1]

    def __call__(self, sample):
        import dataclasses

        if sample.semantic is None:
            from pixelwise.errors import DataError

            raise DataError(f"{sample.meta.get('path', sample.name)}: sample has no semantic labels")
        return self.preset(dataclasses.replace(sample, semantic=self.target(sample).astype(np.int64)))
