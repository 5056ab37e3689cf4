"""Instances from a semantic map, so every semantic model can also answer instance questions.

- "components": each connected region of a thing class is one instance (the usual baseline for nuclei).
- "watershed": touching objects of one class are split by a marker-controlled watershed on the negated
  distance transform of the class's region; markers are the h-maxima of that distance (objects' cores),
  or seeds given by the caller (e.g. predicted centers). Beucher & Meyer, "The morphological approach to
  segmentation: the watershed transformation" (1993).

Label maps are int32 (H, W) with 0 = no instance and 1..K per instance; `class_ids[k-1]` is the class of
label k. `instances_from_semantic` wraps both methods and returns the library's `Instances` with scores.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology, segmentation

from pixelwise.data.sample import Instances
from pixelwise.errors import ConfigError

METHODS = ("components", "watershed")


def _structure(connectivity: int) -> np.ndarray:
    return ndi.generate_binary_structure(2, 1 if connectivity == 1 else 2)


def label_components(semantic: np.ndarray, things: Iterable[int], min_area: int = 1,
                     connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of each thing class. semantic int (H, W) -> (labels int32 (H, W), class_ids (K,)).

    connectivity: 1 (4-neighbours) or 2 (8-neighbours); components under `min_area` pixels are dropped."""
    labels = np.zeros(semantic.shape, np.int32)
    class_ids: list[int] = []
    for cls in things:
        comp, n = ndi.label(semantic == cls, structure=_structure(connectivity))
        if n == 0:
            continue
        areas = np.bincount(comp.ravel(), minlength=n + 1)
        keep = np.flatnonzero(areas >= max(1, min_area))
        keep = keep[keep > 0]
        lut = np.zeros(n + 1, np.int32)
        lut[keep] = np.arange(len(class_ids) + 1, len(class_ids) + 1 + len(keep))
        relabeled = lut[comp]
        labels[relabeled > 0] = relabeled[relabeled > 0]
        class_ids += [int(cls)] * len(keep)
    return labels, np.asarray(class_ids, np.int64)


def split_watershed(semantic: np.ndarray, things: Iterable[int], markers: np.ndarray | None = None,
                    h: float = 1.0, min_area: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Marker watershed of each thing class's region. -> (labels int32 (H, W), class_ids (K,)).

    markers: int (H, W) seeds > 0 (one value per object), or None for the h-maxima of the distance
    transform (h: how many pixels deeper a core must be than the saddle to its neighbour). Pieces of a
    region that no marker reaches still become instances of their own."""
    labels = np.zeros(semantic.shape, np.int32)
    class_ids: list[int] = []
    for cls in things:
        fg = semantic == cls
        if not fg.any():
            continue
        dist = ndi.distance_transform_edt(fg)
        seeds = markers * fg if markers is not None else ndi.label(morphology.h_maxima(dist, h) & fg)[0]
        ws = segmentation.watershed(-dist, seeds, mask=fg)
        rest, _ = ndi.label(fg & (ws == 0))
        ws = np.where(rest > 0, rest + ws.max(), ws)
        ws = segmentation.relabel_sequential(ws)[0]
        areas = np.bincount(ws.ravel())
        for k in range(1, len(areas)):
            if areas[k] >= max(1, min_area):
                class_ids.append(int(cls))
                labels[ws == k] = len(class_ids)
    return labels, np.asarray(class_ids, np.int64)


def labels_to_instances(labels: np.ndarray, class_ids: np.ndarray) -> Instances:
    """Label map (H, W) + class ids (K,) -> Instances with masks bool (K, H, W)."""
    k = np.arange(1, len(class_ids) + 1)
    masks = labels[None] == k[:, None, None] if len(k) else np.zeros((0, *labels.shape), bool)
    return Instances(masks, np.asarray(class_ids, np.int64))


def instances_to_labels(instances: Instances, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Instances -> label map int32 (H, W), instance k as k + 1 (later instances win where they overlap)."""
    shape = shape if shape is not None else instances.masks.shape[1:]
    labels = np.zeros(shape, np.int32)
    for k, mask in enumerate(instances.masks):
        labels[mask] = k + 1
    return labels


def instance_scores(labels: np.ndarray, class_ids: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
    """Score per instance: the mean probability of its class over its pixels (probs (C, H, W)); 1 without."""
    if probs is None or len(class_ids) == 0:
        return np.ones(len(class_ids), np.float32)
    flat = labels.ravel()
    scores = np.empty(len(class_ids), np.float32)
    for cls in np.unique(class_ids):
        sums = np.bincount(flat, weights=probs[cls].ravel(), minlength=len(class_ids) + 1)
        counts = np.bincount(flat, minlength=len(class_ids) + 1)
        ks = np.flatnonzero(class_ids == cls) + 1
        scores[ks - 1] = sums[ks] / np.maximum(counts[ks], 1)
    return scores


def instances_from_semantic(semantic: np.ndarray, things: Iterable[int], method: str = "components",
                            probs: np.ndarray | None = None, min_area: int = 1, **options):
    """Semantic map int (H, W) -> (labels int32 (H, W), class_ids (K,), scores (K,)).

    method: "components" (options: connectivity) or "watershed" (options: markers, h). probs (C, H, W)
    softmax scores the instances (mean class probability), else every score is 1."""
    things = [int(t) for t in things]
    if method == "components":
        labels, class_ids = label_components(semantic, things, min_area, **options)
    elif method == "watershed":
        labels, class_ids = split_watershed(semantic, things, min_area=min_area, **options)
    else:
        raise ConfigError(f"instances: unknown method '{method}' (known: {', '.join(METHODS)})")
    return labels, class_ids, instance_scores(labels, class_ids, probs)
