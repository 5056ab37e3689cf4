"""Predictor: a saved model directory (or exported ONNX file) -> label maps for numpy images of any size.

    pred = Predictor.from_dir("runs/camvid/best").predict(image)   # uint8 (H,W,3) -> Prediction
    pred.semantic  # int64 (H,W);  pred.probs  # float32 (C,H,W) when asked for
    Predictor.from_dir(d, precision="auto", tile=1024, overlap=0.25, tta="flip")

The model's own preprocessing (mean/std, optional resize of the shorter side) comes from its config.json;
logits are resized back to the input size before the argmax.

Speed: the model runs through the fast path of `pixelwise.inference.fastpath` (batch norm folded,
channels_last, weights cast to the precision). precision="auto" picks bf16 on CUDA and on CPUs with
native bf16 units (`cpu_has_fast_bf16`), fp32 elsewhere; before a low-precision model is used, its
argmax is compared with the fp32 model's on a calibration image (a synthetic scene), and below
`MIN_AGREEMENT` of the pixels "auto" falls back to fp32 (a warning says so; an explicit "bf16"/"fp16"
is kept, with the same warning). Size: with `tile`, images larger than a tile run as overlapping tiles
(`pixelwise.inference.sliding`), with memory bounded by one row of tiles; `tta` adds flips and scales
(`pixelwise.inference.tta`) inside each tile.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.data.transforms import normalize_image
from pixelwise.errors import PixelwiseError
from pixelwise.inference import sliding
from pixelwise.inference.fastpath import argmax_agreement, fold_batchnorm, prepare_model
from pixelwise.inference.tta import parse_tta, with_tta

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_AGREEMENT = 0.995  # low precision is trusted when its argmax matches fp32 on this share of pixels
CALIBRATION_SIZE = 256


@dataclass
class Prediction:
    """semantic: int64 (H,W) class ids. probs: float32 (C,H,W) softmax, or None."""

    semantic: np.ndarray
    probs: np.ndarray | None
    classes: list[str]
    palette: list

    def overlay(self, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        from pixelwise.viz import add_legend, overlay

        out = overlay(image, self.semantic, self.palette, alpha)
        return add_legend(out, self.classes, self.palette, np.unique(self.semantic)) if legend else out


def as_rgb(image, source: str = "image") -> np.ndarray:
    """Accept uint8 (H,W,3), (H,W) grey or (H,W,4) RGBA; return uint8 (H,W,3) or raise naming the source."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise PixelwiseError(f"{source}: expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise PixelwiseError(f"{source}: expected an HxWx3 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PixelwiseError(f"{source}: image has zero size")
    return np.ascontiguousarray(image[..., :3])


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA (fp16 where bf16 is unsupported) and on CPUs with native bf16, else fp32."""
    if precision not in ("auto", *PRECISIONS):
        raise PixelwiseError(f"precision '{precision}': expected auto or one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise PixelwiseError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on CPU")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        from pixelwise.hardware import cpu_has_fast_bf16

        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


CRF_PRESETS = ("default", "deeplab_v1", "deeplab_v2")


def resolve_crf(crf):
    """None / 'none' -> None; a preset name or a CRFConfig -> CRFConfig (pixelwise.postprocess.crf)."""
    if crf is None or crf == "none":
        return None
    from pixelwise.postprocess.crf import CRFConfig

    if isinstance(crf, CRFConfig):
        return crf
    if crf == "default":
        return CRFConfig()
    if crf in ("deeplab_v1", "deeplab_v2"):
        return getattr(CRFConfig, crf)()
    raise PixelwiseError(f"crf '{crf}': expected none, {', '.join(CRF_PRESETS)} or a CRFConfig")


def calibration_image(size: int = CALIBRATION_SIZE) -> np.ndarray:
    """A deterministic synthetic street scene, uint8 (size, size, 3)."""
    from pixelwise.data.synthetic import make_scene

    return make_scene(seed=0, size=size).image


def _semantic(out, key: str = "out") -> torch.Tensor:
    if isinstance(out, dict):
        return out[key] if key in out else out["semantic"]
    return out


class Predictor:
    """Runs a segmentation model on images. Build it with `Predictor.from_dir(directory)`.

    model: an nn.Module (its fast-path copy is what runs; the module given is left as it is) or an
    `pixelwise.export.OnnxModel`. tile: None or the tile size in input-image pixels (with a config
    `resize`, tiles are resized with the image); overlap: fraction of a tile;
    tta: None, "flip", scales or a mix (see `parse_tta`); blend: "gaussian" or "linear";
    tile_batch: tiles per forward call (None: as many as make about a megapixel, at least one).
    """

    def __init__(self, model, config: dict, device: str | torch.device = "cpu", precision: str = "fp32",
                 tile: int | None = None, overlap: float = 0.25, tta=None, blend: str = "gaussian",
                 tile_batch: int | None = None, calibrate: bool = True, crf=None):
        self.device = torch.device(device)
        self.crf = resolve_crf(crf)
        self.requested_precision = precision
        self.precision = resolve_precision(precision, self.device)
        self.config = config
        self.classes: list[str] = list(config["classes"])
        self.palette = [tuple(c) for c in config["palette"]]
        pre = config.get("preprocessing", {})
        self.mean, self.std = pre.get("mean", [0.485, 0.456, 0.406]), pre.get("std", [0.229, 0.224, 0.225])
        self.resize = pre.get("resize")
        if tile is not None and int(tile) < 1:
            raise PixelwiseError(f"tile must be a positive number of pixels, got {tile}")
        if not 0 <= overlap < 1:
            raise PixelwiseError(f"overlap must lie in [0, 1), got {overlap}")
        if blend not in sliding.BLENDS:
            raise PixelwiseError(f"blend must be one of {', '.join(sliding.BLENDS)}, got {blend!r}")
        self.tile, self.overlap, self.blend, self.tile_batch = tile and int(tile), float(overlap), blend, tile_batch
        self.tta = parse_tta(tta)
        self.calibration: dict | None = None
        self.onnx = not isinstance(model, torch.nn.Module)
        if self.onnx:
            if self.precision != "fp32" and precision != "auto":
                raise PixelwiseError("an ONNX model runs in fp32 (precision 'auto' or 'fp32')")
            self.precision, self.model = "fp32", model
            self.align = int(getattr(model, "stride", 32))
        else:
            self.align = int(getattr(model, "stride", 32) or 32)
            self.model = self._prepare(model, calibrate and self.precision != "fp32")
        self.dtype = PRECISIONS[self.precision]
        self._run = with_tta(self._forward, *self.tta)

    @classmethod
    def from_dir(cls, directory: str | Path, device: str | None = None, precision: str = "auto",
                 tile: int | None = None, overlap: float = 0.25, tta=None, blend: str = "gaussian",
                 tile_batch: int | None = None, crf=None) -> "Predictor":
        """A model directory (config.json + model.safetensors), a run directory (its best/), or an
        exported .onnx file (run with onnxruntime)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        options = dict(tile=tile, overlap=overlap, tta=tta, blend=blend, tile_batch=tile_batch, crf=crf)
        if str(directory).endswith(".onnx"):
            from pixelwise.export import OnnxModel

            model = OnnxModel(directory)
            return cls(model, model.config, "cpu", precision, **options)
        from pixelwise.engine.checkpoint import load_model

        model, config = load_model(directory, device="cpu")
        return cls(model, config, device, precision, **options)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- the model -------------------------------------------------------------------------------------

    def _prepare(self, model: torch.nn.Module, calibrate: bool) -> torch.nn.Module:
        """The fast-path copy in self.precision; with `calibrate`, checked against fp32 first."""
        folded, _ = fold_batchnorm(model)
        low = prepare_model(folded, self.device, PRECISIONS[self.precision], fold=False)
        if not calibrate:
            return low
        reference = prepare_model(folded, self.device, torch.float32, fold=False, inplace=True)
        x = normalize_image(calibration_image(), self.mean, self.std)
        with torch.inference_mode():
            ref = self._model_logits(reference, x, torch.float32)
            got = self._model_logits(low, x, PRECISIONS[self.precision])
        agreement = argmax_agreement(_semantic(ref), _semantic(got))
        ok = agreement >= MIN_AGREEMENT
        self.calibration = {"precision": self.precision, "agreement": agreement, "ok": ok}
        if ok:
            return low
        if self.requested_precision == "auto":
            warnings.warn(f"{self.precision} argmax agreed with fp32 on only {agreement:.2%} of the calibration "
                          f"image's pixels (< {MIN_AGREEMENT:.1%}); running in fp32", stacklevel=3)
            self.precision = "fp32"
            return reference
        warnings.warn(f"{self.precision} argmax agrees with fp32 on only {agreement:.2%} of the calibration "
                      f"image's pixels (< {MIN_AGREEMENT:.1%}); precision='auto' would fall back to fp32",
                      stacklevel=3)
        return low

    def _model_logits(self, model, x: torch.Tensor, dtype: torch.dtype):
        """Normalized (N,3,H,W) -> the model's output in float32 (tensor or dict) on self.device."""
        if self.onnx:
            out = model(x.float().cpu())
        else:
            x = x.to(self.device, dtype).contiguous(memory_format=torch.channels_last)
            out = model(x)
        if isinstance(out, dict):
            return {k: v.float() for k, v in out.items()}
        return out.float()

    def _forward(self, x: torch.Tensor):
        return self._model_logits(self.model, x, self.dtype)

    # -- images of any size ----------------------------------------------------------------------------

    def _tiled(self, h: int, w: int) -> bool:
        """Whether an (h, w) input image runs as tiles (it is larger than one tile)."""
        return self.tile is not None and max(h, w) > self.tile

    def _grid(self, h: int, w: int, scale: float = 1.0) -> sliding.TileGrid:
        """Tiles over an (h, w) model-space image; `tile` counts input pixels, so with a config `resize`
        (model space = input x scale) a tile covers tile * scale model pixels."""
        return sliding.make_grid(h, w, max(1, round(self.tile * scale)), self.overlap, self.align)

    def _tile_batch(self, grid: sliding.TileGrid) -> int:
        # Tiles per call: a batch of small tiles keeps the cores busy; one 1024-px tile already does, and
        # a second one would add its activations and logits (~370 MB at 21 classes) to the peak memory.
        return self.tile_batch or max(1, 2**20 // (grid.tile_h * grid.tile_w))

    @torch.inference_mode()
    def outputs(self, images: torch.Tensor):
        """Normalized images (N,3,H,W) -> the model's outputs at (H, W), float32: a logits tensor
        (N,C,H,W), or for panoptic models a dict {"out", "center", "offset", ...}; tiled and TTA'd as
        configured."""
        h, w = images.shape[-2:]
        x, scale = images, 1.0
        if self.resize:
            scale = self.resize / min(h, w)
            x = F.interpolate(x.float(), size=(round(h * scale), round(w * scale)), mode="bilinear",
                              align_corners=False)
        if self._tiled(h, w):
            grid = self._grid(*x.shape[-2:], scale)
            parts = [sliding.stitch(self._run, sliding.tensor_fetcher(img.float().cpu()), grid, self.blend,
                                    self._tile_batch(grid)) for img in x]
            out = ({k: torch.stack([p[k] for p in parts]) for k in parts[0]} if isinstance(parts[0], dict)
                   else torch.stack(parts))
        else:
            out = self._run(x)
        if tuple(x.shape[-2:]) != (h, w):
            from pixelwise.inference.tta import _resize

            out = _resize(out, (h, w), x.shape[-2] / h)
        return out

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (N,3,H,W) -> float32 logits (N,C,H,W) at the same size, on self.device.
        With a dense CRF, log-probabilities refined by it (the CRF sees the images un-normalized)."""
        out = _semantic(self.outputs(images)).to(self.device)
        if self.crf is None:
            return out
        from pixelwise.postprocess.crf import crf_refine_logits

        mean = torch.tensor(self.mean, device=out.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=out.device).view(1, 3, 1, 1)
        raw = ((images.to(out.device).float() * std + mean) * 255).clamp_(0, 255)
        return crf_refine_logits(out, raw, self.crf)

    def predict(self, image, return_probs: bool = False) -> Prediction:
        """uint8 (H,W,3) image -> Prediction (semantic (H,W) int64, probs (C,H,W) if asked)."""
        image = as_rgb(image)
        h, w = image.shape[:2]
        if self._tiled(h, w) and not self.resize and not return_probs and self.crf is None:
            labels = self.labels(image)
            return Prediction(labels.astype(np.int64), None, self.classes, self.palette)
        logits = self.logits(normalize_image(image, self.mean, self.std))[0]
        probs = logits.softmax(0).cpu().numpy() if return_probs else None
        return Prediction(logits.argmax(0).cpu().numpy().astype(np.int64), probs, self.classes, self.palette)

    @torch.inference_mode()
    def labels(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 (H,W,3) -> class ids (H,W) as uint8 (int32 past 256 classes), written into `out` when given
        (e.g. an np.memmap). Tiled images never hold more than one row of tiles' logits."""
        image = as_rgb(image)
        if out is None:
            out = np.empty(image.shape[:2], sliding.label_dtype(self.num_classes))
        for y0, y1, band in self.iter_rows(image):
            out[y0:y1] = band
        return out

    @torch.inference_mode()
    def iter_rows(self, image: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """uint8 (H,W,3) -> (y0, y1, labels of rows y0..y1) bands, top to bottom: write a huge label map
        band by band without holding it (one band: the whole image when it is not tiled)."""
        image = as_rgb(image)
        h, w = image.shape[:2]
        dtype = sliding.label_dtype(self.num_classes)
        if not self._tiled(h, w) or self.resize or self.crf is not None:  # the CRF needs the whole image
            logits = self.logits(normalize_image(image, self.mean, self.std))[0]
            yield 0, h, logits.argmax(0).cpu().numpy().astype(dtype)
            return
        fetch = sliding.uint8_fetcher(image, self.mean, self.std)
        grid = self._grid(h, w)
        for y0, y1, band in sliding.iter_bands(self._run, fetch, grid, self.blend, self._tile_batch(grid)):
            yield y0, y1, _semantic(band).argmax(0).cpu().numpy().astype(dtype)

    def describe(self) -> str:
        """One line: backend, device, precision (and its calibration), tiling, TTA."""
        backend = "onnxruntime" if self.onnx else "torch"
        cal = (f" (calibration agreement {self.calibration['agreement']:.2%})" if self.calibration else "")
        tile = f", tile {self.tile} overlap {self.overlap:g} {self.blend}" if self.tile else ""
        flip, scales = self.tta
        tta = f", TTA flip={flip} scales={list(scales)}" if flip or scales != (1.0,) else ""
        return f"{backend} on {self.device}, {self.precision}{cal}{tile}{tta}"
