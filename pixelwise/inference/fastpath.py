"""The inference fast path: a copy of a model made faster to run, the saved model left untouched.

`prepare_model(model, device, dtype)` returns an eval-mode copy with
- batch norm folded into the convolution before it (found by running the model once with hooks, so it
  works for any architecture, timm backbones included; checked numerically against the original and
  undone if the outputs differ),
- the weights cast to `dtype` (bf16 / fp16 / fp32): the model is cast, not autocast, because on CPU
  `torch.autocast` re-casts every weight at every call and ran slower than fp32 in our measurements,
- channels_last memory format (oneDNN and cuDNN convolutions are fastest in NHWC),
- module swaps from `pixelwise.inference.swaps`: the layers that produce the outputs kept in fp32 (the
  logits are not rounded to bf16), on CPU every convolution a oneDNN call with a prepacked weight and
  its ReLU fused, pixelwise's ASPP without its two copies, and, where measured faster, big dilated
  convolutions as matrix products.

The Predictor checks a low-precision copy against fp32 with its task's `agreement` before it trusts it.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from pixelwise.inference import swaps
from pixelwise.inference.probe import input_channels, probe_size, producer_consumer_pairs, set_module


def _foldable(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    w = conv.weight.double()
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What stays after folding: nothing, or the activation (and dropout) of timm's BatchNormAct2d."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    rest = [m for m in rest if not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)
    return out["out"] if isinstance(out, dict) and "out" in out else (
        next(iter(out.values())) if isinstance(out, dict) else out)


def fold_batchnorm(model: nn.Module, check: bool = True) -> tuple[nn.Module, int]:
    """Fold eval-mode BatchNorm2d into the Conv2d feeding it, on a deep copy. Returns (copy, folds).

    y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution with weights
    W * s and bias (b - mean) * s + beta, s = gamma / sqrt(var + eps). With `check`, the folded copy is
    compared with the original on a random input; if they differ by more than float rounding (a
    convolution output also used elsewhere, modified in place, ...), the unfolded copy is returned.
    """
    model = copy.deepcopy(model).eval()
    size = probe_size(model)
    pairs = producer_consumer_pairs(model, lambda m: type(m) is nn.Conv2d, _foldable)
    if not pairs:
        return model, 0
    reference = copy.deepcopy(model) if check else None
    for conv_name, bn_name in pairs:
        bn = model.get_submodule(bn_name)
        _fold_pair(model.get_submodule(conv_name), bn)
        set_module(model, bn_name, _bn_replacement(bn))
    if check:
        p = next(model.parameters())
        x = torch.randn(1, input_channels(model), size, size, generator=torch.Generator().manual_seed(0)).to(p.device)
        a, b = _outputs(reference, x).float(), _outputs(model, x).float()
        tol = 1e-3 * a.abs().max().item() + 1e-4
        if not torch.allclose(a, b, rtol=0, atol=tol):
            warnings.warn(f"batch-norm folding changed the outputs (max diff {(a - b).abs().max():.3g}); "
                          "running the model unfolded", stacklevel=2)
            return reference, 0
    return model, len(pairs)


def prepare_model(model: nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  fold: bool = True, channels_last: bool = True, aspp: bool = True, swap_dilated: bool | None = None,
                  onednn: bool | None = None, fp32_logits: bool = True, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of `model` (`model` itself with inplace=True and fold=False) for inference on
    `device` in `dtype`: BN folded, the swaps of `pixelwise.inference.swaps` (ASPP without copies, dilated
    convs as matrix products where that pays, the layers that produce the outputs kept in fp32 when
    `dtype` is lower, convs as prepacked oneDNN calls with their ReLU fused on CPU), weights cast,
    channels_last."""
    device = torch.device(device)
    if fold:
        model = fold_batchnorm(model)[0]
    elif not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if aspp:  # applies to ASPP modules whose batch norm is folded (here or by the caller)
        swaps.swap_aspp(model)
    if swap_dilated if swap_dilated is not None else swaps.swap_by_default(device, dtype):
        swaps.swap_dilated_convs(model)
    heads = swaps.output_layers(model) if fp32_logits and dtype != torch.float32 else {}
    model = model.to(device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for name, layer in heads.items():
        set_module(model, name, swaps.Float32Layer(layer.to(device, memory_format=torch.channels_last)))
    if onednn if onednn is not None else swaps.onednn_by_default(device, dtype):
        swaps.onednn_convs(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
