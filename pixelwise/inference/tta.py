"""Test-time augmentation: horizontal flip and multi-scale inputs, logits averaged at the input size.

`parse_tta(spec)` reads the user's spelling: None, "flip", a list of scales, or a mix
("flip,0.75,1,1.25" on the command line). Scales are used exactly as given (include 1 to keep the
plain pass). `with_tta(run, flip, scales)` wraps a function images -> logits; the Predictor applies it
inside each tile, so TTA composes with sliding-window inference and keeps its memory bound.

For dict outputs (panoptic), every map is averaged; an "offset" map (N, 2, H, W) holds (dy, dx) pixel
vectors, so its dx is negated when un-flipping and both are divided by the scale when resizing back.
Multi-scale testing as in DeepLab (arXiv 1606.00915, "MSC") and most segmentation benchmarks.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError

Output = torch.Tensor | dict[str, torch.Tensor]


def parse_tta(spec) -> tuple[bool, tuple[float, ...]]:
    """None | "flip" | "flip,0.75,1.25" | [scales...] | ["flip", 0.75, ...] -> (flip, scales)."""
    if spec is None or spec is False or spec == "" or spec == "none":
        return False, (1.0,)
    items = spec.split(",") if isinstance(spec, str) else list(spec) if isinstance(spec, Sequence) else [spec]
    flip, scales = False, []
    for item in items:
        if isinstance(item, str) and item.strip().lower() == "flip":
            flip = True
            continue
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise PixelwiseError(f"tta: expected 'flip' or scale factors like 0.75, got {item!r}") from None
        if not 0.1 <= value <= 4:
            raise PixelwiseError(f"tta: scale {value} outside 0.1..4")
        scales.append(value)
    return flip, tuple(scales) or (1.0,)


def resize_outputs(out: Output, size, scale: float) -> Output:
    """Outputs resized to `size` (H, W); offset maps (pixel vectors) divided by `scale` = their size / H."""
    if isinstance(out, dict):
        return {k: _resize_map(v, size, scale, k == "offset") for k, v in out.items()}
    return _resize_map(out, size, scale, False)


def _resize_map(v: torch.Tensor, size, scale: float, offset: bool) -> torch.Tensor:
    if v.ndim != 4:  # not a map: per-query class logits (N, Q, C + 1) describe the whole image at any size
        return v
    if tuple(v.shape[-2:]) != tuple(size):
        v = F.interpolate(v, size=tuple(size), mode="bilinear", align_corners=False)
    return v / scale if offset and scale != 1 else v


def _unflip(out: Output) -> Output:
    if isinstance(out, dict):
        return {k: _unflip_map(v, k == "offset") for k, v in out.items()}
    return _unflip_map(out, False)


def _unflip_map(v: torch.Tensor, offset: bool) -> torch.Tensor:
    v = v.flip(-1)
    if offset:
        v = torch.cat([v[:, :1], -v[:, 1:2], v[:, 2:]], 1)
    return v


def _split(out: Output, n: int) -> tuple[Output, Output]:
    if isinstance(out, dict):
        return {k: v[:n] for k, v in out.items()}, {k: v[n:] for k, v in out.items()}
    return out[:n], out[n:]


def _add(total: Output | None, out: Output) -> Output:
    if total is None:
        return out
    if isinstance(out, dict):
        return {k: total[k] + v for k, v in out.items()}
    return total + out


def with_tta(run: Callable[[torch.Tensor], Output], flip: bool = False,
             scales: Sequence[float] = (1.0,)) -> Callable[[torch.Tensor], Output]:
    """images (N, 3, H, W) -> the mean of run's logits over scales (x flip), each resized to (H, W).

    A flipped copy runs in the same batch as the original (one call per scale).
    """
    scales = tuple(scales)
    if not flip and scales == (1.0,):
        return run

    def tta(x: torch.Tensor) -> Output:
        n, h, w = x.shape[0], *x.shape[-2:]
        total = None
        for s in scales:
            xs = x if s == 1 else F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))),
                                                mode="bilinear", align_corners=False)
            if flip:
                out, flipped = _split(run(torch.cat([xs, xs.flip(-1)])), n)
                out = _add(out, _unflip(flipped))
            else:
                out = run(xs)
            total = _add(total, resize_outputs(out, (h, w), s))
        k = len(scales) * (2 if flip else 1)
        return {key: v / k for key, v in total.items()} if isinstance(total, dict) else total / k

    return tta
