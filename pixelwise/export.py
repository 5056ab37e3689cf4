"""ONNX export with the preprocessing inside the graph, checked by onnxruntime against torch.

    report = export_onnx("runs/camvid/best", "model.onnx")     # {"max_abs_diff": ..., "checks": [...]}
    Predictor.from_dir("model.onnx").predict(image)             # runs with onnxruntime

The graph takes `image`: float32 (N, 3, H, W) RGB in 0..255 (a uint8 image cast to float, channels
first), with N, H and W dynamic; it normalises with the model's mean/std, pads to the model's stride
and returns `logits` float32 (N, C, H, W) (panoptic models: also `center`, `offset`). The model's
config.json (with its task) travels in the file's metadata (key "pixelwise_config"), so the file alone is enough to
predict. A config `resize` (shorter side) is not in the graph: the Predictor applies it around it.

A multi-band model (its preprocessing has a band record, `pixelwise.data.bands`) takes `image` float32
(N, C, H, W): its C input channels before normalisation, i.e. the selected raw bands divided by the
record's `scale`, then the derived indices (`BandSpec.apply_tensor` computes exactly this); the graph
normalises them with the per-channel mean/std.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import PixelwiseError
from pixelwise.inference.onnx import META_KEY, session as onnx_session


def input_unit(config: dict) -> float:
    """What one unit of the graph's input is in the model's 0..1 scale: 255 for RGB (0..255 input), 1 for a
    multi-band model (its channels as `BandSpec.apply_tensor` gives them)."""
    return 1.0 if (config.get("preprocessing") or {}).get("bands") else 255.0


class _Graph(nn.Module):
    """0..255 RGB (N,3,H,W) (or a multi-band model's channels, `unit` 1) -> logits (N,K,H,W): normalise, pad
    to the stride, run, crop."""

    def __init__(self, model: nn.Module, mean, std, stride: int, unit: float = 255.0):
        super().__init__()
        self.model = model
        self.stride = int(stride)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * unit)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * unit)

    def forward(self, image: torch.Tensor):
        x = (image - self.mean) / self.std
        h, w = x.shape[-2], x.shape[-1]
        # Always pad (possibly by 0) so the traced graph pads for every input size; the model then sees a
        # multiple of its stride and its own size-dependent padding branch is never traced.
        s = self.stride
        x = F.pad(x, (0, (s - w % s) % s, 0, (s - h % s) % s))
        out = self.model(x)
        if isinstance(out, dict):
            return tuple(v[..., :h, :w] for v in out.values())
        return out[..., :h, :w]


def _output_names(model: nn.Module, stride: int, channels: int = 3) -> list[str]:
    with torch.inference_mode():
        out = model(torch.zeros(1, channels, stride * 2, stride * 2))
    if isinstance(out, dict):
        return ["logits" if k == "out" else k for k in out]
    return ["logits"]


def export_onnx(model_dir: str | Path, path: str | Path, opset: int = 17, check: bool = True,
                check_sizes: tuple[tuple[int, int, int], ...] = ((1, 200, 264), (2, 96, 128))) -> dict:
    """Write `path` from a model directory; with `check`, run onnxruntime and torch on random images of
    (batch, height, width) `check_sizes` (other sizes than the one traced) and report the largest
    absolute logit difference. Returns {"path", "outputs", "opset", "checks": [...], "max_abs_diff"}."""
    from pixelwise.inference.fastpath import fold_batchnorm
    from pixelwise.modeldir import load_model, resolve_model_dir
    from pixelwise.tasks import model_task, task_for_model

    try:
        import onnx
    except ImportError:
        raise PixelwiseError("ONNX export needs the 'onnx' package: pip install 'pixelwise[export]'") from None
    model = load_model(model_dir, device="cpu")
    why = getattr(model, "onnx_unsupported", None)  # an architecture that says it cannot be traced for all sizes
    if why:
        raise PixelwiseError(f"{resolve_model_dir(model_dir)}: ONNX export of {model.pixelwise_arch['name']} is not "
                             f"supported: {why}")
    config = model.pixelwise_config
    pre = config.get("preprocessing", {})
    mean, std = pre.get("mean", IMAGENET_MEAN), pre.get("std", IMAGENET_STD)
    stride = int(getattr(model, "stride", 32) or 32)
    folded, _ = fold_batchnorm(model)
    unit, channels = input_unit(config), len(mean)
    graph = _Graph(folded, mean, std, stride, unit).eval()
    names = _output_names(folded, stride, channels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.rand(1, channels, stride * 3 + 5, stride * 2 + 3) * unit  # not a multiple of the stride
    axes = {"image": {0: "batch", 2: "height", 3: "width"}} | {n: {0: "batch", 2: "height", 3: "width"} for n in names}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: intended, checked below
        torch.onnx.export(graph, (sample,), str(tmp), input_names=["image"], output_names=names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    proto = onnx.load(str(tmp))
    # the file alone must predict: the task, and a panoptic model's post-processing, travel with it
    task_options = {**getattr(model, "postprocess", {}), **(config.get("task_options") or {})}
    meta = dict(config, resolved_from=str(resolve_model_dir(model_dir)), stride=stride, task=model_task(config),
                task_options=task_options)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    report = {"path": str(path), "outputs": names, "opset": opset, "checks": [], "max_abs_diff": None}
    if check:
        task = task_for_model(meta, defaults=getattr(model, "postprocess", None))
        report["checks"] = parity(model, path, mean, std, stride, check_sizes, task.agreement, unit)
        report["max_abs_diff"] = max(c["max_abs_diff"] for c in report["checks"])
        if not np.isfinite(report["max_abs_diff"]):
            raise PixelwiseError(f"{path}: parity check failed: NaN or Inf in the outputs of the model or of "
                                 "onnxruntime (check the model's weights and config.json)")
    return report


def parity(model: nn.Module, path: str | Path, mean, std, stride: int, sizes=((1, 200, 264), (2, 96, 128)),
           agreement=None, unit: float = 255.0) -> list[dict]:
    """Max abs difference between onnxruntime on `path` and the torch model (unfolded, fp32) per size, over
    every output, and the task's per-pixel agreement of the first ("logits"; `agreement(a, b)`, default
    argmax). NaN or Inf on either side is a failed check (difference inf, agreement 0)."""
    if agreement is None:
        agreement = lambda a, b: float((a.argmax(1) == b.argmax(1)).float().mean())  # noqa: E731
    session = onnx_session(path)
    reference = _Graph(model, mean, std, stride, unit).eval()
    gen = torch.Generator().manual_seed(0)
    checks = []
    for n, h, w in sizes:
        channels = len(mean)
        image = (torch.randint(0, 256, (n, channels, h, w), generator=gen).float() if unit == 255.0
                 else torch.rand((n, channels, h, w), generator=gen))
        with torch.inference_mode():
            expected = reference(image)
        expected = list(expected) if isinstance(expected, tuple) else [expected]
        got = [torch.from_numpy(v) for v in session.run(None, {"image": image.numpy()})]
        finite = all(bool(torch.isfinite(t).all()) for t in [*expected, *got])
        diff = max(float((g - e).abs().max()) for g, e in zip(got, expected)) if finite else float("inf")
        checks.append({"shape": [n, channels, h, w], "max_abs_diff": diff, "max_abs_logit": float(expected[0].abs().max()),
                       "agreement": agreement(got[0], expected[0]) if finite else 0.0})
    return checks
