"""`pixelwise demo`: the whole path on the embedded synthetic scenes, in about a minute on a CPU.

Generates scenes, trains a small U-Net under a time budget, evaluates it on the synthetic val split, writes
overlays and a Markdown report into the output folder. Needs no data and no network.
"""
from __future__ import annotations

import time
from pathlib import Path

from pixelwise.config import Config, DataConfig, ModelConfig, TrainConfig


def demo_config(minutes: float = 1.0) -> Config:
    """A small U-Net (16 base channels, depth 3) on 96 synthetic 128x128 scenes."""
    return Config(
        data=DataConfig(format="synthetic", root="default", crop_size=96, scale_range=(0.8, 1.25),
                        color_jitter=0.1, num_workers=0),
        model=ModelConfig(name="unet", kwargs={"base_channels": 16, "depth": 3}),
        train=TrainConfig(epochs=60, batch_size=8, lr=3e-3, schedule="poly", warmup_epochs=1,
                          val_every=3, time_limit_min=minutes),
    )


def run_demo(out: Path, minutes: float = 1.0) -> dict:
    import shutil

    from pixelwise.data.io import write_index_png
    from pixelwise.data.synthetic import open_synthetic
    from pixelwise.engine.trainer import train
    from pixelwise.inference.predictor import Predictor
    from pixelwise.report import write_report
    from pixelwise.viz import save_png

    t0 = time.time()
    out = Path(out)
    run = out / "run"
    if run.exists():
        shutil.rmtree(run)  # the demo always starts fresh; it owns this folder
    cfg = demo_config(minutes)
    result = train(cfg, run)
    predictor = Predictor.from_dir(run / "best", device="cpu")
    val = open_synthetic("default", "val")
    for i in range(4):
        sample = val[i]
        pred = predictor.predict(sample.image)
        write_index_png(out / "predictions" / f"{sample.name}.png", pred.semantic, predictor.palette)
        save_png(out / "predictions" / f"{sample.name}_overlay.png", pred.overlay(sample.image))
    lines = [f"Trained `{cfg.model.name}` (base_channels 16, depth 3) for {result.epochs_done} epochs "
             f"({result.seconds / 60:.1f} min on CPU); best epoch {result.best_epoch}.", ""]
    report, scores = write_report(predictor, val, out, title="pixelwise demo: U-Net on synthetic scenes",
                          curves=run / "training_curves.png", extra_lines=lines)
    return {"seconds": time.time() - t0, "miou": scores["miou"], "pixel_acc": scores["pixel_acc"],
            "report": str(report), "epochs": result.epochs_done}
