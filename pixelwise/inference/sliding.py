"""Sliding-window inference: a model run over overlapping tiles of an image of any size, the tiles'
logits blended into one map, with memory bounded by one row of tiles, not by the image.

Tiles lie on a grid aligned to the model's stride (`align`), so a tile sees the same pixel grid as a
one-pass run of the whole image; the image is zero-padded (in normalised space, as the models pad
themselves) on the right and bottom to a multiple of `align`, and the last tile of each row and column
ends at that padded border. A tile's logits are weighted by a blending window that is 1 on the image's
own borders and falls off toward the cut sides:

- "gaussian": a Gaussian of sigma = tile / 8 on cut sides (the importance map of nnU-Net, arXiv
  1809.10486); close to the one-pass result everywhere;
- "linear": a ramp across the middle half of each overlap and 0 on its outer quarter, so a pixel gets
  nothing from a tile whose cut is nearer than a quarter of the overlap: equal to the one-pass result
  (up to float rounding) whenever the model's receptive field radius fits in that quarter.

Logits are accumulated in a ring buffer of one tile's height across the padded width (C x tile x W,
float32, or float16 past ACCUM_FP32_LIMIT bytes), and rows that no later tile can touch are normalised
by the summed weights and handed on in bands of about BAND_BYTES: `iter_bands` yields the bands,
`stitch` joins them, `stitch_labels` reduces them to a label map band by band (optionally handing each
band to a callback that writes it). Models that return dicts (panoptic: "out", "center", "offset")
are stitched key by key; offsets are relative vectors, so they blend like any map, and grouping runs
once on the stitched maps.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.fastops import class_argmax
from pixelwise.data.io import label_dtype

Output = torch.Tensor | dict[str, torch.Tensor]
BLENDS = ("gaussian", "linear")
# Above this many bytes the float32 accumulator switches to float16 (the 8000 x 8000 case).
ACCUM_FP32_LIMIT = 512 * 2**20
BAND_BYTES = 64 * 2**20  # finished rows are handed on in float32 bands of about this size


@dataclass(frozen=True)
class TileGrid:
    """Tile positions for an (height, width) image: tiles of (tile_h, tile_w) at rows `ys` and columns
    `xs` of the image zero-padded to (padded_h, padded_w)."""

    height: int
    width: int
    padded_h: int
    padded_w: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)


def _starts(length: int, tile: int, step: int) -> tuple[int, ...]:
    if length <= tile:
        return (0,)
    return tuple(sorted(set(range(0, length - tile, step)) | {length - tile}))


def make_grid(height: int, width: int, tile: int | tuple[int, int], overlap: float = 0.25,
              align: int = 32) -> TileGrid:
    """Tiles of `tile` pixels (rounded up to a multiple of `align`) overlapping by about `overlap`
    (a fraction, 0 <= overlap < 1) of a tile; steps are multiples of `align` too."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    if th < 1 or tw < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    align = max(1, int(align))
    up = lambda v: -(-v // align) * align  # noqa: E731
    ph, pw = up(height), up(width)
    th, tw = min(up(th), ph), min(up(tw), pw)
    step = lambda t: max(align, int(t * (1 - overlap)) // align * align)  # noqa: E731
    return TileGrid(height, width, ph, pw, th, tw, _starts(ph, th, step(th)), _starts(pw, tw, step(tw)))


def _profile(tile: int, before: int, after: int, blend: str) -> torch.Tensor:
    """1-D window of a tile that overlaps its neighbours by `before` / `after` pixels (0: image border)."""
    pos = torch.arange(tile, dtype=torch.float64) + 0.5
    w = torch.ones(tile, dtype=torch.float64)
    if blend == "gaussian":
        g = torch.exp(-0.5 * ((pos - tile / 2) / (tile / 8)) ** 2).clamp_min(1e-4)
        half = pos < tile / 2
        if before:
            w[half] = g[half]
        if after:
            w[~half] = g[~half]
    elif blend == "linear":
        for overlap, dist in ((before, pos), (after, tile - pos)):
            if overlap:  # 0 on the outer quarter of the overlap, ramp over the middle half, then 1
                w = torch.minimum(w, ((dist - overlap / 4) / max(overlap / 2, 1)).clamp(0, 1))
    else:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    return w.float()


def _profiles(starts: tuple[int, ...], tile: int, blend: str) -> list[torch.Tensor]:
    out = []
    for i, s in enumerate(starts):
        before = starts[i - 1] + tile - s if i > 0 else 0
        after = s + tile - starts[i + 1] if i + 1 < len(starts) else 0
        out.append(_profile(tile, before, after, blend))
    return out


def _ring(y0: int, y1: int, size: int) -> list[tuple[int, int, int]]:
    """Rows [y0, y1) of a ring buffer of `size` rows as (buffer start, buffer end, offset from y0) pieces."""
    pieces, y = [], y0
    while y < y1:
        b = y % size
        n = min(y1 - y, size - b)
        pieces.append((b, b + n, y - y0))
        y += n
    return pieces


def tensor_fetcher(image: torch.Tensor) -> Callable[[int, int, int, int], torch.Tensor]:
    """Tiles of a normalised (C, H, W) tensor, zero-padded past its borders."""

    def fetch(y: int, x: int, h: int, w: int) -> torch.Tensor:
        crop = image[:, y:y + h, x:x + w]
        return F.pad(crop, (0, w - crop.shape[-1], 0, h - crop.shape[-2]))

    return fetch


def uint8_fetcher(image: np.ndarray, mean, std) -> Callable[[int, int, int, int], torch.Tensor]:
    """Tiles of a uint8 (H, W, 3) image, normalised one tile at a time (no float copy of the image)."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def fetch(y: int, x: int, h: int, w: int) -> torch.Tensor:
        crop = torch.from_numpy(np.ascontiguousarray(image[y:y + h, x:x + w])).permute(2, 0, 1)
        crop = (crop.float().div_(255) - m) / s
        return F.pad(crop, (0, w - crop.shape[-1], 0, h - crop.shape[-2]))

    return fetch


def array_fetcher(image: np.ndarray, normalize: Callable[[np.ndarray], torch.Tensor]
                  ) -> Callable[[int, int, int, int], torch.Tensor]:
    """Tiles of a raw (H, W, B) image of any dtype, each made the model's (C, h, w) input by `normalize`
    one tile at a time (a multi-band model's bands, indices and normalisation; no float copy of the image)."""

    def fetch(y: int, x: int, h: int, w: int) -> torch.Tensor:
        crop = normalize(image[y:y + h, x:x + w])
        return F.pad(crop, (0, w - crop.shape[-1], 0, h - crop.shape[-2]))

    return fetch


def iter_bands(run: Callable[[torch.Tensor], Output], fetch: Callable[[int, int, int, int], torch.Tensor],
               grid: TileGrid, blend: str = "gaussian", batch_size: int = 2,
               accum_dtype: torch.dtype | None = None) -> Iterator[tuple[int, int, Output]]:
    """Yield (y0, y1, band) for consecutive row bands covering rows [0, grid.height).

    run: (N, 3, tile_h, tile_w) float32 normalised -> logits (N, C, tile_h, tile_w) float32 (or a dict of
    such maps). fetch(y, x, h, w) -> (3, h, w) tile. band: (C, y1 - y0, width) float32 (or a dict): the
    weighted mean of the tiles' logits. Tiles of one grid row go through `run` in batches of `batch_size`.
    accum_dtype: None = float32 unless the accumulator would exceed ACCUM_FP32_LIMIT, then float16.
    """
    th, tw, pw = grid.tile_h, grid.tile_w, grid.padded_w
    py, px = _profiles(grid.ys, th, blend), _profiles(grid.xs, tw, blend)
    acc: dict | None = None
    wsum = None
    done = 0  # rows [0, done) have been yielded
    for r, y in enumerate(grid.ys):
        tiles = [(x, c) for c, x in enumerate(grid.xs)]
        for b in range(0, len(tiles), batch_size):
            chunk = tiles[b:b + batch_size]
            out = run(torch.stack([fetch(y, x, th, tw) for x, _ in chunk]))
            outs = out if isinstance(out, dict) else {None: out}
            if acc is None:
                dev = next(iter(outs.values())).device
                total = sum(v.shape[1] for v in outs.values()) * th * pw * 4
                dtype = accum_dtype or (torch.float32 if total <= ACCUM_FP32_LIMIT else torch.float16)
                acc = {k: torch.zeros(v.shape[1], th, pw, dtype=dtype, device=dev) for k, v in outs.items()}
                wsum = torch.zeros(th, pw, dtype=torch.float32, device=dev)
                py, px = [p.to(dev) for p in py], [p.to(dev) for p in px]
            for i, (x, c) in enumerate(chunk):
                wmap = py[r][:, None] * px[c][None, :]
                for b0, b1, off in _ring(y, y + th, th):
                    rows = slice(off, off + b1 - b0)
                    wsum[b0:b1, x:x + tw] += wmap[rows]
                    for k, v in outs.items():
                        acc[k][:, b0:b1, x:x + tw].addcmul_(v[i, :, rows], wmap[rows])  # no temporary
        last = r + 1 == len(grid.ys)
        final = grid.padded_h if last else grid.ys[r + 1]
        if final > done:
            stop = min(final, grid.height)
            channels = sum(v.shape[0] for v in acc.values())
            step = max(1, BAND_BYTES // (channels * grid.width * 4))  # float32 bands of about BAND_BYTES
            for y0 in range(done, stop, step):
                yield y0, min(y0 + step, stop), _take(acc, wsum, y0, min(y0 + step, stop), th, grid.width)
            for b0, b1, _ in _ring(done, final, th):  # free the rows for the tiles to come
                wsum[b0:b1] = 0
                for v in acc.values():
                    v[:, b0:b1] = 0
            done = final


def _take(acc: dict, wsum: torch.Tensor, y0: int, y1: int, size: int, width: int) -> Output:
    """Rows [y0, y1) of the ring as float32 weighted means, written into one fresh band per map (the ring
    pieces copied in, then divided in place: no concatenated or cast temporaries beside the band)."""
    parts = _ring(y0, y1, size)
    w = wsum.new_empty((y1 - y0, width))
    for b0, b1, off in parts:
        w[off:off + b1 - b0] = wsum[b0:b1, :width]
    band = {}
    for k, v in acc.items():
        out = torch.empty((v.shape[0], y1 - y0, width), dtype=torch.float32, device=v.device)
        for b0, b1, off in parts:
            out[:, off:off + b1 - b0] = v[:, b0:b1, :width]
        band[k] = out.div_(w)
    return band[None] if None in band else band


def stitch(run, fetch, grid: TileGrid, blend: str = "gaussian", batch_size: int = 2,
           accum_dtype: torch.dtype | None = None) -> Output:
    """The whole blended map: (C, H, W) float32 (or a dict of them), filled band by band into one
    preallocated map (never the bands and their concatenation at once)."""
    out = None
    for y0, y1, band in iter_bands(run, fetch, grid, blend, batch_size, accum_dtype):
        parts = band if isinstance(band, dict) else {None: band}
        if out is None:
            out = {k: v.new_empty((v.shape[0], grid.height, grid.width)) for k, v in parts.items()}
        for k, v in parts.items():
            out[k][:, y0:y1] = v
    return out[None] if None in out else out


def stitch_labels(run, fetch, grid: TileGrid, blend: str = "gaussian", batch_size: int = 2,
                  out: np.ndarray | None = None, key: str = "out",
                  on_rows: Callable[[int, int, np.ndarray], None] | None = None) -> np.ndarray | None:
    """The argmax label map, band by band: never more than one band of logits in memory.

    out: an (H, W) integer array to fill (e.g. an np.memmap); None allocates uint8 (int32 past 256
    classes), unless `on_rows(y0, y1, labels)` takes the bands instead (then nothing is kept and None
    comes back). key: which map of a dict output holds the class logits.
    """
    for y0, y1, band in iter_bands(run, fetch, grid, blend, batch_size):
        logits = band[key] if isinstance(band, dict) else band
        labels = class_argmax(logits).cpu().numpy()
        if out is None and on_rows is None:
            out = np.empty((grid.height, grid.width), label_dtype(logits.shape[0]))
        if out is not None:
            out[y0:y1] = labels
        if on_rows is not None:
            on_rows(y0, y1, labels.astype(label_dtype(logits.shape[0]), copy=False))
    return out
