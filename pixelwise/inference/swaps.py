"""Module swaps of the fast path, found by walking (and once running) any model, never by editing it.

- `Float32Layer`: the layers that produce a model's outputs (its last convolution per output map) run in
  fp32 in a low-precision model, so the logits and their upsampling are not rounded to bf16's 8 bits.
  On a random-weight DeepLabV3 this lifted bf16-vs-fp32 argmax agreement from 99.38% to 99.81% at the
  cost of one small fp32 convolution.
- `OneDNNConv`: every plain Conv2d as a direct oneDNN call with its weight reordered once into oneDNN's
  own layout (not at every call), and the ReLU that reads its output fused in as a post-op; the ReLU
  module becomes Identity. About 5% on DeepLabV3-ResNet50 in bf16 here, plus one pass over the
  activations and one parallel region less per ReLU, which is what costs most when cores are shared.
- `FastASPP`: pixelwise's ASPP with its image-pooling branch turned into a per-image bias of the
  projection (no expanded map concatenated) and the global mean taken by avg_pool2d.
- `DilatedConvMatmul`: a big dilated 3x3 convolution as one matrix product per kernel tap over the part of
  the map where that tap reads real pixels (ASPP's rates 12-36 put most taps in the zero padding).
Each swap keeps the result up to rounding; the fusion is checked on a probe input and undone if not.
"""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.inference.probe import probe, producer_consumer_pairs, set_module


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


class OneDNNConv(nn.Module):
    """A Conv2d (and the ReLU after it, with relu=True) as one oneDNN call, its weight reordered into
    oneDNN's blocked layout once per input shape instead of at every call (what torch.compile's CPU
    freezing does). The layout is chosen for the last shape seen (one chosen for a tiny map ran 5x
    slower on a large one), so a stream of same-size images or tiles reorders once. On CPU fp32 / bf16
    only; elsewhere the plain ops."""

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        self.conv, self.relu = conv, relu
        self._packed: tuple | None = None  # ((weight dtype, data pointer, input shape), packed weight)

    def __getstate__(self):  # deepcopy / pickle: the packed weight is rebuilt on first use
        return {**super().__getstate__(), "_packed": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.dtype != c.weight.dtype:
            y = c(x)
            return torch.relu(y) if self.relu else y
        args = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
        key = (c.weight.dtype, c.weight.data_ptr(), x.shape)  # oneDNN picks the layout for this shape
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, torch.ops.mkldnn._reorder_convolution_weight(c.weight, *args, list(x.shape)))
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed[1], c.bias, *args,
                                                      "relu" if self.relu else "none", [], "")


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def onednn_by_default(device: torch.device, dtype: torch.dtype) -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return (device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
            and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))


def _first(out) -> torch.Tensor:
    return (next(iter(out.values())) if isinstance(out, dict) else out).float()


def onednn_convs(model: nn.Module) -> int:
    """Swap every plain Conv2d for OneDNNConv, fusing the ReLU that reads its output where there is one
    (found by a probe run), in place; checked on the probe input (all undone, returning 0, if the
    outputs move by more than rounding, e.g. when a convolution output is also read elsewhere)."""
    pairs = dict(producer_consumer_pairs(model, _fusable, lambda m: type(m) is nn.ReLU))
    replacements = {}
    for name, conv in model.named_modules():
        if _fusable(conv):
            replacements[name] = OneDNNConv(conv, relu=name in pairs)
            if name in pairs:
                replacements[pairs[name]] = nn.Identity()
    return _swap_checked(model, replacements) if replacements else 0


class FastASPP(nn.Module):
    """pixelwise's ASPP (`models.blocks.ASPP`, BN folded) computed without its two costly copies.

    The image-pooling branch is a per-image constant map, so its share of the 1x1 projection is a
    per-image bias: project(cat(b_1..b_k, pool)) = relu(W_b cat(b_1..b_k) + W_p pool + bias). The
    constant map is never expanded and concatenated (a strided copy of k+1 maps), and the global average
    uses avg_pool2d (on bf16 channels_last, adaptive_avg_pool2d and mean first copy the map to fp32;
    about 30x slower here). (N, cin, H, W) -> (N, cout, H, W).
    """

    def __init__(self, aspp: nn.Module):
        super().__init__()
        *spatial, pooling = aspp.branches
        conv, act = aspp.project[0][0], aspp.project[0][-1]
        k = sum(_last_conv(b).out_channels for b in spatial)
        self.branches = nn.ModuleList(spatial)
        self.pool_conv = pooling.conv
        self.proj = nn.Conv2d(k, conv.out_channels, 1, bias=conv.bias is not None)
        self.proj_pool = nn.Conv2d(conv.in_channels - k, conv.out_channels, 1, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(conv.weight[:, :k])
            if conv.bias is not None:
                self.proj.bias.copy_(conv.bias)
            self.proj_pool.weight.copy_(conv.weight[:, k:])
        self.act = act

    @staticmethod
    def applies(module: nn.Module) -> bool:
        from pixelwise.models.blocks import ASPP, ASPPPooling

        if type(module) is not ASPP or not isinstance(module.branches[-1], ASPPPooling):
            return False
        project = module.project[0]
        return (isinstance(project, nn.Sequential) and type(project[0]) is nn.Conv2d
                and project[0].kernel_size == (1, 1) and type(project[-1]) is nn.ReLU
                and all(isinstance(m, nn.Identity) for m in list(project)[1:-1]))  # BN folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(torch.cat([branch(x) for branch in self.branches], 1))
        pooled = self.pool_conv(torch.nn.functional.avg_pool2d(x, tuple(x.shape[-2:])))
        return self.act(y + self.proj_pool(pooled))


def _last_conv(module: nn.Module) -> nn.Conv2d:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]


def swap_aspp(model: nn.Module) -> int:
    """Replace BN-folded pixelwise ASPP modules by FastASPP, in place (checked on a probe input)."""
    targets = [n for n, m in model.named_modules() if FastASPP.applies(m)]
    if not targets:
        return 0
    return _swap_checked(model, {n: FastASPP(model.get_submodule(n)) for n in targets})


def _swap_checked(model: nn.Module, replacements: dict[str, nn.Module]) -> int:
    """Put `replacements` in place; undo them all (returning 0) if the probe output moves by more
    than rounding. Returns how many were kept."""
    before = _first(probe(model, {}))
    originals = {n: model.get_submodule(n) for n in replacements}
    for name, module in replacements.items():
        set_module(model, name, module)
    try:
        after = _first(probe(model, {}))
        ok = torch.allclose(before, after, rtol=0, atol=0.02 * before.abs().max().item() + 1e-3)
    except RuntimeError:  # e.g. the fused kernel refused these inputs (a build without oneDNN post-ops)
        ok = False
    if not ok:
        for name, module in originals.items():
            set_module(model, name, module)
        return 0
    return len(replacements)


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
    (../shared/notes/cpu-fast-path.md); on an AMD EPYC with AVX-512 BF16 and no AMX both ran at the
    same speed (benchmarks/inference_cpu.py --swap-dilated), so the swap is kept for bf16 on AMX only."""
    from pixelwise.hardware import cpu_flags

    return device.type == "cpu" and dtype == torch.bfloat16 and "amx_bf16" in cpu_flags()
