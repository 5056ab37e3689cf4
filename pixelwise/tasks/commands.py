"""The library side of `pixelwise eval --task panoptic|instance` and `pixelwise predict --task panoptic`.

    pixelwise eval MODEL_DIR --task panoptic --data FORMAT:ROOT [--images DIR]   model -> PQ, mIoU, mask AP
    pixelwise eval --task panoptic --pred PRED_JSON --data coco-panoptic:GT_JSON  files -> PQ (panopticapi)
    pixelwise eval --task instance --pred RESULTS_JSON --data coco-instance:GT_JSON   files -> mask AP
    pixelwise predict MODEL_DIR IMAGES... --task panoptic --out DIR               overlays + COCO JSON
"""
from __future__ import annotations

import json
from pathlib import Path

from pixelwise.errors import PixelwiseError


def run_eval(task: str, model_dir: str | None, spec: str, split: str = "val", pred: str | None = None,
             images: str | None = None, json_out: str | None = None, device: str | None = None,
             precision: str = "fp32", method: str = "components") -> str:
    """Score predictions (files, `pred`) or a model on a dataset for `task`; returns the table to print
    and writes the scores as JSON to `json_out` when given."""
    from pixelwise.engine.evaluate import evaluate_panoptic, score_prediction_files
    from pixelwise.metrics.instance import ap_table
    from pixelwise.metrics.panoptic import pq_table

    if pred is not None:
        scores = score_prediction_files(task, pred, spec)
        text = pq_table(scores) if task == "panoptic" else ap_table(scores)
    elif model_dir is None:
        raise PixelwiseError("eval: give MODEL_DIR, or --pred with the predictions to score")
    else:
        from pixelwise.data.formats import open_dataset

        dataset = open_dataset(spec, split, **({"images": images} if images else {}))
        scores = evaluate_panoptic(model_dir, dataset, device=device, precision=precision, method=method,
                                   progress=True)
        ap = scores["mask_ap"]
        text = "\n".join([pq_table(scores), f"{'mIoU':<24} {100 * scores['miou']:>6.1f}",
                          f"{'mask AP / AP50 / AP75':<24} {100 * ap['ap']:.1f} / {100 * ap['ap50']:.1f} / "
                          f"{100 * ap['ap75']:.1f}",
                          f"{'DSB score / AJI':<24} {scores['dsb_score']:.4f} / {scores['aji']:.4f}"])
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(scores, indent=2))
    return text


def run_predict_panoptic(model_dir: str, paths: list[Path], out: str, device: str | None = None,
                         precision: str = "fp32", method: str = "components") -> tuple[int, list[str]]:
    """Panoptic predictions of every image: overlays, panoptic PNGs, panoptic.json and instances.json in
    `out` (see tasks.outputs). Returns (images written, messages of the images that failed)."""
    from tqdm import tqdm

    from pixelwise.data.io import read_image
    from pixelwise.inference.predictor import Predictor
    from pixelwise.tasks.inference import image_outputs, panoptic_prediction
    from pixelwise.tasks.outputs import PanopticWriter

    predictor = Predictor.from_dir(model_dir, device=device, precision=precision)
    things = predictor.config.get("things") or list(range(1, predictor.num_classes))
    post = getattr(predictor.model, "postprocess", {})
    writer = PanopticWriter(out, predictor.classes, things, predictor.palette, predictor.config.get("category_ids"))
    failed = []
    for path in tqdm(paths, desc="predict", disable=len(paths) < 2):
        try:
            image = read_image(path)
        except PixelwiseError as exc:
            failed.append(str(exc))
            tqdm.write(f"skipped: {exc}")
            continue
        pred = panoptic_prediction(image_outputs(predictor, image), things, method=method, **post)
        writer.add(path.name, image, pred)
    writer.close()
    return len(paths) - len(failed), failed
