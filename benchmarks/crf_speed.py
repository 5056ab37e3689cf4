"""Speed (and peak memory) of pixelwise's torch dense CRF against pydensecrf's C++ one.

    python benchmarks/crf_speed.py                       # 512x512, 11 classes, 1 thread, default config
    python benchmarks/crf_speed.py --size 1024 --classes 21 --repeats 1
    python benchmarks/crf_speed.py --image ../shared/data/camvid/val/0016E5_07959.png --config deeplab_v2
    python benchmarks/crf_speed.py --device cuda

Prints one line per implementation: best-of-N wall time, CPU time, peak resident memory of this process
so far, and argmax agreement / mean |dQ| with pydensecrf (when installed). The image is a real photo when
--image is given, else a smooth synthetic scene; probabilities are a noisy, blurred guess of its regions.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.postprocess.crf import CRFConfig, dense_crf


def _scene(size: int, classes: int, image_path: str | None, seed: int = 0):
    rng = torch.Generator().manual_seed(seed)
    if image_path:
        from PIL import Image

        img = np.asarray(Image.open(image_path).convert("RGB").resize((size, size), Image.BILINEAR))
    else:
        blobs = torch.rand(1, 3, size // 32, size // 32, generator=rng) * 255
        img = F.interpolate(blobs, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 255)
        img = (img[0].permute(1, 2, 0) + torch.randn(size, size, 3, generator=rng) * 4).clamp(0, 255)
        img = img.to(torch.uint8).numpy()
    # A coarse "network" guess: colour-space distance to random class prototypes, blurred and noised.
    protos = torch.rand(classes, 3, generator=rng) * 255
    x = torch.from_numpy(img).float().reshape(-1, 3)
    logits = -torch.cdist(x, protos).t().reshape(1, classes, size, size) / 20
    logits = F.avg_pool2d(logits, 15, 1, 7) + torch.randn(1, classes, size, size, generator=rng) * 0.5
    return img, torch.softmax(logits[0], 0)


def _pydensecrf(img: np.ndarray, probs: torch.Tensor, cfg: CRFConfig) -> torch.Tensor:
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs.numpy(), cfg.prob_floor, 1.0)).reshape(c, -1)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    d.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=np.ascontiguousarray(img),
                           compat=cfg.bilateral_compat)
    return torch.from_numpy(np.array(d.inference(cfg.iterations), dtype=np.float32).reshape(c, h, w))


def _timed(fn, repeats: int, sync=lambda: None):
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        sync()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return out, best_wall, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", choices=["default", "deeplab_v1", "deeplab_v2"], default="default")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--image", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-reference", action="store_true", help="skip pydensecrf")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = CRFConfig() if args.config == "default" else getattr(CRFConfig, args.config)()
    if args.iterations is not None:
        cfg.iterations = args.iterations
    img, probs = _scene(args.size, args.classes, args.image)
    print(f"{args.size}x{args.size}, {args.classes} classes, {cfg.iterations} iterations, config {args.config}, "
          f"device {args.device}, torch threads {args.threads}")
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    p_dev = probs.to(dev)
    ours, wall, cpu = _timed(lambda: dense_crf(p_dev, img, cfg), args.repeats, sync)
    ours = ours.cpu()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f"   peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if dev.type == "cuda" else ""
    print(f"pixelwise (torch)   wall {wall:7.3f} s   cpu {cpu:7.3f} s   peak RSS so far {rss:7.0f} MiB{gpu}")
    if args.no_reference:
        return
    try:
        ref, wall, cpu = _timed(lambda: _pydensecrf(img, probs, cfg), args.repeats)
    except ImportError:
        print("pydensecrf not installed: pip install pydensecrf2")
        return
    agree = float((ours.argmax(0) == ref.argmax(0)).float().mean())
    print(f"pydensecrf (C++)    wall {wall:7.3f} s   cpu {cpu:7.3f} s")
    print(f"agreement: argmax {100 * agree:.3f}% of pixels, mean |dQ| {float((ours - ref).abs().mean()):.5f}, "
          f"max |dQ| {float((ours - ref).abs().max()):.3f}")


if __name__ == "__main__":
    main()
