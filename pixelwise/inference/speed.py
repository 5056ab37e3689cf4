"""`pixelwise bench`: how fast a model runs here, through the Predictor's fast path, against a peer library's
model run the way its users run it (fp32, eager), in the same process.

Latency is per forward call of a (batch, C, H, W) input already normalised (decoding the image and writing
outputs are not timed; `pixelwise predict` on a video reports the whole loop's frames/s). Median and 95th
percentile over at least `min_runs` calls and `min_seconds` seconds, after `warmup` calls. Peak memory: on
a GPU torch's peak allocation during the timed calls; on a CPU the peak resident set size sampled every
2 ms during them, above the process's size just before (the weights are already resident, so it is the
activations' and workspace's memory).
"""
from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ConfigError, PixelwiseError

PEER_LIBRARIES = ("torchvision", "smp")


@dataclass
class BenchResult:
    """One model's timing: `name`, input `size` (H, W), `batch`, `device`, `precision`, the fast-path `steps`
    applied, latency `median_ms` / `p95_ms` per call, `fps` = batch / median, `peak_mb`, `runs` timed."""

    name: str
    size: tuple[int, int]
    batch: int
    device: str
    precision: str
    steps: list[str] = field(default_factory=list)
    median_ms: float = 0.0
    p95_ms: float = 0.0
    fps: float = 0.0
    peak_mb: float = 0.0
    runs: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def parse_size(text: str) -> tuple[int, int]:
    """"360x480" (height x width) or "512" -> (H, W); else a ConfigError naming --size."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", str(text))
    if not match:
        raise ConfigError(f"--size must be HEIGHTxWIDTH (e.g. 360x480) or one number, got {text!r}")
    h = int(match.group(1))
    w = int(match.group(2) or h)
    if not (1 <= h <= 16384 and 1 <= w <= 16384):
        raise ConfigError(f"--size {text}: height and width must lie in 1..16384")
    return h, w


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak memory above the start during a `with` block: torch's peak allocation on CUDA, else the sampled
    resident set size (Linux /proc; 0 where it cannot be read)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            self.base = self.peak = _rss_bytes()
        except OSError:
            self.base = None
            return self
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.base is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def mb(self) -> float:
        return max(0, self.peak - self.base) / 2**20 if self.base is not None else 0.0


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int = 3, min_runs: int = 20,
               min_seconds: float = 5.0) -> tuple[list[float], float]:
    """Milliseconds of each timed call of `fn` (synchronised on CUDA) and the peak memory (MB) the calls took
    above what was held before the first (warm-up) call: activations and workspaces, not the weights."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    with PeakMemory(device) as memory:
        for _ in range(warmup):
            fn()
        sync()
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t0) * 1000)
    return times, memory.mb


def summarise(name: str, times: list[float], peak_mb: float, size, batch: int, device, precision: str,
              steps: list[str]) -> BenchResult:
    ordered = sorted(times)
    median = statistics.median(ordered)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
    return BenchResult(name, tuple(size), batch, str(device), precision, steps, round(median, 2), round(p95, 2),
                       round(batch * 1000 / median, 2), round(peak_mb, 1), len(times))


def fastpath_steps(predictor) -> list[str]:
    """What the Predictor's fast path did to the model, read off the prepared copy: precision, batch norm
    folded, the swaps of `pixelwise.inference.swaps` by count, channels_last (or the ONNX runtime)."""
    from pixelwise.inference import swaps

    if predictor.onnx:
        return [f"onnxruntime {predictor.precision} graph"]
    model = predictor.model
    steps = [predictor.precision]
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        steps.append("batch norm folded")
    for cls, what in ((swaps.FastASPP, "ASPP without copies"), (swaps.DilatedConvMatmul, "dilated convs as matmul"),
                      (swaps.OneDNNConv, "oneDNN conv(+ReLU)"), (swaps.Float32Layer, "fp32 output layers")):
        count = sum(isinstance(m, cls) for m in model.modules())
        if count:
            steps.append(f"{what} x{count}")
    weights = next((p for p in model.parameters() if p.ndim == 4), None)
    if weights is not None and weights.is_contiguous(memory_format=torch.channels_last):
        steps.append("channels_last")
    return steps


