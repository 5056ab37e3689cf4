"""pixelwise inference against torchvision and segmentation_models_pytorch, same architecture, same input.

    python benchmarks/inference_cpu.py                      # CPU, 2 threads, 512x512, batch 1 (+8 if time allows)
    python benchmarks/inference_cpu.py --rows deeplabv3 --iters 5 --no-append

Rows (random weights, 21 classes, weights=None / encoder_weights=None everywhere):
    deeplabv3      torchvision deeplabv3_resnet50 (output stride 8)  vs  pixelwise deeplabv3 resnet50, output
                   stride 8, no multi-grid (torchvision's layout; torchvision's head has one more 3x3 conv
                   256->256, ~1.5% of the FLOPs: the state dicts do not line up, so each side is compared
                   with its own fp32)
    fcn            torchvision fcn_resnet50                          vs  the same model through pixelwise's fast path
    lraspp         torchvision lraspp_mobilenet_v3_large             vs  the same model through pixelwise's fast path
    unet           smp Unet(resnet34)                                vs  pixelwise unet(encoder="resnet34")
    deeplabv3plus  smp DeepLabV3Plus(resnet50), rates 12/24/36      vs  pixelwise deeplabv3plus resnet50, same rates
(pixelwise has no FCN-on-dilated-ResNet or LR-ASPP architecture; for those rows its Predictor runs
torchvision's module, which is what a user would do.)
Rows against transformers (`--rows segformer_b0,segformer_b2,upernet_convnext_t,mask2former_swin_t`): the
transformers model at random init (SegformerForSemanticSegmentation B0 / B2, UperNetForSemanticSegmentation
on ConvNeXt-T without its training-only auxiliary head, Mask2FormerForUniversalSegmentation on Swin-T) is
saved, converted with `pixelwise convert`'s own code and loaded into pixelwise: the SAME weights on both
sides. Its baseline is what a transformers user runs for a label map: the model, then the logits upsampled
to the input (SegFormer, whose head is at 1/4) or the paper's semantic inference (Mask2Former: the query masks
upsampled, then sum of class probability x mask probability), then the argmax.

Each row runs in its own process. Timed: one forward of a (B, 3, 512, 512) batch of normalised synthetic
street scenes plus the argmax, the three forms interleaved (baseline fp32 eager, pixelwise fp32 eager,
pixelwise Predictor with precision "auto": BN folded, channels_last, prepacked oneDNN convs with ReLU fused, bf16 where the CPU
has bf16 units, logits layer in fp32), one warm-up each, median of --iters ("best runs": the ratio of
the fastest calls, less sensitive to other jobs on shared cores). Memory: peak RSS above the resident set before the call (VmHWM,
reset through /proc/self/clear_refs), the activations and workspace one forward needs. Agreement: the
fast path's argmax against pixelwise fp32 eager on the same batch. GFLOP/s (CPU): the pixelwise model's
counted FLOPs (`pixelwise.models.flops`, convolutions and matrix products, 2 per multiply-add) over the fast
path's time, against one large matrix product in the same precision timed in the parent process: how near
the hardware the fast path runs (oneDNN skips a dilated convolution's taps that fall in the zero padding,
so a model heavy in those can pass 100%).

Measured on an AMD EPYC with AVX-512 BF16 (no AMX): swapping ASPP's dilated convs for per-tap matrix
products (`pixelwise.inference.swaps.DilatedConvMatmul`) was no faster than oneDNN's convolution
there (--swap-dilated measures it), so the fast path leaves it off except on AMX CPUs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = ("deeplabv3", "fcn", "lraspp", "unet", "deeplabv3plus")
TRANSFORMERS_ROWS = ("segformer_b0", "segformer_b2", "upernet_convnext_t", "mask2former_swin_t")
NUM_CLASSES = 21


def transformers_pair(row: str):
    """(baseline name, transformers model as a label-map producer, pixelwise name, the converted pixelwise model)."""
    import tempfile

    import torch
    import torch.nn.functional as F
    import transformers as hf

    from pixelwise.convert import convert, read_transformers_dir
    from pixelwise.models import create_model
    from pixelwise.models.segformer import VARIANTS

    if row.startswith("segformer_"):
        spec = VARIANTS[row.split("_")[1]]
        model = hf.SegformerForSemanticSegmentation(hf.SegformerConfig(
            num_labels=NUM_CLASSES, hidden_sizes=list(spec["widths"]), depths=list(spec["depths"]),
            decoder_hidden_size=spec["decoder_dim"]))
    elif row == "upernet_convnext_t":
        model = hf.UperNetForSemanticSegmentation(hf.UperNetConfig(
            backbone_config=hf.ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768],
                                              out_features=["stage1", "stage2", "stage3", "stage4"]),
            num_labels=NUM_CLASSES, use_auxiliary_head=False))
    elif row == "mask2former_swin_t":
        model = hf.Mask2FormerForUniversalSegmentation(hf.Mask2FormerConfig(
            backbone_config=hf.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                          out_features=["stage1", "stage2", "stage3", "stage4"]),
            num_labels=NUM_CLASSES))
    else:
        raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS + TRANSFORMERS_ROWS)}")
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        config, state, _ = read_transformers_dir(tmp)
    converted = convert(config, state)
    ours = create_model(converted.arch, converted.num_classes, **converted.kwargs)
    ours.load_state_dict(converted.state, strict=True)

    class LabelScores(torch.nn.Module):
        """The transformers model as its user gets class scores at the input size."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(pixel_values=x)
            if hasattr(out, "class_queries_logits"):
                masks = F.interpolate(out.masks_queries_logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
                return torch.einsum("nqc,nqhw->nchw", out.class_queries_logits.softmax(-1)[..., :-1], masks.sigmoid())
            return F.interpolate(out.logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return (f"transformers {type(model).__name__.replace('ForSemanticSegmentation', '')} {row.split('_', 1)[1]}",
            LabelScores(model), f"pixelwise {converted.arch}, same weights", ours)


def build(row: str):
    """(baseline name, baseline module, pixelwise name, pixelwise module or None = baseline via fast path)."""
    if row in TRANSFORMERS_ROWS:
        return transformers_pair(row)
    import torchvision.models.segmentation as tvs

    from pixelwise.models import create_model

    if row == "deeplabv3":
        return ("torchvision deeplabv3_resnet50", tvs.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                                         num_classes=NUM_CLASSES),
                "pixelwise deeplabv3 r50 os8", create_model("deeplabv3", NUM_CLASSES, encoder="resnet50",
                                                            output_stride=8, multi_grid=(1, 1, 1)))
    if row == "fcn":
        return ("torchvision fcn_resnet50", tvs.fcn_resnet50(weights=None, weights_backbone=None,
                                                            num_classes=NUM_CLASSES), "same via pixelwise", None)
    if row == "lraspp":
        return ("torchvision lraspp_mobilenet_v3_large",
                tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES),
                "same via pixelwise", None)
    import segmentation_models_pytorch as smp

    if row == "unet":
        return ("smp Unet resnet34", smp.Unet("resnet34", encoder_weights=None, classes=NUM_CLASSES),
                "pixelwise unet r34", create_model("unet", NUM_CLASSES, encoder="resnet34"))
    if row == "deeplabv3plus":
        return ("smp DeepLabV3Plus resnet50", smp.DeepLabV3Plus("resnet50", encoder_weights=None, classes=NUM_CLASSES),
                "pixelwise deeplabv3plus r50", create_model("deeplabv3plus", NUM_CLASSES, encoder="resnet50",
                                                            rates=(12, 24, 36)))
    raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS + TRANSFORMERS_ROWS)}")


