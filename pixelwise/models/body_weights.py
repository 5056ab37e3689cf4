"""Local weights files into a model's body (and heads): the official checkpoints of the real-time networks
(mmseg's BiSeNet V2 and Fast-SCNN, the PIDNet and DDRNet authors'), or a pixelwise model's state dict. No
download: `pretrained` is a path, read by `encoders.read_weights`."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from timm.models import adapt_input_conv
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.encoders import read_weights

# mmcv's ConvModule keeps its layers as `conv` / `bn`; pixelwise's ConvNormAct as `0` / `1`.
_CONV_MODULE_KEY = re.compile(r"\.(conv|bn)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _pixelwise_key(key: str) -> str:
    return _CONV_MODULE_KEY.sub(lambda m: f".{0 if m[1] == 'conv' else 1}.{m[2]}", key)


def load_body_weights(model: str, body: nn.Module, pretrained: str | os.PathLike) -> list[str]:
    """Load a local weights file (`read_weights`) non-strictly into `body`; returns the loaded keys.

    A whole-model checkpoint gives its body part: mmseg's `backbone.*`, pixelwise's `encoder.*`, or the `model.*`
    of the PIDNet / DDRNet training wrapper (FullModel, whose loss buffers sit beside it). Keys are
    matched as they are, or with mmcv ConvModule names (`x.conv.weight`, `x.bn.bias`) mapped to pixelwise's
    (`x.0.weight`, `x.1.bias`). An RGB input conv (O, 3, k, k) is adapted to the body's in_chans by timm's
    adapt_input_conv, with a warning. Body tensors the file lacks, or has with another shape, keep their
    initialisation (a warning names them); a ModelError when nothing matches or `pretrained` is no path.
    """
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ModelError(f"{model}: pretrained must be a local weights file (no download), got {pretrained!r:.80}")
    source = str(Path(pretrained))
    state = read_weights(pretrained)
    for prefix in ("backbone.", "encoder.", "model."):  # mmseg, pixelwise, the PIDNet/DDRNet training wrapper
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    target = body.state_dict()
    in_chans = int(getattr(body, "in_chans", 3))
    matched, mismatched, adapted = {}, {}, []
    for key, value in state.items():
        name = key if key in target else _pixelwise_key(key)
        if name not in target:
            continue
        want = target[name]
        if (value.shape != want.shape and value.ndim == 4 and value.shape[1] == 3 and want.shape[1] == in_chans
                and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]):
            value = adapt_input_conv(in_chans, value)
            adapted.append(name)
        if value.shape != want.shape:
            mismatched[name] = f"{name} {tuple(value.shape)} vs {tuple(want.shape)}"
            continue
        matched[name] = value
    if not any(not k.endswith("num_batches_tracked") for k in matched):  # scalar counters fit any body
        raise ModelError(f"{model}: no tensor of {source} fits the {model} body (file keys e.g. {list(state)[:3]}, "
                         f"body keys e.g. {list(target)[:3]})")
    absent = [k for k in target if k not in matched and k not in mismatched]
    if absent or mismatched:
        warnings.warn(f"{source}: {len(absent) + len(mismatched)} of {len(target)} {model} body tensors left at "
                      f"their initialisation: not in the file e.g. {absent[:5]}; of another shape e.g. "
                      f"{list(mismatched.values())[:3]}", stacklevel=3)
    if adapted:
        warnings.warn(f"{source}: input conv {', '.join(adapted)} adapted from 3 to {in_chans} input channels "
                      f"(timm's adapt_input_conv)", stacklevel=3)
    body.load_state_dict(matched, strict=False)
    return list(matched)


def load_head_weights(pretrained: str | os.PathLike, head: nn.Module | None = None,
                      aux_head: nn.Module | None = None) -> None:
    """Load the heads of an official PIDNet / DDRNet checkpoint (or a pixelwise model's) where they fit.

    The official `final_layer.*` (a pixelwise model's `head.*`) loads into `head`; the official aux heads, the
    names of `aux_head`'s submodules (PIDNet `seghead_p.*`, `seghead_d.*`; DDRNet `seghead_extra.*`; a pixelwise
    model's `aux_head.*`), into `aux_head`; a tensor of another shape (an ImageNet checkpoint's classifier, another
    class count) is skipped silently: the head keeps its initialisation."""
    state = read_weights(pretrained)
    if any(k.startswith("model.") for k in state):  # the official training wrapper (FullModel)
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if any(k.startswith("encoder.") for k in state):  # a pixelwise model's state dict
        state = {("final_layer." + k[len("head."):] if k.startswith("head.") else
                  k[len("aux_head."):] if k.startswith("aux_head.") else k): v for k, v in state.items()}
    for prefix, module in (("final_layer.", head), ("", aux_head)):
        if module is None:
            continue
        own = module.state_dict()
        fits = {k[len(prefix):]: v for k, v in state.items()
                if k.startswith(prefix) and k[len(prefix):] in own and v.shape == own[k[len(prefix):]].shape}
        if fits:
            module.load_state_dict(fits, strict=False)
