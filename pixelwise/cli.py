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
@click.option("--size", default="1024x2048", show_default=True,
              help="Input HEIGHTxWIDTH (or one number) for the FLOPs count; 1024x2048 is Cityscapes', as the "
                   "real-time papers quote it.")
@click.option("--classes", "num_classes", default=19, show_default=True)
def models(size: str, num_classes: int) -> None:
    """List the architectures with parameters (the inference model's, and with the training-only heads where
    there are some) and GFLOPs (multiply-accumulates of one eval forward)."""
    from pixelwise.inference.speed import parse_size
    from pixelwise.models import list_models, model_info

    hw = parse_size(size)
    click.echo(f"{'name':<16} {'params (M)':>11} {'training (M)':>13} {'GFLOPs@' + 'x'.join(map(str, hw)):>15}  paper")
    for name in list_models():
        info = model_info(name, num_classes=num_classes, size=hw)
        train = f"{info['params'] / 1e6:.2f}" if info["params"] != info["inference_params"] else ""
        click.echo(f"{name:<16} {info['inference_params'] / 1e6:>11.2f} {train:>13} {info['gflops']:>15.1f}  "
                   f"{info['paper']}")


@cli.command()
@click.argument("subject")
@click.option("--size", default="360x480", show_default=True, help="Input HEIGHTxWIDTH (CamVid frames: 360x480).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
              help="The fast path's precision (auto: timed here, as predict does).")
@click.option("--compare", "peers", multiple=True,
              help="A peer run fp32 eager in the same process: torchvision:NAME (e.g. lraspp_mobilenet_v3_large) or "
                   "smp:ARCH[:ENCODER] (pixelwise[bench]); repeatable.")
@click.option("--classes", "num_classes", default=19, show_default=True,
              help="Classes of an architecture given by name (random weights) and of the peers.")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Time each model for at least this long (and 20 calls).")
@click.option("--device", default=None)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
@click.pass_context
def bench(ctx: click.Context, subject: str, size: str, batch: int, precision: str, peers: tuple[str, ...],
          num_classes: int, seconds: float, device: str | None, json_out: str | None) -> None:
    """Latency (median, p95), frames/s and peak memory of SUBJECT (a model directory or an architecture name)
    through the fast path on this machine, with the fast-path steps applied; peers in the same run."""
    import json

    import torch

    from pixelwise.hardware import describe_cpu
    from pixelwise.inference.predictor import default_device
    from pixelwise.inference.speed import bench_module, bench_predictor, parse_size, peer, subject as build
    from pixelwise.modeldir import read_model_config

    hw = parse_size(size)
    device = device or default_device()
    if Path(subject).is_dir():
        refuse(ctx, ("num_classes",), "applies to an architecture given by name; a model directory has its classes")
        num_classes = len(read_model_config(subject)["classes"])
    models_ = [build(subject, num_classes, device, precision)]
    peer_models = [(spec, peer(spec, num_classes)) for spec in peers]  # every spec checked before any timing
    predictor, name = models_[0]
    where = describe_cpu() if torch.device(device).type == "cpu" else torch.cuda.get_device_name(torch.device(device))
    click.echo(f"{where}; {name}: {predictor.describe()}", err=True)
    results = [bench_predictor(predictor, name, hw, batch, min_seconds=seconds)]
    for spec, module in peer_models:
        results.append(bench_module(module, spec, hw, batch, device, min_seconds=seconds))
    from pixelwise.inference.speed import table

    click.echo(table(results))
    for r in results[1:]:
        click.echo(f"{name}: {results[0].fps / r.fps:.2f}x the frames/s of {r.name}")
    if json_out:
        from pixelwise.data.io import write_atomic

        write_atomic(Path(json_out), json.dumps({"machine": where, "results": [r.as_dict() for r in results]},
                                                indent=1).encode())


@cli.group()
def data() -> None:
    """Dataset tools."""


@data.command("check")
@click.argument("spec")
@click.option("--split", "splits", multiple=True, help="Split(s) to check (default: train and val).")
@click.option("--weights", is_flag=True, help="Also compute class-balancing weights.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON.")
@click.option("--stats", is_flag=True, help="Also print the per-channel mean/std of the model inputs (bands, then "
              "indices) over the first --split (default train), as recipe lines.")
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="With --stats: take the band keys (data.bands, data.indices, data.band_names, data.max_value) "
              "from this recipe.")
def data_check(spec: str, splits: tuple[str, ...], weights: bool, json_out: str | None, stats: bool,
               recipe: str | None) -> None:
    """Lint a dataset given as FORMAT:ROOT: sizes, label values, class histogram, problems by file."""
    from pixelwise.data.check import check_dataset

    if recipe and not stats:
        raise click.UsageError("--recipe applies to --stats only")
    report = check_dataset(spec, list(splits) or None, weights=weights)
    click.echo(report.to_text())
    if json_out:
        Path(json_out).write_text(json.dumps(report.to_dict(), indent=2))
    if stats:
        click.echo(_band_stats(spec, splits[0] if splits else "train", recipe))
    if not report.ok:
        sys.exit(1)


@data.command("show")
@click.argument("spec")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--split", default=None, help="Split to draw from (default: train, else all).")
@click.option("--count", default=12, show_default=True, type=click.IntRange(1, 400), help="Images in the grid.")
@click.option("--columns", default=4, show_default=True, type=click.IntRange(1, 40))
@click.option("--cell", default=256, show_default=True, type=click.IntRange(32, 2048),
              help="Each image is scaled to fit a CELL x CELL box.")