def status_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def peak_extra_mb(fn) -> tuple[float, float]:
    """(seconds, peak RSS above the RSS before the call, MB) of one call of fn."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    before = status_kb("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, max(0, status_kb("VmHWM") - before) / 1024


def scenes(batch: int, size: int):
    import torch

    from pixelwise.data.synthetic import make_scene
    from pixelwise.data.transforms import normalize_image

    from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD

    return torch.cat([normalize_image(make_scene(seed=100 + i, size=size).image, IMAGENET_MEAN, IMAGENET_STD)
                      for i in range(batch)])


def out_of(y):
    return y["out"] if isinstance(y, dict) else y


def run_row(args) -> dict:
    """Child process: time one row; returns the result dict."""
    import torch

    torch.set_num_threads(args.threads)
    from pixelwise.data.classes import default_palette
    from pixelwise.inference import swaps
    from pixelwise.inference.predictor import Predictor

    torch.manual_seed(0)
    base_name, base, ours_name, ours = build(args.row)
    base.eval()
    ours = (ours if ours is not None else base).eval()
    x = scenes(args.batch, args.size)
    config = {"classes": [f"c{i}" for i in range(NUM_CLASSES)], "palette": default_palette(NUM_CLASSES),
              "preprocessing": {}}
    if args.swap_dilated:
        swaps.swap_by_default = lambda device, dtype: True
    t0 = time.perf_counter()
    predictor = Predictor(ours, config, args.device, args.precision)
    setup = time.perf_counter() - t0
    without_aspp = None
    if args.aspp_ablation:  # the Predictor as it ran before the ASPP swap reached it
        real, swaps.swap_aspp = swaps.swap_aspp, (lambda model: 0)
        try:
            without_aspp = Predictor(ours, config, args.device, args.precision)
        finally:
            swaps.swap_aspp = real
    sync = (torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None))
    xd = x.to(args.device)
    base.to(args.device)
    ours_eager = ours if ours is not base else base

    def timed(model_fn):
        def call():
            with torch.inference_mode():
                out_of(model_fn()).argmax(1)
            sync()
        return call

    forms = {"baseline": timed(lambda: base(xd)),
             "fp32": timed(lambda: ours_eager(xd)) if ours is not base else None,
             "fast": timed(lambda: predictor.logits(xd)),
             "fast_no_aspp": timed(lambda: without_aspp.logits(xd)) if without_aspp is not None else None}
    forms = {k: v for k, v in forms.items() if v is not None}
    times = {k: [] for k in forms}
    mem = {k: 0.0 for k in forms}
    for i in range(args.iters + 1):  # the first round is the warm-up
        for k, fn in forms.items():
            s, m = peak_extra_mb(fn)
            mem[k] = max(mem[k], m)
            if i:
                times[k].append(s)
    with torch.inference_mode():
        ref = out_of(ours_eager(xd)).float()
        got = predictor.logits(xd)
        theirs = out_of(base(xd)).float() if args.row in TRANSFORMERS_ROWS else None
    agreement = (ref.argmax(1) == got.argmax(1)).float().mean().item()
    vs_baseline = None if theirs is None else (theirs.argmax(1) == got.argmax(1)).float().mean().item()
    med = {k: statistics.median(v) for k, v in times.items()}
    from pixelwise.models.flops import count_gflops

    gflop = 2 * count_gflops(ours_eager, args.size) * args.batch  # multiply-adds x 2 = FLOPs, convs and matmuls
    return {"row": args.row, "batch": args.batch, "size": args.size, "baseline": base_name, "ours": ours_name,
            "precision": predictor.precision, "calibration": predictor.calibration, "setup_s": setup,
            "seconds": med, "all_seconds": times, "peak_extra_mb": mem, "agreement": agreement,
            "ips": {k: args.batch / v for k, v in med.items()}, "gflop": gflop, "vs_baseline": vs_baseline}


def matmul_peak(threads: int) -> dict[str, float]:
    """GFLOP/s of one large matrix product (4096 x 2048 @ 2048 x 2048) in fp32 and bf16 here: the roofline
    the models' own convolutions (oneDNN matrix kernels) can be held against."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(4096, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
            for _ in range(2):
                a @ b
            t0 = time.perf_counter()
            for _ in range(5):
                a @ b
            out[name] = 2 * 4096 * 2048 * 2048 * 5 / (time.perf_counter() - t0) / 1e9
    return out


