"""Encoders (backbones) from timm, as lists of feature maps described by channels and reduction.

`create_encoder("resnet50", output_stride=16)` wraps `timm.create_model(..., features_only=True)`; the
channels and reductions come from timm's `feature_info`, so decoders never guess them. Dilation (timm's
`output_stride=` argument) keeps the deep stages at stride 8 or 16 for the DeepLab family.

Pretrained weights: `pretrained=None/False` is random init; `True`, `"imagenet"` or a timm tag (e.g.
`"a1_in1k"`) downloads through timm; a path to a local `.safetensors` / `.pth` / `.pt` / `.bin` file loads
that file. Local files are read as plain tensors only (safetensors, or `torch.load(weights_only=True)`):
pixelwise never unpickles arbitrary objects.

Input channels: `in_chans` (1..MAX_IN_CHANS, multispectral imagery) sets the first convolution's inputs. On
every weight path (timm hub, PyPI, local file) RGB weights of that convolution are adapted as timm does
(`timm.models.adapt_input_conv`: summed over RGB for one channel, else the RGB filters repeated
cyclically over the channels and scaled by 3 / in_chans), with a warning naming the tensor.
"""
from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import adapt_input_conv
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.pypi_weights import PYPI_NORM, pypi_available, pypi_state

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Wrappers that training code puts around a state dict's keys (DDP, torch.compile, Lightning, pixelwise).
_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.", "net.")
_FILTER_FN_NAMES = ("checkpoint_filter_fn", "_checkpoint_filter_fn", "_filter_fn")
MAX_IN_CHANS = 64  # input channels a model may take (Sentinel-2 has 13 bands, hyperspectral stacks are cut)


def check_in_chans(model: str, in_chans) -> int:
    """`in_chans` if it is an integer in 1..MAX_IN_CHANS, else a ModelError naming `model`."""
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or not 1 <= in_chans <= MAX_IN_CHANS:
        raise ModelError(f"{model}: in_chans must be an integer in 1..{MAX_IN_CHANS}, got {in_chans!r}")
    return in_chans


