"""ONNX export with the preprocessing inside the graph, checked by onnxruntime against torch.

    report = export_onnx("runs/camvid/best", "model.onnx")     # {"max_abs_diff": ..., "checks": [...]}
    Predictor.from_dir("model.onnx").predict(image)             # runs with onnxruntime

The graph takes `image`: float32 (N, 3, H, W) RGB in 0..255 (a uint8 image cast to float, channels
first), with N, H and W dynamic; it normalises with the model's mean/std, pads to the model's stride
and returns `logits` float32 (N, C, H, W) (panoptic models: also `center`, `offset`). The model's
config.json travels in the file's metadata (key "pixelwise_config"), so the file alone is enough to
predict. A config `resize` (shorter side) is not in the graph: the Predictor applies it around it.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import ModelError, PixelwiseError

META_KEY = "pixelwise_config"


class _Graph(nn.Module):
    """0..255 RGB (N,3,H,W) -> logits (N,C,H,W): normalise, pad to the stride, run, crop."""

    def __init__(self, model: nn.Module, mean, std, stride: int):
        super().__init__()
        self.model = model
        self.stride = int(stride)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

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


def _output_names(model: nn.Module, stride: int) -> list[str]:
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, stride * 2, stride * 2))
    if isinstance(out, dict):
        return ["logits" if k == "out" else k for k in out]
    return ["logits"]


def export_onnx(model_dir: str | Path, path: str | Path, opset: int = 17, check: bool = True,
                check_sizes: tuple[tuple[int, int, int], ...] = ((1, 200, 264), (2, 96, 128))) -> dict:
    """Write `path` from a model directory; with `check`, run onnxruntime and torch on random images of
    (batch, height, width) `check_sizes` (other sizes than the one traced) and report the largest
    absolute logit difference. Returns {"path", "outputs", "opset", "checks": [...], "max_abs_diff"}."""
    from pixelwise.engine.checkpoint import load_model, resolve_model_dir
    from pixelwise.inference.fastpath import fold_batchnorm

    try:
        import onnx
    except ImportError:
        raise PixelwiseError("ONNX export needs the 'onnx' package: pip install 'pixelwise[export]'") from None
    model, config = load_model(model_dir, device="cpu")
    pre = config.get("preprocessing", {})
    mean, std = pre.get("mean", [0.485, 0.456, 0.406]), pre.get("std", [0.229, 0.224, 0.225])
    stride = int(getattr(model, "stride", 32) or 32)
    folded, _ = fold_batchnorm(model)
    graph = _Graph(folded, mean, std, stride).eval()
    names = _output_names(folded, stride)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.rand(1, 3, stride * 3 + 5, stride * 2 + 3) * 255  # not a multiple of the stride
    axes = {"image": {0: "batch", 2: "height", 3: "width"}} | {n: {0: "batch", 2: "height", 3: "width"} for n in names}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: intended, checked below
        torch.onnx.export(graph, (sample,), str(tmp), input_names=["image"], output_names=names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    proto = onnx.load(str(tmp))
    meta = dict(config, resolved_from=str(resolve_model_dir(model_dir)), stride=stride)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    report = {"path": str(path), "outputs": names, "opset": opset, "checks": [], "max_abs_diff": None}
    if check:
        report["checks"] = parity(model, path, mean, std, stride, check_sizes)
        report["max_abs_diff"] = max(c["max_abs_diff"] for c in report["checks"])
    return report


def parity(model: nn.Module, path: str | Path, mean, std, stride: int,
           sizes=((1, 200, 264), (2, 96, 128))) -> list[dict]:
    """Max abs difference between onnxruntime on `path` and the torch model (unfolded, fp32) per size."""
    session = _session(path)
    reference = _Graph(model, mean, std, stride).eval()
    gen = torch.Generator().manual_seed(0)
    checks = []
    for n, h, w in sizes:
        image = torch.randint(0, 256, (n, 3, h, w), generator=gen).float()
        with torch.inference_mode():
            expected = reference(image)
        expected = expected[0] if isinstance(expected, tuple) else expected
        got = session.run(None, {"image": image.numpy()})[0]
        diff = float(np.abs(got - expected.numpy()).max())
        checks.append({"shape": [n, 3, h, w], "max_abs_diff": diff,
                       "max_abs_logit": float(expected.abs().max()),
                       "argmax_agreement": float((got.argmax(1) == expected.numpy().argmax(1)).mean())})
    return checks


def _session(path: str | Path, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise PixelwiseError("running an ONNX model needs onnxruntime: pip install 'pixelwise[export]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An exported file run by onnxruntime, callable like a model on normalised (N,3,H,W) tensors.

    Attributes: config (the model's config.json), stride."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: ONNX file not found")
        self.session = _session(path, threads=torch.get_num_threads())
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in meta:
            raise ModelError(f"{path}: not exported by pixelwise (no '{META_KEY}' metadata)")
        self.config = json.loads(meta[META_KEY])
        self.stride = int(self.config.get("stride", 32))
        pre = self.config.get("preprocessing", {})
        self.mean = torch.tensor(pre.get("mean", [0.485, 0.456, 0.406])).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("std", [0.229, 0.224, 0.225])).view(1, 3, 1, 1)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor):
        image = ((x * self.std + self.mean) * 255).numpy().astype(np.float32, copy=False)
        outs = self.session.run(None, {"image": image})
        if len(outs) == 1:
            return torch.from_numpy(outs[0])
        return {("out" if n == "logits" else n): torch.from_numpy(v) for n, v in zip(self.output_names, outs)}