def table(results: list[dict], peak: dict[str, float] | None = None) -> str:
    ablation = any("fast_no_aspp" in r.get("ips", {}) for r in results)
    extra = (" fast without the ASPP swap: img/s | its / baseline |", "---|---|") if ablation else ("", "")
    extra = (extra[0] + (" fast GFLOP/s (share of the matmul peak) |" if peak else ""), extra[1] + ("---|" if peak else ""))
    same = any(r.get("vs_baseline") is not None for r in results)  # same weights on both sides: their answers agree
    extra = (extra[0] + (" fast's agreement with the baseline |" if same else ""), extra[1] + ("---|" if same else ""))
    lines = ["| row | batch | baseline | img/s | peak MB | pixelwise | precision | img/s fp32 eager | img/s fast "
             "| peak MB fast | fast / baseline | same, best runs | agreement vs own fp32 |" + extra[0],
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + extra[1]]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['row']} | {r['batch']} | {r['skipped']} |  |  |  |  |  |  |  |  |  |  |"
                         + (" | |" if ablation else ""))
            continue
        ips, mem = r["ips"], r["peak_extra_mb"]
        fp32 = f"{ips['fp32']:.3f}" if "fp32" in ips else "(= baseline)"
        line = (f"| {r['row']} | {r['batch']} | {r['baseline']} | {ips['baseline']:.3f} | {mem['baseline']:.0f} "
                f"| {r['ours']} | {r['precision']} | {fp32} | {ips['fast']:.3f} | {mem['fast']:.0f} "
                f"| **{ips['fast'] / ips['baseline']:.2f}x** "
                f"| {min(r['all_seconds']['baseline']) / min(r['all_seconds']['fast']):.2f}x | {r['agreement']:.4%} |")
        if ablation:
            no = ips.get("fast_no_aspp")
            line += f" {no:.3f} | {no / ips['baseline']:.2f}x |" if no else " | |"
        if peak:
            rate = r["gflop"] * ips["fast"] / r["batch"]
            roof = peak.get(r["precision"])
            line += f" {rate:.0f} ({rate / roof:.0%}) |" if roof else f" {rate:.0f} |"
        if same:
            line += f" {r['vs_baseline']:.4%} |" if r.get("vs_baseline") is not None else " |"
        lines.append(line)
    return "\n".join(lines)


