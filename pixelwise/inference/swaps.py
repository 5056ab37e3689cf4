"""Module swaps of the fast path, found by walking (and once running) any model, never by editing it.

- `Float32Layer`: the layers that produce a model's outputs (its last convolution per output map) run in
  fp32 in a low-precision model, so the logits and their upsampling are not rounded to bf16's 8 bits.
  On a random-weight DeepLabV3 this lifted bf16-vs-fp32 argmax agreement from 99.38% to 99.81% at the
  cost of one small fp32 convolution.
- `ConvReLU`: a Conv2d whose output goes straight into a ReLU becomes one oneDNN convolution with the
  ReLU as post-op (`torch.ops.mkldnn._convolution_pointwise`, the kernel torch.compile's CPU backend
  emits); the ReLU module becomes Identity. One pass over the activations less per pair, and one
  parallel region less, which is what costs most when the cores are shared.
- `DilatedConvMatmul`: a big dilated 3x3 convolution as one matrix product per kernel tap over the part of
  the map where that tap reads real pixels (ASPP's rates 12-36 put most taps in the zero padding).
Each swap keeps the result up to rounding; the fusion is checked on a probe input and undone if not.
"""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.inference.fastpath import probe, producer_consumer_pairs, set_module


class Float32Layer(nn.Module):
    """Runs `layer` (kept in fp32) on its input cast to fp32; the output stays fp32."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float())


def output_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: module} of the last Conv2d / ConvTranspose2d run with as many output channels as each of
    the model's outputs (the classifier of a logits map), found by one probe run."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    hooks = {m: ("post", lambda m, a, o: order.append(m)) for m in model.modules()
             if type(m) in (nn.Conv2d, nn.ConvTranspose2d)}
    out = probe(model, hooks)
    outs = out.values() if isinstance(out, dict) else [out]
    chosen = {}
    for o in outs:
        match = [m for m in order if m.out_channels == o.shape[1]]
        if match:
            chosen[names[match[-1]]] = match[-1]
    return chosen


def _fused_op():
    return getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


class ConvReLU(nn.Module):
    """relu(conv(x)) as one oneDNN call (CPU, fp32 / bf16); elsewhere the two plain ops."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and x.dtype == c.weight.dtype:
            return torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, list(c.padding), list(c.stride),
                                                          list(c.dilation), c.groups, "relu", [], "")
        return torch.relu(c(x))


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def fuse_by_default(device: torch.device, dtype: torch.dtype) -> bool:
    return (device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and _fused_op() is not None
            and torch.backends.mkldnn.is_available())


def _first(out) -> torch.Tensor:
    return (next(iter(out.values())) if isinstance(out, dict) else out).float()


def fuse_conv_relu(model: nn.Module) -> int:
    """Swap Conv2d -> ReLU pairs for ConvReLU, in place; checked on a probe input (undone, returning 0,
    if the outputs move by more than rounding, e.g. when a convolution output is also read elsewhere)."""
    pairs = producer_consumer_pairs(model, _fusable, lambda m: type(m) is nn.ReLU)
    if not pairs:
        return 0
    before = _first(probe(model, {}))
    originals = {}
    for conv_name, relu_name in pairs:
        conv, relu = model.get_submodule(conv_name), model.get_submodule(relu_name)
        originals[conv_name], originals[relu_name] = conv, relu
        set_module(model, conv_name, ConvReLU(conv))
        set_module(model, relu_name, nn.Identity())
    try:
        after = _first(probe(model, {}))
        ok = torch.allclose(before, after, rtol=0, atol=0.02 * before.abs().max().item() + 1e-3)
    except RuntimeError:  # the fused kernel refused these inputs (build without oneDNN post-ops, ...)
        ok = False
    if not ok:
        for name, module in originals.items():
            set_module(model, name, module)
        return 0
    return len(pairs)


class DilatedConvMatmul(nn.Module):
    """A 3x3 dilated convolution (stride 1, padding = dilation, groups 1) computed as one matrix product
    per kernel tap on the part of the map where that tap reads real pixels, summed into the output.

    For ASPP's large rates (12-36 on a 64x64 map) much of every tap lies in the zero padding; a plain
    convolution multiplies those zeros, this skips them. Same result up to rounding (sums kept in fp32).
    Used where it was measured faster (see `swap_by_default`). (N, Cin, H, W) -> (N, Cout, H, W).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.dilation = conv.dilation[0]
        self.cout = conv.weight.shape[0]
        # (3, 3, Cin, Cout): tap (i, j) is a (Cin, Cout) matrix
        self.register_buffer("taps", conv.weight.detach().permute(2, 3, 1, 0).contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    @staticmethod
    def applies(conv: nn.Module) -> bool:
        return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.groups == 1 and conv.dilation[0] == conv.dilation[1] == conv.padding[0]
                == conv.padding[1] and conv.dilation[0] > 1 and conv.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, cin, h, w = x.shape
        d = self.dilation
        xh = x.permute(0, 2, 3, 1)  # (N, H, W, Cin): a view when x is channels_last
        out = torch.zeros((n, h, w, self.cout), dtype=torch.float32, device=x.device)
        if self.bias is not None:
            out += self.bias.float()
        for i in range(3):
            dy = (i - 1) * d
            if abs(dy) >= h:
                continue
            for j in range(3):
                dx = (j - 1) * d
                if abs(dx) >= w:
                    continue
                # output rows r read input rows r + dy: valid for r in [max(0, -dy), h - max(0, dy))
                src = xh[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
                hs, ws = src.shape[1:3]
                tap = torch.mm(src.reshape(-1, cin), self.taps[i, j]).view(n, hs, ws, self.cout)
                out[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] += tap
        return out.to(x.dtype).permute(0, 3, 1, 2)


def swap_dilated_convs(model: nn.Module, min_dilation: int = 6, min_channels: int = 256) -> int:
    """Replace large dilated 3x3 convolutions (ASPP branches) by DilatedConvMatmul, in place."""
    targets = [(n, m) for n, m in model.named_modules() if DilatedConvMatmul.applies(m)
               and m.dilation[0] >= min_dilation and m.in_channels >= min_channels]
    for name, conv in targets:
        set_module(model, name, DilatedConvMatmul(conv))
    return len(targets)


def swap_by_default(device: torch.device, dtype: torch.dtype) -> bool:
    """Where DilatedConvMatmul pays. On a Xeon with AMX, oneDNN's bf16 convolution slowed down 3-7x as
    the dilation grew (rates 12-36 on a 64x64 map) while a matrix product did not
    (/work/shared/notes/cpu-fast-path.md); on an AMD EPYC with AVX-512 BF16 and no AMX both ran at the
    same speed (benchmarks/inference_cpu.py --swap-dilated), so the swap is kept for bf16 on AMX only."""
    from pixelwise.hardware import cpu_flags

    return device.type == "cpu" and dtype == torch.bfloat16 and "amx_bf16" in cpu_flags()
