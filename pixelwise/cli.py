"""The `pixelwise` command: parse arguments, call a library function, print.

Every error pixelwise anticipates (PixelwiseError) is printed as one line naming the file or key and the
problem, with exit status 2; no traceback.
"""
from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import click

from pixelwise.errors import PixelwiseError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixelwise")
def cli() -> None:
    """pixelwise: image segmentation on PyTorch: train, evaluate, predict."""


@cli.command()
@click.option("--out", default="pixelwise-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--minutes", default=1.0, show_default=True, help="Training time budget.")
def demo(out: str, minutes: float) -> None:
    """Train a small U-Net on synthetic scenes, evaluate it and write a report (no data or network needed)."""
    from pixelwise.demo import run_demo

    result = run_demo(Path(out), minutes=minutes)
    click.echo(f"demo done in {result['seconds']:.0f} s: val mIoU {result['miou']:.4f}, "
               f"pixel accuracy {result['pixel_acc']:.4f}")
    click.echo(f"report: {result['report']}")


@cli.command()
@click.option("--size", default=512, show_default=True, help="Input size for the FLOPs count.")
@click.option("--classes", "num_classes", default=21, show_default=True)
def models(size: int, num_classes: int) -> None:
    """List the architectures with parameters and GFLOPs."""
    from pixelwise.models import list_models, model_info

    click.echo(f"{'name':<16} {'params (M)':>11} {'GFLOPs@' + str(size):>12}  paper")
    for name in list_models():
        info = model_info(name, num_classes=num_classes, size=size)
        click.echo(f"{name:<16} {info['params'] / 1e6:>11.2f} {info['gflops']:>12.1f}  {info['paper']}")


@cli.group()
def data() -> None:
    """Dataset tools."""


@data.command("check")
@click.argument("spec")
@click.option("--split", "splits", multiple=True, help="Split(s) to check (default: train and val).")
@click.option("--weights", is_flag=True, help="Also compute class-balancing weights.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON.")
def data_check(spec: str, splits: tuple[str, ...], weights: bool, json_out: str | None) -> None:
    """Lint a dataset given as FORMAT:ROOT: sizes, label values, class histogram, problems by file."""
    from pixelwise.data.check import check_dataset

    report = check_dataset(spec, list(splits) or None, weights=weights)
    click.echo(report.to_text())
    if json_out:
        Path(json_out).write_text(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("config", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.md at the end.")
def train(config: str, overrides: tuple[str, ...], out: str, resume: bool, device: str | None, report: bool) -> None:
    """Train from a YAML recipe: pixelwise train CONFIG.yaml [KEY=VALUE ...] --out RUN_DIR."""
    from pixelwise.config import load_config
    from pixelwise.engine.trainer import train as run_train

    cfg = load_config(config, list(overrides))
    result = run_train(cfg, out, resume=resume, device=device)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    click.echo(f"trained {result.epochs_done} epochs in {result.seconds / 60:.1f} min; best val mIoU "
               f"{result.best_miou:.4f} at epoch {result.best_epoch}; best model in {Path(out) / 'best'}")
    if report and result.best_epoch > 0:
        from pixelwise.data.formats import open_dataset
        from pixelwise.inference.predictor import Predictor
        from pixelwise.report import write_report

        val = open_dataset(f"{cfg.data.format}:{cfg.data.root}", cfg.data.val_split)
        path = write_report(Predictor.from_dir(Path(out) / "best", device=device), val, out,
                            title=f"{cfg.model.name} on {val.name}", curves=Path(out) / "training_curves.png")
        click.echo(f"report: {path}")


@cli.command("eval")
@click.argument("model_dir", type=click.Path())
@click.option("--data", "spec", required=True, help="Dataset as FORMAT:ROOT.")
@click.option("--split", default="val", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write scores as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md into this folder.")
@click.option("--device", default=None)
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16", "fp16"]))
def eval_cmd(model_dir: str, spec: str, split: str, json_out: str | None, report_dir: str | None,
             device: str | None, precision: str) -> None:
    """Score a saved model on a dataset split; prints a per-class table."""
    from pixelwise.data.formats import open_dataset
    from pixelwise.engine.evaluate import evaluate
    from pixelwise.inference.predictor import Predictor

    dataset = open_dataset(spec, split)
    predictor = Predictor.from_dir(model_dir, device=device, precision=precision)
    scores = evaluate(predictor, dataset, progress=True)
    click.echo(format_scores(scores))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(scores, indent=2))
    if report_dir:
        from pixelwise.report import write_report

        click.echo(f"report: {write_report(predictor, dataset, report_dir, title=f'{model_dir} on {dataset.name}')}")


def format_scores(scores: dict) -> str:
    lines = [f"{'class':<20} {'IoU':>8} {'acc':>8}"]
    for name, iou, acc in zip(scores["classes"], scores["per_class_iou"], scores["per_class_acc"]):
        f = (lambda v: "     n/a" if v is None else f"{v:>8.4f}")
        lines.append(f"{name:<20} {f(iou)} {f(acc)}")
    lines.append(f"{'mIoU':<20} {scores['miou']:>8.4f}")
    lines.append(f"{'pixel accuracy':<20} {scores['pixel_acc']:>8.4f}")
    lines.append(f"{'mean class accuracy':<20} {scores['mean_acc']:>8.4f}")
    return "\n".join(lines)


def expand_images(items: tuple[str, ...]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> sorted unique image paths."""
    from pixelwise.data.io import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            paths += [Path(q) for q in sorted(glob.glob(item, recursive=True))]
        else:
            paths.append(p)
    return list(dict.fromkeys(paths))


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--overlay", is_flag=True, help="Also write colour overlays with a legend.")
@click.option("--device", default=None)
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16", "fp16"]))
def predict(model_dir: str, images: tuple[str, ...], out: str, overlay: bool, device: str | None,
            precision: str) -> None:
    """Write index-PNG masks (and overlays) for images, folders or globs."""
    from tqdm import tqdm

    from pixelwise.data.io import read_image, write_index_png
    from pixelwise.inference.predictor import Predictor
    from pixelwise.viz import save_png

    predictor = Predictor.from_dir(model_dir, device=device, precision=precision)
    paths = expand_images(images)
    if not paths:
        raise PixelwiseError(f"no images found in {' '.join(images)}")
    out_dir = Path(out)
    failed = []
    for path in tqdm(paths, desc="predict", disable=len(paths) < 2):
        try:
            image = read_image(path)
        except PixelwiseError as exc:
            failed.append(str(exc))
            tqdm.write(f"skipped: {exc}")
            continue
        pred = predictor.predict(image)
        write_index_png(out_dir / f"{path.stem}.png", pred.semantic, predictor.palette)
        if overlay:
            save_png(out_dir / f"{path.stem}_overlay.png", pred.overlay(image))
    click.echo(f"wrote {len(paths) - len(failed)} masks to {out_dir}" + (f"; {len(failed)} failed" if failed else ""))
    if failed:
        sys.exit(1)


def one_line(exc: Exception) -> str:
    """The error's own message. An error raised inside a DataLoader worker comes back wrapped in the
    worker's traceback text; its last line holds the original message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.strip().replace("\n", " ")


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="pixelwise", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PixelwiseError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted (checkpoints already written are complete)", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