def append_results(text: str, path: Path) -> None:
    with path.open("a") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=170, help="seconds; batch-8 rows that would not fit are skipped")
    parser.add_argument("--swap-dilated", action="store_true", help="use DilatedConvMatmul in the fast path")
    parser.add_argument("--aspp-ablation", action="store_true",
                        help="also time the Predictor without the FastASPP swap (as it ran before it reached it)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:  # child
        print("RESULT " + json.dumps(run_row(args)))
        return
    start = time.perf_counter()
    results: list[dict] = []
    batches = [int(b) for b in args.batches.split(",")]
    rows = args.rows.split(",")
    for batch in batches:
        for row in rows:
            elapsed = time.perf_counter() - start
            if batch > 1:
                one = next((r for r in results if r["row"] == row and r["batch"] == 1 and "seconds" in r), None)
                estimate = (sum(one["seconds"].values()) * batch * (args.iters + 1) + one["setup_s"] + 10
                            if one else float("inf"))
                if elapsed + estimate > args.budget:
                    results.append({"row": row, "batch": batch,
                                    "skipped": f"skipped: ~{estimate:.0f} s estimated, over the {args.budget:.0f} s budget"})
                    print(f"{row} batch {batch}: skipped (estimated {estimate:.0f} s)", flush=True)
                    continue
            cmd = [sys.executable, __file__, "--row", row, "--batch", str(batch), "--size", str(args.size),
                   "--threads", str(args.threads), "--iters", str(args.iters), "--precision", args.precision,
                   "--device", args.device] + (["--swap-dilated"] if args.swap_dilated else []) + (
                   ["--aspp-ablation"] if args.aspp_ablation else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                results.append({"row": row, "batch": batch, "skipped": "failed (see stderr)"})
                continue
            r = json.loads(line[7:])
            results.append(r)
            print(f"{row} batch {batch}: baseline {r['ips']['baseline']:.3f} img/s, fast {r['ips']['fast']:.3f} img/s "
                  f"({r['ips']['fast'] / r['ips']['baseline']:.2f}x, {r['precision']}), agreement {r['agreement']:.4%}, "
                  f"times {json.dumps({k: [round(t, 3) for t in v] for k, v in r['all_seconds'].items()})}", flush=True)
    import torch

    from pixelwise.hardware import describe_cpu

    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads) if args.device == "cpu" else None
    wall = time.perf_counter() - start
    command = "python benchmarks/inference_cpu.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()
    peers = "transformers" if all(r in TRANSFORMERS_ROWS for r in rows) else "torchvision / smp"
    header = (f"\n## Inference speed vs {peers} ({args.device}, {args.size}x{args.size})\n\n"
              f"From `benchmarks/inference_cpu.py` (see its docstring for what is timed). CPU: {describe_cpu()} "
              f"(2 logical cores here, shared with other jobs: load average {load[0]:.1f} at the end of the run). "
              f"torch {torch.__version__}. Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
              f"Command: `{command.strip()}` ({wall:.0f} s). Median of {args.iters} after a warm-up; random weights."
              + (f" Matmul peak here (4096x2048 @ 2048x2048): fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s; "
                 "a model's GFLOP/s counts its convolutions and matrix products as dense (2 FLOPs per multiply-add, "
                 "zero-padding taps included)" if peak else "") + ".\n\n")
    text = header + table(results, peak) + "\n"
    print(text)
    if not args.no_append:
        append_results(text, Path(__file__).with_name("RESULTS.md"))


if __name__ == "__main__":
    main()
