"""int8 against fp32 and bf16 on a trained model: latency, argmax agreement and val mIoU, one run.

    python benchmarks/int8.py runs/camvid_best/best --data camvid:../shared/data/camvid
    python benchmarks/int8.py MODEL_DIR --data FORMAT:ROOT --images 20 --no-append

Forms, each through the Predictor at batch 1 on the val images at their own size (the model's config
resize applies):
    torch fp32        the fast path in fp32 (BN folded, channels_last, prepacked oneDNN convolutions)
    torch bf16        the fast path in bf16 (only where the CPU has bf16 units)
    onnxruntime fp32  the exported graph (`pixelwise export`)
    onnxruntime int8  `pixelwise export --int8`: static quantization calibrated on 16 training images
    auto, no bf16     `--precision auto` on a copy of the model directory holding its int8 graph (`pixelwise
                      export MODEL_DIR --int8`), candidates narrowed to fp32 and int8
                      (PIXELWISE_AUTO_CANDIDATES): a CPU without bf16 units, simulated
    auto              the same with every candidate this CPU has
"A CPU without bf16" is what the fp32 and int8 rows show: the candidates such a CPU has. The auto rows
time their candidates afresh (the decisions cache is off) and show what they chose and the timings. ms: median
per image over --images val images after one warm-up, the forms interleaved image by image; agreement: the argmax against torch fp32 over the same
images; mIoU: the whole val split. Appends the table to benchmarks/RESULTS.md with the CPU model.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--data", default="camvid:../shared/data/camvid")
    ap.add_argument("--split", default="val")
    ap.add_argument("--images", type=int, default=20, help="val images timed and compared")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-miou", action="store_true", help="skip the whole-split mIoU (faster)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from pixelwise.data.formats import open_dataset
    from pixelwise.engine.evaluate import evaluate
    from pixelwise.export import export_onnx
    from pixelwise.hardware import cpu_has_fast_bf16, describe_cpu
    from pixelwise.inference.predictor import Predictor
    from pixelwise.quantize import quantize_model

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="pw_int8_"))
    export_onnx(args.model_dir, work / "fp32.onnx", check=False)
    q = quantize_model(args.model_dir, work / "int8.onnx", min_agreement=0)  # measured whatever it agrees
    import shutil

    from pixelwise.modeldir import resolve_model_dir

    inside = work / "model"
    shutil.copytree(resolve_model_dir(args.model_dir), inside)
    verdict = quantize_model(inside)  # what `export MODEL_DIR --int8` keeps, in the copy's directory
    print(verdict["message"], flush=True)
    os.environ["PIXELWISE_PRECISION_CACHE"] = "off"

    def auto(candidates: str | None):
        def make():
            if candidates:
                os.environ["PIXELWISE_AUTO_CANDIDATES"] = candidates
            else:
                os.environ.pop("PIXELWISE_AUTO_CANDIDATES", None)
            return Predictor.from_dir(inside, device="cpu", precision="auto", tta=None, crf=None)
        return make
    forms = {"torch fp32": lambda: Predictor.from_dir(args.model_dir, device="cpu", precision="fp32", tta=None, crf=None)}
    if cpu_has_fast_bf16():
        forms["torch bf16"] = lambda: Predictor.from_dir(args.model_dir, device="cpu", precision="bf16", tta=None, crf=None)
    forms["onnxruntime fp32"] = lambda: Predictor.from_dir(work / "fp32.onnx", tta=None, crf=None)
    forms["onnxruntime int8"] = lambda: Predictor.from_dir(work / "int8.onnx", tta=None, crf=None)
    forms["auto, no bf16 (fp32, int8 timed)"] = auto("fp32,int8")
    forms["auto (every candidate here timed)"] = auto(None)
    ds = open_dataset(args.data, args.split)
    picks = np.linspace(0, len(ds) - 1, min(len(ds), args.images)).round().astype(int)
    images = [np.asarray(ds[int(i)].image) for i in picks]
    predictors = {}
    for name, make in forms.items():
        predictors[name] = make()
        predictors[name].predict(images[0])  # warm-up
    times = {name: [] for name in predictors}
    labels = {name: [] for name in predictors}
    for i, image in enumerate(images):  # forms interleaved, their order rotated: shared-core noise spreads evenly
        names = list(predictors)
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            labels[name].append(predictors[name].predict(image).semantic)
            times[name].append((time.perf_counter() - t0) * 1000)
    rows, reference = [], labels["torch fp32"]
    for name, predictor in predictors.items():
        agree = sum(int((a == b).sum()) for a, b in zip(labels[name], reference)) / sum(a.size for a in reference)
        miou = None if args.no_miou else evaluate(predictor, args.data, split=args.split)["miou"]
        chosen = predictor.precision
        if predictor.auto_choice and predictor.auto_choice.get("ms"):
            chosen += " (" + ", ".join(f"{k} {v:.1f} ms" for k, v in predictor.auto_choice["ms"].items()) + \
                f" at {predictor.auto_choice['size']}px)"
        if predictor.calibration and predictor.calibration.get("on"):
            chosen += f"; agrees {predictor.calibration['agreement']:.2%} on {predictor.calibration['on']}"
        rows.append((name, chosen, statistics.median(times[name]), agree, miou))
        print(rows[-1], flush=True)
    base = rows[0][2]
    onnx_fp32 = next(r[2] for r in rows if r[0] == "onnxruntime fp32")
    lines = [f"| {n} | {p} | {ms:.1f} | {base / ms:.2f}x | {onnx_fp32 / ms:.2f}x | {agree:.4%} | "
             f"{'-' if miou is None else f'{miou:.4f}'} |" for n, p, ms, agree, miou in rows]
    command = "python benchmarks/int8.py " + " ".join(sys.argv[1:])
    text = (f"\n## int8 vs fp32 and bf16 on {args.model_dir} ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"From `benchmarks/int8.py`. CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.1f}. torch "
            f"{torch.__version__}. Command: `{command}` ({time.time() - started:.0f} s). `export --int8`: {verdict['message']} ({verdict['precision']} kept); calibrated on "
            f"{q['images']} training images of {q['calibration']}, {len(q['excluded'])} output layer(s) in float. "
            f"ms: median per {args.data} [{args.split}] image at batch 1 ({len(images)} images, forms interleaved); agreement: argmax vs "
            f"torch fp32 on those images; mIoU: the whole split.\n\n"
            "| form | precision | ms / image | speed vs torch fp32 | vs onnxruntime fp32 | agreement | val mIoU |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
    print(text)
    if not args.no_append:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