@click.option("--seed", default=None, type=int, help="Pick images at random with this seed (default: evenly spaced).")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Mask opacity.")
def data_show(spec: str, out: str, split: str | None, count: int, columns: int, cell: int, seed: int | None,
              alpha: float) -> None:
    """Draw a grid of a dataset's images with their masks overlaid and the legend: FORMAT:ROOT --out grid.png."""
    from pixelwise.data.show import pick_samples
    from pixelwise.viz import dataset_grid, save_png

    picked = pick_samples(spec, split, count, seed)
    for message in picked.skipped:
        click.echo(f"skipped {message}", err=True)
    if not picked.samples:
        raise PixelwiseError(f"{spec}: none of the {len(picked.skipped)} images picked could be read")
    save_png(out, dataset_grid(picked.samples, picked.classes, picked.palette, columns, cell, alpha))
    click.echo(f"wrote {out}: {len(picked.samples)} images of {picked.name}"
               + ("" if picked.class_list else " (no class list: classes named by label value)"))


def _band_stats(spec: str, split: str, recipe: str | None) -> str:
    from pixelwise.config import load_config
    from pixelwise.engine.inputs import stats_lines

    return stats_lines(spec, split, load_config(recipe).data if recipe else load_config(None).data)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("config", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available).")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.md at the end.")
def train(config: str, overrides: tuple[str, ...], out: str, resume: bool, device: str | None, report: bool) -> None:
    """Train from a YAML recipe: pixelwise train CONFIG.yaml [KEY=VALUE ...] --out RUN_DIR.

    KEY=VALUE overrides any recipe key (data.root=PATH, train.epochs=5, ...); init_from=MODEL_DIR starts
    from a saved model (fine-tuning; the classifier is re-initialised if the class list differs)."""
    from pixelwise.config import load_config
    from pixelwise.engine.trainer import train as run_train

    cfg = load_config(config, list(overrides))
    result = run_train(cfg, out, resume=resume, device=device)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    key = "mIoU" if result.best_key == "miou" else result.best_key.upper()
    click.echo(f"trained {result.epochs_done} epochs in {result.seconds / 60:.1f} min; best val {key} "
               f"{result.best_score:.4f} at epoch {result.best_epoch}; best model in {Path(out) / 'best'}")
    if report and result.best_epoch > 0:
        from pixelwise.data.formats import open_dataset
        from pixelwise.inference.predictor import Predictor
        from pixelwise.engine.trainer import dataset_options
        from pixelwise.report import write_report

        val = open_dataset(f"{cfg.data.format}:{cfg.data.root}", cfg.data.val_split, **dataset_options(cfg))
        path, _ = write_report(Predictor.from_dir(Path(out) / "best", device=device), val, out,
                               title=f"{cfg.model.name} on {val.name}", curves=Path(out) / "training_curves.png")
        click.echo(f"report: {path}")


