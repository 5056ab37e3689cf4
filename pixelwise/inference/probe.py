"""Looking inside any model by running it once: the probe behind batch-norm folding and the module swaps.

`probe(model, hooks)` runs a small random input through the model with forward hooks attached;
`producer_consumer_pairs` finds which module's output is the very tensor another module reads (a
convolution feeding a BatchNorm or a ReLU), so fusions are found from the graph a model really runs, not
from attribute names; `set_module` replaces a submodule by its dotted name.
"""
from __future__ import annotations

import torch
from torch import nn


def probe_size(model: nn.Module) -> int:
    stride = int(getattr(model, "stride", 32) or 32)
    return max(64, 2 * stride)


def input_channels(model: nn.Module) -> int:
    """The channels `model` takes: its recorded `in_chans` (pixelwise models), else its first convolution's
    input channels, else 3."""
    recorded = (getattr(model, "pixelwise_arch", None) or {}).get("kwargs", {}).get("in_chans")
    if recorded:
        return int(recorded)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def probe(model: nn.Module, hooks: dict, size: int | None = None):
    """Run a (1, in_chans, size, size) random input through `model` in its own dtype and memory format with
    `hooks` = {module: (kind, fn)} registered (kind "pre" or "post"); returns the output."""
    size = size or probe_size(model)
    p = next(model.parameters(), None)
    x = torch.randn(1, input_channels(model), size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(p.device if p is not None else "cpu", p.dtype if p is not None else torch.float32)
    if p is not None and p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    handles = [m.register_forward_pre_hook(fn) if kind == "pre" else m.register_forward_hook(fn)
               for m, (kind, fn) in hooks.items()]
    try:
        # not inference_mode (even when called inside it): its tensors keep no version counters (see below)
        with torch.inference_mode(False), torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def producer_consumer_pairs(model: nn.Module, producer, consumer) -> list[tuple[str, str]]:
    """(producer name, consumer name) pairs where a `consumer(module)`-selected module's input is the very
    tensor a `producer(module)`-selected module returned, found by one probe run. Modules called more
    than once (shared weights) are left out."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[torch.Tensor, nn.Module, int]] = {}
    calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def post(module, args, out):
        calls[module] = calls.get(module, 0) + 1
        outputs[id(out)] = (out, module, out._version)  # kept alive, so its id stays unique

    def pre(module, args):
        calls[module] = calls.get(module, 0) + 1
        hit = outputs.get(id(args[0])) if args else None
        # the same tensor, not modified in place since (a residual `x += shortcut` between a conv and
        # its ReLU would otherwise look like conv -> ReLU)
        if hit is not None and hit[0] is args[0] and hit[2] == args[0]._version:
            pairs.append((hit[1], module))

    hooks = {m: ("post", post) for m in model.modules() if producer(m)}
    hooks |= {m: ("pre", pre) for m in model.modules() if consumer(m)}
    probe(model, hooks)
    return [(names[a], names[b]) for a, b in pairs if calls[a] == 1 and calls[b] == 1]


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
