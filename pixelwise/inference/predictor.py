"""Predictor: a saved model directory -> label maps for numpy images of any size.

    pred = Predictor.from_dir("runs/camvid/best").predict(image)   # uint8 (H,W,3) -> Prediction
    pred.semantic  # int64 (H,W);  pred.probs  # float32 (C,H,W) when asked for

The model's own preprocessing (mean/std, optional resize of the shorter side) comes from its config.json;
logits are resized back to the input size before the argmax.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.data.transforms import normalize_image
from pixelwise.engine.checkpoint import load_model
from pixelwise.errors import PixelwiseError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


class Predictor:
    """Runs a segmentation model on images. Build it with `Predictor.from_dir(directory)`."""

    def __init__(self, model: torch.nn.Module, config: dict, device: str | torch.device = "cpu",
                 precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise PixelwiseError(f"precision '{precision}': expected one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise PixelwiseError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on CPU")
        self.dtype = PRECISIONS[precision]
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.config = config
        self.classes: list[str] = list(config["classes"])
        self.palette = [tuple(c) for c in config["palette"]]
        pre = config.get("preprocessing", {})
        self.mean, self.std = pre.get("mean", [0.485, 0.456, 0.406]), pre.get("std", [0.229, 0.224, 0.225])
        self.resize = pre.get("resize")

    @classmethod
    def from_dir(cls, directory: str | Path, device: str | None = None, precision: str = "fp32") -> "Predictor":
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, config = load_model(directory, device="cpu")
        return cls(model, config, device, precision)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (N,3,H,W) -> float32 logits (N,C,H,W) at the same size."""
        h, w = images.shape[-2:]
        x = images.to(self.device, self.dtype)
        if self.resize:
            scale = self.resize / min(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        out = self.model(x)
        if isinstance(out, dict):
            out = out["out"]
        out = out.float()
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def predict(self, image, return_probs: bool = False) -> Prediction:
        """uint8 (H,W,3) image -> Prediction (semantic (H,W) int64, probs (C,H,W) if asked)."""
        image = as_rgb(image)
        logits = self.logits(normalize_image(image, self.mean, self.std))[0]
        probs = logits.softmax(0).cpu().numpy() if return_probs else None
        return Prediction(logits.argmax(0).cpu().numpy().astype(np.int64), probs, self.classes, self.palette)