def inference_options(fn):
    """--precision, --tile, --overlap, --tta: how the Predictor runs (eval and predict)."""
    options = [
        click.option("--precision", default="auto", show_default=True,
                     type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
                     help="auto: on a CPU the fastest of fp32, bf16 and (when `pixelwise export MODEL_DIR --int8` "
                          "wrote one into the model directory) its int8 graph, as measured here (cached); bf16 on "
                          "GPUs; a low precision is checked against fp32 first. int8: that int8 graph."),
        click.option("--tile", type=click.IntRange(min=1), default=None,
                     help="Run images larger than this many pixels as overlapping tiles (bounded memory)."),
        click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
                     help="Tile overlap, as a fraction of a tile."),
        click.option("--tta", default=None,
                     help="Test-time augmentation: flip (horizontal), flips (both), d4 (flips and 90-degree "
                          "rotations) and/or scales, e.g. flip,0.75,1,1.25; none: off. Default: the model's "
                          "stored setting (`pixelwise tune`, a recipe's infer: section), else none."),
        click.option("--crf", default=None,
                     type=click.Choice(["none", "default", "deeplab_v1", "deeplab_v2"]),
                     help="Refine with the dense CRF (Kraehenbuehl & Koltun): a parameter preset; none: off. "
                          "Default: the model's stored setting, else none."),
        click.option("--task-option", "task_options", multiple=True,
                     help="KEY=VALUE option of the task, e.g. top_k=1000 or stuff_area=64 (panoptic), threshold=0.4 "
                          "(multilabel); over the model's own settings."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def refuse(ctx: click.Context, names: tuple[str, ...], why: str) -> None:
    """A usage error naming the first of the options `names` (parameter names) that the user typed on the
    command line, when `why` says they cannot apply."""
    from click.core import ParameterSource

    used = [n for n in names if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    if used:
        option = next(o for p in ctx.command.params if p.name == used[0] for o in p.opts if o.startswith("--"))
        raise click.UsageError(f"{option} {why}")


RUN_OPTIONS = ("precision", "tile", "overlap", "tta", "crf", "method", "device", "task_options")  # a model run's


def build_predictor(model_dir: str, task: str | None, method: str | None, device, precision, tile, overlap, tta,
                    crf, task_options: tuple[str, ...] = ()):
    """The Predictor of eval and predict: the model's own task unless --task says another, --method as the
    task's option where the task has it; an option the task cannot honour stops with one line."""
    from pixelwise.inference.predictor import Predictor
    from pixelwise.modeldir import read_model_config
    from pixelwise.tasks import model_task, task_class

    options = parse_params(task_options)
    if method is not None:
        name = task or (model_task(read_model_config(model_dir)) if not model_dir.endswith(".onnx") else None)
        if name is not None and "method" not in getattr(task_class(name, "--task").Options, "__dataclass_fields__", {}):
            raise click.UsageError(f"--method does not apply to the {name} task (it turns a semantic model's label "
                                   "map into instances: --task panoptic or --task instance)")
        options["method"] = method
    from pixelwise.inference.predictor import STORED

    return Predictor.from_dir(model_dir, device=device, precision=precision, tile=tile, overlap=overlap,
                              tta=STORED if tta is None else tta, crf=STORED if crf is None else crf, task=task,
                              task_options=options)


@cli.command("eval")
@click.argument("model_dir", type=click.Path(), required=False)
@click.option("--task", "task_name", default=None, help="The task to score (default: the model's own); e.g. "
              "panoptic or instance for a semantic model (instances from its label map, see --method).")
@click.option("--pred", type=click.Path(dir_okay=False),
              help="Score these predictions instead of a model: COCO-panoptic JSON (PNG folder beside it) or "
                   "COCO instance results JSON, against --data coco-panoptic:GT_JSON / coco-instance:GT_JSON.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), help="Images folder for coco-* data.")
@click.option("--method", default=None, type=click.Choice(["components", "watershed"]),
              help="How a semantic model's label map becomes instances (--task panoptic|instance).")
@click.option("--data", "spec", required=True, help="Dataset as FORMAT:ROOT.")
@click.option("--split", default="val", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write scores as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.md into this folder.")
@click.option("--device", default=None)
@click.option("--classic", "classic_method", default=None,
              help="Score a classical method instead of a model (binary tasks), e.g. --classic otsu.")
@click.option("--param", "params", multiple=True, help="KEY=VALUE for --classic (method parameters, rule=dark, ...).")
@click.option("--data-option", "data_options", multiple=True,
              help="KEY=VALUE reader option, e.g. 'remap={255: 1}' or 'classes=[membrane, cell]' (default: the "
                   "model's training recipe's options when --data has the same format).")
@inference_options
@click.pass_context
def eval_cmd(ctx: click.Context, model_dir: str | None, task_name: str | None, pred: str | None,
             images_dir: str | None, method: str | None, spec: str, split: str, json_out: str | None,
             report_dir: str | None, device: str | None, classic_method: str | None, params: tuple[str, ...],
             data_options: tuple[str, ...], precision: str, tile: int | None, overlap: float, tta: str | None,
             crf: str | None, task_options: tuple[str, ...]) -> None:
    """Score a saved model on a dataset split (or predictions made elsewhere, --pred, or a classical
    method, --classic); prints the task's table."""
    if classic_method:
        if model_dir:
            raise click.UsageError("--classic scores a classical method: give no MODEL_DIR")
        refuse(ctx, (*RUN_OPTIONS, "task_name", "pred", "report_dir", "images_dir"), "does not apply to --classic")
        from pixelwise.classical.cli import evaluate_classic

        scores = evaluate_classic(classic_method, spec, parse_params(params), split=split)
        lines = [f"{k:<16} {v:.4f}" for k, v in scores.items() if isinstance(v, float)]
        click.echo(f"{classic_method} on {spec} [{split}]\n" + "\n".join(lines))
        write_json(json_out, scores)
        return
    refuse(ctx, ("params",), "needs --classic")
    if pred:
        if model_dir:
            raise click.UsageError("--pred scores prediction files: give no MODEL_DIR")
        refuse(ctx, (*RUN_OPTIONS, "report_dir", "data_options"), "does not apply to --pred (it scores files, no "
               "model runs)")
        from pixelwise.tasks import task_class

        task = task_class(task_name or "semantic", "--task")
        scores = task.score_files(pred, spec)
        click.echo(task.table(scores))
        write_json(json_out, scores)
        return
    if model_dir is None:
        raise click.UsageError("missing MODEL_DIR (or --pred with predictions to score)")
    from pixelwise.data.formats import open_dataset
    from pixelwise.engine.evaluate import evaluate

    predictor = build_predictor(model_dir, task_name, method, device, precision, tile, overlap, tta, crf, task_options)
    options = reader_options(model_dir, spec, data_options) | ({"images": images_dir} if images_dir else {})
    dataset = open_dataset(spec, split, **options)
    click.echo(f"running: {predictor.describe()}", err=True)
    if report_dir:
        from pixelwise.report import write_report

        path, scores = write_report(predictor, dataset, report_dir, title=f"{model_dir} on {dataset.name}",
                                    progress=True)
    else:
        scores = evaluate(predictor, dataset, progress=True)
    click.echo(predictor.task.table(scores))
    if scores.get("volumes"):  # slices of volumes (nifti:, dicom:): per-volume Dice and HD95
        from pixelwise.engine.volumes import volume_table

        click.echo(volume_table(scores["volumes"], list(predictor.classes)))
    write_json(json_out, scores)
    if report_dir:
        click.echo(f"report: {path}")


def write_json(path: str | None, scores: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(scores, indent=2))


def reader_options(model_dir: str, spec: str, items: tuple[str, ...]) -> dict:
    """Dataset reader options: --data-option KEY=VALUE, else those of the model's training recipe (data.options
    and data.classes) when it was trained on the same format, so a model trained on a set that needs
    options (ISBI's remap, a class list) evaluates on it with no more than --data."""
    if items:
        return parse_params(items)
    if str(model_dir).endswith(".onnx"):
        return {}
    from pixelwise.data.formats import parse_spec
    from pixelwise.modeldir import read_model_config

    data = (read_model_config(model_dir).get("recipe") or {}).get("data") or {}
    if data.get("format") != parse_spec(spec)[0]:
        return {}
    options = dict(data.get("options") or {})
    if data.get("classes"):
        options["classes"] = data["classes"]
    if options:
        click.echo(f"reader options from the model's recipe: {options}", err=True)
    return options


def expand_images(items: tuple[str, ...]) -> list[Path]:
    """Files, folders (their images: PIL's formats, and .npy arrays) and glob patterns -> sorted unique image
    paths."""
    from pixelwise.data.io import DATASET_SUFFIXES

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in DATASET_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            paths += [Path(q) for q in sorted(glob.glob(item, recursive=True))]
        else:
            paths.append(p)
    return list(dict.fromkeys(paths))


def predict_video_command(predictor, source: str, out: str, formats, overlay: bool, every: int, smooth: float,
                          batch: int | None) -> None:
    """`pixelwise predict MODEL_DIR clip.mp4`: the videos (and per-frame files) and one summary line."""
    from pixelwise.inference.video import predict_video_file

    click.echo(f"running: {predictor.describe()}", err=True)
    if formats:
        predictor.task.check_formats(formats)
    result = predict_video_file(predictor, source, out, formats, overlay=overlay, every=every, smooth=smooth,
                                batch=batch)
    done = "stopped by Ctrl-C after" if result.interrupted else "predicted"
    click.echo(f"{done} {result.frames_predicted} frames at {result.fps:.1f} frames/s; wrote "
               + ", ".join(f"{p} ({result.frames_predicted} frames, {float(result.rate):g} fps)"
                           for p in result.written if p.suffix in (".mkv", ".mp4"))
               + (f"; {result.frame_files} frames as {'/'.join(formats)} in {result.frame_dir}" if result.frame_files
                  else ""))


def predict_volumes_command(predictor, items: tuple[str, ...], out: str, window: str | None, batch: int | None,
                            overwrite: bool) -> None:
    """`pixelwise predict MODEL_DIR scan.nii.gz ...`: each volume into --out/NAME.nii.gz; one line each."""
    from pixelwise.inference.volume import is_volume, predict_volume_file, volume_setting

    others = [item for item in items if not is_volume(item)]
    if others:
        raise click.UsageError(f"volumes are predicted on their own: {others[0]} is not a .nii/.nii.gz file nor "
                               "a DICOM series folder")
    setting = volume_setting(predictor.config, window)
    click.echo(f"running: {predictor.describe()}; window {setting.window.spelling()}, axis {setting.axis} "
               f"(from {setting.source})", err=True)
    for item in items:
        result = predict_volume_file(predictor, item, out, setting, batch=batch, overwrite=overwrite)
        click.echo(f"skipped {item}: {result.path} exists (--overwrite predicts again)" if result.skipped else
                   f"wrote {result.path} ({'x'.join(map(str, result.shape))} labels, the affine of {item})")


def predict_ray_command(ctx: click.Context, model_dir: str, images: tuple[str, ...], out: str, formats, overlay: bool,
                        overwrite: bool, address: str, workers: int, cpus: float, gpus: float, options: dict) -> None:
    """`pixelwise predict ... --ray [ADDRESS]`: images (local or URIs) on Ray actors; one summary line."""
    from pixelwise.inference.predictor import STORED
    from pixelwise.inference.raypredict import predict_ray
    from pixelwise.inference.video import is_video

    refuse(ctx, ("workers", "every", "smooth", "batch"), "does not apply with --ray (the actors read image files: "
           "--ray-workers, --ray-cpus; a video is predicted without --ray)")
    refuse(ctx, ("device",), "does not apply with --ray (the actors run on the GPU with --ray-gpus > 0, else the CPU)")
    if any(is_video(item.split("://", 1)[-1]) for item in images):
        raise click.UsageError("--ray predicts image files; a video, stream or camera is predicted without --ray")
    options = {**options, "tta": options["tta"] or STORED, "crf": options["crf"] or STORED}
    result = predict_ray(model_dir, images, out, formats, overlay=overlay, overwrite=overwrite,
                         address=None if address == "local" else address, num_workers=workers,
                         num_cpus_per_worker=cpus, num_gpus_per_worker=gpus, options=options)
    click.echo(f"wrote {len(result.written)} predictions to {out} on Ray ({workers} workers)"
               + (f"; skipped {len(result.skipped)} already done" if result.skipped else "")
               + (f"; {len(result.failed)} failed" if result.failed else ""))
    if result.failed:
        sys.exit(1)


# ---- GeoTIFF scenes (georeferenced .tif / .tiff): window by window, pixelwise.inference.geotiff ---------------

SCENE_OPTIONS = ("probabilities", "polygons")  # outputs of scenes only


def refuse_scene_options(ctx: click.Context, images: tuple[str, ...], formats, overlay: bool,
                         ray_address: str | None) -> None:
    """--probabilities / --polygons apply to GeoTIFF scenes predicted window by window: every input a scene,
    no --ray, no --overlay, no --format but tif."""
    from pixelwise.inference.geotiff import is_scene

    if ray_address is not None:
        refuse(ctx, SCENE_OPTIONS, "does not apply with --ray (GeoTIFF scenes are predicted here, window by window)")
    if overlay or any(f != "tif" for f in formats):
        refuse(ctx, SCENE_OPTIONS, "applies to GeoTIFF scenes predicted window by window: drop --overlay and any "
                                   "--format but tif")
    other = next((p for p in expand_images(images) if not is_scene(p)), None)
    if other is not None:
        refuse(ctx, SCENE_OPTIONS, f"applies to GeoTIFF scenes (.tif / .tiff with a CRS or transform); {other} is "
                                   "not one")


def predict_scenes_command(ctx: click.Context, predictor, paths: list[Path], out: str, formats, overlay: bool,
                           probabilities: bool, polygons: str | None, overwrite: bool) -> tuple[list[Path], int]:
    """The GeoTIFF scenes among `paths`, each window by window into --out/NAME.tif (with NAME_probs.tif,
    NAME.geojson), one line each, when the task writes GeoTIFF label maps and nothing read whole is asked for
    (--overlay, a --format but tif). Returns (the other paths, for predict_files; how many scenes failed)."""
    from pixelwise.inference.geotiff import check_scenes, is_scene, predict_scene, scene_predictor

    if overlay or any(f != "tif" for f in formats):  # read whole, as any image (refuse_scene_options has run)
        return paths, 0
    if "tif" not in predictor.task.formats:
        refuse(ctx, SCENE_OPTIONS, f"applies to tasks that write GeoTIFF label maps; the {predictor.task.name} task "
                                   f"writes {', '.join(predictor.task.formats)}")
        return paths, 0
    scenes = [p for p in paths if is_scene(p)]
    if not scenes:
        return paths, 0
    if len(scenes) == len(paths):
        refuse(ctx, ("workers",), "does not apply to GeoTIFF scenes (read window by window in this process)")
    check_scenes(paths, out, probabilities, polygons)
    click.echo(f"running: {scene_predictor(predictor, scenes[0]).describe()}; GeoTIFF scenes window by window",
               err=True)
    failed = 0
    for scene in scenes:
        try:
            r = predict_scene(predictor, scene, out, probabilities, polygons, overwrite)
        except PixelwiseError as exc:  # a damaged scene, one the model cannot read: named, and the others go on
            click.echo(f"failed: {exc}", err=True)
            failed += 1
            continue
        click.echo(f"skipped {scene}: {r.written[0]} exists (--overwrite predicts again)" if r.skipped else
                   f"wrote {', '.join(map(str, r.written))} ({r.size[1]}x{r.size[0]} labels, the CRS and transform "
                   f"of {scene}; {r.seconds:.1f} s)")
    return [p for p in paths if p not in scenes], failed


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--overlay", is_flag=True, help="Also write colour overlays with a legend.")
@click.option("--task", "task_name", default=None,
              help="The task to answer (default: the model's own); e.g. instance for a panoptic model.")
@click.option("--method", default=None, type=click.Choice(["components", "watershed"]),
              help="How a semantic model's label map becomes instances (--task panoptic|instance).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["png", "npy", "rle", "tif", "coco"]),
              help="Outputs (repeat for several; default: the task's first). semantic: png (index PNG), npy, rle "
                   "(COCO RLE JSON), tif (GeoTIFF label map with the input raster's CRS; needs pixelwise[geo]); panoptic: coco (panoptic PNG + JSON, instances.json), png (semantic map); "
                   "instance: coco (instances.json); multilabel: png (a mask per class), npy, rle.")
@click.option("--overwrite", is_flag=True, help="Predict again images whose outputs exist (default: skip them).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0), help="Image-decoding processes.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Predict on a pool of Ray Data actors, one model each (pixelwise[ray]): alone, a local Ray here; "
                   "auto: the cluster this node joined (`ray start`); ray://HOST:10001: through Ray Client. Inputs may "
                   "be URIs pyarrow reads (s3://bucket/prefix/*.png); every node must share --out. Give it after "
                   "the images (or with an ADDRESS).")
@click.option("--ray-workers", default=2, show_default=True, type=click.IntRange(min=1), help="Ray: actors.")
@click.option("--ray-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Ray: CPUs per actor (its torch threads).")
@click.option("--ray-gpus", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Ray: GPUs per actor (> 0: the actors predict on the GPU).")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Video: predict every N-th frame (the written videos run at the source rate / N).")
@click.option("--smooth", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Video: momentum of the moving average of class probabilities across frames; 0: off.")
@click.option("--batch", "batch", default=None, type=click.IntRange(min=1),
              help="Video: frames per forward call (default 4; 1 for a camera or stream). Volume: slices per call "
                   "(default 8).")
@click.option("--window", default=None,
              help="Volume input (.nii/.nii.gz, DICOM series folder): the intensity window of a model not trained "
                   "on nifti:/dicom: data (percentile, ct_soft, ct_lung, ct_bone, ct_brain or C,W); a model that "
                   "was takes its recipe's.")
@click.option("--probabilities", is_flag=True,
              help="GeoTIFF scenes: also write NAME_probs.tif, one uint8 band per class (255 x probability).")
@click.option("--polygons", is_flag=True,
              help="GeoTIFF scenes: also write the class polygons in the raster's CRS (NAME.geojson).")
@click.option("--polygon-format", type=click.Choice(["geojson", "gpkg"]), default=None,
              help="With --polygons: geojson (default) or gpkg (a GeoPackage layer, through fiona).")
@click.option("--device", default=None)
@inference_options
@click.pass_context
def predict(ctx: click.Context, model_dir: str, images: tuple[str, ...], out: str, overlay: bool,
            task_name: str | None, method: str | None, formats: tuple[str, ...], overwrite: bool, workers: int,
            ray_address: str | None, ray_workers: int, ray_cpus: float, ray_gpus: float,
            every: int, smooth: float, batch: int | None, window: str | None,
            probabilities: bool, polygons: bool, polygon_format: str | None,
            device: str | None, precision: str, tile: int | None, overlap: float, tta: str | None, crf: str | None,
            task_options: tuple[str, ...]) -> None:
    """Predict images, folders or globs into --out, in the task's formats (and overlays); resumable.

    A video file (.mp4, .mkv, ...), a stream URL or a camera index (0) as the one input: writes the mask
    video (class ids, lossless FFV1 .mkv), with --overlay the overlay video (H.264 .mp4), with --format
    per-frame files; Ctrl-C ends a live input cleanly. Needs pixelwise[video] (PyAV).
    A volume (.nii / .nii.gz, or a DICOM series folder): slice by slice into --out/NAME.nii.gz, a label
    volume with the source's affine (pixelwise[medical]).
    A GeoTIFF scene (a .tif with a CRS or transform) of any size, for the semantic task: window by window into
    --out/NAME.tif, the label map with the scene's CRS, transform and nodata (pixelwise[geo]); --overlay or a
    --format but tif reads it whole instead."""
    from pixelwise.inference.batch import predict_files
    from pixelwise.inference.video import is_video
    from pixelwise.inference.volume import is_volume

    if probabilities or polygons:  # GeoTIFF scenes only
        refuse_scene_options(ctx, images, formats, overlay, ray_address)
    if polygon_format is not None and not polygons:
        raise click.UsageError("--polygon-format applies with --polygons")
    polygons = (polygon_format or "geojson") if polygons else None
    if any(is_volume(item) for item in images):
        refuse(ctx, ("overlay", "formats", "workers", "ray_address", "every", "smooth"),
               "does not apply to volume input (written as a NIfTI label volume)")
        if not model_dir.endswith(".onnx"):  # a window that cannot apply stops before the model loads
            from pixelwise.inference.volume import volume_setting
            from pixelwise.modeldir import read_model_config

            volume_setting(read_model_config(model_dir), window)
        predictor = build_predictor(model_dir, task_name, method, device, precision, tile, overlap, tta, crf,
                                    task_options)
        predict_volumes_command(predictor, images, out, window, batch, overwrite)
        return
    refuse(ctx, ("window",), "applies to volume input only (.nii / .nii.gz files, DICOM series folders)")
    if ray_address is not None:
        predict_ray_command(ctx, model_dir, images, out, formats, overlay, overwrite, ray_address, ray_workers,
                            ray_cpus, ray_gpus, dict(precision=precision, tile=tile, overlap=overlap, tta=tta, crf=crf,
                                                     task=task_name, task_options=parse_params(task_options)
                                                     | ({"method": method} if method else {})))
        return
    refuse(ctx, ("ray_workers", "ray_cpus", "ray_gpus"), "needs --ray")
    if any(is_video(item) for item in images):
        if len(images) != 1:
            raise click.UsageError("a video, stream or camera is predicted on its own: give it as the one input")
        refuse(ctx, ("overwrite", "workers"), "does not apply to video input (frames are decoded in order, "
                                              "and the videos are written afresh)")
        predictor = build_predictor(model_dir, task_name, method, device, precision, tile, overlap, tta, crf,
                                    task_options)
        predict_video_command(predictor, images[0], out, formats, overlay, every, smooth, batch)
        return
    refuse(ctx, ("every", "smooth", "batch"), "applies to video input only (a video file, stream URL or camera index)")
    paths = expand_images(images)
    if not paths:
        raise PixelwiseError(f"no images found in {' '.join(images)}")
    predictor = build_predictor(model_dir, task_name, method, device, precision, tile, overlap, tta, crf, task_options)
    paths, scenes_failed = predict_scenes_command(ctx, predictor, paths, out, formats, overlay, probabilities,
                                                  polygons, overwrite)  # GeoTIFF scenes, window by window
    if not paths:  # every input was a scene
        if scenes_failed:
            sys.exit(1)
        return
    result = predict_files(predictor, paths, out, formats, overlay=overlay, overwrite=overwrite,
                           num_workers=workers)
    failed = result.failed
    click.echo(f"wrote {len(result.written)} {predictor.task.name} predictions to {out}"
               + (f"; skipped {len(result.skipped)} already done" if result.skipped else "")
               + (f"; {len(failed)} failed" if failed else ""))
    if failed or scenes_failed:
        sys.exit(1)


@cli.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo private (when it does not exist yet).")
@click.option("--message", default=None, help="The commit message (default: the architecture and classes).")
@click.option("--revision", default=None, help="The branch to push to (default: main).")
def push(model_dir: str, repo_id: str, private: bool, message: str | None, revision: str | None) -> None:
    """Upload a model directory (config.json, weights, model card) to the Hugging Face Hub repo REPO_ID
    (user/name; created if missing). Needs pixelwise[hub] and a token (`hf auth login` or HF_TOKEN)."""
    from pixelwise.hub import push_to_hub

    url = push_to_hub(model_dir, repo_id, private=private, commit_message=message, revision=revision)
    click.echo(f"pushed {model_dir} to {repo_id}: {url}")


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--onnx", "onnx_path", default=None, type=click.Path(dir_okay=False),
              help="ONNX file to write (with --int8 it may be left out: the int8 graph then goes into the model "
              "directory, where --precision auto times it against fp32 and bf16).")
@click.option("--opset", default=17, show_default=True, type=int)
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare onnxruntime with torch on random images of other sizes and batch.")
@click.option("--int8", is_flag=True, help="Write the int8 graph: static quantization calibrated on training images, "
              "kept only if its argmax agrees with fp32 on >= 99% of held-out pixels.")
@click.option("--calibration", default=None, help="With --int8: FORMAT:PATH of the images to calibrate on "
              "(default: the model's own training set, from its config.json).")
@click.option("--calibration-images", default=16, show_default=True, type=click.IntRange(1, 10000),
              help="With --int8: how many images calibrate (as many others check the agreement, up to 8).")
def export(model_dir: str, onnx_path: str, opset: int, check: bool, int8: bool, calibration: str | None,
           calibration_images: int) -> None:
    """Export a model to ONNX (dynamic batch/height/width, normalisation inside; input float 0..255 RGB NCHW,
    or for a multi-band model its channels: bands / scale, then indices)."""
    from pixelwise.export import export_onnx

    if not int8 and (calibration is not None or calibration_images != 16):
        raise click.UsageError("--calibration and --calibration-images apply only with --int8")
    if not int8 and onnx_path is None:
        raise click.UsageError("--onnx FILE is needed (only --int8 may write into the model directory)")
    if int8:
        from pixelwise.quantize import quantize_model

        q = quantize_model(model_dir, onnx_path, calibration=calibration, images=calibration_images)
        if Path(q["path"]).is_file():
            click.echo(f"wrote {q['path']} ({q['precision']}; calibrated on {q['images']} images of "
                       f"{q['calibration']}, {len(q['excluded'])} output layer(s) kept in float)")
        click.echo(q["message"])
        return
    report = export_onnx(model_dir, onnx_path, opset=opset, check=check)
    click.echo(f"wrote {report['path']} (opset {opset}, outputs {', '.join(report['outputs'])})")
    for c in report["checks"]:
        click.echo(f"onnxruntime vs torch, input {'x'.join(map(str, c['shape']))}: max abs logit diff "
                   f"{c['max_abs_diff']:.3g} (logits up to {c['max_abs_logit']:.3g}), agreement "
                   f"{c['agreement']:.4%}")


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--data", "spec", default=None, help="Dataset as FORMAT:ROOT (default: the model's own training set).")
@click.option("--split", default=None, help="The split to score on (default: the model's recipe's val split).")
@click.option("--tta", "ttas", multiple=True, help="A TTA candidate (repeat for several; the plain pass is always "
              "scored too); default: flip and flip,0.75,1,1.25.")
@click.option("--crf", "crfs", multiple=True, type=click.Choice(["none", "default", "deeplab_v1", "deeplab_v2"]),
              help="A dense-CRF candidate (repeat for several); default: none.")
@click.option("--min-gain", default=0.002, show_default=True, type=click.FloatRange(0, 1),
              help="A candidate is kept over a cheaper one only if its score (mIoU, PQ) is higher by this much.")
@click.option("--images", default=None, type=click.IntRange(min=1), help="Score this many images, evenly spread.")
@click.option("--dry-run", is_flag=True, help="Score and print; leave the model's stored setting as it is.")
@click.option("--device", default=None)
@click.option("--data-option", "data_options", multiple=True, help="KEY=VALUE reader option (as for eval).")
def tune(model_dir: str, spec: str | None, split: str | None, ttas: tuple[str, ...], crfs: tuple[str, ...],
         min_gain: float, images: int | None, dry_run: bool, device: str | None, data_options: tuple[str, ...]) -> None:
    """Measure TTA and CRF candidates on val and store the one that pays in the model directory (config.json
    "inference"): predict, eval and serve then use it unless given --tta / --crf (none: off)."""
    from pixelwise.data.formats import open_dataset
    from pixelwise.engine import tune as tuning
    from pixelwise.modeldir import read_model_config

    config = read_model_config(model_dir)
    spec = spec or config.get("dataset")
    if not isinstance(spec, str) or ":" not in spec:
        raise click.UsageError(f"{model_dir}: its config.json names no training set: give --data FORMAT:ROOT")
    split = split or ((config.get("recipe") or {}).get("data") or {}).get("val_split") or "val"
    dataset = open_dataset(spec, split, **reader_options(model_dir, spec, data_options))
    result = tuning.tune(model_dir, dataset, ttas or ("flip", "flip,0.75,1,1.25"), crfs or ("none",), min_gain,
                         images, device=device, store=not dry_run, log=click.echo)
    click.echo(tuning.summary(result))
    click.echo("(dry run: nothing stored)" if dry_run else f"stored in {model_dir}: tta {result['tta']}, "
               f"crf {result['crf']}")


@cli.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="pixelwise model directory to write.")
@click.option("--task", "task_name", default=None, type=click.Choice(["semantic", "panoptic"]),
              help="The task the model answers by default (Mask2Former: semantic or panoptic, which --task "
              "instance reads too; default semantic).")
@click.option("--things", default=None, help="Comma-separated class ids (or a-b ranges) of the countable classes; "
              "needed with --task panoptic, e.g. 0-79 for COCO panoptic.")
def convert(source: str, out: str, task_name: str | None, things: str | None) -> None:
    """Convert another library's checkpoint: SOURCE is transformers:DIR, a transformers model directory
    (config.json + model.safetensors) of SegFormer, UPerNet or Mask2Former."""
    from pixelwise.convert import SOURCES, convert_transformers

    library, sep, path = source.partition(":")
    if not sep or library not in SOURCES or not path:
        raise click.UsageError(f"SOURCE must be LIBRARY:DIR with LIBRARY one of {', '.join(SOURCES)}, "
                               f"e.g. transformers:segformer-b0-ade, got {source!r}")
    if things is not None and task_name != "panoptic":
        raise click.UsageError("--things applies only with --task panoptic")
    r = convert_transformers(path, out, task=task_name, things=parse_ids(things) if things else None)
    click.echo(f"wrote {r['path']}: {r['arch']} {r['kwargs']}, {r['num_classes']} classes, "
               f"{r['params'] / 1e6:.2f}M parameters, task {r['task']}")
    for note in r["notes"]:
        click.echo(f"note: {note}")


def parse_ids(text: str) -> list[int]:
    """"0-79,90" -> [0, ..., 79, 90]; a UsageError naming the bad part."""
    ids: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            ids += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
        except ValueError:
            raise click.UsageError(f"--things: {part!r} is not a class id or an a-b range") from None
    return ids


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers-threads", "--worker-threads", "worker_threads", default=1, show_default=True, type=int,
              help="Predictions run at the same time.")
@click.option("--queue", "queue_size", default=8, show_default=True, type=int,
              help="Requests that may wait for a worker; beyond that: 503 + Retry-After.")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="Seconds per request (then 504).")
@click.option("--header-timeout", "header_timeout_s", default=10.0, show_default=True, type=float,
              help="Seconds a connection has to send a whole request head (then it is closed).")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=float)
@click.option("--max-pixels", default=50e6, show_default=True, type=float, help="Largest width x height accepted.")
@click.option("--tile", default=1024, show_default=True, type=int, help="Tile size for large images (0: off).")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available).")
def serve(model_dir: str, host: str, port: int, worker_threads: int, queue_size: int, timeout_s: float,
          header_timeout_s: float, max_upload_mb: float, max_pixels: float, tile: int, precision: str,
          device: str | None) -> None:
    """Serve a model: a web page at / and a REST API (POST /v1/segment, GET /v1/model, GET /healthz)."""
    from pixelwise.serve import ServeSettings, serve as run_server

    settings = ServeSettings(host=host, port=port, worker_threads=worker_threads, queue_size=queue_size,
                             timeout_s=timeout_s, header_timeout_s=header_timeout_s, max_upload_mb=max_upload_mb,
                             max_pixels=int(max_pixels), tile=tile or None, precision=precision, device=device)
    click.echo(f"loading {model_dir}; the page will be at http://{host}:{port}/ (Ctrl-C stops)")
    run_server(model_dir, settings)


