"""Parity with transformers on the same weights: SegFormer B0 / B2, UPerNet ConvNeXt-T, Mask2Former Swin-T.

    python benchmarks/transformers_parity.py [--sizes 256x256,384x512] [--no-append]

Each transformers model is built at random init, its norms, biases and BatchNorm statistics perturbed (at their
initial values, weight 1 / bias 0 / mean 0 / var 1, a swapped mapping would go unnoticed), saved with
`save_pretrained`, converted by `pixelwise convert`'s code (`pixelwise.convert`) into a pixelwise model
directory and loaded with `pixelwise.load_model`. Both run fp32 eager on the same normalised synthetic scenes.
Compared: the class scores at the input size (SegFormer: its 1/4 logits upsampled, as its users do; UPerNet:
its logits; Mask2Former: the class logits, the mask logits, the paper's semantic scores, and the panoptic
segmentation of the same post-processing on both outputs, `pixelwise.mask_classification.panoptic_inference`
at object threshold 0 and overlap 0.5, the class
head's bias drawn so that queries name classes and the maps hold segments). Sizes are multiples of 32: at other sizes pixelwise pads the input once to the stride,
while transformers runs every stage unpadded, so logits differ there by construction.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NUM_LABELS = 11


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        for name, p in model.named_parameters():  # ConvNeXt layer scales start at 1e-6: give the blocks weight
            if "layer_scale" in name:
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=gen))
            if name.endswith("class_predictor.bias"):  # queries sure of a class, so the panoptic maps hold segments
                p.copy_(3 * torch.randn(p.shape, generator=gen))
                p[-1] = -10.0
    return model


def models():
    import transformers as hf

    from pixelwise.models.segformer import VARIANTS

    def segformer(v):
        spec = VARIANTS[v]
        return hf.SegformerForSemanticSegmentation(hf.SegformerConfig(
            num_labels=NUM_LABELS, hidden_sizes=list(spec["widths"]), depths=list(spec["depths"]),
            decoder_hidden_size=spec["decoder_dim"]))

    yield "SegFormer-B0", lambda: segformer("b0")
    yield "SegFormer-B2", lambda: segformer("b2")
    yield "UPerNet ConvNeXt-T", lambda: hf.UperNetForSemanticSegmentation(hf.UperNetConfig(
        backbone_config=hf.ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768],
                                          out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=NUM_LABELS, use_auxiliary_head=True))
    yield "Mask2Former Swin-T", lambda: hf.Mask2FormerForUniversalSegmentation(hf.Mask2FormerConfig(
        backbone_config=hf.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                      out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=NUM_LABELS))


def scenes(n: int, h: int, w: int) -> torch.Tensor:
    from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
    from pixelwise.data.synthetic import make_scene
    from pixelwise.data.transforms import normalize_image

    x = torch.cat([normalize_image(make_scene(seed=7 + i, size=max(h, w)).image, IMAGENET_MEAN, IMAGENET_STD)
                   for i in range(n)])
    return x[..., :h, :w]


def compare(name: str, build, sizes) -> list[dict]:
    from pixelwise.convert import convert_transformers
    from pixelwise.mask_classification import panoptic_inference
    from pixelwise.modeldir import load_model

    torch.manual_seed(0)
    ref = perturb(build()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(Path(tmp) / "hf", safe_serialization=True)
        report = convert_transformers(Path(tmp) / "hf", Path(tmp) / "pw", task="panoptic" if "Mask2" in name else None,
                                      things=list(range(5, NUM_LABELS)) if "Mask2" in name else None)
        ours = load_model(Path(tmp) / "pw")
    rows = []
    for h, w in sizes:
        x = scenes(2, h, w)
        with torch.no_grad():
            theirs = ref(pixel_values=x)
            if "Mask2" in name:
                got = ours.queries(x)
                masks_t = F.interpolate(theirs.masks_queries_logits, size=(h, w), mode="bilinear", align_corners=False)
                masks_o = F.interpolate(got["pred_masks"], size=(h, w), mode="bilinear", align_corners=False)
                sem_t = torch.einsum("nqc,nqhw->nchw", theirs.class_queries_logits.softmax(-1)[..., :-1],
                                     masks_t.sigmoid())
                sem_o = ours(x)["out"].exp()
                pan, segments = [], 0
                for i in range(len(x)):
                    ids_t, _ = panoptic_inference(theirs.class_queries_logits[i], masks_t[i], range(5, NUM_LABELS), 0.0, 0.5)
                    ids_o, segs = panoptic_inference(got["pred_logits"][i], masks_o[i], range(5, NUM_LABELS), 0.0, 0.5)
                    pan.append((ids_t == ids_o).float().mean().item())
                    segments += len(segs)
                rows.append({"model": name, "size": f"{h}x{w}", "params": report["params"],
                             "class_logits": (theirs.class_queries_logits - got["pred_logits"]).abs().max().item(),
                             "mask_logits": (theirs.masks_queries_logits - got["pred_masks"]).abs().max().item(),
                             "scores": (sem_t - sem_o.clamp_min(1e-6)).abs().max().item(),
                             "argmax": (sem_t.argmax(1) == sem_o.argmax(1)).float().mean().item(),
                             "panoptic": min(pan), "segments": segments})
                continue
            logits = theirs.logits
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            mine = ours(x)
            rows.append({"model": name, "size": f"{h}x{w}", "params": report["params"],
                         "scores": (logits - mine).abs().max().item(), "scale": logits.abs().max().item(),
                         "argmax": (logits.argmax(1) == mine.argmax(1)).float().mean().item()})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | params | input | max abs diff, class scores (logit scale) | argmax agreement | Mask2Former: max abs "
             "diff class logits / mask logits | panoptic map identical |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m2f = (f"{r['class_logits']:.2e} / {r['mask_logits']:.2e}" if "class_logits" in r else "")
        scale = f" ({r['scale']:.1f})" if "scale" in r else " (scores in 0..1)"
        pan = f"{r['panoptic']:.4%} of pixels ({r['segments']} segments)" if "panoptic" in r else ""
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | 2x{r['size']} | {r['scores']:.2e}{scale} | "
                     f"{r['argmax']:.4%} | {m2f} | {pan} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x256,384x512")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    torch.set_num_threads(2)
    rows = []
    for name, build in models():
        rows += compare(name, build, sizes)
        print(json.dumps(rows[-1]), flush=True)
    import transformers

    from pixelwise.hardware import describe_cpu

    text = (f"\n## Parity with transformers on the same weights ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"From `benchmarks/transformers_parity.py` (see its docstring). transformers {transformers.__version__}, "
            f"torch {torch.__version__}, fp32 eager on {describe_cpu()}. Command: `python benchmarks/transformers_parity.py "
            f"{' '.join(sys.argv[1:])}`.\n\n" + table(rows) + "\n")
    print(text)
    if not args.no_append:
        with Path(__file__).with_name("RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
