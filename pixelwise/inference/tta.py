"""Test-time augmentation: flips, 90-degree rotations and multi-scale inputs, logits averaged at the input size.

`parse_tta(spec)` reads the user's spelling: None, a view set ("flip": horizontal flip; "flips": both flips
and their composition; "d4": the 8 flips and 90-degree rotations of the square, as the U-Net paper,
arXiv 1505.04597, averages over rotated and flipped copies on the EM stacks), a list of scales, or a mix
("flip,0.75,1,1.25" on the command line). Scales are used exactly as given (include 1 to keep the
plain pass). `with_tta(run, views, scales)` wraps a function images -> logits; the Predictor applies it
inside each tile, so TTA composes with sliding-window inference and keeps its memory bound.

A view is a string of elementary ops applied in order: "t" transpose (H and W swap), "h" horizontal flip,
"v" vertical flip; "" is the image itself. Every element of the dihedral group is one such string. Outputs
are mapped back by the same ops in reverse order.

For dict outputs (panoptic), every map is averaged; an "offset" map (N, 2, H, W) holds (dy, dx) pixel
vectors, so mapping it back also moves the vectors: "h" negates dx, "v" negates dy, "t" swaps them; both
are divided by the scale when resizing back. Multi-scale testing as in DeepLab (arXiv 1606.00915, "MSC")
and most segmentation benchmarks.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError

Output = torch.Tensor | dict[str, torch.Tensor]


IDENTITY = ("",)
VIEW_SETS = {"flip": ("", "h"), "flips": ("", "h", "v", "hv"), "d4": ("", "h", "v", "hv", "t", "th", "tv", "thv")}


def parse_tta(spec) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """None | "flip" | "flips" | "d4" | "flip,0.75,1.25" | [scales...] | ["flip", 0.75, ...] -> (views, scales);
    "none" or None: (("",), (1.0,)). Of several view sets the largest is kept (each contains the smaller)."""
    if spec is None or spec is False or spec == "" or spec == "none":
        return IDENTITY, (1.0,)
    items = spec.split(",") if isinstance(spec, str) else list(spec) if isinstance(spec, Sequence) else [spec]
    views, scales = IDENTITY, []
    for item in items:
        if isinstance(item, str) and item.strip().lower() in VIEW_SETS:
            found = VIEW_SETS[item.strip().lower()]
            views = found if len(found) > len(views) else views
            continue
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise PixelwiseError(f"tta: expected {', '.join(repr(k) for k in VIEW_SETS)} or scale factors like "
                                 f"0.75, got {item!r}") from None
        if not 0.1 <= value <= 4:
            raise PixelwiseError(f"tta: scale {value} outside 0.1..4")
        scales.append(value)
    return views, tuple(scales) or (1.0,)


def spell_tta(views: Sequence[str], scales: Sequence[float]) -> str:
    """(views, scales) -> the spelling parse_tta reads back ("none" for no augmentation)."""
    name = next((k for k, v in VIEW_SETS.items() if tuple(views) == v), None)
    parts = ([name] if name else []) + ([f"{s:g}" for s in scales] if tuple(scales) != (1.0,) else [])
    return ",".join(parts) or "none"


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


def _op(v: torch.Tensor, op: str, offset: bool = False) -> torch.Tensor:
    """One elementary op on an (N, C, H, W) map; on an offset map ((dy, dx) first) the vectors move too."""
    if op == "h":
        v = v.flip(-1)
        return torch.cat([v[:, :1], -v[:, 1:2], v[:, 2:]], 1) if offset else v
    if op == "v":
        v = v.flip(-2)
        return torch.cat([-v[:, :1], v[:, 1:]], 1) if offset else v
    if op == "t":
        v = v.transpose(-2, -1)
        return torch.cat([v[:, 1:2], v[:, :1], v[:, 2:]], 1) if offset else v
    raise ValueError(f"tta: unknown view op {op!r} (one of 't', 'h', 'v')")


def view_of(x: torch.Tensor, view: str) -> torch.Tensor:
    """Images (N, C, H, W) as `view` sees them (its ops in order)."""
    for op in view:
        x = _op(x, op)
    return x


def _back(out: Output, view: str) -> Output:
    """A view's outputs mapped back to the image's frame (its ops in reverse order); non-map values (per-query
    class logits) describe the whole image and stay."""
    if isinstance(out, dict):
        return {k: _back_map(v, view, k == "offset") for k, v in out.items()}
    return _back_map(out, view, False)


def _back_map(v: torch.Tensor, view: str, offset: bool) -> torch.Tensor:
    if v.ndim != 4:
        return v
    for op in reversed(view):
        v = _op(v, op, offset)
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


def with_tta(run: Callable[[torch.Tensor], Output], views: Sequence[str] = IDENTITY,
             scales: Sequence[float] = (1.0,)) -> Callable[[torch.Tensor], Output]:
    """images (N, C, H, W) -> the mean of run's logits over scales x views, each mapped back and resized to
    (H, W). views: view strings (see the module docstring), as `parse_tta` gives them.

    Views run two to a batch where both have the same shape (a view and its horizontal flip: one call per
    pair and scale); a transposed and an untransposed view of a non-square image run apart.
    """
    views, scales = tuple(views), tuple(scales)
    if views == IDENTITY and scales == (1.0,):
        return run
    pairs = [views[i:i + 2] for i in range(0, len(views), 2)]

    def tta(x: torch.Tensor) -> Output:
        n, h, w = x.shape[0], *x.shape[-2:]
        total = None
        for s in scales:
            xs = x if s == 1 else F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))),
                                                mode="bilinear", align_corners=False)
            for pair in pairs:
                if len(pair) == 2 and (h == w or pair[0].count("t") % 2 == pair[1].count("t") % 2):
                    first, second = _split(run(torch.cat([view_of(xs, pair[0]), view_of(xs, pair[1])])), n)
                    outs = [(first, pair[0]), (second, pair[1])]
                else:
                    outs = [(run(view_of(xs, v)), v) for v in pair]
                for out, view in outs:
                    total = _add(total, resize_outputs(_back(out, view), (h, w), s))
        k = len(scales) * len(views)
        return {key: v / k for key, v in total.items()} if isinstance(total, dict) else total / k

    return tta
