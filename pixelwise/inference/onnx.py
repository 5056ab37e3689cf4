"""Running an exported ONNX file with onnxruntime, as a model the Predictor can call.

The file comes from `pixelwise export` (pixelwise.export): its graph takes float32 (N, 3, H, W) RGB in
0..255 and returns the model's outputs; the model's config.json travels in the file's metadata under
META_KEY, so the file alone is enough to predict.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError, PixelwiseError

META_KEY = "pixelwise_config"


def session(path: str | Path, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise PixelwiseError("running an ONNX model needs onnxruntime: pip install 'pixelwise[export]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # no spin-waiting after a run: onnxruntime's threads would otherwise keep the cores busy for a while
    # after each call, slowing whatever runs next in the process (the torch model, decoding, the server)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An exported file run by onnxruntime, callable like a model on normalised (N,C,H,W) tensors.

    Attributes: config (the model's config.json), stride, version (the file's size and modification time:
    its identity in the measured-decisions cache)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: ONNX file not found")
        self.session = session(path, threads=torch.get_num_threads())
        st = path.stat()
        self.version = f"{st.st_size}:{st.st_mtime_ns}"
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in meta:
            raise ModelError(f"{path}: not exported by pixelwise (no '{META_KEY}' metadata)")
        self.config = json.loads(meta[META_KEY])
        self.stride = int(self.config.get("stride", 32))
        pre = self.config.get("preprocessing", {})
        self.mean = torch.tensor(pre.get("mean", IMAGENET_MEAN)).view(1, -1, 1, 1)
        self.std = torch.tensor(pre.get("std", IMAGENET_STD)).view(1, -1, 1, 1)
        self.unit = 1.0 if pre.get("bands") else 255.0  # the graph's input unit (pixelwise.export.input_unit)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor):
        image = np.ascontiguousarray(((x.float() * self.std + self.mean) * self.unit).numpy(), np.float32)
        outs = self.session.run(None, {"image": image})
        if len(outs) == 1:
            return torch.from_numpy(outs[0])
        return {("out" if n == "logits" else n): torch.from_numpy(v) for n, v in zip(self.output_names, outs)}