def parse_params(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs -> dict, values parsed as YAML scalars (numbers, true/false, lists; YAML 1.2 booleans,
    as recipes read them)."""
    import yaml

    from pixelwise.config import load_yaml

    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PixelwiseError(f"parameter '{item}': expected KEY=VALUE, e.g. sigma=2")
        try:
            params[key] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise PixelwiseError(f"parameter '{item}': not a YAML value ({' '.join(str(exc).split())})") from None
    return params


@cli.command()
@click.argument("method")
@click.argument("args", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (required unless METHOD is 'list').")
@click.option("--overlay", is_flag=True, help="Also write overlays with region boundaries.")
def classic(method: str, args: tuple[str, ...], out: str | None, overlay: bool) -> None:
    """Classical segmentation: pixelwise classic METHOD IMAGE... [KEY=VALUE ...] --out DIR.

    `pixelwise classic list` shows the methods and their parameters (e.g. sigma=2). An unreadable image is
    skipped (one "skipped:" line on stderr) and the others are written; the exit status is then 1.
    """
    from pixelwise.classical import list_methods, method_params
    from pixelwise.classical.cli import run_classic

    if method == "list":
        for name in list_methods():
            click.echo(f"{name:<16} {method_params(name)}")
        return
    if not args or not out:
        raise PixelwiseError("classic: give images and --out DIR, e.g. pixelwise classic otsu img.png --out masks/")
    params = parse_params(tuple(a for a in args if "=" in a and not Path(a).exists()))
    images = [str(p) for p in expand_images(tuple(a for a in args if not ("=" in a and not Path(a).exists())))]
    result = run_classic(method, images, out, overlay=overlay, params=params,
                         log=lambda message: click.echo(message, err=True))
    failed = result.failed
    click.echo(f"wrote {len(result.written)} files for {len(result.images)} images to {out}"
               + (f"; {len(failed)} failed" if failed else ""))
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