class Encoder(nn.Module):
    """A timm backbone returning its feature maps, shallow to deep.

    forward: (N, in_chans, H, W) -> [ (N, channels[i], H / reductions[i], W / reductions[i]) ... ]
    (sizes rounded up by the convolutions' padding; SegmentationModel pads inputs to `stride` so they divide).
    Attributes: `channels`, `reductions`, `in_chans`, `adapted_input` (True when pretrained RGB weights
    of the first convolution were adapted to `in_chans` channels), `norm` (the RGB statistics the weights expect).
    """

    def __init__(self, model: nn.Module, name: str, in_chans: int = 3, adapted_input: bool = False):
        super().__init__()
        self.model = model
        self.name = name
        self.in_chans = in_chans
        self.adapted_input = adapted_input
        self.channels: list[int] = list(model.feature_info.channels())
        self.reductions: list[int] = list(model.feature_info.reduction())

    @property
    def stride(self) -> int:
        """Reduction of the deepest feature map (the encoder's output stride)."""
        return max(self.reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.model(x)
        return list(out.values()) if isinstance(out, Mapping) else list(out)


def create_encoder(name: str, pretrained: bool | str | os.PathLike | None = None, output_stride: int = 32,
                   in_chans: int = 3, out_indices: Sequence[int] | None = None, **timm_kwargs) -> Encoder:
    """Build the timm model `name` as a feature extractor.

    output_stride: 32 (none), 16 or 8 by dilating the last stages (timm's `output_stride=`); a ModelError
        when the architecture cannot (VGG, ViT, ...).
    in_chans: input channels, 1..MAX_IN_CHANS; pretrained RGB weights of the first conv are adapted to them.
    out_indices: which of timm's feature levels to return (default: all).
    pretrained: None/False, True/"imagenet"/a timm tag, or a local weights file (see module docstring).
    timm_kwargs: passed to `timm.create_model` (e.g. `dynamic_img_size=True` for ViTs).
    """
    if not isinstance(name, str) or not name:
        raise ModelError(f"encoder must be a timm model name (a string), got {name!r:.80}")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else "; see timm.list_models()"
        raise ModelError(f"unknown encoder {name!r}{hint}")
    if output_stride not in (8, 16, 32):
        raise ModelError(f"encoder {name!r}: output_stride must be 8, 16 or 32, got {output_stride!r}")
    check_in_chans(f"encoder {name!r}", in_chans)
    kwargs = dict(timm_kwargs, features_only=True, in_chans=in_chans)  # timm adapts its hub weights to in_chans
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    source = _weights_source(name, pretrained)
    if source == PYPI:
        net = _build(name, None, kwargs, output_stride)
        adapted = load_encoder_weights(net, name, pypi_state(name), kwargs, source=f"PyPI weights for {name}")
        enc = Encoder(net, name, in_chans, bool(adapted))
        enc.norm = PYPI_NORM
        return enc
    if name.startswith("vgg") and not isinstance(source, str):
        # features_only drops VGG's 120M-parameter fc6/fc7 after building them; build them 1 channel wide
        # instead (timm's hub loader needs the full-size ones, a local file does not).
        kwargs.setdefault("mlp_ratio", 1 / 4096)
    net = _build(name, source, kwargs, output_stride)
    if max(net.feature_info.reduction()) > output_stride:
        raise ModelError(f"encoder {name!r} does not support output_stride={output_stride} (it cannot dilate)")
    adapted = isinstance(source, str) and _hub_adapted(source, in_chans)
    if isinstance(source, Path):
        adapted = bool(load_encoder_weights(net, name, read_weights(source), kwargs, source=str(source)))
    enc = Encoder(net, name, in_chans, adapted)
    enc.norm = encoder_norm(name)
    return enc


def encoder_norm(name: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the input normalisation the encoder's pretrained weights expect, from timm's
    pretrained config; ImageNet's for None (pixelwise's own encoders) and for names timm does not know."""
    if name:
        try:
            cfg = timm.get_pretrained_cfg(name, allow_unregistered=False)
        except Exception:  # noqa: BLE001 - unknown name or tag: fall back to ImageNet statistics
            cfg = None
        if cfg is not None and cfg.mean and cfg.std:
            return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a local weights file as a flat {key: tensor} dict, never unpickling objects.

    Accepts a bare state dict or one nested under "state_dict" / "model" / "state_dict_ema"; strips
    wrapper prefixes shared by every key ("module.", "model.", "backbone.", "encoder.", ...); from a
    pixelwise model's state dict it keeps the encoder part.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable, truncated, or a pickle of arbitrary objects
        raise ModelError(f"weights file {path} could not be read as plain tensors: {exc}".splitlines()[0]) from exc
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ModelError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelError(f"weights file {path} holds no tensors")
    if any(k.startswith("encoder.model.") for k in state):  # a pixelwise model: keep its encoder
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.model.")}
    return _strip_prefixes(state)


def load_encoder_weights(net: nn.Module, name: str, state: dict[str, torch.Tensor], create_kwargs: dict,
                         source: str = "state dict") -> list[str]:
    """Copy the backbone tensors of a full-model state dict `state` (timm or torchvision key names) into
    the features-only timm model `net`. The classifier is ignored; a ModelError lists missing and
    unexpected keys when nothing matches or shapes disagree; a warning when some encoder keys are missing.

    Input convolutions: an RGB kernel (O, 3, k, k) whose tensor in `net` is (O, in_chans, k, k), with in_chans
    = create_kwargs["in_chans"], is adapted by timm's `adapt_input_conv` (and the architecture's declared
    first conv too, e.g. space-to-depth stems), with a warning. Returns the names of the adapted tensors."""
    in_chans = create_kwargs.get("in_chans", 3)
    state = _timm_filter(name, state, create_kwargs)
    cfg = timm.get_pretrained_cfg(name.split(".")[0])  # the wrapper's own cfg lost the classifier name
    cfg = cfg.to_dict() if cfg is not None else {}
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    state = {k: v for k, v in state.items() if not any(k.startswith(c + ".") for c in classifiers)}
    index = {_norm_key(k): k for k in state}
    target = net.state_dict()
    first_conv = cfg.get("first_conv")
    first_conv = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())
    matched, missing, bad_shape, adapted = {}, [], [], []
    for key, tensor in target.items():
        src = index.get(_norm_key(key))
        if src is None:
            missing.append(key)
            continue
        value = state[src]
        declared = any(_norm_key(key) == _norm_key(c + ".weight") for c in first_conv)
        if value.shape != tensor.shape and (declared or _rgb_kernel_for(value, tensor, in_chans)):
            value = _adapt_input(in_chans, value)
            if value.shape == tensor.shape:
                adapted.append(key)
        if value.shape != tensor.shape:
            bad_shape.append(f"{key} {tuple(value.shape)} vs {tuple(tensor.shape)}")
            continue
        matched[key] = value
    used = {_norm_key(k) for k in matched}
    unexpected = [k for k in state if _norm_key(k) not in used]
    if not matched or bad_shape:
        raise ModelError(
            f"weights in {source} do not fit encoder {name!r}: {len(matched)} of {len(target)} tensors matched; "
            f"missing e.g. {missing[:5]}; unexpected e.g. {unexpected[:5]}; shape mismatches e.g. {bad_shape[:3]}")
    if missing:
        warnings.warn(f"{source}: {len(missing)} encoder tensors not in the file, left at random init: "
                      f"{missing[:5]}", stacklevel=3)
    if adapted:
        warnings.warn(f"{source}: input conv {', '.join(adapted)} adapted from 3 to {in_chans} input channels "
                      f"(timm's adapt_input_conv)", stacklevel=3)
    net.load_state_dict(matched, strict=False)
    return adapted


def _rgb_kernel_for(value: torch.Tensor, tensor: torch.Tensor, in_chans: int) -> bool:
    """True when `value` is an RGB conv kernel (O, 3, k, k) and `tensor` the same kernel over in_chans inputs."""
    return (value.ndim == 4 and tensor.ndim == 4 and value.shape[1] == 3 and tensor.shape[1] == in_chans
            and value.shape[0] == tensor.shape[0] and value.shape[2:] == tensor.shape[2:])


def _adapt_input(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """timm's adapt_input_conv of an RGB kernel to `in_chans` inputs; the kernel unchanged when timm cannot
    (its shape then fails the caller's check and is reported as a mismatch)."""
    try:
        return adapt_input_conv(in_chans, weight)
    except (NotImplementedError, AssertionError, ValueError):
        return weight


def _hub_adapted(source: str, in_chans: int) -> bool:
    """Whether timm adapted the hub weights `source` to `in_chans` inputs (it does so itself when
    `timm.create_model` gets in_chans with pretrained=True); a warning naming the conv when it did."""
    cfg = timm.get_pretrained_cfg(source)
    cfg = cfg.to_dict() if cfg is not None else {}
    base = (cfg.get("input_size") or (3,))[0]
    if in_chans == base:
        return False
    convs = cfg.get("first_conv") or "the first conv"
    convs = convs if isinstance(convs, str) else ", ".join(convs)
    warnings.warn(f"timm weights {source}: input conv {convs} adapted from {base} to {in_chans} input channels "
                  f"(timm's adapt_input_conv)", stacklevel=3)
    return True


def pretrained_full_state(name: str, pretrained: bool | str | os.PathLike) -> dict[str, torch.Tensor]:
    """The whole timm model's state dict (timm key names) for `pretrained` — what FCN needs to turn a
    VGG's fully connected layers into convolutions, which `features_only` drops."""
    source = _weights_source(name, pretrained)
    if source is None:
        return {}
    if source == PYPI:
        return pypi_state(name)
    if isinstance(source, Path):
        return _timm_filter(name, read_weights(source), {})
    return _build(name, source, {}, 32).state_dict()


PYPI = "<pypi>"  # marker: weights from pixelwise.models.pypi_weights


def _weights_source(name: str, pretrained) -> None | str | Path:
    """None (random init), a timm model name with tag to download, or a local Path."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained == "pypi" or (pretrained in (True, "imagenet") and pypi_available(name)):
        return PYPI  # offline ImageNet weights from a PyPI package (pixelwise.models.pypi_weights)
    if pretrained is True or pretrained == "imagenet":
        return name
    if isinstance(pretrained, os.PathLike) or (
            isinstance(pretrained, str) and (os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)
                                             or Path(pretrained).exists())):
        return Path(pretrained)
    if isinstance(pretrained, str):
        return f"{name.split('.')[0]}.{pretrained}"
    raise ModelError(f"pretrained must be None, True, 'imagenet', a timm tag or a file path, got {pretrained!r}")


def _build(name: str, source, kwargs: dict, output_stride: int) -> nn.Module:
    """timm.create_model with errors turned into one-line ModelErrors."""
    hub = isinstance(source, str)
    try:
        return timm.create_model(source if hub else name, pretrained=hub, **kwargs)
    except (TypeError, AssertionError) as exc:
        if output_stride != 32 and ("output_stride" in str(exc) or isinstance(exc, AssertionError)):
            raise ModelError(f"encoder {name!r} does not support output_stride={output_stride} "
                             f"(it cannot dilate)") from exc
        raise ModelError(f"encoder {name!r} could not be built with {sorted(kwargs)}: {exc}") from exc
    except RuntimeError as exc:
        if hub and "No pretrained weights" in str(exc):
            raise ModelError(f"timm has no pretrained weights {source!r}; pass a local weights file") from exc
        if not hub:
            raise
        raise _download_error(name, source, exc) from exc
    except Exception as exc:  # noqa: BLE001 - network, hub and cache errors come in many types
        if not hub:
            raise
        raise _download_error(name, source, exc) from exc


def _download_error(name: str, source: str, exc: Exception) -> ModelError:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return ModelError(f"pretrained weights for encoder {name!r} ({source}) could not be downloaded "
                      f"({type(exc).__name__}: {reason}); download them elsewhere and pass "
                      f"pretrained=PATH to a local .safetensors/.pth file")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _norm_key(key: str) -> str:
    # timm's feature wrappers rename modules: FeatureListNet flattens "features.0" to "features_0",
    # FeatureGetterNet nests the model under "model.". Compare names with both undone.
    while key.startswith("model."):
        key = key[len("model."):]
    return key.replace(".", "_")


def _timm_filter(name: str, state: dict[str, torch.Tensor], create_kwargs: dict) -> dict[str, torch.Tensor]:
    """Apply the architecture's own timm checkpoint filter (torchvision / original-repo key names,
    position-embedding resampling) so foreign checkpoints load as timm's hub weights do."""
    module = importlib.import_module(timm.models.model_entrypoint(name.split(".")[0]).__module__)
    fn = next((getattr(module, n) for n in _FILTER_FN_NAMES if hasattr(module, n)), None)
    if fn is None:
        return state
    kwargs = {k: v for k, v in create_kwargs.items() if k not in ("features_only", "out_indices", "feature_cls")}
    try:
        with torch.device("meta"):
            full = timm.create_model(name.split(".")[0], pretrained=False, **kwargs)
        try:
            return dict(fn(dict(state), full))
        except TypeError:
            return dict(fn(dict(state)))
    except Exception:  # noqa: BLE001 - a filter that cannot run on this checkpoint: use the keys as they are
        return state