def subject(spec: str, num_classes: int, device: str, precision: str):
    """A Predictor (fast path, no TTA or CRF) for a model directory or a registered architecture name
    (random weights, `num_classes` classes, ImageNet normalisation), and its display name."""
    from pixelwise.inference.predictor import Predictor
    from pixelwise.models import MODELS, create_model

    path = Path(spec)
    if path.is_dir() or spec.endswith(".onnx"):
        name = f"{path.parent.name}/{path.name}" if path.name in ("best", "last") and path.parent.name else path.name
        return Predictor.from_dir(path, device=device, precision=precision, tta=None, crf=None), name or spec
    if spec not in MODELS:
        raise ConfigError(f"{spec}: neither a model directory nor an architecture (known: {', '.join(MODELS)})")
    model = create_model(spec, num_classes)
    config = {"classes": [f"class_{i}" for i in range(num_classes)], "task": "semantic",
              "preprocessing": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    return Predictor(model, config, device, precision, tta=None, crf=None), spec


def peer(spec: str, num_classes: int) -> nn.Module:
    """Another library's model as its users build it, random weights, eval mode: "torchvision:NAME" (a
    torchvision.models.segmentation builder, e.g. lraspp_mobilenet_v3_large) or "smp:ARCH[:ENCODER]"
    (segmentation_models.pytorch, e.g. smp:Unet:resnet18). Its forward returns logits or {"out": logits}."""
    library, _, rest = spec.partition(":")
    if library not in PEER_LIBRARIES or not rest:
        raise ConfigError(f"--compare {spec!r}: give LIBRARY:MODEL with LIBRARY one of {', '.join(PEER_LIBRARIES)} "
                          "(e.g. torchvision:lraspp_mobilenet_v3_large, smp:Unet:resnet18)")
    if library == "torchvision":
        import torchvision.models as tvm

        names = tvm.list_models(module=tvm.segmentation)
        if rest not in names:
            raise ConfigError(f"--compare {spec}: torchvision has no segmentation model {rest!r} "
                              f"(it has: {', '.join(names)})")
        return tvm.get_model(rest, weights=None, weights_backbone=None, num_classes=num_classes).eval()
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise PixelwiseError("--compare smp:...: needs segmentation-models-pytorch "
                             "(pip install 'pixelwise[bench]')") from None
    arch, _, encoder = rest.partition(":")
    try:
        return smp.create_model(arch, encoder_name=encoder or "resnet34", encoder_weights=None,
                                classes=num_classes).eval()
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"--compare {spec}: {' '.join(str(exc).split())[:200]}") from None


def bench_predictor(predictor, name: str, size, batch: int = 1, **timing) -> BenchResult:
    """Time `predictor.outputs` on a (batch, C, H, W) random normalised input."""
    channels = 3 if predictor.spec.is_rgb else predictor.spec.channels
    x = torch.randn(batch, channels, *size)
    times, peak = time_calls(lambda: predictor.outputs(x), predictor.device, **timing)
    return summarise(name, times, peak, size, batch, predictor.device, predictor.precision, fastpath_steps(predictor))


def bench_module(model: nn.Module, name: str, size, batch: int = 1, device: str | torch.device = "cpu",
                 **timing) -> BenchResult:
    """Time a plain module in fp32 eager under inference mode (what a user of that library runs)."""
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(batch, 3, *size, device=device)

    def call():
        with torch.inference_mode():
            return model(x)

    times, peak = time_calls(call, device, **timing)
    return summarise(name, times, peak, size, batch, device, "fp32", ["eager"])


def table(results: list[BenchResult]) -> str:
    """A markdown table of bench results, the first row the reference of the ratio column."""
    head = ["model", "size (HxW)", "batch", "device", "precision", "median ms", "p95 ms", "frames/s",
            "peak MB", "x first", "fast path"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ratio = r.fps / results[0].fps if results[0].fps else 0.0
        lines.append(f"| {r.name} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.device} | {r.precision} | "
                     f"{r.median_ms:.1f} | {r.p95_ms:.1f} | {r.fps:.1f} | {r.peak_mb:.0f} | {ratio:.2f} | "
                     f"{', '.join(r.steps)} |")
    return "\n".join(lines)
