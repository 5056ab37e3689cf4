"""COCO run-length encoding of binary masks (the `{"size": [h, w], "counts": str}` form of pycocotools).

Runs are counted in column-major (Fortran) order and start with a run of zeros (possibly empty). The
string form stores each count, minus the count two places before it from the fourth on, as 5-bit groups
with a continuation bit, offset by 48 into printable ASCII (pycocotools `maskApi.c`, `rleToString`).

pycocotools' C encoder is used when it is installed (the `coco` and `test` extras); otherwise the numpy
encoder below gives the same strings (tests/test_serve.py checks one against the other).
"""
from __future__ import annotations

import numpy as np

try:  # optional: the C implementation is faster on large masks
    from pycocotools import mask as _coco_mask
except ImportError:  # pragma: no cover - depends on the environment
    _coco_mask = None


def run_lengths(mask: np.ndarray) -> list[int]:
    """(H,W) bool -> column-major run lengths, starting with the zeros run (0 if the first pixel is set)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def counts_to_string(counts: list[int]) -> str:
    """Run lengths -> the compressed COCO counts string."""
    out = []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C on a signed long
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """The compressed COCO counts string -> run lengths (inverse of `counts_to_string`)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_numpy(mask: np.ndarray) -> dict:
    """(H,W) bool mask -> {"size": [H, W], "counts": str}, in pure numpy."""
    mask = np.asarray(mask)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(run_lengths(mask))}


def encode(mask: np.ndarray) -> dict:
    """(H,W) bool mask -> COCO RLE {"size": [H, W], "counts": str}; pycocotools when installed."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE: expected an (H,W) mask, got shape {mask.shape}")
    if _coco_mask is None or mask.size == 0:
        return encode_numpy(mask)
    rle = _coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """COCO RLE {"size": [H, W], "counts": str or list} -> (H,W) bool mask."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    if sum(counts) != h * w:
        raise ValueError(f"RLE: counts sum to {sum(counts)}, expected {h * w} for size {h}x{w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((h, w), order="F")


def encode_each(labels: np.ndarray, ids=None) -> dict[int, dict]:
    """{label: COCO RLE of labels == label} for every label > 0 of an int (H, W) map (and every one of
    `ids`, empty ones included), in one pass over the map: the set pixels' column-major positions are
    grouped by label and each group's runs read off its sorted positions (encoding each mask over the
    whole image costs one full pass per label: 87 s for 1000 instances of a 4000 x 3000 image). Same
    strings as `encode`."""
    labels = np.asarray(labels)
    h, w = labels.shape
    empty = {"size": [int(h), int(w)], "counts": counts_to_string([int(h * w)])}
    out = {int(i): empty for i in (ids if ids is not None else [])}
    flat = labels.ravel(order="F")
    where = np.flatnonzero(flat)
    if where.size == 0:
        return out
    order = np.argsort(flat[where], kind="stable")  # positions stay ascending within a label
    where, values = where[order], flat[where][order]
    cuts = np.flatnonzero(np.diff(values)) + 1
    for pos, value in zip(np.split(where, cuts), values[np.r_[0, cuts]]):
        breaks = np.flatnonzero(np.diff(pos) != 1) + 1
        starts, ends = pos[np.r_[0, breaks]], pos[np.r_[breaks - 1, len(pos) - 1]] + 1
        counts = np.empty(2 * len(starts), np.int64)
        counts[0::2] = starts - np.r_[0, ends[:-1]]  # the zeros before each run of ones
        counts[1::2] = ends - starts
        tail = h * w - int(ends[-1])
        runs = counts.tolist() + ([tail] if tail else [])
        out[int(value)] = {"size": [int(h), int(w)], "counts": counts_to_string(runs)}
    return out


def per_class(labels: np.ndarray, classes: list[str]) -> dict:
    """The one per-class RLE layout pixelwise writes (prediction files and the server's answers):

        {"format": "rle", "size": [H, W], "segments": [{"id": class id, "name", "area": pixels,
                                                       "rle": {"size": [H, W], "counts": str}}, ...]}

    labels: an int (H, W) label map (one segment per class present; void 255 left out) or bool (C, H, W)
    masks, one per class, which may overlap (multi-label; one segment per class with any pixel).
    """
    labels = np.asarray(labels)
    if labels.ndim == 3:
        masks = ((c, labels[c]) for c in range(labels.shape[0]) if labels[c].any())
        size = labels.shape[1:]
    else:
        masks = ((c, labels == c) for c in np.unique(labels).tolist() if c < len(classes))
        size = labels.shape
    segments = [{"id": int(c), "name": classes[c], "area": int(m.sum()), "rle": encode(m)} for c, m in masks]
    return {"format": "rle", "size": [int(size[0]), int(size[1])], "segments": segments}
