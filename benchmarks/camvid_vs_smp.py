"""configs/camvid/best.yaml against a segmentation_models_pytorch U-Net (resnet18, no pretrained weights)
trained with the same budget, data, augmentation, loss, schedule and weight averaging.

    python benchmarks/camvid_vs_smp.py --data ../shared/data/camvid [--minutes 30] [--ours RUN_DIR]

The peer is registered in pixelwise's model dict (`MODELS["smp_unet"]`) for the length of this script and
trained by the same `pixelwise.engine.trainer.train` call as ours, with only the `model` section changed
(so its inputs get ImageNet normalisation and its encoder the full LR, as for any model from scratch).
Its input is zero-padded to a multiple of 32 (smp needs that) and the logits cropped back. Both are
scored with `pixelwise.engine.evaluate.evaluate` at full resolution (480x360) on the 101 val images.
`--ours RUN_DIR` scores an already trained best.yaml run instead of training it again.
Prints a table and appends it to benchmarks/RESULTS.md with the machine and the mIoU ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def smp_unet(num_classes: int, encoder: str = "resnet18"):
    """segmentation_models_pytorch.Unet(encoder, no weights) accepting any input size."""
    import segmentation_models_pytorch as smp

    from pixelwise.models.base import pad_to_stride

    class PaddedUnet(smp.Unet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            return super().forward(pad_to_stride(x, 32))[..., :h, :w]

    return PaddedUnet(encoder_name=encoder, encoder_weights=None, classes=num_classes)


def _log(run: Path) -> tuple[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return len(rows), sum(r["seconds"] for r in rows) / 60


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--minutes", type=float, default=None, help="training budget (default: best.yaml's)")
    ap.add_argument("--ours", default=None, help="an already trained best.yaml run directory")
    ap.add_argument("--out", default=str(ROOT / "runs" / "camvid_vs_smp"))
    args = ap.parse_args()

    from pixelwise.config import ModelConfig, load_config
    from pixelwise.engine.evaluate import evaluate
    from pixelwise.engine.trainer import train
    from pixelwise.hardware import describe_cpu
    from pixelwise.modeldir import load_model
    from pixelwise.models import MODELS, count_params

    MODELS["smp_unet"] = smp_unet
    overrides = [f"data.root={args.data}"] + ([f"train.time_limit_min={args.minutes}"] if args.minutes else [])
    cfg = load_config(ROOT / "configs" / "camvid" / "best.yaml", overrides)
    peer_cfg = dataclasses.replace(cfg, model=ModelConfig(name="smp_unet", encoder="resnet18"))
    out = Path(args.out)
    runs = {"pixelwise best.yaml (U-Net, EfficientNet-Lite0 ImageNet)": Path(args.ours) if args.ours else out / "ours",
            "smp U-Net resnet18 (no pretrained weights)": out / "smp_resnet18"}
    rows = []
    for (label, run), recipe in zip(runs.items(), (cfg, peer_cfg)):
        if not (run / "best" / "config.json").is_file():
            train(recipe, run, progress=True)
        scores = evaluate(run / "best", f"camvid:{args.data}", "val", precision="fp32")
        params = count_params(load_model(run / "best")) / 1e6
        epochs, minutes = _log(run)
        rows.append((label, params, epochs, minutes, scores["miou"], scores["pixel_acc"]))
        print(rows[-1], flush=True)
    ratio = rows[0][4] / rows[1][4]
    head = ["model", "params (M)", "epochs", "train min", "val mIoU", "val pixel acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, params, epochs, minutes, miou, acc in rows:
        lines.append(f"| {label} | {params:.1f} | {epochs} | {minutes:.1f} | {miou:.4f} | {acc:.4f} |")
    table = "\n".join(lines) + f"\n\nmIoU ratio pixelwise / smp: {ratio:.2f}"
    print(table)
    budget = cfg.train.time_limit_min
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## CamVid: best.yaml vs an smp U-Net, {budget:g} min each ({datetime.date.today()})\n\n"
                f"Machine: {describe_cpu()}, torch threads {torch.get_num_threads()}. Command: "
                f"`python benchmarks/camvid_vs_smp.py`. Same data, augmentation, loss, schedule, EMA and "
                "time budget; scored at full resolution (480x360) on the 101 val images.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
